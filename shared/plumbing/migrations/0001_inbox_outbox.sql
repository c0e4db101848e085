-- Inbox: every processed event, keyed by its CloudEvents source + id (idempotency).
CREATE TABLE inbox (
    source text NOT NULL,
    event_id text NOT NULL,
    digest bytea NOT NULL,
    event_type text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);

-- Outbox: events to publish, written in the transaction that caused them.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key bytea,
    value bytea,
    headers jsonb NOT NULL DEFAULT '{}'::jsonb,
    event_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);
