# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Shared helpers for deploy/local/{up,down,status,env}. Sourced, not executed.
#
# Environment knobs:
#   PP_LOCAL_DIR              state folder (data, logs, pid files); default <repo>/.local
#   PP_CACHE_DIR              jar cache; default ${XDG_CACHE_HOME:-$HOME/.cache}/privacy-plane
#   KAFKA_VERSION             Apache Kafka version resolved from Maven Central; default 4.1.1
#   PP_KAFKA_PORT             PLAINTEXT listener port; default 19092
#   PP_KAFKA_CONTROLLER_PORT  CONTROLLER listener port; default 19093
#   PP_PG_PORT                PostgreSQL port; default 15432
#   PP_KAFKA_HEAP             Kafka heap (-Xmx/-Xms) per node; default 1g (512m per cluster node)
#   PP_CLUSTER_BASE_PORT      with --brokers N: node n listens on base+2n-2 (PLAINTEXT) and
#                             base+2n-1 (CONTROLLER); default 19190
#   --tls (every script)      the TLS stack instead (tls.sh): state in $PP_LOCAL_DIR/tls, Kafka
#                             SASL_SSL on PP_KAFKA_PORT (default 19492, controller 19493),
#                             PostgreSQL with ssl=on on PP_PG_PORT (default 15442)

PP_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
PP_REPO_ROOT=$(cd "$PP_SCRIPT_DIR/../.." && pwd -P)

