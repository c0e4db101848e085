#!/bin/sh
# One-shot database initialisation for docker compose (service db-init), idempotent.
# Needs PGHOST, PGUSER, PGPASSWORD, PGDATABASE (the superuser connection) and
# CONSENT_DB_PASSWORD, RETENTION_DB_PASSWORD, EXPORT_DB_PASSWORD. All the SQL is in grants.sql
# (tests/db/deploy/test_grants.py runs it on a real PostgreSQL).
set -eu
here=$(dirname "$0")

for svc in consent retention export; do
  case $svc in
    consent) pw=${CONSENT_DB_PASSWORD:?} ;;
    retention) pw=${RETENTION_DB_PASSWORD:?} ;;
    export) pw=${EXPORT_DB_PASSWORD:?} ;;
  esac
  psql -X -q -v ON_ERROR_STOP=1 -v svc="$svc" -v pw="$pw" -v db="$PGDATABASE" \
    -f "$here/grants.sql"
  echo "db-init: role and schema '$svc' ready"
done
