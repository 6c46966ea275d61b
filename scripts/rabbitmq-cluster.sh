#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, beside the main node rabbit@localhost (which
# it never touches): plain processes started with `rabbitmq-server -detached`, one data, log
# and config directory per node under /var/tmp/msgkit-cluster/. Safe to run repeatedly.
#
#   scripts/rabbitmq-cluster.sh up        start the missing nodes, join them, wait for 3 running
#   scripts/rabbitmq-cluster.sh down      stop the nodes and remove all their data
#   scripts/rabbitmq-cluster.sh status    nodes, pids, cluster membership (exit 0 if 3 running, 3 if not)
#   scripts/rabbitmq-cluster.sh pid NODE  the OS pid of NODE's VM (e.g. msgkit2@localhost)
#   scripts/rabbitmq-cluster.sh urls      the AMQP_URL list for the cluster's vhost "/"
#
# Nodes (N = 1, 2, 3):  msgkitN@localhost  AMQP 127.0.0.1:568N  management 127.0.0.1:1568N
#                       Erlang distribution 127.0.0.1:2568N (the main node has 25672)
# guest/guest works on loopback. Needs root (it runs the nodes as the rabbitmq user, with the
# main node's Erlang cookie in /var/lib/rabbitmq so rabbitmqctl reaches every node).
#
# Environment: MSGKIT_CLUSTER_DIR (default /var/tmp/msgkit-cluster),
# MSGKIT_CLUSTER_TIMEOUT (seconds per wait, default 90).
set -euo pipefail

readonly NODES=(1 2 3)
readonly BASE=${MSGKIT_CLUSTER_DIR:-/var/tmp/msgkit-cluster}
readonly TIMEOUT=${MSGKIT_CLUSTER_TIMEOUT:-90}
readonly RABBIT_HOME_DIR=/var/lib/rabbitmq
readonly RABBIT_BIN=/usr/lib/rabbitmq/bin
readonly SEED=msgkit1@localhost

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

say() { printf 'cluster: %s\n' "$*"; }
die() {
    printf 'cluster: error: %s\n' "$1" >&2
    shift
    local hint
    for hint in "$@"; do printf 'cluster:        %s\n' "$hint" >&2; done
    exit 1
}

node_name() { printf 'msgkit%s@localhost' "$1"; }
node_dir() { printf '%s/msgkit%s' "$BASE" "$1"; }
amqp_port() { printf '568%s' "$1"; }
mgmt_port() { printf '1568%s' "$1"; }
dist_port() { printf '2568%s' "$1"; }
log_hint() { printf 'see %s/log/%s.log and %s/startup.log' "$(node_dir "$1")" "$(node_name "$1")" "$(node_dir "$1")"; }

# shellcheck disable=SC2016 # $1 is expanded by the inner bash
tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# ctl NODE_INDEX ARGS...: rabbitmqctl against one node, as the rabbitmq user (its cookie).
ctl() {
    local n=$1
    shift
    runuser -u rabbitmq -- env HOME="$RABBIT_HOME_DIR" "$RABBIT_BIN/rabbitmqctl" -q -n "$(node_name "$n")" "$@" </dev/null 9>&-
}

# The OS pid of node N's VM from its pid file, only if that process is that node's VM.
pid_of() {
    local n=$1 file pid
    file="$(node_dir "$n")/pid"
    [[ -s "$file" ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == beam.smp ]] || return 1
    # The node name is not on the VM's command line (the boot sets it), but it is in the
    # environment we started it with.
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$(node_name "$n")" || return 1
    printf '%s\n' "$pid"
}

vm_running() { pid_of "$1" >/dev/null; }
app_running() { tcp_open "$(amqp_port "$1")" && ctl "$1" ping >/dev/null 2>&1; }

# Running nodes of the cluster as node N sees it, one per line.
running_nodes() {
    ctl "$1" cluster_status --formatter json 2>/dev/null |
        sed -n 's/.*"running_nodes":\[\([^]]*\)\].*/\1/p' | tr -d '"' | tr ',' '\n' | sed '/^$/d'
}
# Every member (running or not) of the cluster as node N sees it.
member_nodes() {
    ctl "$1" cluster_status --formatter json 2>/dev/null |
        sed -n 's/.*"disk_nodes":\[\([^]]*\)\].*/\1/p' | tr -d '"' | tr ',' '\n' | sed '/^$/d'
}
running_count() { running_nodes "$1" | wc -l; }

