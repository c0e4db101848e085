-- Every change rewrites its subject's row and its person's ledger head. Room left on each page
-- lets PostgreSQL update them in place (HOT: no new index entry, less WAL), as long as the
-- indexed columns do not change.
ALTER TABLE subjects SET (fillfactor = 70);
ALTER TABLE ledger_heads SET (fillfactor = 70);
