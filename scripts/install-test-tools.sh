#!/usr/bin/env bash
# Installs the system tools some tests need, skipping what is there: strace (every system
# call and socket family the daemon uses, for the units' sandbox), systemd-analyze (reads
# and scores the units offline: no running systemd needed) and faketime (a clock years
# off, for `doctor`).
set -euo pipefail
missing=()
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
if [ "${#missing[@]}" -gt 0 ]; then
    bash "$(dirname "$0")/apt-install.sh" install-test-tools "${missing[@]}"
fi
