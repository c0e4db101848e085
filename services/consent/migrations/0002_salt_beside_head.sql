-- The salt moves beside the ledger head: one lookup per batch instead of two.
-- Erasure sets it to NULL (the head stays: it proves the chain's length).
ALTER TABLE ledger_heads ADD COLUMN salt bytea;
UPDATE ledger_heads h SET salt = s.salt FROM ledger_salts s WHERE s.principal = h.principal;
DROP TABLE ledger_salts;
