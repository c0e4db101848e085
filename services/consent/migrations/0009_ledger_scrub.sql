-- Erasure's one way to change the ledger: blank the personal columns (subject_id, evidence) of
-- the given persons' rows. The runtime role may not UPDATE the ledger at all; it calls this,
-- which runs as the owner (SECURITY DEFINER) and can do nothing else. The chain covers a
-- salted digest of those columns, so it still verifies afterwards.
CREATE FUNCTION ledger_scrub(principals text[]) RETURNS bigint
LANGUAGE sql SECURITY DEFINER AS $$
    WITH blanked AS (
        UPDATE ledger SET subject_id = NULL, evidence = NULL
        WHERE principal = ANY(principals) AND (subject_id IS NOT NULL OR evidence IS NOT NULL)
        RETURNING 1
    )
    SELECT count(*) FROM blanked
$$;
-- Its own schema first and pg_temp last: nobody's temporary table may stand in for the ledger.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION ledger_scrub(text[]) SET search_path = %I, pg_temp',
                   current_schema());
END $$;
-- Only the runtime role calls it (privileges.grant_runtime grants EXECUTE after migrating).
REVOKE EXECUTE ON FUNCTION ledger_scrub(text[]) FROM PUBLIC;
