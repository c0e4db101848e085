-- Restrictions of processing (GDPR Art. 18) per subject, target (purpose or category) and the
-- category it reaches; grounds (b) and (c) keep the data: `hold_id` names the hold that stops
-- the category's deletions until the restriction is lifted.
CREATE TABLE restrictions (
    subject_id text NOT NULL,
    target text NOT NULL,
    category text NOT NULL,
    owner text NOT NULL,
    grounds text,
    event_id text NOT NULL,
    hold_id text,
    placed_at timestamptz NOT NULL,
    lifted_at timestamptz,
    PRIMARY KEY (subject_id, target, category)
);

-- Restriction jobs (and their lifting) go to the owners and are tracked like deletions.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('deletion', 'rectification', 'restriction', 'restriction_lift'));
