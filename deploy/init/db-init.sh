#!/bin/sh
# One-shot database initialisation for docker compose (service db-init), idempotent.
# Needs PGHOST, PGUSER, PGDATABASE, PGPASSWORD_FILE (the superuser's password) and two database
# URLs per service as Docker secrets: /run/secrets/<svc>_database_url, the runtime role the
# service connects with (postgresql://<svc>:<password>@host:port/db), and
# /run/secrets/<svc>_migrate_database_url, the schema's owner that `privacy-plane migrate` uses
# (postgresql://<svc>_owner:<password>@…). Each role is given the password in its URL.
# All the SQL is in grants.sql (tests/db/deploy/test_grants.py runs it on a real PostgreSQL).
set -eu
here=$(dirname "$0")
secrets=${SECRETS_DIR:-/run/secrets}

# A secret file's content ($(...) drops the trailing newline); a missing or empty one stops here.
secret() {
  if [ ! -s "$1" ]; then
    echo "db-init: $1 is missing or empty (run deploy/make-secrets)" >&2
    exit 1
  fi
  cat "$1"
}

PGPASSWORD=$(secret "${PGPASSWORD_FILE:?}")
export PGPASSWORD

# "<user> <password>" of a postgresql://user:password@host… URL, or nothing.
login() {
  printf '%s\n' "$1" | sed -n -E 's#^postgres(ql)?://([a-z_][a-z0-9_]*):([^@/]+)@.+#\2 \3#p'
}

for svc in consent retention export; do
  set -- $(login "$(secret "$secrets/${svc}_database_url")")
  runtime=${1:-} runtime_pw=${2:-}
  set -- $(login "$(secret "$secrets/${svc}_migrate_database_url")")
  owner=${1:-} owner_pw=${2:-}
  if [ -z "$runtime_pw" ] || [ -z "$owner_pw" ] || [ "$runtime" = "$owner" ]; then
    echo "db-init: ${svc}_database_url and ${svc}_migrate_database_url must be" \
      "postgresql://<role>:<password>@host:port/db with two different roles" >&2
    exit 1
  fi
  psql -X -q -v ON_ERROR_STOP=1 -v svc="$svc" -v db="$PGDATABASE" \
    -v owner="$owner" -v owner_pw="$owner_pw" -v runtime="$runtime" -v runtime_pw="$runtime_pw" \
    -f "$here/grants.sql"
  echo "db-init: schema '$svc' owned by '$owner', used by '$runtime'"
done
