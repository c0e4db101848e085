-- The retention rules last applied: a change of configuration recomputes pending timers.
CREATE TABLE rules_state (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    digest text NOT NULL,
    rules jsonb NOT NULL,
    loaded_at timestamptz NOT NULL
);

-- Accounts: open or closed, and their subscription terms (subscription.changed.v1).
CREATE TABLE accounts (
    account_id text PRIMARY KEY,
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    closed_at timestamptz,
    lifecycle_time timestamptz,
    plan text,
    crm_retention_days int,
    terms_time timestamptz
);

-- Which subjects (people) belong to which account, from sign-ups.
CREATE TABLE subjects (
    subject_id text PRIMARY KEY,
    account_id text NOT NULL,
    signed_up_at timestamptz,
    erased_at timestamptz
);
CREATE INDEX subjects_account ON subjects (account_id);

-- Legal holds; a release that arrives before its placement is kept, so the hold stays released.
CREATE TABLE holds (
    hold_id text PRIMARY KEY,
    scope text NOT NULL CHECK (scope IN ('subject', 'account')),
    subject_id text,
    account_id text,
    categories text[],
    reason text,
    placed_at timestamptz,
    released_at timestamptz
);
CREATE INDEX holds_subject ON holds (subject_id) WHERE released_at IS NULL;
CREATE INDEX holds_account ON holds (account_id) WHERE released_at IS NULL;

-- Durable timers: at due_at, issue a job (unless a hold blocks it then).
CREATE TABLE timers (
    id bigserial PRIMARY KEY,
    subject_id text NOT NULL,
    category text NOT NULL,
    owner text NOT NULL,
    mode text NOT NULL,
    reason text NOT NULL,
    cause text NOT NULL,
    request_id text,
    base_at timestamptz,
    due_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'blocked', 'fired', 'cancelled', 'superseded')),
    blocked_by text[] NOT NULL DEFAULT '{}',
    superseded_by text,
    fired_at timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX timers_due ON timers (due_at, id) WHERE status = 'pending';
CREATE INDEX timers_subject ON timers (subject_id);
CREATE INDEX timers_request ON timers (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX timers_blocked ON timers USING gin (blocked_by) WHERE status = 'blocked';

-- Jobs sent to data owners, tracked until a receipt.
CREATE TABLE jobs (
    job_id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('deletion', 'rectification')),
    timer_id bigint,
    subject_id text NOT NULL,
    owner text NOT NULL,
    category text NOT NULL,
    mode text,
    reason text,
    request_id text,
    not_before timestamptz,
    due_by timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'issued'
        CHECK (status IN ('issued', 'completed', 'failed', 'cancelled')),
    attempt int NOT NULL DEFAULT 1,
    issued_at timestamptz NOT NULL,
    last_issued_at timestamptz NOT NULL,
    next_action_at timestamptz,
    overdue boolean NOT NULL DEFAULT false,
    last_error text,
    fields jsonb,
    completed_at timestamptz,
    records_deleted int
);
CREATE INDEX jobs_next ON jobs (next_action_at) WHERE status = 'issued';
CREATE INDEX jobs_due ON jobs (due_by) WHERE status = 'issued' AND NOT overdue;
CREATE INDEX jobs_overdue ON jobs (issued_at) WHERE status = 'issued' AND overdue;
CREATE INDEX jobs_subject ON jobs (subject_id);
CREATE INDEX jobs_request ON jobs (request_id) WHERE request_id IS NOT NULL;

-- Privacy requests this service answers (erasure, rectification).
CREATE TABLE requests (
    request_id text PRIMARY KEY,
    subject_id text NOT NULL,
    kind text NOT NULL,
    requested_at timestamptz NOT NULL,
    deadline timestamptz NOT NULL,
    extended boolean NOT NULL DEFAULT false,
    reason text,
    cancelled_at timestamptz,
    overdue boolean NOT NULL DEFAULT false,
    status text NOT NULL DEFAULT 'pending'
);
CREATE INDEX requests_deadline ON requests (deadline) WHERE NOT overdue;

CREATE TABLE request_outcomes (
    request_id text NOT NULL REFERENCES requests (request_id),
    category text NOT NULL,
    outcome text NOT NULL,
    reason text,
    until timestamptz,
    owner text,
    PRIMARY KEY (request_id, category)
);

-- The last consent state seen per subject ({purpose: withdrawn}), for the withdrawal transition.
CREATE TABLE consent_seen (
    subject_id text PRIMARY KEY,
    version int NOT NULL,
    withdrawn jsonb NOT NULL
);

-- Deletion certificates: append-only, hash-chained; ids and times only.
CREATE TABLE certificates (
    seq bigserial PRIMARY KEY,
    job_id text NOT NULL UNIQUE,
    body jsonb NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL
);

CREATE FUNCTION certificates_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'certificates are append-only';
END $$;
CREATE TRIGGER certificates_append_only BEFORE UPDATE OR DELETE ON certificates
    FOR EACH ROW EXECUTE FUNCTION certificates_append_only();
