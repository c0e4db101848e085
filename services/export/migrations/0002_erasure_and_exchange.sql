-- An erasure finds the subject's requests; exchange files are deleted only after intake commits.
CREATE INDEX requests_subject ON requests (subject);

CREATE TABLE exchange_deletions (
    path text PRIMARY KEY,                     -- a file under the exchange folder, taken in
    queued_at timestamptz NOT NULL
);
