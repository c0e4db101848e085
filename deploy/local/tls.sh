# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source lib.sh
# The TLS stack of deploy/local/{up,down,status,env} --tls. Sourced by lib.sh, not executed
# (deploy/make-secrets sources it too, for tls_ca_and_server: the compose gateway's certificate).
#
# A throwaway CA (openssl) signs one server certificate for localhost and 127.0.0.1. Kafka
# listens with SASL_SSL only (SCRAM-SHA-512, users created when the storage is formatted;
# PEM key store, no keytool needed), its controller listener stays PLAINTEXT on loopback.
# PostgreSQL runs with ssl=on and a pg_hba.conf that refuses every TCP connection without TLS
# (hostssl + scram-sha-256). The state folder is $STATE/tls with ports of its own, so the
# TLS stack runs beside the plain one.

SASL_USER=privacy
SASL_BROKER_USER=broker
SASL_MECHANISM=SCRAM-SHA-512

# Switch every path and default port to the TLS stack.
tls_mode() {
  TLS=1
  STATE="$STATE/tls"
  state_paths
  KAFKA_PORT=${PP_KAFKA_PORT:-19492}
  KAFKA_CONTROLLER_PORT=${PP_KAFKA_CONTROLLER_PORT:-19493}
  PG_PORT=${PP_PG_PORT:-15442}
  CERTS="$STATE/certs"
  CA_PEM="$CERTS/ca.pem"
  SERVER_PEM="$CERTS/server.pem"
  SERVER_KEY="$CERTS/server.key"
  KAFKA_KEYSTORE="$CERTS/kafka-keystore.pem"
  SECRETS="$STATE/secrets"
  SASL_PASSWORD_FILE="$SECRETS/kafka_sasl_password"
  SASL_BROKER_PASSWORD_FILE="$SECRETS/kafka_broker_password"
}

_random_hex() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }

# A throwaway CA and one server certificate it signs, made with openssl in DIR: ca.pem, ca.key,
# server.pem, server.key (openssl's output in DIR/openssl.log, printed on failure).
#   tls_ca_and_server DIR SUBJECT_ALT_NAMES DAYS [rsa|ec]
# SUBJECT_ALT_NAMES as openssl writes them: DNS:localhost,IP:127.0.0.1. Keys are RSA 2048 or
# ECDSA P-256 (ec: made in milliseconds; every TLS 1.2+ client takes them).
tls_ca_and_server() {
  local dir=$1 san=$2 days=$3 alg=${4:-rsa}
  local -a newkey=(-newkey rsa:2048)
  local usage=digitalSignature,keyEncipherment
  if [[ $alg == ec ]]; then
    newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
    usage=digitalSignature # an ECDSA key signs; it never encrypts a key
  fi
  local cn=${san%%,*}
  cn=${cn#*:}
  local log="$dir/openssl.log"
  {
    openssl req -x509 "${newkey[@]}" -nodes -days "$days" -subj "/CN=Privacy Plane throwaway CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req "${newkey[@]}" -nodes -subj "/CN=$cn" -keyout "$dir/server.key" -out "$dir/server.csr"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -days "$days" -out "$dir/server.pem" -extfile <(printf '%s\n' \
        "subjectAltName=$san" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,$usage" "extendedKeyUsage=serverAuth" \
        "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer")
  } >"$log" 2>&1 || { cat "$log" >&2; return 1; }
  rm -f "$dir/server.csr" "$dir/ca.srl"
}

# The CA and the server certificate (kept while both exist; `down --purge` removes them).
tls_certs() {
  command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install -y openssl)"
  mkdir -p "$CERTS" "$SECRETS"
  chmod 755 "$CERTS"
  chmod 700 "$SECRETS"
  local f
  for f in "$SASL_PASSWORD_FILE" "$SASL_BROKER_PASSWORD_FILE"; do
    [[ -s "$f" ]] || (umask 077 && _random_hex >"$f")
  done
  if [[ -s "$CA_PEM" && -s "$SERVER_PEM" && -s "$SERVER_KEY" && -s "$KAFKA_KEYSTORE" ]]; then
    return 0
  fi
  say "making a throwaway CA and a server certificate (localhost, 127.0.0.1) in $CERTS"
  tls_ca_and_server "$CERTS" "DNS:localhost,IP:127.0.0.1" 30 rsa ||
    die "openssl could not make the certificates"
  # Kafka reads a PEM key store: the private key (PKCS#8, unencrypted) then the chain.
  (umask 077 && cat "$SERVER_KEY" "$SERVER_PEM" >"$KAFKA_KEYSTORE")
  chmod 600 "$CERTS/ca.key" "$SERVER_KEY"
  chmod 644 "$CA_PEM" "$SERVER_PEM"
}

# server.properties lines for the SASL_SSL listener (replaces the PLAINTEXT ones).
tls_kafka_listeners() {
  local broker_password
  broker_password=$(<"$SASL_BROKER_PASSWORD_FILE")
  cat <<EOF
listeners=SASL_SSL://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_SSL://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=$SASL_MECHANISM
sasl.mechanism.inter.broker.protocol=$SASL_MECHANISM
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$SASL_BROKER_USER" password="$broker_password";
ssl.keystore.type=PEM
ssl.keystore.location=$KAFKA_KEYSTORE
ssl.truststore.type=PEM
ssl.truststore.location=$CA_PEM
ssl.endpoint.identification.algorithm=https
EOF
}

# StorageTool arguments that create the SCRAM users with the metadata (KRaft).
tls_scram_args() {
  printf '%s\n' --add-scram "$SASL_MECHANISM=[name=$SASL_BROKER_USER,password=$(<"$SASL_BROKER_PASSWORD_FILE")]" \
    --add-scram "$SASL_MECHANISM=[name=$SASL_USER,password=$(<"$SASL_PASSWORD_FILE")]"
}

# PostgreSQL: the server certificate in the data folder (owned by the server's user) and a
# pg_hba.conf that takes TCP connections only over TLS.
tls_pg_config() {
  as_pg cp "$SERVER_PEM" "$PG_DATA/server.crt"
  if is_root; then
    install -m 600 -o postgres -g postgres "$SERVER_KEY" "$PG_DATA/server.key"
  else
    install -m 600 "$SERVER_KEY" "$PG_DATA/server.key"
  fi
  as_pg tee "$PG_DATA/pg_hba.conf" >/dev/null <<EOF
# Generated by deploy/local/up --tls — edits are overwritten.
local     all  all                 trust
hostssl   all  all  127.0.0.1/32   scram-sha-256
hostnossl all  all  all            reject
EOF
  as_pg tee -a "$PG_DATA/privacy_plane.conf" >/dev/null <<EOF
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
EOF
}

# The env file's TLS lines: unprefixed for the CLI and topics_cli, prefixed (CONSENT_…) for
# the services (see deploy/local/README.md).
tls_env_lines() {
  printf '%s\n' \
    "KAFKA__SECURITY_PROTOCOL=SASL_SSL" \
    "KAFKA__SASL_MECHANISM=$SASL_MECHANISM" \
    "KAFKA__SASL_USERNAME=$SASL_USER" \
    "KAFKA__SASL_PASSWORD_FILE=$SASL_PASSWORD_FILE" \
    "KAFKA__SSL_CAFILE=$CA_PEM" \
    "DATABASE_SSLMODE=verify-full" \
    "DATABASE_SSLROOTCERT=$CA_PEM" \
    "HTTP_TLS_CERTFILE=$SERVER_PEM" \
    "HTTP_TLS_KEYFILE=$SERVER_KEY" \
    "HTTP_CAFILE=$CA_PEM"
}
