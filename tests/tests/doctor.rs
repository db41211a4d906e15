//! `tastesync-edge doctor`: a healthy box passes, and each failure it claims to detect is
//! provoked once and detected, with what to do: a bad config, a clock never set (faketime),
//! no BlueZ, the adapter off, a daemon that hears nothing, a damaged database, a database at
//! its limit, a full disk, the daemon down, the broker unreachable or refusing the box's
//! credentials, events the cloud has not acknowledged for hours.

use std::process::Command;

use serde_json::Value;
use tastesync_e2e::ble::{Daemon, MockBluez};
use tastesync_e2e::cloud::{Mosquitto, free_port};
use tastesync_e2e::pos::{CUSTOMERS, UUID};
use tastesync_e2e::{Shop, bin, ibeacon_manufacturer_payload};

/// Runs doctor --json on `config` with the D-Bus system bus at `bus`; (exit ok, report).
fn doctor(config: &std::path::Path, bus: &str, args: &[&str], wrapper: &[&str]) -> (bool, Value) {
    let binary = bin("tastesync-edge");
    let mut command = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&binary);
            c
        }
        None => Command::new(&binary),
    };
    let output = command
        .args(["doctor", "--json", "--config", config.to_str().unwrap()])
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .output()
        .expect("run doctor");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "doctor printed no JSON: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(
        output.status.success(),
        report["ok"] == true,
        "the exit code agrees with the report: {report}"
    );
    (output.status.success(), report)
}

/// The check `name` of a report: (status, detail, fix).
fn check(report: &Value, name: &str) -> (String, String, String) {
    let found = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"));
    let text = |k: &str| found[k].as_str().unwrap_or("").to_string();
    (text("status"), text("detail"), text("fix"))
}

fn assert_fails(report: &Value, name: &str, detail_says: &str) {
    let (status, detail, fix) = check(report, name);
    assert_eq!(status, "fail", "{name}: {detail}");
    assert!(
        detail.contains(detail_says),
        "{name}: {detail:?} lacks {detail_says:?}"
    );
    assert!(!fix.is_empty(), "{name} says what to do");
}

struct Box_ {
    shop: Shop,
    config: std::path::PathBuf,
    mock: MockBluez,
}

/// A box set up by hand for `broker` as `user`/`password`, its POS on a fixed port.
fn a_box(broker: &str, password: &str, extra_top: &str) -> Box_ {
    let shop = Shop::new();
    shop.import_customers(CUSTOMERS);
    let port = free_port();
    let config = shop.write(
        "edge.toml",
        &format!(
            "shop_id = \"doctor-1\"\ndatabase = {:?}\n{extra_top}\n[scanner]\nsource = \"ble\"\nzone = \"counter\"\n\
             [pos]\nlisten = \"127.0.0.1:{port}\"\nannounce = false\n\
             [uplink]\nbroker = {broker:?}\nusername = \"doctor-1\"\npassword = {password:?}\n",
            shop.db()
        ),
    );
    let mock = MockBluez::start(&[]);
    Box_ { shop, config, mock }
}

