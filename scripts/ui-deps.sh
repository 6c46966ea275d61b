#!/usr/bin/env bash
# What the browser checks need (the management UI test, the chaos timeline picture, the risk
# page test): Debian's Chromium and playwright-core (an npm package with no browser download of
# its own). Idempotent; fast when both are present.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'ui-deps: %s\n' "$*"; }

if ! command -v chromium >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        say "Chromium is missing; run: sudo apt-get install -y --no-install-recommends chromium"
        exit 1
    fi
    say "installing chromium (Debian package) ..."
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/tmp/msgkit-ui-deps.log 2>&1; then
        apt-get update >>/tmp/msgkit-ui-deps.log 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >>/tmp/msgkit-ui-deps.log 2>&1 ||
            { say "could not install chromium; see /tmp/msgkit-ui-deps.log"; exit 1; }
    fi
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "Node.js and npm are needed (apt-get install nodejs npm)"
    exit 1
fi
if [[ ! -d tools/ui-screenshot/node_modules/playwright-core ]]; then
    say "installing playwright-core (npm ci) ..."
    (cd tools/ui-screenshot && npm ci --no-audit --no-fund --loglevel=error) ||
        { say "npm ci failed in tools/ui-screenshot"; exit 1; }
fi
say "ready (chromium $(chromium --version 2>/dev/null | awk '{print $2}'), playwright-core $(node -p "require('./tools/ui-screenshot/node_modules/playwright-core/package.json').version"))"