# wait_for SECONDS DESCRIPTION HINT CHECK...: poll CHECK every 0.5 s until it succeeds.
wait_for() {
    local timeout=$1 desc=$2 hint=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        ((SECONDS < deadline)) || die "$desc: not done within ${timeout}s" "$hint"
        sleep 0.5
    done
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "$1 needs root" "run: sudo $0 $COMMAND"
    if ! id rabbitmq >/dev/null 2>&1 || [[ ! -x "$RABBIT_BIN/rabbitmq-server" ]]; then
        die "RabbitMQ is not installed from the Debian package (no rabbitmq user or $RABBIT_BIN)" \
            "run scripts/stack.sh up first"
    fi
}

take_lock() {
    exec 9>"${TMPDIR:-/tmp}/msgkit-rabbitmq-cluster.lock"
    flock -w 300 9 || die "another scripts/rabbitmq-cluster.sh is still running"
}

write_node_config() {
    local n=$1 dir
    dir=$(node_dir "$n")
    install -d -o rabbitmq -g rabbitmq -m 755 "$BASE" "$dir" "$dir/mnesia" "$dir/log"
    # Our own env file, so the main node's /etc/rabbitmq/rabbitmq-env.conf (NODENAME) is not read.
    cat >"$dir/rabbitmq-env.conf" <<EOF
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$n")
EOF
    printf '[rabbitmq_management].\n' >"$dir/enabled_plugins"
    chown rabbitmq:rabbitmq "$dir/rabbitmq-env.conf" "$dir/rabbitmq.conf" "$dir/enabled_plugins"
}

