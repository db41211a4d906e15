#!/usr/bin/env bash
# Installs the AsyncAPI Initiative's parser (npm, pinned by tests/asyncapi/package-lock.json),
# which the tests use to check docs/asyncapi.yaml; skipped when it is there. Node.js comes
# with the browser tests' install (scripts/install-browser.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d tests/asyncapi/node_modules/@asyncapi/parser ]; then
    # No install scripts: the parser needs none (one dependency's would only report usage).
    npm ci --prefix tests/asyncapi --ignore-scripts --no-audit --no-fund >&2
fi
