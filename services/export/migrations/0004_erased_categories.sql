-- An erasure of some categories while an export is open (policy 5.1 with 5.3): the export goes
-- on without them; each erased owner's category is settled here, and later parts are dropped.
CREATE TABLE erased_categories (
    request_id text NOT NULL REFERENCES requests ON DELETE CASCADE,
    owner text NOT NULL,
    category text NOT NULL,
    reason text NOT NULL,
    erased_at timestamptz NOT NULL,
    PRIMARY KEY (request_id, owner, category)
);
