#!/usr/bin/env bash
# Local development stack: RabbitMQ and PostgreSQL as plain local processes
# (no Docker, no systemd). Safe to run repeatedly.
#
#   scripts/stack.sh [up]    install if missing, configure, start, wait until ready
#   scripts/stack.sh down    stop both services
#   scripts/stack.sh status  print whether each service is up (exit 0 if both are, 3 if not)
#
# Endpoints once up:
#   AMQP           amqp://guest:guest@127.0.0.1:5672/%2f
#   AMQP over TLS  amqps://guest:guest@localhost:5671/%2f  (CA: /etc/msgkit/tls/ca.pem)
#   Management UI  http://127.0.0.1:15672  (guest/guest)
#   PostgreSQL     postgres://postgres@127.0.0.1:5432/msgkit  (TLS too: sslmode=verify-full)
#
# Installing packages, editing /etc and starting/stopping the services need root; when
# everything is already up and configured, `up` and `status` work for any user.
set -euo pipefail
set -o errtrace # the ERR trap below also fires inside functions

readonly AMQP_PORT=5672
readonly MGMT_PORT=15672
readonly PROM_PORT=15692
readonly PG_PORT=5432
readonly DB_NAME=msgkit
readonly RABBIT_ETC=/etc/rabbitmq
readonly RABBIT_LOG_DIR=/var/log/rabbitmq
readonly PG_LOG_DIR=/var/log/postgresql
readonly RABBIT_PLUGINS=(rabbitmq_management rabbitmq_prometheus)
readonly RABBIT_READY_TIMEOUT=90
readonly PG_READY_TIMEOUT=60
readonly HBA_BEGIN='# BEGIN msgkit local stack (scripts/stack.sh): passwordless loopback access'
readonly HBA_END='# END msgkit local stack'

readonly AMQP_URL_SHOWN='amqp://guest:guest@127.0.0.1:5672/%2f'
readonly MGMT_URL_SHOWN='http://127.0.0.1:15672'
readonly PG_URL_SHOWN="postgres://postgres@127.0.0.1:5432/${DB_NAME}"

# The RabbitMQ and PostgreSQL admin tools live in sbin, which is not on a normal user's PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# Our psql calls must not pick up a caller's libpq settings.
unset PGPASSWORD PGSERVICE PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGOPTIONS

SELF="$0"
COMMAND=up
TMP_DIR=""
REMOVE_POLICY_RC=""

say() { printf 'stack: %s\n' "$*"; }

# die REASON [HINT...]: one line saying what failed, then where to look.
die() {
    printf 'stack: error: %s\n' "$1" >&2
    shift
    local hint
    for hint in "$@"; do printf 'stack:        %s\n' "$hint" >&2; done
    exit 1
}

on_err() {
    local rc=$1 line=$2 cmd=$3
    # Inside $(...) the caller decides what a failure means.
    [[ "$BASHPID" == "$$" ]] || return 0
    trap - ERR
    printf 'stack: error: command failed (exit %s) at %s line %s: %s\n' "$rc" "$SELF" "$line" "$cmd" >&2
    printf 'stack:        logs: %s (RabbitMQ), %s (PostgreSQL)\n' "$RABBIT_LOG_DIR" "$PG_LOG_DIR" >&2
    exit "$rc"
}
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

cleanup() {
    [[ -n "$REMOVE_POLICY_RC" ]] && rm -f /usr/sbin/policy-rc.d
    [[ -n "$TMP_DIR" ]] && rm -rf "$TMP_DIR"
    return 0
}
trap cleanup EXIT

is_root() { [[ $(id -u) -eq 0 ]]; }

# require_root WHAT: stop with the command to run when a step needs root.
require_root() {
    is_root && return 0
    die "$1 needs root" "run: sudo $SELF $COMMAND"
}

# Called as $(tmp_file NAME), i.e. in a subshell: TMP_DIR is created up front by main.
tmp_file() { mktemp "$TMP_DIR/$1.XXXXXX"; }

