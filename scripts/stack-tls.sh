# TLS for the local stack, sourced by scripts/stack.sh: a development CA, a server
# certificate for 127.0.0.1/localhost that RabbitMQ (a TLS listener on 5671 beside 5672) and
# PostgreSQL (ssl = on, same port) present, a client certificate for mutual TLS, and a second
# CA that signed nothing here (tests show a server certificate from another CA is refused).
# Always on, so that the tests of TLS never restart the stack.
#
# Files (TLS_DIR): ca.pem, server.pem, client.pem, client.key, other-ca.pem and
# other-client.pem/.key (a client certificate of the other CA); the server key
# in a copy per server process (rabbitmq/server.key, postgresql/server.key), each readable by
# that process's user only. The CA key stays in TLS_DIR/private. These are development
# credentials for a loopback stack, not for anything reachable from elsewhere.

readonly TLS_DIR=/etc/msgkit/tls
readonly AMQPS_PORT=5671
readonly TLS_DAYS=3650

tls_files_ok() {
    local f
    for f in ca.pem server.pem client.pem client.key other-ca.pem other-client.pem \
        other-client.key rabbitmq/server.key postgresql/server.key; do
        [[ -s "$TLS_DIR/$f" ]] || return 1
    done
    # A certificate about to expire is renewed (the CA's as well: it signed the others).
    openssl x509 -checkend $((30 * 86400)) -noout -in "$TLS_DIR/server.pem" >/dev/null 2>&1
}

# A key and a certificate signed by a CA of TLS_DIR: CA NAME SUBJECT [EXTENSIONS...]
tls_issue() {
    local ca=$1 name=$2 subject=$3 ext
    shift 3
    ext=$(tmp_file "$name-ext")
    printf '%s\n' "$@" >"$ext"
    openssl req -new -newkey rsa:2048 -nodes -subj "$subject" \
        -keyout "$TLS_DIR/private/$name.key" -out "$TLS_DIR/private/$name.csr" 2>/dev/null
    openssl x509 -req -in "$TLS_DIR/private/$name.csr" -days "$TLS_DAYS" -sha256 \
        -CA "$TLS_DIR/$ca.pem" -CAkey "$TLS_DIR/private/$ca.key" \
        -CAserial "$TLS_DIR/private/$ca.srl" -CAcreateserial \
        -extfile "$ext" -out "$TLS_DIR/$name.pem" 2>/dev/null
}

