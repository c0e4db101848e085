-- The next offset to consume per (topic, partition), written in the transaction of the batch
-- that consumed up to it: the positions live with the data they produced, so a restored
-- database re-consumes from its own positions instead of Kafka's newer committed offsets.
CREATE TABLE consumed_positions (
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
-- Every restore of this schema (`privacy-plane restore`): when, and from which backup.
CREATE TABLE restores (
    id bigserial PRIMARY KEY,
    restored_at timestamptz NOT NULL DEFAULT now(),
    backup_taken_at timestamptz NOT NULL,
    backup text NOT NULL,
    positions jsonb NOT NULL DEFAULT '{}'::jsonb
);
