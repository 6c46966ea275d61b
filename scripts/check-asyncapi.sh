#!/usr/bin/env bash
# Check docs/asyncapi.yaml (the demo's contracts) and shared/examples/asyncapi.yaml (the guide's
# examples' contracts, both written by msgkit::asyncapi): (1) each is the document the code
# generates now (`msgkit asyncapi --check`; the examples' test, shared/tests/asyncapi.rs), each
# naming the command that regenerates it, and (2) the official AsyncAPI parser (npm
# @asyncapi/parser, pinned by scripts/asyncapi/package-lock.json) accepts each with no
# diagnostic of error severity. Two deliberately broken copies (an operation on a channel that
# does not exist; a payload schema that is not draft-07) must be rejected, for the reason
# expected: proof that the validation can fail. Prints one line per check, exits non-zero if
# any failed.
#
#   scripts/check-asyncapi.sh
#
# The parser is installed once with `npm ci` (install scripts off: none is needed) into
# ${XDG_CACHE_HOME:-~/.cache}/msgkit/asyncapi-<hash of the lock file>, so a run after the first
# does not reinstall, and a changed lock file installs afresh. Needs cargo, node and npm.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DOCUMENT=docs/asyncapi.yaml
EXAMPLES=shared/examples/asyncapi.yaml
LOCK=scripts/asyncapi/package-lock.json
WORK=$(mktemp -d "${TMPDIR:-/tmp}/msgkit-check-asyncapi.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failures=0

ok() { printf 'ok    %s\n' "$*"; }
fail() {
    printf 'FAIL  %s\n' "$*"
    failures=$((failures + 1))
}

# 1. Current with the code.
if cargo run -q -p msgkit-cli --bin msgkit -- asyncapi --check "$DOCUMENT" 2>"$WORK/check.err"; then
    ok "$DOCUMENT is the document the code generates"
else
    cat "$WORK/check.err"
    fail "$DOCUMENT differs from the code (regenerate it with the command above)"
fi
if cargo test -q -p msgkit --test asyncapi >"$WORK/examples.out" 2>&1; then
    ok "$EXAMPLES is the document the examples' contracts generate"
else
    cat "$WORK/examples.out"
    fail "$EXAMPLES differs from the examples' contracts (regenerate it with the command above)"
fi

# 2. The official parser, installed once per lock file.
for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "check-asyncapi: $tool is needed (apt-get install nodejs npm)"; exit 1; }
done
hash=$(sha256sum "$LOCK" | cut -c1-16)
MODULES="${XDG_CACHE_HOME:-$HOME/.cache}/msgkit/asyncapi-$hash"
if [[ ! -f "$MODULES/.installed" ]]; then
    echo "check-asyncapi: installing @asyncapi/parser into $MODULES (npm ci) ..."
    rm -rf "$MODULES"
    mkdir -p "$MODULES"
    cp scripts/asyncapi/package.json "$LOCK" "$MODULES/"
    # The parser's tree has a telemetry package (@scarf/scarf) whose only work is an install
    # script: scripts stay off, and its variable says no in case one runs anyway.
    if ! (cd "$MODULES" && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1); then
        cat "$WORK/npm.log"
        echo "check-asyncapi: npm ci failed in $MODULES"
        exit 1
    fi
    touch "$MODULES/.installed"
fi

validate() { node scripts/asyncapi/validate.mjs "$MODULES" "$1"; }

for document in "$DOCUMENT" "$EXAMPLES"; do
    if validate "$document" >"$WORK/valid.out" 2>&1; then
        grep -v '^.*: information ' "$WORK/valid.out" || true
        ok "$document is accepted by the official parser"
    else
        cat "$WORK/valid.out"
        fail "$document is rejected by the official parser"
    fi
done

# 3. Negative controls: each broken copy must be rejected with the diagnostic it was made for.
# Pass a copy, the sed expression that breaks it, and a fixed string the rejection must print.
rejects() {
    local name=$1 expression=$2 expected=$3
    local copy="$WORK/$name.yaml"
    sed "$expression" "$DOCUMENT" >"$copy"
    if cmp -s "$copy" "$DOCUMENT"; then
        fail "negative control $name: the edit did not change the document (update the control)"
    elif validate "$copy" >"$WORK/$name.out" 2>&1; then
        cat "$WORK/$name.out"
        fail "negative control $name: the parser accepted a broken document"
    elif ! grep -qF -- "$expected" "$WORK/$name.out"; then
        cat "$WORK/$name.out"
        fail "negative control $name: rejected, but not with \"$expected\""
    else
        ok "negative control $name: rejected ($expected)"
    fi
}
rejects missing-channel \
    "s|\$ref: '#/channels/order.placed'\$|\$ref: '#/channels/order.missing'|" \
    "'#/channels/order.missing' does not exist"
rejects invalid-payload-schema \
    "/^          title: OrderPlaced\$/{n;s/type: object/type: objekt/}" \
    "at components.messages.order.placed.payload.schema.type"

if [[ $failures -gt 0 ]]; then
    echo "check-asyncapi: $failures check(s) failed"
    exit 1
fi
echo "check-asyncapi: all checks passed"
