#!/bin/sh
# Development TLS material for docker-compose.yml: a CA and a server certificate that RabbitMQ
# and PostgreSQL both present, written into OUT_DIR (the compose `tls` volume) only when what
# is there is missing, about to expire, not signed by ca.pem, or does not name every server
# name. Run by the one-shot compose service `tls-certs`; also runs as a plain script:
#
#   deploy/tls/make-certs.sh OUT_DIR
#
# OUT_DIR afterwards:
#   ca.pem                 the CA the services trust (AMQP_TLS_CA_CERT_FILE, sslrootcert)
#   server.pem             the servers' certificate, SANs from TLS_SERVER_NAMES
#   rabbitmq/server.key    its key, a copy per server process, each owned by that process's
#   postgres/server.key    user with mode 0600 (PostgreSQL refuses a key others can read)
#
# The generated CA's key is thrown away once it has signed: nothing in the volume can issue
# another certificate, and a renewal simply makes a new CA (every service reads ca.pem from the
# same volume). To have your own CA sign instead, give its files (see deploy/README.md).
#
# Environment:
#   TLS_SERVER_NAMES     "rabbitmq postgres localhost 127.0.0.1": DNS names and IP addresses
#   TLS_DAYS             825: validity of what is generated
#   TLS_CA_CERT_FILE,
#   TLS_CA_KEY_FILE      your CA (PEM) to sign the server certificate; its certificate becomes
#                        ca.pem. Unset: a new development CA.
#   TLS_FORCE            1: generate even if what is there is fine
#   TLS_RABBITMQ_OWNER,
#   TLS_POSTGRES_OWNER   999:999 (the rabbitmq and postgres users of the official images);
#                        applied only when running as root

set -eu

OUT=${1:?usage: make-certs.sh OUT_DIR}
NAMES=${TLS_SERVER_NAMES:-rabbitmq postgres localhost 127.0.0.1}
DAYS=${TLS_DAYS:-825}
CA_CERT=${TLS_CA_CERT_FILE:-}
CA_KEY=${TLS_CA_KEY_FILE:-}
FORCE=${TLS_FORCE:-}
RABBITMQ_OWNER=${TLS_RABBITMQ_OWNER:-999:999}
POSTGRES_OWNER=${TLS_POSTGRES_OWNER:-999:999}
# Renew this long before expiry, so a stack started now keeps working for a while.
RENEW_SECONDS=$((30 * 86400))

say() { printf 'tls: %s\n' "$*"; }
die() { printf 'tls: error: %s\n' "$*" >&2; exit 1; }

command -v openssl >/dev/null 2>&1 || die "openssl is not installed"
if [ -n "$CA_CERT$CA_KEY" ] && { [ ! -r "$CA_CERT" ] || [ ! -r "$CA_KEY" ]; }; then
    die "TLS_CA_CERT_FILE and TLS_CA_KEY_FILE must both name readable files"
fi

# A command whose chatter on stderr is shown only when it fails.
quiet() {
    "$@" 2>"$work/stderr" || { cat "$work/stderr" >&2; die "failed: $*"; }
}

is_ip() { case $1 in *:* | *[!0-9.]* | '') return 1 ;; *) return 0 ;; esac; }

# Why OUT_DIR's material cannot be kept (printed), or nothing when it can.
stale_reason() {
    for f in ca.pem server.pem rabbitmq/server.key postgres/server.key; do
        [ -s "$OUT/$f" ] || { echo "$f is missing"; return; }
    done
    openssl verify -CAfile "$OUT/ca.pem" "$OUT/server.pem" >/dev/null 2>&1 ||
        { echo "server.pem is not signed by ca.pem"; return; }
    openssl x509 -checkend "$RENEW_SECONDS" -noout -in "$OUT/server.pem" >/dev/null 2>&1 ||
        { echo "server.pem expires within 30 days"; return; }
    openssl x509 -checkend "$RENEW_SECONDS" -noout -in "$OUT/ca.pem" >/dev/null 2>&1 ||
        { echo "ca.pem expires within 30 days"; return; }
    for name in $NAMES; do
        if is_ip "$name"; then check=-checkip; else check=-checkhost; fi
        openssl x509 -noout -in "$OUT/server.pem" "$check" "$name" 2>/dev/null | grep -q 'does match' ||
            { echo "server.pem does not name $name"; return; }
    done
    cert_key=$(openssl x509 -noout -pubkey -in "$OUT/server.pem")
    for key in rabbitmq/server.key postgres/server.key; do
        # Read as root or as the owner only; a key this user cannot read is taken as it is.
        [ -r "$OUT/$key" ] || continue
        [ "$(openssl pkey -pubout -in "$OUT/$key" 2>/dev/null)" = "$cert_key" ] ||
            { echo "$key is not server.pem's key"; return; }
    done
}

