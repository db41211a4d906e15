#!/usr/bin/env bash
# Installs what the browser tests need, skipping what is there: Debian's Chromium, a font
# with Korean glyphs (the UI is bilingual; screenshots must be readable), Node.js, and
# playwright-core (npm, pinned by tests/browser/package-lock.json; it drives the system
# Chromium, it never downloads a browser).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fc-list 2>/dev/null | grep -qi nanum || missing+=(fonts-nanum)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
    bash scripts/apt-install.sh install-browser "${missing[@]}"
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    npm ci --prefix tests/browser --no-audit --no-fund >&2
fi
