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
    echo "install-test-tools: installing ${missing[*]}" >&2
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