start_node() {
    local n=$1 dir
    dir=$(node_dir "$n")
    write_node_config "$n"
    say "starting $(node_name "$n") (AMQP :$(amqp_port "$n"), management :$(mgmt_port "$n"), dist :$(dist_port "$n")) ..."
    # -detached returns once the VM has forked; the lock fd must not leak into the VM.
    (cd "$dir" && runuser -u rabbitmq -- env \
        HOME="$RABBIT_HOME_DIR" \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" \
        "$RABBIT_BIN/rabbitmq-server" -detached </dev/null >"$dir/startup.log" 2>&1 9>&-) ||
        die "rabbitmq-server -detached failed for $(node_name "$n")" "$(log_hint "$n")"
}

node_booted() {
    local n=$1
    app_running "$n" && return 0
    # A VM whose app was left stopped (a join interrupted half-way): start the app again.
    if [[ -z "${REPAIRED[$n]:-}" ]] && vm_running "$n" &&
        [[ "$(ctl "$n" eval 'rabbit:is_running() orelse rabbit:is_booting().' 2>/dev/null)" == false ]]; then
        REPAIRED[$n]=1
        say "$(node_name "$n"): the VM runs but the app is stopped; start_app ..."
        ctl "$n" start_app >>"$(node_dir "$n")/join.log" 2>&1 || true
    fi
    # Fail fast when the VM died during boot. (The pid file appears a moment after the fork.)
    if ((SECONDS - ${STARTED[$n]:-$SECONDS} > 10)) && ! vm_running "$n"; then
        die "$(node_name "$n") exited during start-up" "$(log_hint "$n")"
    fi
    return 1
}

# Make node N (2 or 3) a member of the seed's cluster if it is not one already. The CLI prints
# benign feature-flag warnings while joining: they go to the node's join.log.
join_node() {
    local n=$1 name log step
    name=$(node_name "$n")
    if member_nodes 1 | grep -qx "$name"; then
        return 0
    fi
    log="$(node_dir "$n")/join.log"
    say "joining $name to $SEED ..."
    # The node's data is ours and it is not a member: reset it before joining.
    for step in stop_app reset "join_cluster $SEED" start_app; do
        # shellcheck disable=SC2086 # step is one or two words
        if ! ctl "$n" $step >>"$log" 2>&1; then
            tail -n 15 "$log" | sed 's/^/cluster:   | /' >&2
            die "rabbitmqctl -n $name $step failed" "$(log_hint "$n"), $log"
        fi
    done
}

cluster_complete() { [[ $(running_count 1) -eq ${#NODES[@]} ]]; }

declare -A STARTED=() REPAIRED=()

cmd_up() {
    require_root "starting the cluster"
    take_lock
    local n started_any=""
    for n in "${NODES[@]}"; do
        if vm_running "$n"; then
            continue
        fi
        if tcp_open "$(amqp_port "$n")" || tcp_open "$(mgmt_port "$n")" || tcp_open "$(dist_port "$n")"; then
            die "port $(amqp_port "$n"), $(mgmt_port "$n") or $(dist_port "$n") is taken by another process" \
                "$(ss -ltnp 2>/dev/null | grep -E ":($(amqp_port "$n")|$(mgmt_port "$n")|$(dist_port "$n")) " || true)"
        fi
        STARTED[$n]=$SECONDS
        start_node "$n"
        started_any=1
    done
    for n in "${NODES[@]}"; do
        wait_for "$TIMEOUT" "$(node_name "$n") start-up" "$(log_hint "$n")" node_booted "$n"
    done
    [[ -n "$started_any" ]] && say "all three nodes are up"
    join_node 2
    join_node 3
    wait_for "$TIMEOUT" "3 running nodes in cluster_status of $SEED" "$(log_hint 1)" cluster_complete
    for n in "${NODES[@]}"; do
        wait_for "$TIMEOUT" "management API of $(node_name "$n")" "$(log_hint "$n")" \
            curl -fsS -m 3 -o /dev/null -u guest:guest "http://127.0.0.1:$(mgmt_port "$n")/api/overview"
    done
    say "ready: $(running_nodes 1 | tr '\n' ' ')"
    printf '  AMQP_URL=%s\n' "$(cmd_urls)"
    printf '  management  http://127.0.0.1:15681  (also :15682, :15683; guest/guest)\n'
}

stop_node() {
    local n=$1 name pid
    name=$(node_name "$n")
    pid=$(pid_of "$n" || true)
    if [[ -z "$pid" ]] && ! tcp_open "$(amqp_port "$n")"; then
        return 0
    fi
    say "stopping $name ..."
    if ! timeout 60 runuser -u rabbitmq -- env HOME="$RABBIT_HOME_DIR" "$RABBIT_BIN/rabbitmqctl" -q -n "$name" \
        shutdown </dev/null >/dev/null 2>&1 9>&-; then
        if [[ -n "$pid" ]]; then
            say "$name did not stop cleanly; killing pid $pid"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    if [[ -n "$pid" ]]; then
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.5
                break
            fi
            sleep 0.2
        done
    fi
}

cmd_down() {
    require_root "stopping the cluster"
    take_lock
    local n pids=()
    # In parallel: each graceful stop takes a few seconds.
    for n in "${NODES[@]}"; do
        stop_node "$n" &
        pids+=($!)
    done
    for n in "${pids[@]}"; do wait "$n" || true; done
    for n in "${NODES[@]}"; do
        if vm_running "$n"; then
            die "$(node_name "$n") is still running (pid $(pid_of "$n"))"
        fi
    done
    if [[ -d "$BASE" ]]; then
        rm -rf "$BASE"
        say "stopped; removed $BASE"
    else
        say "stopped (nothing in $BASE)"
    fi
}

cmd_status() {
    local n all=1 pid
    for n in "${NODES[@]}"; do
        pid=$(pid_of "$n" || true)
        if tcp_open "$(amqp_port "$n")"; then
            say "$(node_name "$n"): up    pid ${pid:-?}  AMQP 127.0.0.1:$(amqp_port "$n")  management http://127.0.0.1:$(mgmt_port "$n")"
        elif [[ -n "$pid" ]]; then
            say "$(node_name "$n"): VM running (pid $pid), AMQP not listening"
            all=""
        else
            say "$(node_name "$n"): down"
            all=""
        fi
    done
    if [[ $(id -u) -eq 0 ]] && tcp_open "$(amqp_port 1)"; then
        say "running nodes seen by $SEED: $(running_nodes 1 | tr '\n' ' ')"
        cluster_complete || all=""
    fi
    [[ -n "$all" ]] || exit 3
}

cmd_pid() {
    local name=${1:-} n
    [[ -n "$name" ]] || usage 2
    for n in "${NODES[@]}"; do
        if [[ "$name" == "$(node_name "$n")" || "$name" == "$n" ]]; then
            pid_of "$n" && return 0
            # No usable pid file: ask the node itself.
            [[ $(id -u) -eq 0 ]] && ctl "$n" eval 'os:getpid().' 2>/dev/null | tr -dc '0-9' && echo && return 0
            die "no running VM for $name"
        fi
    done
    die "unknown node $name (one of $(node_name 1), $(node_name 2), $(node_name 3))"
}

cmd_urls() {
    local n urls=()
    for n in "${NODES[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"); done
    (
        IFS=,
        printf '%s\n' "${urls[*]}"
    )
}

usage() {
    printf 'usage: %s up|down|status|pid NODE|urls\n' "$0" >&2
    exit "$1"
}

COMMAND=${1:-}
case "$COMMAND" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
pid) cmd_pid "${2:-}" ;;
urls) cmd_urls ;;
-h | --help | help) usage 0 ;;
*) usage 2 ;;
esac
