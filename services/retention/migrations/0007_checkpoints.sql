-- Certificates are already in one global order (seq, under the chain lock).
-- Signed checkpoints of this schema's audit log (shared.evidence): append-only, like the log.
-- The runtime role needs INSERT and SELECT only; no row is ever updated, deleted or truncated.
-- The copy that counts is the one published to `privacy.audit`: verifiers read that.
CREATE TABLE checkpoints (
    id bigserial PRIMARY KEY,
    log text NOT NULL,
    number bigint NOT NULL,
    hash text NOT NULL UNIQUE,
    upto_seq bigint NOT NULL,
    restore_id bigint NOT NULL DEFAULT 0,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE FUNCTION checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'checkpoints are append-only';
END $$;
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION checkpoints_append_only();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION checkpoints_append_only();
