//! Shop → cloud over a real Mosquitto into a real PostgreSQL: the box's events arrive exactly
//! once and in seq order, leave the outbox only once acknowledged, and bad messages land in
//! the dead-letter table.

use std::process::Command;

use tastesync_e2e::cloud::{
    CloudSync, Database, Hq, Mosquitto, eventually, free_port, make_certificates,
};
use tastesync_e2e::*;

#[test]
fn events_reach_postgres_once_in_order_and_leave_the_outbox_when_acknowledged() {
    let shop = Shop::new();
    // Offline first: ten visits recorded with no uplink configured.
    let pending = shop.record_offline("seoul-1", 10);
    assert_eq!(
        pending.len(),
        20,
        "ten arrivals and ten departures wait for the cloud"
    );

    // Now the cloud is reachable.
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-a");
    let daemon = shop.run_online("seoul-1", &format!("broker = {:?}", broker.address()));
    let drained = eventually(30, || shop.outbox().is_empty());
    let rows = database.stored("seoul-1");
    let online_status = database.query("SELECT online FROM boxes WHERE shop_id = 'seoul-1'");
    drop(daemon);
    assert!(
        drained,
        "the outbox drained; PostgreSQL has {} rows",
        rows.len()
    );
    assert_eq!(
        rows,
        as_rows(&pending),
        "exactly the box's events, once each, in seq order"
    );
    assert_eq!(online_status, ["t"], "the retained status says online");
    assert_eq!(database.query("SELECT acked_seq FROM streams"), ["20"]);

    // Garbage, a wrong version, a shop id that does not match the topic and an oversized
    // payload: dead letters, and the service goes on.
    broker.publish("tastesync/v1/shops/seoul-1/events", "garbage");
    broker.publish(
        "tastesync/v1/shops/seoul-1/events",
        r#"{"v":3,"shop_id":"seoul-1","events":[]}"#,
    );
    broker.publish(
        "tastesync/v1/shops/seoul-1/events",
        r#"{"v":1,"shop_id":"busan-2","events":[{"seq":21,"event_id":"x","type":"customer_arrived","at_ms":1,"body":{}}]}"#,
    );
    let oversized = format!(
        r#"{{"v":1,"shop_id":"seoul-1","events":[],"pad":"{}"}}"#,
        "x".repeat(1_100_000)
    );
    broker.publish_file(
        "tastesync/v1/shops/seoul-1/events",
        &shop.write("big.json", &oversized),
    );
    // A batch PostgreSQL itself refuses (jsonb cannot hold \u0000), from a protocol-1 box of
    // the shop, then another shop's good one: the first is a dead letter, the second is
    // stored all the same.
    broker.publish(
        "tastesync/v1/shops/seoul-1/events",
        r#"{"v":1,"shop_id":"seoul-1","events":[{"seq":1,"event_id":"n","type":"customer_arrived","at_ms":1,"body":{"note":"\u0000"}}]}"#,
    );
    broker.publish(
        "tastesync/v1/shops/busan-9/events",
        r#"{"v":1,"shop_id":"busan-9","events":[{"seq":1,"event_id":"b","type":"customer_arrived","at_ms":1,"body":{}}]}"#,
    );
    assert!(eventually(10, || database
        .query("SELECT count(*) FROM dead_letters")
        == ["5"]));
    assert!(eventually(10, || database.query(
        "SELECT acked_seq FROM streams WHERE shop_id = 'busan-9'"
    ) == ["1"]));
    let reasons = database.query("SELECT reason FROM dead_letters ORDER BY id");
    assert!(
        reasons[3].contains("exceeds the 1048576-byte limit"),
        "{reasons:?}"
    );
    assert!(
        reasons[0].starts_with("not a valid event batch"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("version 3 is not supported"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("does not match the topic"),
        "{reasons:?}"
    );
    assert!(
        reasons[4].contains("refused by the database: unsupported Unicode escape sequence"),
        "{reasons:?}"
    );
    // Its seq is stored pointing to the dead letter, so the stream's acks move on.
    let legacy = "stream_id = tastesync_legacy_stream('seoul-1')";
    assert!(eventually(10, || database.query(&format!(
        "SELECT acked_seq FROM streams WHERE {legacy}"
    )) == ["1"]));
    assert_eq!(
        database.query(&format!("SELECT body->>'dead_letter_id' = (SELECT max(id) FROM dead_letters)::text FROM events WHERE {legacy} AND seq = 1")),
        ["t"]
    );
    assert_eq!(
        database.query("SELECT count(*) FROM events WHERE shop_id = 'seoul-1'"),
        ["21"],
        "nothing foreign stored"
    );
}

#[test]
fn broker_restart_and_cloud_sync_killed_mid_stream_lose_and_duplicate_nothing() {
    let shop = Shop::new();
    let pending = shop.record_offline("seoul-3", 1000);
    assert_eq!(pending.len(), 2000);
    let mut broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let cloud = CloudSync::start(&shop, &database, &broker, "cloud-a");
    // Small batches and a short ack timeout, so the faults land mid-stream.
    let uplink = format!(
        "broker = {:?}\nbatch_size = 20\nwindow_batches = 2\nack_timeout_secs = 2",
        broker.address()
    );
    let daemon = shop.run_online("seoul-3", &uplink);
    assert!(
        eventually(20, || database.stored("seoul-3").len() >= 200),
        "the drain started"
    );
    broker.restart(); // in-flight messages and sessions are lost
    assert!(
        eventually(30, || database.stored("seoul-3").len() >= 800),
        "the drain resumed"
    );
    drop(cloud); // cloud-sync killed mid-batch
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-b");
    let drained = eventually(60, || shop.outbox().is_empty());
    let rows = database.stored("seoul-3");
    drop(daemon);
    assert!(
        drained,
        "the outbox drained; PostgreSQL has {} of 2000",
        rows.len()
    );
    assert_eq!(rows, as_rows(&pending), "every event once, in seq order");
}

#[test]
fn shops_are_confined_to_their_own_topics() {
    let users = [
        ("seoul-1", "pw-seoul"),
        ("busan-2", "pw-busan"),
        ("cloud", "pw-cloud"),
    ];
    let broker = Mosquitto::with_shop_acl(&users);
    let database = Database::create();
    let shop = Shop::new();
    let pending = shop.record_offline("seoul-1", 5);
    let _cloud = CloudSync::start_as(
        &shop,
        &database,
        &broker,
        "cloud-acl",
        ("cloud", "pw-cloud"),
        "",
    );
    let uplink = format!(
        "broker = {:?}\nusername = \"seoul-1\"\npassword = \"pw-seoul\"",
        broker.address()
    );
    let daemon = shop.run_online("seoul-1", &uplink);
    let drained = eventually(20, || shop.outbox().is_empty());
    drop(daemon);
    assert!(drained, "a shop with its own credentials syncs");
    assert_eq!(database.stored("seoul-1"), as_rows(&pending));

    let seoul = Some(("seoul-1", "pw-seoul"));
    let forged = r#"{"v":1,"shop_id":"busan-2","events":[{"seq":1,"event_id":"x","type":"customer_arrived","at_ms":1,"body":{}}]}"#;
    // Shop A cannot publish into shop B's topics: the broker drops it.
    broker.publish_as(seoul, "tastesync/v1/shops/busan-2/events", forged);
    // Shop A's own topic with B's shop id in the payload: cloud-sync refuses it.
    broker.publish_as(seoul, "tastesync/v1/shops/seoul-1/events", forged);
    assert!(eventually(10, || database
        .query("SELECT count(*) FROM dead_letters")
        == ["1"]));
    assert!(
        database.query("SELECT reason FROM dead_letters")[0].contains("does not match the topic")
    );
    assert!(
        database.stored("busan-2").is_empty(),
        "nothing stored for busan-2"
    );

    // Shop A cannot read shop B's downlink; B can: a customer HQ enrolls for B.
    let topic = "tastesync/v1/shops/busan-2/changes";
    let spy = broker.subscribe_as(Some(("seoul-1", "pw-seoul")), topic, 5);
    let owner = broker.subscribe_as(Some(("busan-2", "pw-busan")), topic, 5);
    Hq::new(&shop, &database).ok(&[
        "enroll",
        "--ref",
        "B7",
        "--name",
        "Busan Regular",
        "--shop",
        "busan-2",
    ]);
    let read = |child: std::process::Child| {
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    };
    assert!(
        read(owner).contains("Busan Regular"),
        "busan-2 gets its change"
    );
    assert_eq!(read(spy), "", "seoul-1 must not see busan-2's messages");
}

#[test]
fn a_shop_syncs_over_tls_with_its_client_certificate_and_only_its_own() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path(), &["seoul-1", "busan-2"]);
    let tls_port = free_port();
    let broker = Mosquitto::with_tls(certs.path(), tls_port);
    let database = Database::create();
    let shop = Shop::new();
    let pending = shop.record_offline("seoul-1", 5);
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-tls");
    let cert = |name: &str| format!("{:?}", certs.path().join(name).display().to_string());
    let tls = |client: &str| {
        format!(
            "broker = \"127.0.0.1:{tls_port}\"\ntls = true\nca_file = {}\nclient_cert_file = {}\nclient_key_file = {}",
            cert("ca.crt"),
            cert(&format!("{client}.crt")),
            cert(&format!("{client}.key"))
        )
    };
    // With its own certificate, seoul-1 syncs over TLS.
    let daemon = shop.run_online("seoul-1", &tls("seoul-1"));
    let drained = eventually(20, || shop.outbox().is_empty());
    drop(daemon);
    assert!(drained, "synced over TLS");
    assert_eq!(database.stored("seoul-1"), as_rows(&pending));

    // A box holding busan-2's certificate but configured as seoul-1 is refused by the ACL:
    // nothing it sends reaches the cloud.
    let other = Shop::new();
    let backlog = other.record_offline("seoul-1", 3);
    assert_eq!(backlog.len(), 6);
    let daemon = other.run_online("seoul-1", &tls("busan-2"));
    std::thread::sleep(std::time::Duration::from_secs(3));
    drop(daemon);
    assert_eq!(other.outbox().len(), 6, "nothing acknowledged");
    assert_eq!(
        database.stored("seoul-1"),
        as_rows(&pending),
        "nothing new stored"
    );

    // A broken TLS setting stops the box at start, with the reason.
    let broken = run_online_once(&shop, "seoul-1", "broker = \"127.0.0.1:1\"\ntls = true");
    assert!(
        broken.contains("uplink.tls needs uplink.ca_file"),
        "{broken}"
    );
}

/// Runs the box online once and returns its error output (for configurations it refuses).
fn run_online_once(shop: &Shop, shop_id: &str, uplink: &str) -> String {
    let mut daemon = shop.run_online(shop_id, uplink);
    let status = daemon.0.wait().unwrap();
    assert!(!status.success());
    let config = shop.path("online.toml");
    let output = Command::new(bin("tastesync-edge"))
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    stderr(&output)
}

#[test]
fn hq_sees_a_box_drop_through_its_last_will() {
    let shop = Shop::new();
    shop.record_offline("seoul-5", 1);
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-will");
    let uplink = format!("broker = {:?}\nkeep_alive_secs = 1", broker.address());
    let mut daemon = shop.run_online("seoul-5", &uplink);
    let online = || database.query("SELECT online FROM boxes WHERE shop_id = 'seoul-5'");
    assert!(eventually(10, || online() == ["t"]), "online while running");
    let _ = daemon.0.kill(); // a power cut: no goodbye
    let _ = daemon.0.wait();
    assert!(
        eventually(10, || online() == ["f"]),
        "the broker published the last will"
    );
}
