//! The real BLE path: btleplug → D-Bus → BlueZ, with python-dbusmock's bluez5 template
//! standing in for bluetoothd on a private bus. No radio needed, nothing else mocked.

use std::process::Command;
use std::time::{Duration, Instant};

use tastesync_e2e::ble::{Daemon, MockBluez};
use tastesync_e2e::*;
use tastesync_shared::eid::eid;
use tastesync_shared::hexfmt::{hex, parse_fixed};

const UUID: &str = "f7826da64fa24e988024bc5b71e0893e";
const PHONE_KEY: &str = "00112233445566778899aabbccddeeff";

fn config(shop: &Shop, watchdog_secs: u64) -> std::path::PathBuf {
    shop.write(
        "edge.toml",
        &format!(
            "database = {:?}\n[scanner]\nsource = \"ble\"\nzone = \"door\"\nwatchdog_secs = {watchdog_secs}\n[presence]\nabsence_ms = 60000\n[pos]\nlisten = \"127.0.0.1:0\"\nannounce = false\n",
            shop.db()
        ),
    )
}

/// Polls the box's visit list until it has `count` visits (or 15 s pass).
fn wait_for_visits(shop: &Shop, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut visits = shop.visits();
    while visits.len() < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        visits = shop.visits();
    }
    visits
}

#[test]
fn advertisements_over_dbus_identify_a_tag_and_an_eid_phone_but_not_a_stranger() {
    let shop = Shop::new();
    shop.import_customers(
        "customer_ref,display_name,tag_ids\nC1,Minji Kim,ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:14\nP1,Joon Park,\n",
    );
    shop.enroll_eid("P1", PHONE_KEY, 10, now_s());
    let mut mock = MockBluez::start(&[]);
    let daemon = Daemon::start(&config(&shop, 30), &mock.bus);
    daemon.wait_for_log("BLE discovery started");

    let tag = "c0:11:22:33:44:01";
    let phone = "d4:11:22:33:44:02";
    let stranger = "c0:11:22:33:44:03";
    for (mac, name) in [(tag, "tag"), (phone, "phone"), (stranger, "stranger")] {
        mock.send(serde_json::json!({"cmd": "add_device", "mac": mac, "name": name}));
    }
    let key: [u8; 16] = parse_fixed(PHONE_KEY).unwrap();
    for i in 0..6 {
        mock.send(serde_json::json!({
            "cmd": "advertise", "mac": tag, "rssi": -60 - (i % 2),
            "manufacturer_data": {"76": ibeacon_manufacturer_payload(UUID, 1, 14)}
        }));
        let current = hex(&eid(&key, 10, now_s() as u32));
        mock.send(serde_json::json!({
            "cmd": "advertise", "mac": phone, "rssi": -63 + (i % 2),
            "service_data": {"0000feaa-0000-1000-8000-00805f9b34fb": format!("30f6{current}")}
        }));
        mock.send(serde_json::json!({
            "cmd": "advertise", "mac": stranger, "rssi": -50,
            "manufacturer_data": {"76": ibeacon_manufacturer_payload(UUID, 1, 99)}
        }));
        std::thread::sleep(Duration::from_millis(150));
    }

    let visits = wait_for_visits(&shop, 2);
    let mut who: Vec<String> = visits
        .iter()
        .map(|v| v["customer_ref"].as_str().unwrap().to_string())
        .collect();
    who.sort();
    assert_eq!(who, ["C1", "P1"], "{visits:?}");
    assert!(
        visits
            .iter()
            .all(|v| v["zone"] == "door" && v["left_at_ms"].is_null())
    );
    assert!(daemon.terminate(), "clean exit on SIGTERM");
    mock.stop();

    // Stopping cleanly leaves a health report for HQ in the outbox: counters, no names.
    let outbox = shop.edge_ok(&["outbox", "--db", &shop.db()]);
    let report: serde_json::Value = outbox
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["type"] == "box_health")
        .expect("a box_health event");
    let body = &report["body"];
    assert_eq!(body["status"], "stopping");
    assert_eq!(body["scanner"], "ble");
    assert!(body["recognised"].as_u64().unwrap() >= 2, "{body}");
    assert!(
        body["advertisements"].as_u64() > body["recognised"].as_u64(),
        "the stranger counts as heard, not recognised: {body}"
    );
    assert!(!body.to_string().contains("Minji"), "no personal data");
}

#[test]
fn no_bluez_and_no_adapter_are_explained() {
    let shop = Shop::new();
    let config = config(&shop, 30);
    // The daemon must refuse to start, exit 1, and say what is missing.
    let refuses = |bus: &str, message: &str| {
        let output = Command::new(bin("tastesync-edge"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{bus}");
        assert!(stderr(&output).contains(message), "{}", stderr(&output));
    };
    refuses("unix:path=/nonexistent/bus", "cannot connect to D-Bus");
    let mock = MockBluez::start(&["--no-adapter"]);
    refuses(&mock.bus, "no Bluetooth adapter found");
    mock.stop();
}

#[test]
fn the_watchdog_restarts_a_silent_scan_and_scanning_resumes() {
    let shop = Shop::new();
    shop.import_customers(
        "customer_ref,display_name,tag_ids\nC1,Minji Kim,ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:14\n",
    );
    let mut mock = MockBluez::start(&[]);
    let daemon = Daemon::start(&config(&shop, 1), &mock.bus);
    daemon.wait_for_log("BLE discovery started");
    // Nothing advertises: after a second the watchdog restarts discovery.
    daemon.wait_for_log("restarting discovery");
    daemon.wait_for_log("BLE discovery started");

    let tag = "c0:11:22:33:44:01";
    mock.send(serde_json::json!({"cmd": "add_device", "mac": tag, "name": "tag"}));
    for _ in 0..5 {
        mock.send(serde_json::json!({
            "cmd": "advertise", "mac": tag, "rssi": -58,
            "manufacturer_data": {"76": ibeacon_manufacturer_payload(UUID, 1, 14)}
        }));
        std::thread::sleep(Duration::from_millis(100));
    }
    let visits = wait_for_visits(&shop, 1);
    assert_eq!(visits.len(), 1, "{visits:?}");
    assert_eq!(visits[0]["customer_ref"], "C1");
    assert!(daemon.terminate());
    mock.stop();
}
