//! The daemon end to end from a recorded JSON-lines file: enrolled customers produce visits,
//! strangers and bad lines do not, and the EID phone is recognised across rotations.

use std::fmt::Write;

use tastesync_e2e::*;
use tastesync_shared::eid::eid;
use tastesync_shared::hexfmt::{hex, parse_fixed};

const UUID: &str = "f7826da64fa24e988024bc5b71e0893e";
const PHONE_KEY: &str = "8a1b2c3d4e5f60718293a4b5c6d7e8f9";

#[test]
fn replayed_shop_traffic_becomes_visits() {
    let shop = Shop::new();
    shop.import_customers(
        "customer_ref,display_name,tag_ids\nC1,Minji Kim,ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:14\nP1,Joon Park,\n",
    );
    let start_s = now_s() - 3600; // recorded an hour ago
    shop.enroll_eid("P1", PHONE_KEY, 6, start_s);

    let key: [u8; 16] = parse_fixed(PHONE_KEY).unwrap();
    let mut lines = String::new();
    for i in 0..600u64 {
        // 5 minutes at 2 Hz
        let t_ms = start_s * 1000 + i * 500;
        let tag = ibeacon(UUID, 1, 14);
        let stranger = ibeacon(UUID, 1, 99);
        let phone = eid_frame(&hex(&eid(&key, 6, (t_ms / 1000) as u32)));
        // The tag is in the shop for the first 2 minutes, the phone from minute 1 to 4.
        if i < 240 {
            writeln!(
                lines,
                r#"{{"t_ms":{t_ms},"address":"c0:00:00:00:00:01","rssi":-61,"data":"{tag}"}}"#
            )
            .unwrap();
        }
        if (120..480).contains(&i) {
            writeln!(lines, r#"{{"t_ms":{t_ms},"address":"d0:00:00:00:00:{:02x}","rssi":-64,"data":"{phone}","zone":"terrace"}}"#, i / 100).unwrap();
        }
        writeln!(
            lines,
            r#"{{"t_ms":{t_ms},"address":"c0:00:00:00:00:02","rssi":-50,"data":"{stranger}"}}"#
        )
        .unwrap();
        if i % 100 == 0 {
            lines.push_str("{\"t_ms\": \"garbage\"}\n");
        }
    }
    let recording = shop.write("shop.jsonl", &lines);
    let config = shop.write(
        "edge.toml",
        &format!(
            "database = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\nreplay_speed = 0\nzone = \"counter\"\n[presence]\nabsence_ms = 30000\n[pos]\nlisten = \"\"\n",
            shop.db(),
            recording.display().to_string()
        ),
    );
    let output = run(
        "tastesync-edge",
        &["run", "--config", config.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", stderr(&output));

    let mut visits = shop.visits();
    visits.sort_by_key(|v| v["customer_ref"].as_str().unwrap().to_string());
    assert_eq!(visits.len(), 2, "{visits:?}");
    let (tag, phone) = (&visits[0], &visits[1]);
    assert_eq!(tag["customer_ref"], "C1");
    assert_eq!(tag["zone"], "counter");
    assert_eq!(
        tag["arrived_at_ms"],
        start_s * 1000 + 1000,
        "third sighting"
    );
    assert_eq!(tag["dwell_s"], 118);
    assert_eq!(phone["customer_ref"], "P1");
    assert_eq!(phone["zone"], "terrace");
    assert_eq!(
        phone["dwell_s"], 178,
        "one visit across three EID rotations"
    );
}