#[test]
fn a_healthy_box_passes_and_every_failure_is_named_with_what_to_do() {
    let broker = Mosquitto::with_shop_acl(&[("doctor-1", "right password")]);
    let mut healthy = a_box(&broker.address(), "right password", "");
    let bus = healthy.mock.bus.clone();

    // Down: the POS does not answer, and what the daemon hears is unknown.
    let (ok, report) = doctor(&healthy.config, &bus, &[], &[]);
    assert!(!ok);
    assert_fails(&report, "pos", "does not answer");

    // Running but deaf: nothing heard.
    let daemon = Daemon::start(&healthy.config, &bus);
    daemon.wait_for_log("BLE discovery started");
    let (_, report) = doctor(&healthy.config, &bus, &[], &[]);
    assert_fails(&report, "advertisements", "no advertisement");

    // Healthy: a tag heard, the broker takes the box's credentials, nothing waits long.
    healthy
        .mock
        .send(serde_json::json!({"cmd": "add_device", "mac": "c0:11:22:33:44:01", "name": "tag"}));
    healthy.mock.send(serde_json::json!({
        "cmd": "advertise", "mac": "c0:11:22:33:44:01", "rssi": -58,
        "manufacturer_data": {"76": ibeacon_manufacturer_payload(UUID, 1, 1)}
    }));
    assert!(tastesync_e2e::cloud::eventually(10, || {
        let (ok, report) = doctor(&healthy.config, &bus, &[], &[]);
        ok && check(&report, "advertisements").0 == "ok"
    }));
    let (ok, report) = doctor(&healthy.config, &bus, &[], &[]);
    assert!(ok, "{report}");
    for name in [
        "config",
        "bluetooth",
        "database",
        "disk",
        "pos",
        "advertisements",
        "broker",
        "sync",
    ] {
        assert_eq!(check(&report, name).0, "ok", "{name}: {report}");
    }
    // No systemd here: the clock's sync is unknown, a warning, not a failure.
    assert_ne!(check(&report, "clock").0, "fail");

    // The adapter switched off.
    healthy
        .mock
        .send(serde_json::json!({"cmd": "set_powered", "powered": false}));
    let (ok, report) = doctor(&healthy.config, &bus, &[], &[]);
    assert!(!ok);
    assert_fails(&report, "bluetooth", "powered off");
    // No BlueZ at all.
    let (_, report) = doctor(&healthy.config, "unix:path=/nonexistent", &[], &[]);
    assert_fails(&report, "bluetooth", "cannot ask BlueZ");
    // A clock at 2020, as a Raspberry Pi without network time boots.
    let (_, report) = doctor(
        &healthy.config,
        &bus,
        &[],
        &["faketime", "2020-01-01 08:00:00"],
    );
    assert_fails(&report, "clock", "never set");
    // The disk below what the check asks for.
    let (_, report) = doctor(&healthy.config, &bus, &["--min-free-mb", "100000000"], &[]);
    assert_fails(&report, "disk", "MB free");
    drop(daemon);

    // The broker refuses the box's password; another is not there at all.
    let refused = a_box(&broker.address(), "wrong password", "");
    let (_, report) = doctor(&refused.config, &refused.mock.bus, &[], &[]);
    assert_fails(&report, "broker", "refuses the box");
    let away = a_box(&format!("127.0.0.1:{}", free_port()), "x", "");
    let (_, report) = doctor(&away.config, &away.mock.bus, &[], &[]);
    assert_fails(&report, "broker", "cannot reach");

    // Events waiting for the cloud since long ago (the backlog's times are 1970's).
    let behind = a_box(&broker.address(), "right password", "");
    behind.shop.write_outbox_backlog(5);
    let (_, report) = doctor(&behind.config, &behind.mock.bus, &[], &[]);
    assert_fails(&report, "sync", "5 events wait for the cloud");

    // A database at its limit, and a damaged one.
    let full = a_box(&broker.address(), "right password", "database_max_mb = 1");
    let mut notes = String::from("customer_ref,display_name,notes,tag_ids\n");
    for c in 1..=3000 {
        notes.push_str(&format!("N{c},Customer {c},{},\n", "n".repeat(500)));
    }
    full.shop.import_customers(&notes);
    let (_, report) = doctor(&full.config, &full.mock.bus, &[], &[]);
    assert_fails(&report, "database", "at its limit");
    let damaged = a_box(&broker.address(), "right password", "");
    let mut bytes = std::fs::read(damaged.shop.db()).unwrap();
    let (middle, len) = (bytes.len() / 2, bytes.len());
    bytes[middle..(middle + 4096).min(len)].fill(0xA5);
    std::fs::write(damaged.shop.db(), bytes).unwrap();
    let (_, report) = doctor(&damaged.config, &damaged.mock.bus, &[], &[]);
    let (status, detail, _) = check(&report, "database");
    assert_eq!(status, "fail", "{detail}");

    // A config with a mistake: said, and nothing else is tried.
    let typo = healthy.shop.write("typo.toml", "databse = \"x.db\"\n");
    let (ok, report) = doctor(&typo, &bus, &[], &[]);
    assert!(!ok);
    assert_fails(&report, "config", "databse");
    assert_eq!(report["checks"].as_array().unwrap().len(), 1);
}

#[test]
fn the_human_report_names_each_problem_and_the_fix() {
    let shop = Shop::new();
    let config = shop.write(
        "edge.toml",
        &format!(
            "database = {:?}\n[scanner]\nsource = \"ble\"\n[pos]\nlisten = \"127.0.0.1:{}\"\n",
            shop.db(),
            free_port()
        ),
    );
    let output = Command::new(bin("tastesync-edge"))
        .args(["doctor", "--config", config.to_str().unwrap()])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("FAIL bluetooth"), "{text}");
    assert!(text.contains("-> install and start BlueZ"), "{text}");
    assert!(text.contains("FAIL pos"), "{text}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("checks failed"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