STATE=${PP_LOCAL_DIR:-$PP_REPO_ROOT/.local}
case "$STATE" in /*) ;; *) STATE="$PWD/$STATE" ;; esac
STATE=${STATE%/}
if [[ -z "$STATE" || "$STATE" == "/" ]]; then
  echo "refusing to use '/' as PP_LOCAL_DIR" >&2
  exit 2
fi

KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
LOG4J_VERSION=2.26.1
# Kafka's pom pins slf4j-api 1.7.36, which cannot see the SLF4J-2 provider in
# log4j-slf4j2-impl (all logging would go to the NOP logger). Pin the 2.x API.
SLF4J_VERSION=2.0.17
PP_CACHE_BASE=${PP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/privacy-plane}
KAFKA_CACHE="$PP_CACHE_BASE/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_CACHE/libs"

KAFKA_HOST=127.0.0.1
KAFKA_PORT=${PP_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${PP_KAFKA_CONTROLLER_PORT:-19093}
PG_HOST=127.0.0.1
PG_PORT=${PP_PG_PORT:-15432}
PG_USER=privacy
PG_DB=privacy

# Every path below the state folder (again after tls_mode moves it).
state_paths() {
  LOG_DIR="$STATE/logs"
  KAFKA_DIR="$STATE/kafka"
  KAFKA_DATA="$KAFKA_DIR/data"
  KAFKA_PIDFILE="$KAFKA_DIR/kafka.pid"
  KAFKA_PROPS="$KAFKA_DIR/server.properties"
  KAFKA_LOG4J="$KAFKA_DIR/log4j2.properties"
  KAFKA_NODE_LOGS="$LOG_DIR"
  KAFKA_LOG="$LOG_DIR/kafka.log"
  KAFKA_STDOUT="$LOG_DIR/kafka.stdout.log"
  NODE_ID=1
  PG_DIR="$STATE/pg"
  PG_DATA="$PG_DIR/data"
  PG_RUN="$PG_DIR/run"
  PG_PWFILE="$PG_DIR/password"
  PG_LOG="$LOG_DIR/postgres.log"
  ENV_FILE="$STATE/env"
}
state_paths
TLS=0

say()  { printf '[local] %s\n' "$*"; }
warn() { printf '[local] WARNING: %s\n' "$*" >&2; }
die()  { printf '[local] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# True when process $1 exists and is not a zombie (a killed daemon can stay a zombie for a
# while when PID 1 of a container reaps late; kill -0 alone would call it alive).
pid_alive() {
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ "${stat:0:1}" != Z ]]
}

pid_cmdline() { tr '\0\n' '  ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# True when port $1 stays taken for ~5s (a process that was just killed may still hold it).
port_taken() {
  local _
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    port_open "$1" || return 1
    sleep 0.5
  done
  return 0
}

# Prints "pid (command line)" of the process listening on TCP port $1, or "unknown".
port_owner() {
  local port=$1 pid=""
  if command -v ss >/dev/null 2>&1; then
    pid=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)
  fi
  if [[ -z "$pid" ]] && command -v lsof >/dev/null 2>&1; then
    pid=$(lsof -nP -t -iTCP:"$port" -sTCP:LISTEN 2>/dev/null | head -n1 || true)
  fi
  if [[ -n "$pid" ]]; then
    local cmd
    cmd=$(pid_cmdline "$pid")
    printf '%s (%s)' "$pid" "${cmd:0:120}"
  else
    printf 'unknown (run as root to see the owner)'
  fi
}

# ---------------------------------------------------------------- Kafka ------

# Prints the pid of our running Kafka (from the pid file), or nothing.
# A stale pid file (process gone, or pid reused by another program) is removed and reported.
kafka_pid() {
  [[ -f "$KAFKA_PIDFILE" ]] || return 0
  local pid
  pid=$(<"$KAFKA_PIDFILE")
  if pid_alive "$pid" && [[ $(pid_cmdline "$pid") == *kafka.Kafka*"$KAFKA_PROPS"* ]]; then
    printf '%s' "$pid"
  else
    warn "stale Kafka pid file ($KAFKA_PIDFILE, pid ${pid:-?} is gone or not our Kafka) — removed"
    rm -f "$KAFKA_PIDFILE"
  fi
}

# -------------------------------------------------------- Kafka cluster ------

# deploy/local/{up,down,status,env} --brokers N (N >= 3): N combined broker+controller nodes
# with a static voter set, in their own state folder ($STATE/cluster) and ports, so the
# cluster runs beside the single node. The single node (N = 1) stays the default.
CLUSTER_SIZE=1

# Parses `--brokers N` / `--brokers=N` out of "$@": sets BROKERS_ARG and REST_ARGS.
# `--tls` switches to the TLS stack at once (tls_mode in tls.sh), for every script alike.
parse_brokers() {
  BROKERS_ARG=1 REST_ARGS=()
  local tls=0
  while (($#)); do
    case "$1" in
      --tls) tls=1; shift ;;
      --brokers) [[ $# -ge 2 ]] || die "--brokers needs a number"; BROKERS_ARG=$2; shift 2 ;;
      --brokers=*) BROKERS_ARG=${1#--brokers=}; shift ;;
      *) REST_ARGS+=("$1"); shift ;;
    esac
  done
  [[ "$BROKERS_ARG" =~ ^[0-9]+$ ]] || die "--brokers wants a number, not '$BROKERS_ARG'"
  if ((BROKERS_ARG == 2 || BROKERS_ARG == 0 || BROKERS_ARG > 9)); then
    die "--brokers $BROKERS_ARG: use 1 (the single node) or 3 to 9 (a quorum that survives a loss)"
  fi
  if ((tls)); then
    ((BROKERS_ARG == 1)) || die "--tls runs a single Kafka node (no --brokers)"
    # shellcheck source=tls.sh
    source "$PP_SCRIPT_DIR/tls.sh"
    tls_mode
  fi
}

# Switch every state path to the cluster of $1 nodes (then `node_select n` picks a node).
cluster_mode() {
  CLUSTER_SIZE=$1
  STATE="$STATE/cluster"
  ENV_FILE="$STATE/env"
  LOG_DIR="$STATE/logs"
  CLUSTER_BASE_PORT=${PP_CLUSTER_BASE_PORT:-19190}
  local n
  CLUSTER_VOTERS="" CLUSTER_BOOTSTRAP=""
  for ((n = 1; n <= CLUSTER_SIZE; n++)); do
    CLUSTER_VOTERS+="${CLUSTER_VOTERS:+,}$n@$KAFKA_HOST:$((CLUSTER_BASE_PORT + 2 * n - 1))"
    CLUSTER_BOOTSTRAP+="${CLUSTER_BOOTSTRAP:+,}$KAFKA_HOST:$((CLUSTER_BASE_PORT + 2 * n - 2))"
  done
}

# Point the Kafka variables (ports, data, pid file, config, logs) at cluster node $1.
node_select() {
  local n=$1
  NODE_ID=$n
  KAFKA_PORT=$((CLUSTER_BASE_PORT + 2 * n - 2))
  KAFKA_CONTROLLER_PORT=$((CLUSTER_BASE_PORT + 2 * n - 1))
  KAFKA_DIR="$STATE/kafka-$n"
  KAFKA_DATA="$KAFKA_DIR/data"
  KAFKA_PIDFILE="$KAFKA_DIR/kafka.pid"
  KAFKA_PROPS="$KAFKA_DIR/server.properties"
  KAFKA_LOG4J="$KAFKA_DIR/log4j2.properties"
  KAFKA_NODE_LOGS="$LOG_DIR/node-$n"
  KAFKA_LOG="$KAFKA_NODE_LOGS/kafka.log"
  KAFKA_STDOUT="$KAFKA_NODE_LOGS/kafka.stdout.log"
}

# ------------------------------------------------------------ PostgreSQL -----

# Newest PostgreSQL bin folder of this machine, or nothing.
pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [[ -z "$d" ]] && command -v pg_ctl >/dev/null 2>&1; then
    d=$(dirname "$(command -v pg_ctl)")
  fi
  printf '%s' "$d"
}

# Runs a command as the OS user that owns the cluster (postgres when we are root).
as_pg() {
  if is_root; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Prints the pid of our running postmaster, or nothing. Reports/removes a stale postmaster.pid.
pg_pid() {
  local f="$PG_DATA/postmaster.pid" pid
  [[ -f "$f" ]] || return 0
  pid=$(head -n1 "$f" 2>/dev/null || true)
  if pid_alive "$pid" && [[ $(pid_cmdline "$pid") == *postgres*"$PG_DATA"* ]]; then
    printf '%s' "$pid"
    return 0
  fi
  # The postmaster is gone. Backends that outlived it still have their cwd in the data
  # folder: then the lock file must stay (PostgreSQL's own interlock refuses to start).
  local p
  for p in /proc/[0-9]*; do
    if [[ "$(readlink "$p/cwd" 2>/dev/null)" == "$PG_DATA" ]]; then
      warn "postmaster ${pid:-?} is gone but process ${p#/proc/} ($(pid_cmdline "${p#/proc/}")) still uses $PG_DATA — kept $f"
      return 0
    fi
  done
  warn "stale PostgreSQL pid file ($f, pid ${pid:-?} is gone or not our postmaster) — removed"
  rm -f "$f"
  # Same for the socket lock in our private socket folder (its pid may be a zombie for a while,
  # which PostgreSQL would take for a live postmaster).
  rm -f "$PG_RUN"/.s.PGSQL.*.lock
}

pg_database_url() {
  [[ -f "$PG_PWFILE" ]] || return 1
  printf 'postgresql://%s:%s@%s:%s/%s' "$PG_USER" "$(<"$PG_PWFILE")" "$PG_HOST" "$PG_PORT" "$PG_DB"
}

write_env_file() {
  mkdir -p "$STATE"
  local tmp="$ENV_FILE.tmp" url
  {
    if ((CLUSTER_SIZE > 1)); then
      printf 'KAFKA_BOOTSTRAP_SERVERS=%s\n' "$CLUSTER_BOOTSTRAP"
    else
      printf 'KAFKA_BOOTSTRAP_SERVERS=%s:%s\n' "$KAFKA_HOST" "$KAFKA_PORT"
    fi
    if url=$(pg_database_url); then
      printf 'DATABASE_URL=%s\n' "$url"
    fi
    if ((TLS)); then tls_env_lines; fi
  } >"$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$ENV_FILE"
}
