-- Policy versions (policy clause 3.3): what they change and from when, and how far the notice
-- fan-out (then the state re-publication at the effective date) has got through the subjects.
CREATE TABLE policies (
    version text PRIMARY KEY,
    effective_at timestamptz NOT NULL,
    summary text NOT NULL,
    url text,
    reconsent_purposes text[] NOT NULL,
    published_at timestamptz NOT NULL,
    notice_cursor text NOT NULL DEFAULT '',
    notices_done boolean NOT NULL DEFAULT false,
    notices_sent int NOT NULL DEFAULT 0,
    state_cursor text NOT NULL DEFAULT '',
    states_done boolean NOT NULL DEFAULT false
);
