#!/usr/bin/env bash
# Build the workspace's binaries and run every service in the foreground, each one's output
# prefixed with [name]. Ctrl-C (or SIGTERM) stops them all. Expects the local stack to be up
# (`make run` starts it first; see scripts/stack.sh).
#
#   scripts/run.sh              build (debug), then run
#   scripts/run.sh --no-build   run what is already built
#
# Exit status: 0 after a requested stop in which every service shut down cleanly; 1 when a
# service exits on its own (the others are then stopped) or has to be killed.
set -euo pipefail

# The services, in start order. To add one: append its name here and give it a port below.
SERVICES="order inventory payment notify risk reconcile rebate"
# RUN_SERVICES="a b" runs a subset instead.
SERVICES=${RUN_SERVICES:-$SERVICES}

# HTTP port of each service (shown in the URL list).
declare -A PORT=(
    [order]=8080
    [inventory]=8081
    [payment]=8082
    [notify]=8083
    [risk]=8084
    [reconcile]=8085
    [rebate]=8086
)

# Grace period for a service to exit after SIGTERM before it gets SIGKILL.
readonly STOP_TIMEOUT=20

say() { printf 'run: %s\n' "$*"; }
die() {
    printf 'run: error: %s\n' "$*" >&2
    exit 1
}

if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
    die "bash >= 5.1 is needed (wait -n -p); this is $BASH_VERSION"
fi

build=1
case "${1:-}" in
"") ;;
--no-build) build="" ;;
*)
    printf 'usage: %s [--no-build]\n' "$0" >&2
    exit 2
    ;;
esac

