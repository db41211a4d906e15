//! The wire formats' document, `docs/asyncapi.yaml`: valid AsyncAPI 3.0 by the AsyncAPI
//! Initiative's own parser, and true to the code: every MQTT message a current box, a
//! first-release box and cloud-sync exchange (events of every kind a box records, acks,
//! status, resync requests, applied reports, HQ's changes) matches the schema of its channel. The Kafka records are checked
//! the same way in `kafka.rs`.

use std::collections::BTreeSet;

use serde_json::json;
use tastesync_e2e::asyncapi::{Capture, Contract, parser_verdict};
use tastesync_e2e::cloud::{CloudSync, Database, Hq, Mosquitto, eventually};
use tastesync_e2e::pos::PosBox;
use tastesync_e2e::*;

#[test]
fn the_document_is_valid_asyncapi_3() {
    let (valid, report) = parser_verdict(&workspace().join("docs/asyncapi.yaml"));
    assert!(valid, "{report}");
    assert!(report.contains("valid AsyncAPI 3.0.0"), "{report}");
    // The check can fail: a reference to nothing is refused.
    let broken = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(workspace().join("docs/asyncapi.yaml")).unwrap();
    std::fs::write(
        broken.path(),
        text.replace(
            "#/components/schemas/EventBatch'",
            "#/components/schemas/Nothing'",
        ),
    )
    .unwrap();
    let (valid, report) = parser_verdict(broken.path());
    assert!(!valid, "{report}");
}

#[test]
fn every_mqtt_message_of_boxes_of_both_protocols_matches_the_document() {
    let files = Shop::new();
    let database = Database::create();
    let broker = Mosquitto::start("allow_anonymous true");
    let _cloud = CloudSync::start(&files, &database, &broker, "cloud");
    let port = broker.port;
    let capture = Capture::start(port);
    let uplink = format!("broker = {:?}", broker.address());

    // HQ's customers for both shops: changes to apply, applied reports, resync requests.
    let hq = Hq::new(&files, &database);
    for (customer, shop) in [("HQ-1", "seoul-1"), ("HQ-2", "busan-1")] {
        hq.ok(&[
            "enroll", "--ref", customer, "--name", "Someone", "--notes", "peanuts", "--shop", shop,
            "--eid",
        ]);
    }
    // A current box: a visit with an acknowledgement, an order and feedback from a tablet.
    let mut pos = PosBox::start_synced("seoul-1", &broker.address());
    let tablet = pos.pair("Counter tablet");
    pos.customer_arrives(1);
    let visit = pos.wait_present(&tablet, 1)[0]["visit_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (path, body) in [
        ("ack", json!({})),
        (
            "orders",
            json!({"action_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "items": ["oat latte"]}),
        ),
        (
            "feedback",
            json!({"action_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "score": 5, "comment": "lovely"}),
        ),
    ] {
        let answer = pos
            .http
            .post(pos.url(&format!("/api/visits/{visit}/{path}")))
            .bearer_auth(&tablet)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(answer.status(), 201, "{path}");
    }
    // The customer walks out to the terrace, where a paired scanner box hears them loud and
    // the box by the counter no longer does: a zone change.
    let scanner = pos.pair_scanner("Terrace scanner");
    let frame = format!(
        "0201061aff4c00{}",
        ibeacon_manufacturer_payload(tastesync_e2e::pos::UUID, 1, 1)
    );
    let moved = eventually(20, || {
        let batch = json!({"zone": "terrace", "sightings": [
            {"age_ms": 0, "address": "c0:11:22:33:44:01", "rssi": -50, "data": frame}
        ]});
        let sent = pos
            .http
            .post(pos.url("/api/scanners/sightings"))
            .bearer_auth(&scanner)
            .json(&batch)
            .send()
            .unwrap();
        assert_eq!(sent.status(), 202);
        std::thread::sleep(std::time::Duration::from_millis(500));
        pos.present(&tablet)["present"][0]["zone"] == "terrace"
    });
    assert!(moved, "moved to the terrace: {}", pos.present(&tablet));
    // A first-release box with visits of its own.
    let old = Shop::on_previous_release();
    old.record_offline("busan-1", 6);
    let old_online = old.run_online("busan-1", &uplink);
    assert!(eventually(30, || old.outbox_is_empty()));
    let kinds = |shop: &str| {
        database.query(&format!(
            "SELECT string_agg(DISTINCT kind, ',' ORDER BY kind) FROM events WHERE shop_id = '{shop}'"
        ))
    };
    assert!(eventually(30, || kinds("seoul-1")
        == [
            "alert_acknowledged,customer_arrived,feedback_recorded,order_recorded,zone_changed"
        ]));
    assert!(eventually(20, || database
        .query("SELECT count(*) FROM boxes WHERE downlink_applied > 0")
        == ["1"]));
    drop(pos); // its last will
    drop(old_online);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let contract = Contract::load();
    let messages = capture.messages();
    let mut leaves = BTreeSet::new();
    for (topic, payload) in &messages {
        contract.check_mqtt(topic, payload.as_bytes());
        let parts: Vec<&str> = topic.split('/').collect();
        let level = if parts.len() == 7 { "box" } else { "shop" };
        leaves.insert(format!("{level} {}", parts.last().unwrap()));
    }
    // Protocol 1 has no box level; the changes are the shop's, for both.
    let expected = [
        "box ack",
        "box applied",
        "box events",
        "box resync",
        "box status",
        "shop ack",
        "shop changes",
        "shop events",
        "shop resync",
        "shop status",
    ];
    assert_eq!(
        leaves,
        expected.iter().map(|s| s.to_string()).collect(),
        "{} messages",
        messages.len()
    );
}
