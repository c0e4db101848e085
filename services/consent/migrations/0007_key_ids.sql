-- Key ids (issue 21, keys that rotate): the id of the pseudonym key each ledger and suppression
-- row was written under. A row is never re-keyed: look-ups try every listed key. Rows written
-- before keys had ids get 'legacy', the id a single-value CONSENT_LEDGER_KEY is read with.
-- ADD COLUMN with a constant default rewrites nothing (PostgreSQL 11+), so no row is updated;
-- the default then goes, so every new row must name its key.
ALTER TABLE ledger ADD COLUMN kid text NOT NULL DEFAULT 'legacy';
ALTER TABLE ledger ALTER COLUMN kid DROP DEFAULT;
ALTER TABLE suppressed ADD COLUMN kid text NOT NULL DEFAULT 'legacy';
ALTER TABLE suppressed ALTER COLUMN kid DROP DEFAULT;
