//! Sync benchmark (BENCHMARKS.md): how fast a box's outbox backlog drains through a real
//! Mosquitto and cloud-sync into a real PostgreSQL, with the release binaries.
//! Run by `scripts/bench.sh` (after `cargo build --release --bins`); `DRAIN_EVENTS` sets the
//! backlog (default 100,000).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tastesync_e2e::cloud::{Database, Mosquitto};
use tastesync_e2e::{KillOnDrop, Shop, workspace};

/// The backlog: `DRAIN_EVENTS` events, 100,000 unless set.
fn backlog_size() -> i64 {
    std::env::var("DRAIN_EVENTS")
        .map(|v| v.parse().expect("DRAIN_EVENTS must be a number of events"))
        .unwrap_or(100_000)
}

fn main() {
    let release = workspace().join("target/release");
    let (edge, cloud) = (
        release.join("tastesync-edge"),
        release.join("tastesync-cloud"),
    );
    assert!(
        edge.exists() && cloud.exists(),
        "build the release binaries first (scripts/bench.sh does)"
    );
    let events = backlog_size();
    let shop = Shop::new();
    // Written straight into the outbox (recording them through the pipeline would time
    // fsyncs, not the sync).
    shop.write_outbox_backlog(events);

    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let cloud_config = shop.write(
        "cloud.toml",
        &format!(
            "database_url = {:?}\nbroker = {:?}\nclient_id = \"bench\"\n[http]\nlisten = \"\"\n[provisioning]\ncredentials = \"none\"\n",
            database.url(),
            broker.address()
        ),
    );
    let _cloud = KillOnDrop(
        Command::new(&cloud)
            .args(["serve", "--config", cloud_config.to_str().unwrap()])
            .spawn()
            .unwrap(),
    );
    while database.query("SELECT to_regclass('public.events') IS NOT NULL") != ["t"] {
        std::thread::sleep(Duration::from_millis(100));
    }
    let quiet: String = (0..600)
        .map(|i| {
            format!(
                r#"{{"t_ms":{},"address":"c0:00:00:00:00:99","rssi":-90,"data":"020106"}}"#,
                1_764_000_000_000u64 + i * 1000
            ) + "\n"
        })
        .collect();
    let quiet = shop.write("quiet.jsonl", &quiet);
    let config = shop.write(
        "edge.toml",
        &format!(
            "shop_id = \"bench\"\ndatabase = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\n[pos]\nlisten = \"\"\n[uplink]\nbroker = {:?}\n",
            shop.db(),
            quiet.display().to_string(),
            broker.address()
        ),
    );
    let started = Instant::now();
    let _edge = KillOnDrop(
        Command::new(&edge)
            .args(["run", "--config", config.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stored = 0;
    while stored < events && started.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(200));
        stored = database
            .query("SELECT acked_seq FROM streams WHERE shop_id = 'bench'")
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(stored, events, "drained within 10 minutes");
    let count = database.query("SELECT count(*) FROM events")[0].clone();
    println!(
        "outbox drain, box -> Mosquitto -> cloud-sync -> PostgreSQL (release builds, batches of 500):"
    );
    println!(
        "  {events} events committed and acknowledged in {elapsed:.1} s: {:.0} events/s (target >= 10,000/s)",
        events as f64 / elapsed
    );
    println!("  rows in PostgreSQL: {count}");
}
