#!/usr/bin/env bash
# Builds the previous release's binaries (tastesync-edge and tastesync-cloud speaking sync
# protocol 1, before box identity) for the upgrade and mixed-fleet tests: boxes in the field
# run them, so the new code must migrate their stores and databases and keep serving them.
# Built once from this repository's own history and cached outside it (about 3 minutes on
# two cores the first time; nothing after). The last line of stdout is the directory with
# the two binaries; everything else goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

# The last commit of the first release (sync over MQTT, protocol 1).
RELEASE=d0dfaf0c06d1d10c35766638d6cbc29b0f0e3083
CACHE="${TASTESYNC_PREVIOUS_CACHE:-$HOME/.cache/tastesync/previous-${RELEASE:0:12}}"
mkdir -p "$CACHE"
# Several tests may ask at once: one builds, the others wait.
exec 9>"$CACHE/.lock"
flock 9
if [ ! -x "$CACHE/bin/tastesync-edge" ] || [ ! -x "$CACHE/bin/tastesync-cloud" ]; then
    if ! git cat-file -e "$RELEASE^{commit}" 2>/dev/null; then
        echo "install-previous: commit $RELEASE is not in this clone; fetch the full history (git fetch --unshallow)" >&2
        exit 1
    fi
    echo "install-previous: building the previous release ($RELEASE) into $CACHE" >&2
    src="$CACHE/src"
    rm -rf "$src"
    mkdir -p "$src"
    git archive "$RELEASE" | tar -x -C "$src"
    (cd "$src" && CARGO_TARGET_DIR="$CACHE/target" cargo build --locked --bins \
        -p tastesync-edge -p tastesync-cloud) >&2
    mkdir -p "$CACHE/bin"
    cp "$CACHE/target/debug/tastesync-edge" "$CACHE/target/debug/tastesync-cloud" "$CACHE/bin/"
    # Keep the binaries only (the build tree is over a gigabyte).
    rm -rf "$CACHE/target" "$src"
fi
echo "$CACHE/bin"
