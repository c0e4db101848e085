-- Two login roles and one schema per service: the owner owns the schema and everything in it
-- and runs the migrations (`privacy-plane migrate`); the runtime role the service connects with
-- may use the schema, never create in it. Table grants are the owner's to give: the migrate
-- step grants the runtime role after every migration (shared/plumbing/privileges.py).
-- Idempotent: run on every `docker compose up` (db-init) and by hand after a password change.
-- Variables (psql -v): svc (the schema), owner and owner_pw, runtime and runtime_pw (the roles
-- and their passwords), db (the database, which psql is connected to).
\set ON_ERROR_STOP on

-- The database: only the roles granted CONNECT below may connect; nobody creates in public.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

SELECT format('CREATE ROLE %I LOGIN', r)
FROM unnest(ARRAY[:'owner', :'runtime']) AS r
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec

SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
              'NOBYPASSRLS PASSWORD %L', r, pw)
FROM (VALUES (:'owner', :'owner_pw'), (:'runtime', :'runtime_pw')) AS v(r, pw) \gexec

-- The runtime role holds no other role's rights (least of all the owner's).
SELECT format('REVOKE %I FROM %I', g.rolname, :'runtime')
FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
WHERE u.rolname = :'runtime' \gexec

SELECT format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', :'svc', :'owner') \gexec
-- Upgrading from one role per service (the runtime owned the schema and its tables, and could
-- so truncate the ledger or drop its trigger): everything it owns here passes to the owner.
SELECT format('REASSIGN OWNED BY %I TO %I', :'runtime', :'owner') \gexec
SELECT format('ALTER SCHEMA %I OWNER TO %I', :'svc', :'owner') \gexec
-- Objects someone else made here (a superuser's migrations or restore): the owner's too.
SELECT format('ALTER TABLE %I.%I OWNER TO %I', :'svc', c.relname, :'owner')
FROM pg_class c
WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = :'svc')
  AND c.relkind IN ('r', 'p') AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = :'owner')
\gexec
SELECT format('ALTER SEQUENCE %I.%I OWNER TO %I', :'svc', c.relname, :'owner')
FROM pg_class c
WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = :'svc')
  AND c.relkind = 'S' AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = :'owner')
  AND NOT EXISTS (SELECT FROM pg_depend d  -- a column's sequence follows its table
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype IN ('a', 'i'))
\gexec
SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, :'owner')
FROM pg_proc p
WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = :'svc')
  AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = :'owner')
\gexec
SELECT format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', :'svc') \gexec
SELECT format('REVOKE ALL ON SCHEMA %I FROM %I', :'svc', :'runtime') \gexec
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', :'svc', :'runtime') \gexec

-- CONNECT only: no CREATE (the migration runner creates a schema only when it does not exist
-- yet, and here it does) nor TEMPORARY on the database, no USAGE on another service's schema.
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', r),
       format('REVOKE CREATE, TEMPORARY ON DATABASE %I FROM %I', :'db', r),
       format('ALTER ROLE %I IN DATABASE %I SET search_path = %I', r, :'db', :'svc')
FROM unnest(ARRAY[:'owner', :'runtime']) AS r \gexec
