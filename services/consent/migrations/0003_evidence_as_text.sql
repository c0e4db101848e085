-- Evidence is kept byte for byte as hashed (jsonb would normalise numbers and so change the
-- salted digest the chain covers).
ALTER TABLE ledger ALTER COLUMN evidence TYPE text USING evidence::text;
