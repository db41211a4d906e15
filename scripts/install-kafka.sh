#!/usr/bin/env bash
# Builds a Kafka-protocol broker for the Kafka tests: tansu 0.6.0 with its memory storage
# (Debian has no Kafka broker; tansu's SQLite storage panics under an idempotent producer, and
# its PostgreSQL storage needs a schema the crate does not ship). Built once from crates.io
# and cached outside the repository (about 15 minutes and 1.7 GB of memory on two cores the
# first time; nothing after). The last line of stdout is the broker binary's path; everything
# else goes to stderr.
set -euo pipefail
VERSION=0.6.0
CACHE="${TASTESYNC_KAFKA_CACHE:-$HOME/.cache/tastesync/tansu-$VERSION}"
mkdir -p "$CACHE"
# Several tests may ask at once: one builds, the others wait.
exec 9>"$CACHE/.lock"
flock 9
if [ ! -x "$CACHE/bin/tansu" ]; then
    echo "install-kafka: building tansu $VERSION into $CACHE (about 15 minutes, once)" >&2
    CARGO_TARGET_DIR="$CACHE/target" cargo install --locked tansu --version "$VERSION" \
        --no-default-features --features dynostore --root "$CACHE" >&2
    # Keep the binary only (the build tree is gigabytes).
    rm -rf "$CACHE/target"
fi
echo "$CACHE/bin/tansu"
