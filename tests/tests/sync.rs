//! Shop → cloud over a real Mosquitto into a real PostgreSQL: the box's events arrive exactly
//! once and in seq order, leave the outbox only once acknowledged, and bad messages land in
//! the dead-letter table.

use std::fmt::Write;
use std::process::{Command, Stdio};

use tastesync_e2e::cloud::{CloudSync, Database, Mosquitto, eventually};
use tastesync_e2e::*;

const UUID: &str = "f7826da64fa24e988024bc5b71e0893e";

fn outbox(shop: &Shop) -> Vec<serde_json::Value> {
    shop.edge_ok(&["outbox", "--db", &shop.db(), "--limit", "1000000"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn events_reach_postgres_once_in_order_and_leave_the_outbox_when_acknowledged() {
    let shop = Shop::new();
    let mut customers = String::from("customer_ref,display_name,tag_ids\n");
    for c in 1..=10 {
        writeln!(
            customers,
            "C{c},Customer {c},ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:{c}"
        )
        .unwrap();
    }
    shop.import_customers(&customers);
    // Offline first: ten visits recorded with no uplink configured.
    let start = now_s() * 1000;
    let mut lines = String::new();
    for c in 1..=10u64 {
        for i in 0..10u64 {
            let t = start + c * 60_000 + i * 1000;
            writeln!(
                lines,
                r#"{{"t_ms":{t},"address":"c0:00:00:00:00:{c:02x}","rssi":-60,"data":"{}"}}"#,
                ibeacon(UUID, 1, c as u16)
            )
            .unwrap();
        }
    }
    let busy = shop.write("busy.jsonl", &lines);
    let offline = shop.write(
        "offline.toml",
        &format!("shop_id = \"seoul-1\"\ndatabase = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\nreplay_speed = 0\n[presence]\nabsence_ms = 5000\n[pos]\nlisten = \"\"\n", shop.db(), busy.display().to_string()),
    );
    shop.edge_ok(&["run", "--config", offline.to_str().unwrap()]);
    let pending = outbox(&shop);
    assert_eq!(
        pending.len(),
        20,
        "ten arrivals and ten departures wait for the cloud"
    );

    // Now the cloud is reachable.
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-a");
    let quiet = shop.write(
        "quiet.jsonl",
        &(0..60)
            .map(|i| {
                format!(
                    r#"{{"t_ms":{},"address":"c0:00:00:00:00:99","rssi":-90,"data":"020106"}}"#,
                    now_s() * 1000 + i * 1000
                ) + "\n"
            })
            .collect::<String>(),
    );
    let online = shop.write(
        "online.toml",
        &format!("shop_id = \"seoul-1\"\ndatabase = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\n[pos]\nlisten = \"\"\n[uplink]\nbroker = {:?}\n", shop.db(), quiet.display().to_string(), broker.address()),
    );
    let mut daemon = Command::new(bin("tastesync-edge"))
        .args(["run", "--config", online.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let drained = eventually(30, || outbox(&shop).is_empty());
    let rows = database
        .query("SELECT seq, event_id, kind FROM events WHERE shop_id = 'seoul-1' ORDER BY seq");
    let online_status = database.query("SELECT online FROM shops WHERE shop_id = 'seoul-1'");
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        drained,
        "the outbox drained; PostgreSQL has {} rows",
        rows.len()
    );
    let expected: Vec<String> = pending
        .iter()
        .map(|e| {
            format!(
                "{}|{}|{}",
                e["seq"],
                e["event_id"].as_str().unwrap(),
                e["type"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        rows, expected,
        "exactly the box's events, once each, in seq order"
    );
    assert_eq!(online_status, ["t"], "the retained status says online");
    assert_eq!(database.query("SELECT acked_seq FROM shops"), ["20"]);

    // Garbage, a wrong version and a shop id that does not match the topic: dead letters.
    broker.publish("tastesync/v1/shops/seoul-1/events", "garbage");
    broker.publish(
        "tastesync/v1/shops/seoul-1/events",
        r#"{"v":2,"shop_id":"seoul-1","events":[]}"#,
    );
    broker.publish(
        "tastesync/v1/shops/seoul-1/events",
        r#"{"v":1,"shop_id":"busan-2","events":[{"seq":21,"event_id":"x","type":"customer_arrived","at_ms":1,"body":{}}]}"#,
    );
    assert!(eventually(10, || database
        .query("SELECT count(*) FROM dead_letters")
        == ["3"]));
    let reasons = database.query("SELECT reason FROM dead_letters ORDER BY id");
    assert!(
        reasons[0].starts_with("not a valid event batch"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("version 2 is not supported"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("does not match the topic"),
        "{reasons:?}"
    );
    assert_eq!(
        database.query("SELECT count(*) FROM events"),
        ["20"],
        "nothing foreign stored"
    );
}
