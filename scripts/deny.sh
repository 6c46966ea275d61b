#!/usr/bin/env bash
# The dependency check of `make test`: licences, banned crates and sources (deny.toml), with
# cargo-deny, installed when missing (a pinned version; its build directory is kept in
# /var/tmp so that an interrupted install resumes). The advisories check is not run here: it
# fetches the RustSec database from github.com, which CI cannot reach (docs/security.md).
set -euo pipefail
version=0.20.2
root=$(cd "$(dirname "$0")/.." && pwd)

if ! cargo deny --version 2>/dev/null | grep -q " $version"; then
    echo "deny: installing cargo-deny $version (once; a few minutes)" >&2
    cargo install --locked --quiet cargo-deny --version "$version" \
        --target-dir "${CARGO_DENY_BUILD_DIR:-/var/tmp/cargo-deny-build}"
fi
cd "$root"
cargo deny --all-features check licenses bans sources
