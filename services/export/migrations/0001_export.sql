-- Export requests, the jobs issued per owner, and the parts received (DESIGN §2, §5).
CREATE TABLE requests (
    request_id text PRIMARY KEY,
    storage_key text NOT NULL UNIQUE,          -- folder name in export storage (not user input)
    subject text NOT NULL,
    requested_at timestamptz NOT NULL,
    deadline timestamptz NOT NULL,
    extended boolean NOT NULL DEFAULT false,
    -- pending, in_progress, ready (every part in), assembling, completed,
    -- partially_completed, cancelled
    status text NOT NULL,
    public_key text NOT NULL,
    sealed_key bytea,                          -- private key under the service key; NULL = destroyed
    missing_owners text[] NOT NULL DEFAULT '{}',
    outcomes jsonb NOT NULL DEFAULT '[]',
    assembling_until timestamptz,
    bundle_id text UNIQUE,
    bundle_expires_at timestamptz,
    bundle_deleted_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX requests_open ON requests (deadline) WHERE status IN ('pending', 'in_progress', 'ready', 'assembling');
CREATE INDEX requests_bundles ON requests (bundle_expires_at) WHERE bundle_id IS NOT NULL AND bundle_deleted_at IS NULL;

CREATE TABLE jobs (
    request_id text NOT NULL REFERENCES requests ON DELETE CASCADE,
    owner text NOT NULL,
    job_id text NOT NULL UNIQUE,
    categories text[] NOT NULL,
    PRIMARY KEY (request_id, owner)
);

CREATE TABLE parts (
    request_id text NOT NULL REFERENCES requests ON DELETE CASCADE,
    owner text NOT NULL,
    category text NOT NULL,
    part_index integer NOT NULL,
    part_count integer NOT NULL,
    status text NOT NULL,                      -- stored, failed
    record_count integer NOT NULL DEFAULT 0,
    sha256 text NOT NULL,
    record_schema text,
    error text,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (request_id, owner, category, part_index)
);

-- export.part_failed.v1: a whole owner (category '') or one category could not be exported.
CREATE TABLE failures (
    request_id text NOT NULL REFERENCES requests ON DELETE CASCADE,
    owner text NOT NULL,
    category text NOT NULL,
    error text NOT NULL,
    retryable boolean NOT NULL,
    failed_at timestamptz NOT NULL,
    PRIMARY KEY (request_id, owner, category)
);
