-- Parts and bundles are encrypted at rest under a random data key per request, kept here only
-- sealed under the export service key; NULL once destroyed (request cancelled or erased, bundle
-- expired or deleted), which leaves any file behind unreadable (crypto-shredding).
-- Requests from before this migration keep their plaintext files (sealed_at_rest = false).
ALTER TABLE requests ADD COLUMN data_key bytea;
ALTER TABLE requests ADD COLUMN sealed_at_rest boolean NOT NULL DEFAULT false;
