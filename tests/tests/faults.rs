//! Infrastructure faults during a drain: PostgreSQL restarted under cloud-sync while a box's
//! backlog flows, and a box that waited out a broker outage with a 100,000-event backlog.
//! Either way every event reaches PostgreSQL exactly once, in seq order, and leaves the outbox.

use std::process::Command;
use std::time::{Duration, Instant};

use tastesync_e2e::cloud::{Database, Mosquitto, eventually, free_port};
use tastesync_e2e::postgres::Postgres;
use tastesync_e2e::*;

/// The shop of both tests, and what PostgreSQL is asked about it.
const SHOP: &str = "seoul-7";
const STORED: &str =
    "SELECT seq, event_id, kind FROM events WHERE shop_id = 'seoul-7' ORDER BY seq";
const SUMMARY: &str = "SELECT count(*), min(seq), max(seq), count(DISTINCT seq) FROM events WHERE shop_id = 'seoul-7'";
const ACKED: &str = "SELECT acked_seq FROM streams WHERE shop_id = 'seoul-7'";
const SCHEMA_READY: &str = "SELECT to_regclass('public.events') IS NOT NULL";

/// `tastesync-cloud serve` against any PostgreSQL and broker (`host:port`); the caller waits
/// for its schema.
fn serve(shop: &Shop, database_url: &str, broker: &str) -> KillOnDrop {
    let config = shop.write(
        "cloud.toml",
        &format!(
            "database_url = {database_url:?}\nbroker = {broker:?}\nclient_id = \"cloud-faults\"\n[http]\nlisten = \"\"\n[provisioning]\ncredentials = \"none\"\n"
        ),
    );
    KillOnDrop(
        Command::new(bin("tastesync-cloud"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    )
}

/// The `ACKED` query's answer; 0 before the shop's first batch.
fn acked_seq(rows: Vec<String>) -> i64 {
    rows.first().and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[test]
fn postgres_restart_mid_stream_loses_and_duplicates_nothing() {
    const EVENTS: i64 = 20_000;
    let shop = Shop::new();
    shop.write_outbox_backlog(EVENTS);
    let pending = shop.outbox_rows();
    assert_eq!(pending.len(), EVENTS as usize);

    let postgres = Postgres::create();
    let broker = Mosquitto::start("allow_anonymous true");
    let mut cloud = serve(&shop, &postgres.url("postgres"), &broker.address());
    assert!(eventually(20, || postgres.query(SCHEMA_READY) == ["t"]));
    // Small batches keep the drain going through both restarts; a short ack timeout makes
    // the box resend soon what cloud-sync lost with its connection.
    let uplink = format!(
        "broker = {:?}\nbatch_size = 50\nwindow_batches = 4\nack_timeout_secs = 2",
        broker.address()
    );
    let started = Instant::now();
    let daemon = shop.run_online(SHOP, &uplink);
    for threshold in [2_000, 8_000] {
        assert!(
            eventually(30, || acked_seq(postgres.query(ACKED)) >= threshold),
            "the drain reached seq {threshold}"
        );
        let before = acked_seq(postgres.query(ACKED));
        postgres.stop();
        // Down long enough for cloud-sync to lose its connections and retry, while the box
        // keeps sending into the broker.
        std::thread::sleep(Duration::from_secs(2));
        postgres.start();
        println!("PostgreSQL restarted at acked seq {before}");
        assert!(before < EVENTS, "the restart came mid-stream");
        assert!(
            cloud.0.try_wait().unwrap().is_none(),
            "cloud-sync survives a PostgreSQL restart"
        );
    }
    let acked = eventually(60, || acked_seq(postgres.query(ACKED)) == EVENTS);
    let drained = eventually(10, || shop.outbox_is_empty());
    println!("drained in {:.1} s", started.elapsed().as_secs_f64());
    drop(daemon);
    assert!(acked, "acked up to {}", acked_seq(postgres.query(ACKED)));
    assert_eq!(
        postgres.query(SUMMARY),
        [format!("{EVENTS}|1|{EVENTS}|{EVENTS}")]
    );
    assert_eq!(
        postgres.query(STORED),
        pending,
        "exactly the box's events, once each, in seq order"
    );
    assert!(drained, "the outbox drained");
    assert_eq!(shop.outbox_rows(), Vec::<String>::new());
    assert!(
        cloud.0.try_wait().unwrap().is_none(),
        "cloud-sync still running"
    );
}

#[test]
fn a_long_disconnection_with_a_100k_backlog_drains() {
    const EVENTS: i64 = 100_000;
    let shop = Shop::new();
    shop.write_outbox_backlog(EVENTS);
    let pending = shop.outbox_rows();
    assert_eq!(pending.len(), EVENTS as usize);

    // The broker's address is fixed now; nothing listens there yet.
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let database = Database::create();
    let _cloud = serve(&shop, &database.url(), &address);
    assert!(eventually(20, || database.query(SCHEMA_READY) == ["t"]));
    let daemon = shop.run_online(SHOP, &format!("broker = {address:?}\nack_timeout_secs = 2"));
    // Long enough for the box to fail a few connection attempts and back off (0.5 s, 1 s,
    // 2 s...), short enough to keep the test quick.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        database.query(ACKED).is_empty(),
        "nothing synced while the broker was away"
    );
    // A second listener on the awaited port (the first is the one the helper waits for).
    let _broker = Mosquitto::start_with(tempfile::tempdir().unwrap(), |own| {
        format!(
            "listener {own} 127.0.0.1\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
    });
    let reachable = Instant::now();
    let acked = eventually(120, || acked_seq(database.query(ACKED)) == EVENTS);
    let drained = eventually(10, || shop.outbox_is_empty());
    println!(
        "{EVENTS} events drained {:.1} s after the broker came up",
        reachable.elapsed().as_secs_f64()
    );
    drop(daemon);
    assert!(acked, "acked up to {}", acked_seq(database.query(ACKED)));
    assert_eq!(
        database.query(SUMMARY),
        [format!("{EVENTS}|1|{EVENTS}|{EVENTS}")]
    );
    assert_eq!(
        database.query(STORED),
        pending,
        "exactly the box's events, once each, in seq order"
    );
    assert!(drained, "the outbox drained");
    assert_eq!(shop.outbox_rows(), Vec::<String>::new());
}
