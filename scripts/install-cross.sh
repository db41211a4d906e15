#!/usr/bin/env bash
# Installs what building the packages needs, skipping what is there: the arm64 Rust target
# and Debian's cross compiler for the Raspberry Pi build, qemu-user to run the arm64 binary
# here, and cargo-deb (pinned; built once into ~/.cargo/bin).
set -euo pipefail
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    rustup target add aarch64-unknown-linux-gnu >&2
fi
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
if [ "${#missing[@]}" -gt 0 ]; then
    bash "$(dirname "$0")/apt-install.sh" install-cross "${missing[@]}"
fi
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install --locked cargo-deb --version '^3' >&2
fi
