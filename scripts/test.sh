#!/usr/bin/env bash
# The whole test suite. Installs what the tests need (idempotently) and runs every test of
# the workspace: unit and property tests, and the end-to-end tests in tests/ (the real
# binaries, the real BLE stack against a mocked BlueZ on a private D-Bus, the POS pages in
# headless Chromium, Mosquitto with dynamic security, the previous release's binaries for
# the upgrade tests, strace, systemd-analyze and faketime for the units' sandbox and a
# wrong clock, the arm64 cross toolchain, qemu-user and cargo-deb for the packages, and a
# Debian VM under qemu-system for the packages on a real systemd).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-nextest >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
TASTESYNC_BLE_PYTHON="$(bash scripts/install-ble-mock.sh | tail -n 1)"
bash scripts/install-browser.sh
bash scripts/install-asyncapi.sh
bash scripts/install-test-tools.sh
# The packages test cross-builds the box for arm64 and packs the .debs, then installs the
# box's into a Debian VM booted with systemd (its image built once: about 3 minutes).
bash scripts/install-cross.sh
TASTESYNC_VM_IMAGE="$(bash scripts/install-vm.sh | tail -n 1)"
export TASTESYNC_VM_IMAGE
TASTESYNC_SCHEMATHESIS="$(bash scripts/install-schemathesis.sh | tail -n 1)"
# The previous release's binaries, for the upgrade and mixed-fleet tests (built once).
TASTESYNC_PREVIOUS_BIN="$(bash scripts/install-previous.sh | tail -n 1)"
export TASTESYNC_SCHEMATHESIS
export TASTESYNC_BLE_PYTHON
# A Kafka-protocol broker for the Kafka tests (built once: about 15 minutes the first time).
TASTESYNC_KAFKA_BROKER="$(bash scripts/install-kafka.sh | tail -n 1)"
export TASTESYNC_PREVIOUS_BIN
export TASTESYNC_KAFKA_BROKER

# The end-to-end tests run the binaries, so build them first.
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"
