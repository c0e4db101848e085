-- The toy service of the fault suite. `seen` has no unique key on purpose: an event applied
-- twice shows up as two rows, so a doubled effect cannot hide behind a constraint.
CREATE TABLE seen (
    event_id text NOT NULL,
    source text NOT NULL,
    subject text NOT NULL,
    type text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX seen_event ON seen (event_id);

-- Durable timers, claimed with FOR UPDATE SKIP LOCKED; `fired` records every firing.
CREATE TABLE timers (
    timer_id text PRIMARY KEY,
    subject text NOT NULL,
    due_at timestamptz NOT NULL,
    fired_at timestamptz
);
CREATE TABLE fired (timer_id text NOT NULL, replica text NOT NULL, fired_at timestamptz NOT NULL DEFAULT now());
