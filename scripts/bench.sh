#!/usr/bin/env bash
# Runs the benchmarks in BENCHMARKS.md: pipeline throughput (against beacontools on the same
# frames), EID table rebuild, the daemon's memory with 100,000 customers, alert latency to
# 50 tablets under background traffic, memory per connected tablet, the outbox drain
# through Mosquitto and cloud-sync into PostgreSQL (DRAIN_EVENTS sets the backlog, default
# 100,000), one cloud-sync under 1,000 simulated shops (ingest_load; again with the Kafka
# relay on), HQ enrollment to
# identification (enroll_latency), claiming a blank box (claim_latency), and HQ's console
# over a year of a 1,000-shop chain (console_load; its 50-million-event data set is generated
# once, in about half an hour, into the database tastesync_bench_analytics and kept).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TASTESYNC_BENCH_VENV:-$HOME/.cache/tastesync/bench-venv}"
if ! "$venv/bin/python" -c 'import beacontools' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check beacontools==2.1.0
fi
cargo build --release --bins
BEACONTOOLS_PYTHON="$venv/bin/python" cargo bench -p tastesync-edge --bench pipeline
cargo bench -p tastesync-edge --bench pos
cargo bench -p tastesync-e2e --bench drain
# 1,000 shop connections in the load generator and as many in Mosquitto: raise the
# open-files limit (often 1,024) as far as the hard limit allows.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo bench -p tastesync-e2e --bench ingest_load
# The same load with the Kafka relay on (a broker built once by install-kafka.sh).
TASTESYNC_KAFKA_BROKER="$(bash scripts/install-kafka.sh | tail -n 1)"
export TASTESYNC_KAFKA_BROKER
LOAD_KAFKA=1 LOAD_SECS=90 cargo bench -p tastesync-e2e --bench ingest_load
cargo bench -p tastesync-e2e --bench enroll_latency
cargo bench -p tastesync-e2e --bench claim_latency
cargo bench -p tastesync-e2e --bench console_load
