-- Every dead letter by the record it came from, written with its outbox row: a replayed batch
-- (a transient failure after isolating poison, a crash before the offsets commit) finds the
-- record here and does not dead-letter it again.
CREATE TABLE deadlettered (
    topic text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    reason_kind text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
