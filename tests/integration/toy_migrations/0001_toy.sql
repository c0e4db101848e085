CREATE TABLE toy_seen (event_id text PRIMARY KEY, subject text NOT NULL, type text NOT NULL);
