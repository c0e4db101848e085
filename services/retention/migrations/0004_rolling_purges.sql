-- Rolling retention while the account is open (policy 1.3): one purge timer per subject and
-- rolling category; firing issues a purge job, its receipt re-arms the timer.
CREATE TABLE purge_timers (
    subject_id text NOT NULL,
    category text NOT NULL,
    owner text NOT NULL,
    due_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'issued', 'stopped')),
    job_id text,
    last_before timestamptz,
    PRIMARY KEY (subject_id, category)
);
CREATE INDEX purge_timers_due ON purge_timers (due_at) WHERE status = 'pending';

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('deletion', 'rectification', 'restriction', 'restriction_lift', 'purge'));
-- A purge job's cutoff and rolling limit (the event carries both on every issue).
ALTER TABLE jobs ADD COLUMN purge_before timestamptz;
ALTER TABLE jobs ADD COLUMN purge_keep text;
