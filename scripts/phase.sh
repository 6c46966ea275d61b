#!/usr/bin/env bash
# Run one phase of `make test` and say how long it took, pass or fail:
#   scripts/phase.sh NAME COMMAND [ARGS...]
set -uo pipefail
name=$1
shift
started=$(date +%s)
"$@"
status=$?
elapsed=$(($(date +%s) - started))
printf '== phase %-14s %4ds  %s\n' "$name" "$elapsed" "$([ "$status" -eq 0 ] && echo ok || echo "FAILED ($status)")"
exit "$status"
