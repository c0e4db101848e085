-- Projection: one row per subject, its full consent state as a document (see domain.to_doc).
CREATE TABLE subjects (
    subject_id text PRIMARY KEY,
    version bigint NOT NULL,
    doc jsonb NOT NULL,
    next_expiry timestamptz,
    updated_at timestamptz NOT NULL
);
CREATE INDEX subjects_next_expiry ON subjects (next_expiry) WHERE next_expiry IS NOT NULL;

-- Ledger: append-only and hash-chained per person (principal = keyed hash of the subject id).
-- subject_id and evidence are personal: erasure sets them to NULL; everything else is hashed.
CREATE TABLE ledger (
    principal text NOT NULL,
    seq bigint NOT NULL,
    subject_id text,
    event_id text NOT NULL,
    event_source text NOT NULL,
    event_type text NOT NULL,
    kind text NOT NULL,
    target text NOT NULL,
    old_state text NOT NULL,
    new_state text NOT NULL,
    applied boolean NOT NULL,
    note text,
    collection_method text,
    consent_type text,
    policy_version text,
    notice_id text,
    jurisdiction text,
    expires_at timestamptz,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    evidence jsonb,
    personal_digest text,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    PRIMARY KEY (principal, seq)
);

-- The last entry per person: a deleted tail is caught too.
CREATE TABLE ledger_heads (
    principal text PRIMARY KEY,
    seq bigint NOT NULL,
    hash text NOT NULL
);

-- Per-person salt of the personal digest; erasure deletes it.
CREATE TABLE ledger_salts (
    principal text PRIMARY KEY,
    salt bytea NOT NULL
);

-- Erased persons (by keyed hash): never rebuilt away; their later events are dropped.
CREATE TABLE suppressed (
    principal text PRIMARY KEY,
    erased_at timestamptz NOT NULL,
    request_id text,
    event_id text NOT NULL
);

-- Append-only: no DELETE, and an UPDATE may only clear the personal fields (erasure).
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'the consent ledger is append-only';
    END IF;
    IF NEW.subject_id IS NOT NULL AND NEW.subject_id IS DISTINCT FROM OLD.subject_id
       OR NEW.evidence IS NOT NULL AND NEW.evidence IS DISTINCT FROM OLD.evidence
       OR (NEW.principal, NEW.seq, NEW.event_id, NEW.event_source, NEW.event_type, NEW.kind,
           NEW.target, NEW.old_state, NEW.new_state, NEW.applied, NEW.note,
           NEW.collection_method, NEW.consent_type, NEW.policy_version, NEW.notice_id,
           NEW.jurisdiction, NEW.expires_at, NEW.occurred_at, NEW.received_at,
           NEW.personal_digest, NEW.prev_hash, NEW.hash)
          IS DISTINCT FROM
          (OLD.principal, OLD.seq, OLD.event_id, OLD.event_source, OLD.event_type, OLD.kind,
           OLD.target, OLD.old_state, OLD.new_state, OLD.applied, OLD.note,
           OLD.collection_method, OLD.consent_type, OLD.policy_version, OLD.notice_id,
           OLD.jurisdiction, OLD.expires_at, OLD.occurred_at, OLD.received_at,
           OLD.personal_digest, OLD.prev_hash, OLD.hash) THEN
        RAISE EXCEPTION 'the consent ledger is append-only (only personal fields may be erased)';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
