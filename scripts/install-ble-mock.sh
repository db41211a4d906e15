#!/usr/bin/env bash
# Installs what the BLE integration tests need to run btleplug against a mocked
# BlueZ (python-dbusmock's bluez5 template on a private D-Bus daemon):
#   - Debian: dbus-daemon (or dbus), python3-dbus, python3-gi, python3-venv
#   - a venv (with Debian's system site-packages, for dbus-python / gi) holding
#     python-dbusmock from PyPI (Debian's 0.28 has a broken UpdateProperties).
#
# Idempotent: the second run installs nothing and takes well under a second.
# The LAST line of stdout is the venv's python path; everything else goes to
# stderr. Override the venv location with TASTESYNC_BLE_VENV.
set -euo pipefail

DBUSMOCK_VERSION="0.38.1"
VENV="${TASTESYNC_BLE_VENV:-$HOME/.cache/tastesync/ble-venv}"
SYS_PY=/usr/bin/python3
VPY="$VENV/bin/python"

log() { echo "install-ble-mock: $*" >&2; }

# --- Debian packages -------------------------------------------------------
missing=()
if ! command -v dbus-daemon >/dev/null 2>&1 && [ ! -x /usr/bin/dbus-daemon ]; then
    # bookworm splits it out as dbus-daemon; older releases ship it in dbus.
    missing+=(dbus-daemon)
fi
if [ ! -x "$SYS_PY" ]; then
    missing+=(python3)
fi
if ! { [ -x "$SYS_PY" ] && "$SYS_PY" -c 'import dbus, dbus.mainloop.glib' >/dev/null 2>&1; }; then
    missing+=(python3-dbus)
fi
if ! { [ -x "$SYS_PY" ] && "$SYS_PY" -c 'import gi; from gi.repository import GLib' >/dev/null 2>&1; }; then
    missing+=(python3-gi)
fi
if ! { [ -x "$SYS_PY" ] && "$SYS_PY" -c 'import venv, ensurepip' >/dev/null 2>&1; }; then
    missing+=(python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    pkgs=()
    for p in "${missing[@]}"; do
        if [ "$p" = dbus-daemon ] && ! apt-cache show dbus-daemon >/dev/null 2>&1; then
            p=dbus
        fi
        pkgs+=("$p")
    done
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${pkgs[@]}" >&2
fi

# --- venv with python-dbusmock -------------------------------------------
venv_ok() {
    [ -x "$VPY" ] && "$VPY" - "$DBUSMOCK_VERSION" >/dev/null 2>&1 <<'EOF'
import sys
from importlib.metadata import version
import dbus, dbus.mainloop.glib, dbusmock  # noqa: F401
from gi.repository import GLib  # noqa: F401
sys.exit(0 if version("python-dbusmock") == sys.argv[1] else 1)
EOF
}

if ! venv_ok; then
    if [ ! -x "$VPY" ] || ! "$VPY" -c 'import dbus' >/dev/null 2>&1; then
        log "creating venv $VENV"
        rm -rf "$VENV"
        mkdir -p "$(dirname "$VENV")"
        "$SYS_PY" -m venv --system-site-packages "$VENV" >&2
    fi
    log "installing python-dbusmock==$DBUSMOCK_VERSION into $VENV"
    # PyPI only ships an sdist; pip builds it (setuptools + setuptools-scm, from PyPI).
    # dbus-python comes from Debian's python3-dbus via system site-packages.
    "$VPY" -m pip install --quiet --disable-pip-version-check \
        "python-dbusmock==$DBUSMOCK_VERSION" >&2
    venv_ok || { log "venv check failed after install"; exit 1; }
fi

echo "$VPY"