# A relative CARGO_TARGET_DIR means relative to where we were started.
if [[ -n "${CARGO_TARGET_DIR:-}" && "$CARGO_TARGET_DIR" != /* ]]; then
    export CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR"
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Local defaults; anything already set in the environment wins.
: "${AMQP_URL:=amqp://guest:guest@127.0.0.1:5672/%2f}"
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/msgkit}"
# The risk alert stream's token secret: a fixed local development value, so that
# `msgkit token` in another shell (with the same default) issues tokens the service accepts.
# Never use it beyond a developer's machine.
: "${RISK_TOKEN_SECRET:=msgkit-local-development-token-secret}"
# The payment-gateway simulator's callback secret (it signs, payment verifies): without one
# the simulator sends no callbacks. A local development value, like the one above.
: "${GATEWAY_CALLBACK_SECRET:=msgkit-local-development-gateway-callback-secret}"
# The rebate balance stream takes the same tokens as risk's alert stream.
: "${REBATE_TOKEN_SECRET:=$RISK_TOKEN_SECRET}"
# Reconcile's API is for operators; risk's page passes its operator's token on to it.
: "${RECONCILE_TOKEN_SECRET:=$RISK_TOKEN_SECRET}"
# The event archive, on in every service and not overridable here: rebate projects it, and a
# service started without it would leave its events out of the history for good.
ARCHIVE_ENABLED=true
export AMQP_URL DATABASE_URL RISK_TOKEN_SECRET GATEWAY_CALLBACK_SECRET REBATE_TOKEN_SECRET RECONCILE_TOKEN_SECRET ARCHIVE_ENABLED

if [[ -n "$build" ]]; then
    say "building (cargo build --workspace --bins) ..."
    cargo build --workspace --bins || die "build failed"
fi

target_dir=${CARGO_TARGET_DIR:-}
if [[ -z "$target_dir" ]]; then
    # Honours build.target-dir in .cargo/config.toml too.
    target_dir=$(cargo metadata --no-deps --format-version 1 2>/dev/null |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' || true)
    target_dir=${target_dir:-$PWD/target}
fi

# The whole topology first, as one step of its own (msgkit topology apply): the work queues
# exist, and buffer events, before the services that consume them start.
[[ -x "$target_dir/debug/msgkit" ]] || die "no binary $target_dir/debug/msgkit (cargo build --workspace --bins)"
"$target_dir/debug/msgkit" topology apply || die "msgkit topology apply failed"

declare -a names=() bins=()
for name in $SERVICES; do
    bin="$target_dir/debug/$name"
    [[ -x "$bin" ]] || die "no binary $bin for service '$name' (is its [[bin]] named '$name'?)"
    names+=("$name")
    bins+=("$bin")
done
((${#names[@]} > 0)) || die "SERVICES is empty"

declare -a pids=() prefix_pids=()
declare -A name_of=() exited=()

# alive PID: running and not yet a zombie.
alive() {
    local state
    state=$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# reap PID: collect its exit status even if a signal interrupts the wait.
reap() {
    local pid=$1 rc
    while :; do
        rc=0
        wait "$pid" 2>/dev/null || rc=$?
        if ((rc > 128)) && alive "$pid"; then continue; fi
        return "$rc"
    done
}

# stop_all: SIGTERM every service still running, wait (SIGKILL after STOP_TIMEOUT s).
# Returns non-zero if a service had to be killed or failed while stopping.
stop_all() {
    local pid rc failed=""
    # A second Ctrl-C means: stop waiting.
    trap 'kill -KILL "${pids[@]}" 2>/dev/null || true' INT TERM
    for pid in "${pids[@]}"; do
        if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    local deadline=$((SECONDS + STOP_TIMEOUT))
    for pid in "${pids[@]}"; do
        [[ -z "${exited[$pid]:-}" ]] || continue # already reported
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        if alive "$pid"; then
            say "${name_of[$pid]} did not stop within ${STOP_TIMEOUT}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            failed=1
        fi
        rc=0
        reap "$pid" || rc=$?
        # 143 = ended by the SIGTERM itself, 130 = by the terminal's SIGINT.
        case "$rc" in
        0 | 127 | 130 | 143) ;;
        *)
            say "${name_of[$pid]} exited with status $rc while stopping"
            failed=1
            ;;
        esac
    done
    # Let the [name] prefixers drain what the services wrote last (bounded: a grandchild
    # could keep a pipe open).
    deadline=$((SECONDS + 2))
    for pid in "${prefix_pids[@]}"; do
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    done
    [[ -z "$failed" ]]
}

# shellcheck disable=SC2317 # invoked from the traps below
on_signal() {
    printf '\n'
    say "received SIG$1; stopping ${names[*]} ..."
    if stop_all; then
        say "stopped"
        exit 0
    fi
    exit 1
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

for i in "${!names[@]}"; do
    name=${names[$i]}
    # Each service writes into its own prefixer; the prefixer ignores the terminal's Ctrl-C
    # so it keeps printing until the service has shut down and closed the pipe.
    exec {out}> >(
        trap '' INT TERM
        exec sed -u "s/^/[$name] /"
    )
    prefix_pids+=("$!")
    "${bins[$i]}" >&"$out" 2>&1 {out}>&- &
    pid=$!
    exec {out}>&-
    pids+=("$pid")
    name_of[$pid]=$name
    say "started $name (pid $pid)"
done

say "URLs:"
for name in "${names[@]}"; do
    if [[ -n "${PORT[$name]:-}" ]]; then
        printf '  %-14s http://127.0.0.1:%s\n' "$name" "${PORT[$name]}"
    fi
done
printf '  %-14s http://127.0.0.1:15672  (guest/guest)\n' "management UI"
say "Ctrl-C stops all services"

# Wait until a service exits on its own (a signal runs on_signal instead, which exits).
finished=""
rc=0
wait -n -p finished "${pids[@]}" || rc=$?
while [[ -z "$finished" ]]; do # interrupted without a trap exiting: wait again
    ((rc != 127)) || die "lost track of the services"
    rc=0
    wait -n -p finished "${pids[@]}" || rc=$?
done
exited[$finished]=1
# A service exits 0 only when it was asked to stop: a Ctrl-C reaches the whole process group,
# and a service can finish its graceful shutdown before this script's trap has run.
if ((rc == 0 || rc == 130 || rc == 143)); then
    say "${name_of[$finished]} stopped on a signal; stopping the others"
    stop_all && exit 0
    exit 1
fi
say "${name_of[$finished]} exited on its own (status $rc); stopping the others"
stop_all || true
exit 1
