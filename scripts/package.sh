#!/usr/bin/env bash
# Builds the Debian packages: tastesync-edge for arm64 (Raspberry Pi OS / Debian bookworm,
# cross-compiled here) and amd64 (mini-PCs), tastesync-cloud for amd64. Each holds its
# binary, its systemd unit (enabled on install; the box's also started), an example config
# in /etc/tastesync (a conffile) and maintainer scripts for the system user. Prints the
# packages' paths, one per line: the arm64 box, the amd64 box, the cloud.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-cross.sh
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
cargo deb --quiet -p tastesync-edge --target aarch64-unknown-linux-gnu >&2
cargo deb --quiet -p tastesync-edge >&2
cargo deb --quiet -p tastesync-cloud >&2
target="${CARGO_TARGET_DIR:-target}"
version="$(cargo metadata --no-deps --format-version 1 \
    | python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "tastesync-edge"))')"
for package in "aarch64-unknown-linux-gnu/debian/tastesync-edge_${version}-1_arm64.deb" \
    "debian/tastesync-edge_${version}-1_amd64.deb" "debian/tastesync-cloud_${version}-1_amd64.deb"; do
    test -f "$target/$package"
    echo "$target/$package"
done
