#!/bin/sh
# One-shot database initialisation for docker compose (service db-init), idempotent.
# Needs PGHOST, PGUSER, PGDATABASE, PGPASSWORD_FILE (the superuser's password) and each
# service's database URL as a Docker secret, /run/secrets/<svc>_database_url, of the form
# postgresql://<svc>:<password>@host:port/db: the role is given the password its service uses.
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

for svc in consent retention export; do
  url=$(secret "$secrets/${svc}_database_url")
  pw=$(printf '%s\n' "$url" | sed -n -E "s#^postgres(ql)?://$svc:([^@/]+)@.+#\\2#p")
  if [ -z "$pw" ]; then
    echo "db-init: ${svc}_database_url is not postgresql://$svc:<password>@host:port/db" >&2
    exit 1
  fi
  psql -X -q -v ON_ERROR_STOP=1 -v svc="$svc" -v pw="$pw" -v db="$PGDATABASE" \
    -f "$here/grants.sql"
  echo "db-init: role and schema '$svc' ready"
done
