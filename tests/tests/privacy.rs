//! A customer's rights through the console API, with a real box: the export holds what HQ
//! and the events hold about them; erasure removes them at HQ, on the box and from stored
//! events, and is shown done only once every active box applied it.

use std::io::Write;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tastesync_e2e::cloud::eventually;
use tastesync_e2e::console::Console;
use tastesync_e2e::*;

const PASSWORD: &str = "a long enough password";
const UUID: &str = "f7826da64fa24e988024bc5b71e0893e";
const OTHER_STREAM: &str = "0190e6b2-0000-7000-8000-0000000000bb";

/// Events of a second box of the shop (one that never applies HQ's changes), sent by hand.
fn other_box_sends(console: &Console, first_seq: usize, events: &[(&str, Value)]) {
    let events: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, (kind, body))| {
            let seq = first_seq + i;
            json!({"seq": seq, "event_id": format!("b-{seq}"), "type": kind, "at_ms": now_ms(), "body": body})
        })
        .collect();
    let last = (first_seq + events.len() - 1).to_string();
    let batch = json!({"v": 2, "shop_id": "seoul-1", "box_id": "box-b", "stream_id": OTHER_STREAM,
                       "low_water": first_seq - 1, "events": events});
    console.broker.publish(
        "tastesync/v1/shops/seoul-1/boxes/box-b/events",
        &batch.to_string(),
    );
    assert!(eventually(20, || console.database.query(&format!(
        "SELECT acked_seq FROM streams WHERE stream_id = '{OTHER_STREAM}'"
    )) == [last.clone()]));
}

fn box_knows(shop: &Shop, customer_ref: &str) -> bool {
    shop.edge_ok(&["customers", "list", "--json", "--db", &shop.db()])
        .lines()
        .any(|l| serde_json::from_str::<Value>(l).unwrap()["customer_ref"] == customer_ref)
}

