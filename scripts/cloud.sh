#!/usr/bin/env bash
# Runs the cloud side on this machine, as production runs it:
#   - this machine's PostgreSQL (127.0.0.1:5432), database `tastesync`, created if missing;
#   - a Mosquitto of its own on 127.0.0.1:1884 with the dynamic-security plugin: each box
#     claimed through the API gets its own broker user, confined to its own topics;
#   - a Kafka-protocol broker (tansu, built once by scripts/install-kafka.sh: about 15 minutes
#     the first time) on 127.0.0.1:19092, keeping its records in memory (a restart empties
#     it; what was relayed before is not sent again); every stored event and HQ's customer changes are relayed to it (watch them with
#     `tastesync-cloud kafka --config ... tail`); TASTESYNC_CLOUD_KAFKA=0 leaves it out;
#   - `tastesync-cloud serve`, with its API (claims) and HQ's console on
#     http://127.0.0.1:8443 (sign in as admin@tastesync.test; the password is printed, and
#     kept in the state directory's console-admin-password);
#   - a shop `demo-shop`.
# Its state (the broker's users and retained messages, cloud-sync's config with the broker
# administrator's password) lives in ~/.cache/tastesync/cloud-dev (TASTESYNC_CLOUD_DIR).
# Idempotent: run it again and it reuses all of that. Then, in another terminal:
#   cloud="--config $HOME/.cache/tastesync/cloud-dev/cloud.toml"
#   cargo run --release --bin tastesync-cloud -- shops $cloud claim-code demo-shop
#   cargo run --release --bin tastesync-edge -- demo --cloud http://127.0.0.1:8443 --claim CODE
# (or claim the demo box on its owner page), and watch it in the console.
set -euo pipefail
cd "$(dirname "$0")/.."
state="${TASTESYNC_CLOUD_DIR:-$HOME/.cache/tastesync/cloud-dev}"
port="${TASTESYNC_CLOUD_BROKER_PORT:-1884}"
kafka_port="${TASTESYNC_CLOUD_KAFKA_PORT:-19092}"
mkdir -p "$state"
chmod 700 "$state"

if ! psql -h 127.0.0.1 -U postgres -AtXc "SELECT 1 FROM pg_database WHERE datname = 'tastesync'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -Xc "CREATE DATABASE tastesync"
fi

# The broker's administrator (cloud-sync's own user), made once.
if [ ! -s "$state/admin-password" ]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$state/admin-password")
fi
password="$(cat "$state/admin-password")"
if [ ! -f "$state/dynamic-security.json" ]; then
    mosquitto_ctrl dynsec init "$state/dynamic-security.json" cloud "$password" >/dev/null
fi
# (Not `ls a b | head`: under pipefail, the path that is missing ended the script silently.)
plugin=""
for candidate in /usr/lib/*/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so; do
    if [ -f "$candidate" ]; then
        plugin="$candidate"
        break
    fi
done
if [ -z "$plugin" ]; then
    echo "cloud.sh: Mosquitto's dynamic-security plugin is missing (Debian package mosquitto)" >&2
    exit 1
fi
{
    echo "listener $port 127.0.0.1"
    echo "persistence true"
    echo "persistence_location $state/"
    echo "log_dest file $state/mosquitto.log"
    echo "plugin $plugin"
    echo "plugin_opt_config_file $state/dynamic-security.json"
    # Started as root, Mosquitto would switch to its own user, which cannot read $state.
    if [ "$(id -u)" = 0 ]; then echo "user root"; fi
} > "$state/mosquitto.conf"
if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    mosquitto -d -c "$state/mosquitto.conf"
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
fi

kafka_section=""
if [ "${TASTESYNC_CLOUD_KAFKA:-1}" != 0 ]; then
    tansu="$(bash scripts/install-kafka.sh | tail -n 1)"
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null; then
        listener="tcp://127.0.0.1:$kafka_port"
        (nohup env -u CLUSTER_ID "$tansu" broker --listener-url "$listener" \
            --advertised-listener-url "$listener" --storage-engine memory://tansu/ \
            > "$state/kafka.log" 2>&1 &)
        for _ in $(seq 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && break
            sleep 0.1
        done
    fi
    kafka_section="[kafka]
brokers = \"127.0.0.1:$kafka_port\"
replication_factor = 1"
fi

(umask 077; cat > "$state/cloud.toml" <<TOML
database_url = "host=127.0.0.1 user=postgres dbname=tastesync"
broker = "127.0.0.1:$port"
username = "cloud"
password = "$password"

[http]
listen = "127.0.0.1:8443"

$kafka_section
TOML
)
cargo build --release --bin tastesync-cloud
cloud=(target/release/tastesync-cloud)
# The console's first admin (its password as kept here) and the demo shop.
if [ ! -s "$state/console-admin-password" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$state/console-admin-password")
fi
console_password="$(cat "$state/console-admin-password")"
"${cloud[@]}" users --config "$state/cloud.toml" add --email admin@tastesync.test --admin \
    --password-stdin <<< "$console_password" >/dev/null 2>&1 \
    || "${cloud[@]}" users --config "$state/cloud.toml" set-password --email admin@tastesync.test \
        <<< "$console_password"
"${cloud[@]}" shops --config "$state/cloud.toml" add demo-shop --name "Demo Café" >/dev/null 2>&1 || true
echo "cloud.sh: broker 127.0.0.1:$port (dynamic security), config $state/cloud.toml" >&2
echo "cloud.sh: HQ console http://127.0.0.1:8443/ (admin@tastesync.test, password $console_password)" >&2
if [ -n "$kafka_section" ]; then
    echo "cloud.sh: Kafka 127.0.0.1:$kafka_port; watch it: ${cloud[*]} kafka --config $state/cloud.toml tail" >&2
fi
exec "${cloud[@]}" serve --config "$state/cloud.toml"
