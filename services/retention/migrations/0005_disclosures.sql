-- Disclosures of a subject's data to courts, law enforcement and regulators (policy 3.2): kept
-- per person, ids, names of authorities and references only.
CREATE TABLE disclosures (
    disclosure_id text PRIMARY KEY,
    subject_id text NOT NULL,
    authority text NOT NULL,
    authority_kind text NOT NULL,
    legal_basis text NOT NULL,
    reference text NOT NULL,
    categories text[] NOT NULL,
    disclosed_at timestamptz NOT NULL,
    disclosed_by text NOT NULL,
    secret_until timestamptz,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX disclosures_subject ON disclosures (subject_id, disclosed_at);