# run_logged DESCRIPTION HINT CMD...: run quietly; on failure show the reason, the end of
# the command's output and where to look. Daemons started here must not inherit the lock
# fd (9), or they would hold the lock for as long as they live.
run_logged() {
    local desc=$1 hint=$2 out rc=0
    shift 2
    out=$(tmp_file out)
    "$@" </dev/null >"$out" 2>&1 9>&- || rc=$?
    if ((rc != 0)); then
        printf 'stack: error: %s failed (exit %s): %s\n' "$desc" "$rc" "$*" >&2
        tail -n 15 "$out" | sed 's/^/stack:   | /' >&2
        printf 'stack:        %s\n' "$hint" >&2
        exit 1
    fi
}

# shellcheck disable=SC2016 # $1 is expanded by the inner bash
tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# wait_for SECONDS DESCRIPTION HINT CHECK...: poll CHECK every 0.5 s until it succeeds.
wait_for() {
    local timeout=$1 desc=$2 hint=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            die "$desc did not become ready within ${timeout}s" "$hint"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------------------

rabbit_installed() { command -v rabbitmq-server >/dev/null && command -v rabbitmqctl >/dev/null; }

pg_installed() {
    command -v pg_ctlcluster >/dev/null && command -v pg_isready >/dev/null && command -v psql >/dev/null &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

ensure_installed() {
    local pkgs=()
    rabbit_installed || pkgs+=(rabbitmq-server)
    pg_installed || pkgs+=(postgresql)
    command -v curl >/dev/null || pkgs+=(curl)
    ((${#pkgs[@]} == 0)) && return 0

    if ! is_root; then
        die "not installed: ${pkgs[*]}" \
            "run: sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${pkgs[*]}" \
            "(or run: sudo $SELF up)"
    fi
    say "installing ${pkgs[*]} (apt-get) ..."
    # There is no init system: keep the packages' maintainer scripts from trying to start
    # the services (we start them ourselves below).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        REMOVE_POLICY_RC=1
    fi
    run_logged "apt-get update" "check network access to the Debian mirrors" apt-get update
    run_logged "installing ${pkgs[*]}" "see /var/log/apt/term.log" \
        env DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}"
    if [[ -n "$REMOVE_POLICY_RC" ]]; then
        rm -f /usr/sbin/policy-rc.d
        REMOVE_POLICY_RC=""
    fi
    rabbit_installed || die "rabbitmq-server is still missing after apt-get install"
    pg_installed || die "postgresql is still missing after apt-get install"
}

# ---------------------------------------------------------------------------------------
# RabbitMQ
# ---------------------------------------------------------------------------------------

# Uncommented setting KEY present in FILE (KEY is an extended regex).
has_setting() { [[ -f "$2" ]] && grep -Eq "^[[:space:]]*$1" "$2"; }

# shellcheck source=scripts/stack-tls.sh
source "$(dirname "${BASH_SOURCE[0]}")/stack-tls.sh"

rabbit_env_ok() { has_setting '(export[[:space:]]+)?(RABBITMQ_)?NODENAME=' "$RABBIT_ETC/rabbitmq-env.conf"; }
rabbit_listener_ok() { has_setting 'listeners\.tcp[.[:space:]=]' "$RABBIT_ETC/rabbitmq.conf"; }
rabbit_mgmt_conf_ok() { has_setting 'management\.tcp\.(ip|port)' "$RABBIT_ETC/rabbitmq.conf"; }
rabbit_prom_conf_ok() { has_setting 'prometheus\.tcp\.(ip|port)' "$RABBIT_ETC/rabbitmq.conf"; }

rabbit_plugins_file_ok() {
    local file=$RABBIT_ETC/enabled_plugins plugin
    [[ -f "$file" ]] || return 1
    for plugin in "${RABBIT_PLUGINS[@]}"; do
        grep -Eq "(^|[^a-z_])${plugin}([^a-z_]|$)" "$file" || return 1
    done
}

append_line() { # FILE LINE
    local file=$1 line=$2
    if [[ -s "$file" && -n "$(tail -c 1 "$file")" ]]; then printf '\n' >>"$file"; fi
    printf '%s\n' "$line" >>"$file"
}

# Files in /etc/rabbitmq: the node name must not depend on DNS, AMQP listens on loopback.
write_rabbit_base_config() {
    install -d -m 755 "$RABBIT_ETC"
    if ! rabbit_env_ok; then
        say "rabbitmq: setting NODENAME=rabbit@localhost in $RABBIT_ETC/rabbitmq-env.conf"
        append_line "$RABBIT_ETC/rabbitmq-env.conf" "NODENAME=rabbit@localhost"
    fi
    if ! rabbit_listener_ok; then
        say "rabbitmq: AMQP listener 127.0.0.1:$AMQP_PORT in $RABBIT_ETC/rabbitmq.conf"
        append_line "$RABBIT_ETC/rabbitmq.conf" "listeners.tcp.local = 127.0.0.1:$AMQP_PORT"
    fi
    rabbit_tls_conf_ok || write_rabbit_tls_config
}

# The plugins' HTTP listeners on loopback. Only written once the plugins are enabled:
# RabbitMQ refuses to boot with settings of a plugin that is not enabled.
write_rabbit_plugin_config() {
    if ! rabbit_mgmt_conf_ok; then
        say "rabbitmq: management listener 127.0.0.1:$MGMT_PORT in $RABBIT_ETC/rabbitmq.conf"
        append_line "$RABBIT_ETC/rabbitmq.conf" "management.tcp.ip = 127.0.0.1"
        append_line "$RABBIT_ETC/rabbitmq.conf" "management.tcp.port = $MGMT_PORT"
    fi
    if ! rabbit_prom_conf_ok; then
        say "rabbitmq: prometheus listener 127.0.0.1:$PROM_PORT in $RABBIT_ETC/rabbitmq.conf"
        append_line "$RABBIT_ETC/rabbitmq.conf" "prometheus.tcp.ip = 127.0.0.1"
        append_line "$RABBIT_ETC/rabbitmq.conf" "prometheus.tcp.port = $PROM_PORT"
    fi
}

# The main node's own VM, found through its pid file: other nodes of the rabbitmq user (the
# failover test's cluster, scripts/rabbitmq-cluster.sh) must not count.
readonly RABBIT_PID_FILE=/var/lib/rabbitmq/mnesia/rabbit@localhost.pid
rabbit_beam_running() {
    local pid
    pid=$(cat "$RABBIT_PID_FILE" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == beam.smp ]]
}
rabbit_ping() { rabbitmq-diagnostics -q ping </dev/null >/dev/null 2>&1 9>&-; }
rabbit_mgmt_ok() {
    curl -fsS -m 3 -o /dev/null -u guest:guest "http://127.0.0.1:$MGMT_PORT/api/overview" 2>/dev/null
}
# Any HTTP answer counts as listening; whether guest/guest works is checked separately.
rabbit_mgmt_listening() {
    local code
    code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MGMT_PORT/api/overview" 2>/dev/null || true)
    [[ -n "$code" && "$code" != 000 ]]
}
rabbit_ready() { tcp_open "$AMQP_PORT" && tcp_open "$AMQPS_PORT" && rabbit_mgmt_listening; }

rabbit_wait_ready() {
    local deadline=$((SECONDS + RABBIT_READY_TIMEOUT)) started=$SECONDS
    until rabbit_ready; do
        if ((SECONDS >= deadline)); then
            die "rabbitmq did not become ready within ${RABBIT_READY_TIMEOUT}s (AMQP 127.0.0.1:$AMQP_PORT + management API)" \
                "see $RABBIT_LOG_DIR/ (rabbit@localhost.log, startup_err)"
        fi
        # Fail fast when the VM died during boot instead of waiting out the deadline.
        if ((SECONDS - started > 5)) && is_root && ! rabbit_beam_running; then
            die "rabbitmq exited during start-up" "see $RABBIT_LOG_DIR/ (rabbit@localhost.log, startup_err)"
        fi
        sleep 0.5
    done
}

rabbit_start() {
    require_root "starting rabbitmq"
    say "starting rabbitmq ..."
    local log=$RABBIT_LOG_DIR/startup_log err=$RABBIT_LOG_DIR/startup_err
    install -d -o rabbitmq -g rabbitmq -m 755 "$RABBIT_LOG_DIR"
    : >"$log"
    : >"$err"
    chown rabbitmq:rabbitmq "$log" "$err"
    # The Debian wrapper switches to the rabbitmq user. -detached returns once the VM forked.
    if ! rabbitmq-server -detached </dev/null >"$log" 2>"$err" 9>&-; then
        die "rabbitmq-server -detached failed" "see $err and $RABBIT_LOG_DIR/"
    fi
    rabbit_wait_ready
}

rabbit_stop() {
    require_root "stopping rabbitmq"
    say "stopping rabbitmq ..."
    run_logged "rabbitmqctl stop" "see $RABBIT_LOG_DIR/" rabbitmqctl stop
    wait_for 60 "rabbitmq shutdown" "see $RABBIT_LOG_DIR/" rabbit_stopped
}
rabbit_stopped() { ! tcp_open "$AMQP_PORT" && ! rabbit_beam_running; }

# guest/guest must exist and be an administrator with full rights on vhost "/".
rabbit_ensure_guest() {
    local whoami perms_ok=""
    whoami=$(curl -fsS -m 3 -u guest:guest "http://127.0.0.1:$MGMT_PORT/api/whoami" 2>/dev/null || true)
    if curl -fsS -m 3 -o /dev/null -u guest:guest "http://127.0.0.1:$MGMT_PORT/api/permissions/%2F/guest" 2>/dev/null; then
        perms_ok=1
    fi
    if [[ "$whoami" == *administrator* && -n "$perms_ok" ]]; then
        return 0
    fi
    require_root "setting up the rabbitmq user guest"
    say "rabbitmq: making guest/guest an administrator with full rights on vhost /"
    local hint="see $RABBIT_LOG_DIR/"
    if ! rabbitmqctl -q list_users </dev/null 2>/dev/null 9>&- | awk '$1 == "guest" {f = 1} END {exit !f}'; then
        run_logged "adding user guest" "$hint" rabbitmqctl add_user guest guest
    else
        run_logged "resetting the guest password" "$hint" rabbitmqctl change_password guest guest
    fi
    run_logged "tagging guest" "$hint" rabbitmqctl set_user_tags guest administrator
    run_logged "granting guest access to /" "$hint" rabbitmqctl set_permissions -p / guest '.*' '.*' '.*'
    rabbit_mgmt_ok || die "management API still refuses guest/guest" "$hint"
}

rabbit_up() {
    local running=""
    if tcp_open "$AMQP_PORT"; then
        running=1
    elif is_root && { rabbit_beam_running || rabbit_ping; }; then
        running=1 # still booting (or its listener is down); handled by the wait below
    fi

    # Node name, listener and certificate changes only apply at boot: restart a running node.
    if ! rabbit_env_ok || ! rabbit_listener_ok || ! rabbit_tls_conf_ok || rabbit_tls_stale; then
        require_root "configuring rabbitmq ($RABBIT_ETC)"
        if [[ -n "$running" ]]; then
            say "rabbitmq: configuration changes need a restart"
            rabbit_stop
            running=""
        fi
        write_rabbit_base_config
    fi

    if [[ -z "$running" ]]; then
        require_root "starting rabbitmq"
        if ! rabbit_plugins_file_ok; then
            say "rabbitmq: enabling plugins ${RABBIT_PLUGINS[*]} (offline)"
            run_logged "rabbitmq-plugins enable --offline" "see $RABBIT_LOG_DIR/" \
                rabbitmq-plugins enable --offline "${RABBIT_PLUGINS[@]}"
        fi
        write_rabbit_plugin_config
        rabbit_start
    else
        if ! rabbit_plugins_file_ok || ! rabbit_mgmt_conf_ok || ! rabbit_prom_conf_ok ||
            ! rabbit_mgmt_listening || ! tcp_open "$PROM_PORT"; then
            # Not yet booted? Give it a chance before enabling anything online.
            if ! tcp_open "$AMQP_PORT"; then
                say "rabbitmq is starting; waiting ..."
                wait_for "$RABBIT_READY_TIMEOUT" "rabbitmq AMQP port 127.0.0.1:$AMQP_PORT" \
                    "see $RABBIT_LOG_DIR/ (rabbit@localhost.log)" tcp_open "$AMQP_PORT"
            fi
        fi
        if ! rabbit_plugins_file_ok || ! rabbit_mgmt_conf_ok || ! rabbit_prom_conf_ok ||
            ! rabbit_mgmt_listening || ! tcp_open "$PROM_PORT"; then
            require_root "enabling rabbitmq plugins"
            if ! rabbit_mgmt_conf_ok || ! rabbit_prom_conf_ok; then
                write_rabbit_plugin_config
                say "rabbitmq: note: the HTTP listeners bind to loopback only from the next restart ($SELF down && $SELF up)"
            fi
            say "rabbitmq: enabling plugins ${RABBIT_PLUGINS[*]}"
            run_logged "rabbitmq-plugins enable" "see $RABBIT_LOG_DIR/" \
                rabbitmq-plugins enable "${RABBIT_PLUGINS[@]}"
        fi
        if rabbit_ready; then
            say "rabbitmq already running"
        else
            say "waiting for rabbitmq ..."
            rabbit_wait_ready
        fi
    fi
    rabbit_ensure_guest
    rabbit_heal_dead_letter_supervisor
}

# RabbitMQ (3.10 up to at least 4.2, rabbitmq-server#16652) can lose the supervisor of its
# at-least-once dead-letter workers for good, after which every quorum queue using that
# strategy (all of the kit's) fails until the node restarts. Detect it and restart the app.
rabbit_heal_dead_letter_supervisor() {
    is_root || return 0
    local alive
    alive=$(rabbitmqctl -q eval 'is_pid(whereis(rabbit_fifo_dlx_sup)).' </dev/null 2>/dev/null 9>&-) || return 0
    [[ "$alive" == "false" ]] || return 0
    say "rabbitmq: its dead-letter worker supervisor has died (rabbitmq-server#16652); restarting the rabbit app ..."
    run_logged "rabbitmqctl stop_app" "see $RABBIT_LOG_DIR/" rabbitmqctl stop_app
    run_logged "rabbitmqctl start_app" "see $RABBIT_LOG_DIR/" rabbitmqctl start_app
    rabbit_wait_ready
}

# ---------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------

PG_VERSION=""

pg_pick_version() {
    local v
    # Prefer the newest version that has a "main" cluster, else the newest installed server.
    v=$(find /etc/postgresql -mindepth 2 -maxdepth 2 -name main -type d 2>/dev/null |
        awk -F/ '{print $4}' | sort -V | tail -n 1 || true)
    if [[ -z "$v" ]]; then
        v=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | awk -F/ '{print $5}' | sort -V | tail -n 1 || true)
    fi
    [[ -n "$v" ]] || die "no PostgreSQL server version found under /usr/lib/postgresql"
    PG_VERSION=$v
}

pg_conf_dir() { printf '/etc/postgresql/%s/main' "$PG_VERSION"; }
pg_log_hint() { printf 'see %s/postgresql-%s-main.log' "$PG_LOG_DIR" "$PG_VERSION"; }

pg_psql() { # SQL -> unaligned tuples-only output
    psql -X -w -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -At -c "$1" </dev/null
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 2 </dev/null >/dev/null 2>&1; }
pg_process_running() { pg_ctlcluster "$PG_VERSION" main status </dev/null >/dev/null 2>&1; }

# Lists the connection kinds (local, v4, v6) whose first matching pg_hba rule is not
# "trust". Deliberately conservative: a rule that *might* match counts as matching.
pg_hba_untrusted() {
    awk '
        function check(kind, method) {
            if (!(kind in seen)) { seen[kind] = 1; if (method != "trust") bad[kind] = 1 }
        }
        {
            sub(/#.*/, "")
            if (NF == 0 || $1 ~ /^include/) next
            if ($2 == "replication") next
            if ($1 == "local") { check("local", $4); next }
            if ($1 !~ /^host/) next
            addr = $4
            method = ($4 ~ /^[0-9.]+$/ || ($4 ~ /:/ && $4 !~ /\//)) ? $6 : $5
            if (addr ~ /:/) { check("v6", method) }
            else if (addr ~ /^[0-9.]+(\/[0-9]+)?$/) { check("v4", method) }
            else { check("v4", method); check("v6", method) }
        }
        END {
            n = split("local v4 v6", kinds, " ")
            for (i = 1; i <= n; i++) if (!(kinds[i] in seen) || (kinds[i] in bad)) print kinds[i]
        }' "$1"
}

# Sets HBA_CHANGED when pg_hba.conf was edited.
HBA_CHANGED=""
pg_fix_hba() {
    local hba untrusted
    hba="$(pg_conf_dir)/pg_hba.conf"
    [[ -f "$hba" ]] || die "missing $hba"
    # Only root and postgres may read it; otherwise the connection check below has to do.
    [[ -r "$hba" ]] || return 0
    untrusted=$(pg_hba_untrusted "$hba" | tr '\n' ' ')
    [[ -n "$untrusted" ]] || return 0
    if grep -qF "$HBA_BEGIN" "$hba"; then
        die "pg_hba.conf has the msgkit block but is still not trust for: $untrusted" \
            "edit $hba so that the msgkit block comes before the other rules"
    fi
    require_root "editing $hba"
    say "postgresql: trusting loopback connections in $hba (${untrusted% })"
    local new
    new=$(tmp_file pg_hba)
    # Insert our block before the first rule; first match wins in pg_hba.conf.
    awk -v begin="$HBA_BEGIN" -v end="$HBA_END" '
        function block() {
            print begin
            print "local   all   all                  trust"
            print "host    all   all   127.0.0.1/32   trust"
            print "host    all   all   ::1/128        trust"
            print end
            print ""
            done = 1
        }
        !done { line = $0; sub(/#.*/, "", line); if (line ~ /[^[:space:]]/) block() }
        { print }
        END { if (!done) block() }' "$hba" >"$new"
    cat "$new" >"$hba" # keep the file's owner and mode
    HBA_CHANGED=1
}

pg_start() {
    require_root "starting postgresql"
    say "starting postgresql $PG_VERSION/main ..."
    # The socket directory lives on /run, which may be empty after a reboot.
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    run_logged "pg_ctlcluster $PG_VERSION main start" "$(pg_log_hint)" \
        pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start
}

pg_up() {
    pg_pick_version
    if [[ ! -f "$(pg_conf_dir)/postgresql.conf" ]]; then
        require_root "creating the postgresql cluster $PG_VERSION/main"
        say "postgresql: creating cluster $PG_VERSION/main"
        run_logged "pg_createcluster $PG_VERSION main" "see $PG_LOG_DIR/" \
            pg_createcluster "$PG_VERSION" main
    fi

    local port
    port=$(pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" '$1 == v && $2 == "main" {print $3}' || true)
    if [[ -n "$port" && "$port" != "$PG_PORT" ]]; then
        die "cluster $PG_VERSION/main is configured for port $port, expected $PG_PORT" \
            "set port = $PG_PORT in $(pg_conf_dir)/postgresql.conf"
    fi

    pg_fix_hba

    if pg_ready; then
        say "postgresql already running"
        if [[ -n "$HBA_CHANGED" ]]; then
            require_root "reloading postgresql"
            run_logged "pg_ctlcluster reload" "$(pg_log_hint)" \
                pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main reload
        fi
    elif is_root && pg_process_running; then
        say "postgresql is starting; waiting ..."
        [[ -z "$HBA_CHANGED" ]] || run_logged "pg_ctlcluster reload" "$(pg_log_hint)" \
            pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main reload
    else
        pg_start
    fi
    wait_for "$PG_READY_TIMEOUT" "postgresql on 127.0.0.1:$PG_PORT" "$(pg_log_hint)" pg_ready

    local max
    max=$(pg_psql 'show max_connections') ||
        die "cannot connect as postgres to 127.0.0.1:$PG_PORT" "$(pg_log_hint); check $(pg_conf_dir)/pg_hba.conf"
    if ((max < 300)); then
        require_root "raising postgresql max_connections"
        say "postgresql: max_connections $max -> 300 (restart)"
        pg_psql 'alter system set max_connections = 300' >/dev/null
        run_logged "pg_ctlcluster restart" "$(pg_log_hint)" \
            pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main restart
        wait_for "$PG_READY_TIMEOUT" "postgresql on 127.0.0.1:$PG_PORT" "$(pg_log_hint)" pg_ready
    fi

    if [[ -z "$(pg_psql "select 1 from pg_database where datname = '$DB_NAME'")" ]]; then
        say "postgresql: creating database $DB_NAME"
        # A concurrent run may have created it meanwhile: only fail if it is still missing.
        pg_psql "create database $DB_NAME owner postgres" >/dev/null 2>&1 ||
            [[ -n "$(pg_psql "select 1 from pg_database where datname = '$DB_NAME'")" ]] ||
            die "could not create database $DB_NAME" "$(pg_log_hint)"
    fi
}

pg_down() {
    pg_installed || { say "postgresql not installed"; return 0; }
    pg_pick_version
    if [[ ! -f "$(pg_conf_dir)/postgresql.conf" ]]; then
        say "postgresql: no cluster $PG_VERSION/main"
        return 0
    fi
    if is_root; then
        if pg_process_running; then
            say "stopping postgresql $PG_VERSION/main ..."
            run_logged "pg_ctlcluster stop" "$(pg_log_hint)" \
                pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main stop
        else
            say "postgresql already stopped"
        fi
    elif pg_ready; then
        require_root "stopping postgresql"
    else
        say "postgresql already stopped"
    fi
}

rabbit_down() {
    rabbit_installed || { say "rabbitmq not installed"; return 0; }
    if tcp_open "$AMQP_PORT" || { is_root && { rabbit_beam_running || rabbit_ping; }; }; then
        rabbit_stop
    else
        say "rabbitmq already stopped"
    fi
}

# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------

take_lock() {
    # Two concurrent runs (say `make test` and `make run`) would otherwise race.
    local lock
    lock="${TMPDIR:-/tmp}/msgkit-stack.$(id -u).lock"
    exec 9>"$lock"
    flock -w 300 9 || die "another scripts/stack.sh is still running (lock $lock)"
}

cmd_up() {
    take_lock
    ensure_installed
    tls_ensure
    rabbit_up
    pg_up
    pg_tls_ensure
    say "ready"
    printf '  AMQP           %s\n' "$AMQP_URL_SHOWN"
    printf '  AMQP over TLS  amqps://guest:guest@localhost:%s/%%2f  (CA %s/ca.pem)\n' "$AMQPS_PORT" "$TLS_DIR"
    printf '  Management UI  %s  (guest/guest)\n' "$MGMT_URL_SHOWN"
    printf '  PostgreSQL     %s\n' "$PG_URL_SHOWN"
}

cmd_down() {
    take_lock
    rabbit_down
    pg_down
    say "stopped"
}

cmd_status() {
    local all_up=1
    if tcp_open "$AMQP_PORT" && rabbit_mgmt_ok; then
        say "rabbitmq:   up    (AMQP 127.0.0.1:$AMQP_PORT, management $MGMT_URL_SHOWN)"
    elif tcp_open "$AMQP_PORT"; then
        say "rabbitmq:   up    (AMQP 127.0.0.1:$AMQP_PORT), but the management API is not answering"
        all_up=""
    else
        say "rabbitmq:   down"
        all_up=""
    fi
    if command -v pg_isready >/dev/null && pg_ready; then
        say "postgresql: up    (127.0.0.1:$PG_PORT)"
    else
        say "postgresql: down"
        all_up=""
    fi
    [[ -n "$all_up" ]] || exit 3
}

usage() { # EXIT_CODE
    printf 'usage: %s [up|down|status]   (default: up)\n' "$SELF" >&2
    exit "$1"
}

main() {
    (($# <= 1)) || usage 2
    TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/msgkit-stack.XXXXXX")
    COMMAND=${1:-up}
    case "$COMMAND" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    -h | --help | help) usage 0 ;;
    *) usage 2 ;;
    esac
}

main "$@"