tls_generate() {
    require_root "creating the stack's TLS certificates ($TLS_DIR)"
    say "tls: creating a development CA and certificates in $TLS_DIR"
    install -d -m 755 "$TLS_DIR" "$TLS_DIR/rabbitmq" "$TLS_DIR/postgresql"
    install -d -m 700 "$TLS_DIR/private"
    openssl req -x509 -new -newkey rsa:2048 -nodes -days "$TLS_DAYS" -sha256 \
        -subj "/CN=msgkit local stack CA" -keyout "$TLS_DIR/private/ca.key" \
        -out "$TLS_DIR/ca.pem" 2>/dev/null
    tls_issue ca server "/CN=localhost" \
        "basicConstraints = CA:FALSE" "keyUsage = digitalSignature, keyEncipherment" \
        "extendedKeyUsage = serverAuth" "subjectAltName = DNS:localhost, IP:127.0.0.1"
    tls_issue ca client "/CN=msgkit-client" \
        "basicConstraints = CA:FALSE" "keyUsage = digitalSignature, keyEncipherment" \
        "extendedKeyUsage = clientAuth"
    # The client key is for the tests of whoever runs them: readable by all on this machine.
    install -m 644 "$TLS_DIR/private/client.key" "$TLS_DIR/client.key"
    install -m 600 -o rabbitmq -g rabbitmq "$TLS_DIR/private/server.key" "$TLS_DIR/rabbitmq/server.key"
    install -m 600 -o postgres -g postgres "$TLS_DIR/private/server.key" "$TLS_DIR/postgresql/server.key"
    openssl req -x509 -new -newkey rsa:2048 -nodes -days "$TLS_DAYS" -sha256 \
        -subj "/CN=some other CA" -keyout "$TLS_DIR/private/other-ca.key" \
        -out "$TLS_DIR/other-ca.pem" 2>/dev/null
    tls_issue other-ca other-client "/CN=msgkit-client" \
        "basicConstraints = CA:FALSE" "keyUsage = digitalSignature, keyEncipherment" \
        "extendedKeyUsage = clientAuth"
    install -m 644 "$TLS_DIR/private/other-client.key" "$TLS_DIR/other-client.key"
    chmod 644 "$TLS_DIR"/*.pem
}

tls_ensure() {
    tls_files_ok || tls_generate
}

# What a server presents on PORT (STARTTLS protocol, if any) and what it should, as SHA-256
# fingerprints: a server still presenting an older certificate (the files were renewed by a
# run that was interrupted before the restart) is restarted or reloaded.
tls_served_fingerprint() { # PORT [STARTTLS]
    local args=(-connect "127.0.0.1:$1" -servername localhost)
    [[ -z "${2:-}" ]] || args+=(-starttls "$2")
    timeout 5 openssl s_client "${args[@]}" </dev/null 2>/dev/null |
        openssl x509 -noout -fingerprint -sha256 2>/dev/null || true
}
tls_file_fingerprint() { openssl x509 -noout -fingerprint -sha256 -in "$TLS_DIR/server.pem"; }
tls_served_is_current() { [[ "$(tls_served_fingerprint "$@")" == "$(tls_file_fingerprint)" ]]; }

# A running RabbitMQ whose TLS listener presents another certificate than the file's.
rabbit_tls_stale() { tcp_open "$AMQPS_PORT" && ! tls_served_is_current "$AMQPS_PORT"; }

# RabbitMQ: the TLS listener's lines in rabbitmq.conf (read at boot only).
rabbit_tls_conf_ok() { has_setting 'listeners\.ssl\.' "$RABBIT_ETC/rabbitmq.conf"; }

write_rabbit_tls_config() {
    say "rabbitmq: TLS listener 127.0.0.1:$AMQPS_PORT in $RABBIT_ETC/rabbitmq.conf"
    append_line "$RABBIT_ETC/rabbitmq.conf" "listeners.ssl.local = 127.0.0.1:$AMQPS_PORT"
    append_line "$RABBIT_ETC/rabbitmq.conf" "ssl_options.cacertfile = $TLS_DIR/ca.pem"
    append_line "$RABBIT_ETC/rabbitmq.conf" "ssl_options.certfile = $TLS_DIR/server.pem"
    append_line "$RABBIT_ETC/rabbitmq.conf" "ssl_options.keyfile = $TLS_DIR/rabbitmq/server.key"
    # A client certificate is checked when one is presented, not required (passwords stay the
    # default way in; a deployment that wants mutual TLS sets this to true).
    append_line "$RABBIT_ETC/rabbitmq.conf" "ssl_options.verify = verify_peer"
    append_line "$RABBIT_ETC/rabbitmq.conf" "ssl_options.fail_if_no_peer_cert = false"
}

# PostgreSQL: ssl = on with the stack's certificate, applied by a reload (no restart).
pg_tls_ensure() {
    if tls_served_is_current "$PG_PORT" postgres; then
        return 0
    fi
    require_root "turning on postgresql's TLS"
    say "postgresql: ssl = on with $TLS_DIR/server.pem (reload)"
    pg_psql "alter system set ssl_cert_file = '$TLS_DIR/server.pem'" >/dev/null
    pg_psql "alter system set ssl_key_file = '$TLS_DIR/postgresql/server.key'" >/dev/null
    pg_psql "alter system set ssl_ca_file = '$TLS_DIR/ca.pem'" >/dev/null
    pg_psql "alter system set ssl = on" >/dev/null
    pg_psql "select pg_reload_conf()" >/dev/null
    wait_for 10 "postgresql to take ssl = on" "$(pg_log_hint)" \
        bash -c "[[ \$(psql -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -Atc 'show ssl') == on ]]"
}
