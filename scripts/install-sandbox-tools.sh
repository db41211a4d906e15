#!/usr/bin/env bash
# Installs what the sandbox tests need, skipping what is there: strace (to see every system
# call and socket family the daemon uses) and systemd-analyze (to read the units' sandbox
# and score them, offline: no running systemd needed).
set -euo pipefail
missing=()
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-sandbox-tools: installing ${missing[*]}" >&2
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
