#!/usr/bin/env bash
# Installs schemathesis (PyPI, pinned) into a venv for the API schema tests, if missing.
# The last line of stdout is the schemathesis executable.
set -euo pipefail
VERSION="4.32.5"
VENV="${TASTESYNC_SCHEMATHESIS_VENV:-$HOME/.cache/tastesync/schemathesis-venv}"
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
    echo "install-schemathesis: installing schemathesis==$VERSION into $VENV" >&2
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
fi
echo "$VENV/bin/schemathesis"
