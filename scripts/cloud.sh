#!/usr/bin/env bash
# Runs the cloud side locally against this machine's PostgreSQL (127.0.0.1:5432, database
# `tastesync`, created if missing) and Mosquitto (127.0.0.1:1883). Point the box at it with
#   cargo run --release --bin tastesync-edge -- demo --broker 127.0.0.1:1883
# and enroll customers for it with `tastesync-cloud customers enroll ... --shop demo-shop`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! psql -h 127.0.0.1 -U postgres -AtXc "SELECT 1 FROM pg_database WHERE datname = 'tastesync'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -Xc "CREATE DATABASE tastesync"
fi
config="$(mktemp)"
cat > "$config" <<TOML
database_url = "host=127.0.0.1 user=postgres dbname=tastesync"
broker = "127.0.0.1:1883"
TOML
exec cargo run --release --bin tastesync-cloud -- serve --config "$config"
