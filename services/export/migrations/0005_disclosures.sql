-- Disclosures of a subject's data to authorities (policy 3.2), told in the access file unless
-- secrecy is ordered (then not a word until secret_until).
CREATE TABLE disclosures (
    disclosure_id text PRIMARY KEY,
    subject text NOT NULL,
    authority text NOT NULL,
    authority_kind text NOT NULL,
    legal_basis text NOT NULL,
    reference text NOT NULL,
    categories text[] NOT NULL,
    disclosed_at timestamptz NOT NULL,
    secret_until timestamptz
);
CREATE INDEX disclosures_subject ON disclosures (subject, disclosed_at);
