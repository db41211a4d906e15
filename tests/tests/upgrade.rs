//! Upgrades, against the previous release's real binaries (built from this repository's
//! history by `scripts/install-previous.sh`): a box store and a PostgreSQL made by it migrate
//! in place and go on syncing, nothing sent twice or lost; and a box still running it
//! (protocol 1) keeps syncing with the new cloud-sync beside a new box of the same shop.

use std::process::Command;

use tastesync_e2e::cloud::{CloudSync, Database, Hq, Mosquitto, eventually};
use tastesync_e2e::*;

/// The previous release's `tastesync-cloud serve` (its configuration had no sections).
fn previous_cloud(shop: &Shop, database: &Database, broker: &Mosquitto) -> KillOnDrop {
    let config = shop.write(
        "previous-cloud.toml",
        &format!(
            "database_url = {:?}\nbroker = {:?}\nclient_id = \"cloud-previous\"\n",
            database.url(),
            broker.address()
        ),
    );
    let cloud = KillOnDrop(
        Command::new(previous_release().join("tastesync-cloud"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    assert!(eventually(20, || database
        .query("SELECT to_regclass('public.events') IS NOT NULL")
        == ["t"]));
    cloud
}

/// The previous release's HQ tool enrolls a customer.
fn previous_enroll(shop: &Shop, database: &Database, customer_ref: &str, shop_id: &str) {
    let config = shop.write(
        "previous-hq.toml",
        &format!("database_url = {:?}\n", database.url()),
    );
    let output = Command::new(previous_release().join("tastesync-cloud"))
        .args(["customers", "--config", config.to_str().unwrap(), "enroll"])
        .args([
            "--ref",
            customer_ref,
            "--name",
            "Regular",
            "--shop",
            shop_id,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn a_box_and_a_database_of_the_previous_release_migrate_in_place_and_go_on_syncing() {
    let mut shop = Shop::on_previous_release();
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let uplink = format!("broker = {:?}", broker.address());

    // The previous release, as in the field: it syncs, HQ enrolls a customer, and then the
    // box records more while the connection is down.
    let previous = previous_cloud(&shop, &database, &broker);
    let synced = as_rows(&shop.record_offline("seoul-1", 5));
    let daemon = shop.run_online("seoul-1", &uplink);
    previous_enroll(&shop, &database, "H1", "seoul-1");
    assert!(eventually(20, || shop.outbox_is_empty() && shop.has_customer("H1")));
    drop(daemon);
    let waiting = as_rows(&shop.record_offline("seoul-1", 5));
    assert_eq!(
        waiting.first().map(|r| r.split('|').next().unwrap()),
        Some("11"),
        "the backlog continues the box's numbering"
    );
    drop(previous);

    // Both sides upgraded in place.
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-upgraded");
    shop.upgrade();
    let daemon = shop.run_online("seoul-1", &uplink);
    assert!(
        eventually(20, || shop.outbox_is_empty()),
        "the upgraded box sends the backlog its old store kept"
    );
    let hq = Hq::new(&shop, &database);
    hq.ok(&[
        "enroll", "--ref", "H2", "--name", "New", "--shop", "seoul-1",
    ]);
    assert!(
        eventually(20, || shop.has_customer("H2") && shop.has_customer("H1")),
        "HQ's changes go on reaching it"
    );
    drop(daemon);

    let every: Vec<String> = synced.iter().chain(&waiting).cloned().collect();
    assert_eq!(every.len(), 20);
    assert_eq!(
        database.stored("seoul-1"),
        every,
        "every event once, in one numbering"
    );
    let identity = shop.identity();
    assert_eq!(
        database.query(
            "SELECT count(*), bool_and(stream_id = tastesync_legacy_stream('seoul-1')), max(box_id) FROM streams"
        ),
        [format!("1|t|{}", identity["box_id"].as_str().unwrap())],
        "the upgraded box continued its shop's legacy stream"
    );
    assert_eq!(
        database.query("SELECT tastesync_legacy_stream('seoul-1')::text"),
        [identity["stream_id"].as_str().unwrap()]
    );
    assert_eq!(database.query("SELECT count(*) FROM stream_gaps"), ["0"]);
    assert_eq!(database.query("SELECT count(*) FROM dead_letters"), ["0"]);
    // The console's analytics cover the previous release's events (computed when the
    // upgraded cloud started) and those stored since.
    let arrivals = database.query("SELECT count(*) FROM events WHERE kind = 'customer_arrived'");
    assert_ne!(arrivals, ["0"]);
    assert_eq!(
        database.query("SELECT coalesce(sum(visits), 0) FROM chain_days"),
        arrivals
    );
}

#[test]
fn a_box_on_the_previous_release_keeps_syncing_with_the_new_cloud_beside_a_new_box() {
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let (old_box, new_box) = (Shop::on_previous_release(), Shop::new());
    let _cloud = CloudSync::start(&new_box, &database, &broker, "cloud-mixed");
    let from_old = as_rows(&old_box.record_offline("busan-2", 8));
    let from_new = as_rows(&new_box.record_offline("busan-2", 6));
    let uplink = format!("broker = {:?}", broker.address());
    let a = old_box.run_online("busan-2", &uplink);
    let b = new_box.run_online("busan-2", &uplink);
    Hq::new(&new_box, &database).ok(&[
        "enroll", "--ref", "V1", "--name", "Vip", "--shop", "busan-2",
    ]);
    let done = eventually(30, || {
        old_box.outbox_is_empty()
            && new_box.outbox_is_empty()
            && old_box.has_customer("V1")
            && new_box.has_customer("V1")
    });
    let listed = Hq::new(&new_box, &database).shops(&["list", "--shop", "busan-2"]);
    drop((a, b));
    assert!(done, "both boxes drained and both got HQ's customer");

    // The cloud told them apart: the old box's events in the shop's legacy stream, the new
    // box's in its own.
    assert_eq!(
        database.query(
            "SELECT seq, event_id, kind FROM events WHERE stream_id = tastesync_legacy_stream('busan-2') ORDER BY seq"
        ),
        from_old
    );
    let new_stream = new_box.identity()["stream_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(database.stored_stream(&new_stream), from_new);
    assert_eq!(
        database.query("SELECT protocol, box_id IS NULL FROM streams ORDER BY protocol"),
        ["1|t", "2|f"]
    );
    let boxes = listed[0]["boxes"].as_array().unwrap();
    assert_eq!(boxes.len(), 2, "{listed:?}");
    assert_eq!(boxes[0]["protocol"], 1);
    assert_eq!(
        boxes[0]["online"], true,
        "the old box's status is understood"
    );
    assert_eq!(boxes[1]["protocol"], 2);
    assert_eq!(boxes[1]["online"], true);
    assert_eq!(database.query("SELECT count(*) FROM dead_letters"), ["0"]);
}

#[test]
fn a_replaced_box_on_the_previous_release_keeps_its_events_instead_of_losing_them() {
    // The first release's flaw: a box with a new store (seqs from 1 again) under a shop the
    // cloud already holds seqs for had every event taken for a replay, acknowledged, deleted.
    let shop = Shop::on_previous_release();
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-held");
    let uplink = format!("broker = {:?}\nack_timeout_secs = 1", broker.address());
    let first = as_rows(&shop.record_offline("seoul-8", 5));
    assert!(shop.drain_online("seoul-8", &uplink, 20));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", shop.db()));
    }
    let second = as_rows(&shop.record_offline("seoul-8", 3));
    assert!(
        !shop.drain_online("seoul-8", &uplink, 5),
        "the new cloud does not acknowledge what it does not hold"
    );
    assert_eq!(shop.outbox_rows(), second, "the box keeps every event");
    assert_eq!(
        database.stored("seoul-8"),
        first,
        "the cloud's copy is untouched"
    );
    assert_eq!(
        database.query("SELECT kind, from_seq FROM stream_gaps"),
        ["conflict|1"],
        "HQ sees the conflict, once"
    );
}

#[test]
fn an_owner_pin_set_by_the_previous_release_still_works_and_is_stored_with_its_parameters() {
    use tastesync_e2e::ble::Daemon;
    let shop = Shop::on_previous_release();
    let run_pos = |binary: &std::path::Path| {
        let quiet = shop.quiet_recording("quiet.jsonl", 120, 1000);
        let config = shop.write(
            "pos.toml",
            &format!(
                "shop_id = \"seoul-1\"\ndatabase = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\n[pos]\nlisten = \"127.0.0.1:0\"\nannounce = false\n",
                shop.db(),
                quiet.display().to_string()
            ),
        );
        let daemon = Daemon::start_binary(binary, &config, "unix:path=/nonexistent");
        let log = daemon.wait_for_log("POS listening on ");
        let base = log
            .last()
            .and_then(|l| l.split("POS listening on ").nth(1))
            .unwrap()
            .trim()
            .to_string();
        (daemon, base)
    };
    let post = |url: String, body: serde_json::Value| {
        http()
            .post(url)
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let (old, base) = run_pos(&previous_release().join("tastesync-edge"));
    assert_eq!(
        post(
            format!("{base}/api/owner/setup"),
            serde_json::json!({"pin": "482915"})
        ),
        201
    );
    assert!(old.terminate(), "the previous release stopped cleanly");
    let stored = |column: &str| -> Option<String> {
        rusqlite::Connection::open(shop.db())
            .unwrap()
            .query_row(&format!("SELECT {column} FROM owner"), [], |r| r.get(0))
            .unwrap()
    };

    let (new, base) = run_pos(&bin("tastesync-edge"));
    assert_eq!(
        stored("pin_phc"),
        None,
        "a hash of the first release, as it was"
    );
    assert_eq!(
        post(
            format!("{base}/api/owner/login"),
            serde_json::json!({"pin": "000000"})
        ),
        401
    );
    assert_eq!(
        post(
            format!("{base}/api/owner/login"),
            serde_json::json!({"pin": "482915"})
        ),
        200,
        "the old PIN still works"
    );
    let phc = stored("pin_phc").expect("upgraded at login");
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert_eq!(
        post(
            format!("{base}/api/owner/login"),
            serde_json::json!({"pin": "482915"})
        ),
        200,
        "and again, from the upgraded hash"
    );
    new.terminate();
}
