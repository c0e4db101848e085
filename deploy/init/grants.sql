-- One login role and one schema per service; a role may use only its own schema.
-- Idempotent: run on every `docker compose up` (db-init) and by hand after a password change.
-- Variables (psql -v): svc (role = schema name), pw (its password), db (the database, which
-- psql is connected to).
\set ON_ERROR_STOP on

-- The database: only the roles granted CONNECT below may connect; nobody creates in public.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

SELECT format('CREATE ROLE %I LOGIN', :'svc')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'svc') \gexec

SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'svc', :'pw') \gexec

SELECT format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', :'svc', :'svc') \gexec
SELECT format('ALTER SCHEMA %I OWNER TO %I', :'svc', :'svc') \gexec
SELECT format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', :'svc') \gexec

-- CONNECT only: no CREATE on the database (the migration runner creates a schema only when it
-- does not exist yet, and here it does), no USAGE on any other service's schema.
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'svc') \gexec
SELECT format('REVOKE CREATE ON DATABASE %I FROM %I', :'db', :'svc') \gexec
SELECT format('ALTER ROLE %I IN DATABASE %I SET search_path = %I', :'svc', :'db', :'svc') \gexec