# A key readable by one server process only: FILE OWNER (uid:gid)
install_key() {
    cp "$1" "$2.tmp"
    chmod 600 "$2.tmp"
    if [ "$(id -u)" = 0 ]; then
        chown "$3" "$2.tmp"
    fi
    mv -f "$2.tmp" "$2"
}

generate() {
    work=$(mktemp -d "$OUT/.make-certs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    san=""
    for name in $NAMES; do
        if is_ip "$name"; then entry="IP:$name"; else entry="DNS:$name"; fi
        san="${san:+$san, }$entry"
    done
    first=${NAMES%% *}
    # A config of our own, so the result does not depend on the image's openssl.cnf.
    cat >"$work/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = msgkit compose development CA
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $san
EOF
    old_umask=$(umask)
    umask 077
    if [ -n "$CA_CERT" ]; then
        say "signing with the CA of $CA_CERT"
        cp "$CA_CERT" "$work/ca.pem"
        cp "$CA_KEY" "$work/ca.key"
    else
        say "creating a development CA (its key is not kept)"
        quiet openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days "$DAYS" \
            -config "$work/openssl.cnf" -extensions ca_ext \
            -keyout "$work/ca.key" -out "$work/ca.pem"
    fi
    quiet openssl req -new -newkey rsa:2048 -nodes -config "$work/openssl.cnf" -subj "/CN=$first" \
        -keyout "$work/server.key" -out "$work/server.csr"
    quiet openssl x509 -req -in "$work/server.csr" -sha256 -days "$DAYS" \
        -CA "$work/ca.pem" -CAkey "$work/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "$work/openssl.cnf" -extensions server_ext -out "$work/server.pem"
    umask "$old_umask"
    openssl verify -CAfile "$work/ca.pem" "$work/server.pem" >/dev/null ||
        die "the new server certificate does not verify against its CA"
    mkdir -p "$OUT/rabbitmq" "$OUT/postgres"
    install_key "$work/server.key" "$OUT/rabbitmq/server.key" "$RABBITMQ_OWNER"
    install_key "$work/server.key" "$OUT/postgres/server.key" "$POSTGRES_OWNER"
    # The CA last: until then a reader still gets the old pair, never a CA without its server
    # certificate (no server runs while this does, but a rerun by hand may race one).
    chmod 644 "$work/server.pem" "$work/ca.pem"
    mv -f "$work/server.pem" "$OUT/server.pem"
    mv -f "$work/ca.pem" "$OUT/ca.pem"
    rm -rf "$work"
    trap - EXIT
}

mkdir -p "$OUT"
chmod 755 "$OUT"
reason=""
if [ -n "$FORCE" ]; then
    reason="TLS_FORCE is set"
else
    reason=$(stale_reason)
fi
if [ -n "$reason" ]; then
    say "generating into $OUT: $reason"
    generate
else
    say "keeping the certificates in $OUT"
fi

# Every run: a volume restored from elsewhere may have lost owners or modes.
chmod 755 "$OUT" "$OUT/rabbitmq" "$OUT/postgres"
chmod 644 "$OUT/ca.pem" "$OUT/server.pem"
chmod 600 "$OUT/rabbitmq/server.key" "$OUT/postgres/server.key"
if [ "$(id -u)" = 0 ]; then
    chown "$RABBITMQ_OWNER" "$OUT/rabbitmq/server.key"
    chown "$POSTGRES_OWNER" "$OUT/postgres/server.key"
else
    say "not root: the keys stay owned by uid $(id -u), not $RABBITMQ_OWNER / $POSTGRES_OWNER"
fi
say "server.pem for: $NAMES; expires $(openssl x509 -noout -enddate -in "$OUT/server.pem" | cut -d= -f2)"
say "ca.pem $(openssl x509 -noout -fingerprint -sha256 -in "$OUT/ca.pem")"