#[test]
fn export_holds_everything_and_erasure_reaches_every_box_and_every_event() {
    let console = Console::start("");
    console.add_shop("seoul-1", "Seoul Station", "Asia/Seoul");
    console.add_user("admin@example.com", "admin", &[], PASSWORD);
    console.add_user("manager@example.com", "manager", &["seoul-1"], PASSWORD);
    let admin = console.token("admin@example.com", PASSWORD);
    let manager = console.token("manager@example.com", PASSWORD);

    // The shop's box, hearing whatever the test writes into its air.
    let shop = Shop::new();
    let (_edge, mut air) = shop.run_on_air("seoul-1", &console.broker.address());
    assert!(eventually(20, || console
        .database
        .query("SELECT online FROM boxes WHERE box_id <> 'box-b'")
        == ["t"]));
    let enrolled = console.call(
        "POST",
        "/api/v1/customers",
        Some(&admin),
        Some(json!({"customer_ref": "M1", "display_name": "Minji Kim", "notes": "allergic to peanuts",
                    "preferences": "oat latte", "shops": ["seoul-1"],
                    "tag_ids": [format!("ibeacon:{UUID}:7:7")]})),
    );
    assert_eq!(enrolled.status, StatusCode::CREATED, "{:?}", enrolled.body);
    assert!(
        eventually(10, || box_knows(&shop, "M1")),
        "the enrollment reaches the box"
    );
    let start = now_ms();
    for i in 0..5 {
        let data = ibeacon(UUID, 7, 7);
        writeln!(
            air,
            r#"{{"t_ms":{},"address":"d4:11:22:33:44:07","rssi":-60,"data":"{data}"}}"#,
            start + i * 500
        )
        .unwrap();
    }
    air.flush().unwrap();
    assert!(
        eventually(15, || {
            console.database.query(
        "SELECT count(*) FROM events WHERE kind = 'customer_arrived' AND body->>'customer_ref' = 'M1'"
    ) == ["1"]
        }),
        "her arrival reaches the cloud"
    );
    other_box_sends(
        &console,
        1,
        &[
            (
                "order_recorded",
                json!({"action_id": "o1", "visit_id": "v1", "customer_ref": "M1", "device_id": 1, "items": ["oat latte"]}),
            ),
            (
                "feedback_recorded",
                json!({"action_id": "f1", "visit_id": "v1", "customer_ref": "M1", "device_id": 1, "score": 5, "comment": "Minji was lovely today"}),
            ),
        ],
    );

    // The export: HQ's record, her visits, her events with the comment.
    assert_eq!(
        console
            .get("/api/v1/customers/M1/export", Some(&manager))
            .status,
        StatusCode::FORBIDDEN
    );
    let export = console.get("/api/v1/customers/M1/export", Some(&admin));
    assert_eq!(export.status, StatusCode::OK, "{:?}", export.body);
    assert_eq!(
        export.headers["content-disposition"],
        "attachment; filename=\"customer-M1.json\""
    );
    let document = &export.body;
    assert_eq!(document["hq_record"]["display_name"], "Minji Kim");
    assert_eq!(document["hq_record"]["notes"], "allergic to peanuts");
    assert_eq!(document["visits_by_shop"][0]["visits"], 1);
    let kinds: Vec<&str> = document["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["customer_arrived", "order_recorded", "feedback_recorded"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(document.to_string().contains("Minji was lovely today"));
    assert_eq!(
        console
            .get("/api/v1/customers/nobody/export", Some(&admin))
            .status,
        StatusCode::NOT_FOUND
    );

    // Erasure: confirmed by typing the ref, admins only.
    let erase = |confirm: &str, token: &str| {
        console.call(
            "POST",
            "/api/v1/customers/M1/erasure",
            Some(token),
            Some(json!({"confirm": confirm})),
        )
    };
    assert_eq!(erase("M1", &manager).status, StatusCode::FORBIDDEN);
    assert_eq!(erase("m1", &admin).status, StatusCode::BAD_REQUEST);
    let erased = erase("M1", &admin);
    assert_eq!(erased.status, StatusCode::ACCEPTED, "{:?}", erased.body);
    assert_eq!(erased.body["done"], false);
    assert_eq!(erased.body["events_scrubbed"], 3);
    let boxes = erased.body["boxes"].as_array().unwrap().len();
    assert_eq!(boxes, 2, "{:?}", erased.body);

    // Gone at HQ and from every stored event, at once.
    assert_eq!(
        console.get("/api/v1/customers/M1", Some(&admin)).status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(console.database.query("SELECT count(*) FROM events WHERE body ? 'customer_ref' AND body->>'customer_ref' = 'M1'"), ["0"]);
    assert_eq!(
        console
            .database
            .query("SELECT count(*) FROM events WHERE body::text LIKE '%lovely%'"),
        ["0"]
    );
    assert_eq!(
        console
            .database
            .query("SELECT count(*) FROM events WHERE body->>'erased' = 'true'"),
        ["3"]
    );
    assert_eq!(
        console
            .database
            .query("SELECT count(*) FROM customer_shops"),
        ["0"]
    );
    // The real box applies the deletion and says so; the other box never does.
    assert!(
        eventually(15, || !box_knows(&shop, "M1")),
        "the box deletes her"
    );
    let status = |token: &str| {
        console
            .get("/api/v1/customers/M1/erasure", Some(token))
            .body
    };
    assert!(
        eventually(15, || {
            status(&admin)["boxes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["box_id"] != "box-b" && b["applied"] == true)
        }),
        "the box's report reaches HQ: {:?}",
        status(&admin)
    );
    assert_eq!(status(&admin)["done"], false, "box-b has not applied it");
    // An event still in box-b's outbox arrives after the erasure: scrubbed as it is stored.
    other_box_sends(
        &console,
        3,
        &[(
            "feedback_recorded",
            json!({"action_id": "f2", "visit_id": "v2", "customer_ref": "M1", "device_id": 1, "score": 4, "comment": "Minji again"}),
        )],
    );
    assert_eq!(
        console
            .database
            .query("SELECT count(*) FROM events WHERE body::text LIKE '%Minji%'"),
        ["0"]
    );
    // box-b is lost for good: revoked, it is not waited for.
    assert_eq!(
        console
            .call("POST", "/api/v1/boxes/box-b/revoke", Some(&admin), None)
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(status(&admin)["done"], true);

    // Her ref is never reused; the export now says only that she was erased.
    let again = console.call(
        "POST",
        "/api/v1/customers",
        Some(&admin),
        Some(json!({"customer_ref": "M1", "display_name": "Someone else", "shops": ["seoul-1"]})),
    );
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    let after = console
        .get("/api/v1/customers/M1/export", Some(&admin))
        .body;
    assert_eq!(after["hq_record"], Value::Null);
    assert_eq!(after["events"], json!([]));
    assert!(!after.to_string().contains("Minji"));
    // Analytics keep the anonymous counts.
    let report = console.get("/api/v1/analytics", Some(&admin)).body;
    assert_eq!(report["totals"]["visits"], 1);
    let audit = console.get("/api/v1/audit", Some(&admin)).body;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["customer_exported", "customer_erased", "box_revoked"] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    // The erasure's audit entry names her ref, never her name.
    assert!(!audit.to_string().contains("Minji"));
}
