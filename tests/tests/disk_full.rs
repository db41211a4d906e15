//! A full disk (simulated by capping the database with `database_max_mb`): the box keeps
//! running and alerting, says why events cannot be recorded, and touches nothing it stored.

use std::fmt::Write;
use std::time::Duration;

use tastesync_e2e::ble::Daemon;
use tastesync_e2e::pos::{pair, stream};
use tastesync_e2e::*;

const UUID: &str = "f7826da64fa24e988024bc5b71e0893e";

#[test]
fn a_full_database_never_stops_alerts_and_says_so() {
    let shop = Shop::new();
    // 2,500 customers with long notes: the database is past 1 MB before the box starts.
    let mut customers = String::from("customer_ref,display_name,notes,tag_ids\n");
    for c in 1..=2500 {
        let tag = if c <= 50 {
            format!("ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:{c}")
        } else {
            String::new()
        };
        writeln!(customers, "C{c},Customer {c},{},{tag}", "n".repeat(500)).unwrap();
    }
    shop.import_customers(&customers);
    // First, with room to spare, the owner pairs a tablet.
    let quiet = shop.quiet_recording("quiet.jsonl", 30, 100);
    let roomy = shop.write("roomy.toml", &config_text(&shop, &quiet, 0));
    let daemon = Daemon::start(&roomy, "unix:path=/nonexistent");
    let base = address(&daemon);
    let code = shop
        .edge_ok(&["pair", "--db", &shop.db()])
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    let token = pair(&base, &code, "Counter tablet");
    assert!(daemon.terminate());
    let stored_before = shop.edge_ok(&["customers", "list", "--db", &shop.db()]);
    assert!(
        std::fs::metadata(shop.path("edge.db")).unwrap().len() > 1_100_000,
        "the database is past 1 MB"
    );

    // Now capped at 1 MB: two quiet seconds (time to connect the tablet), then fifty
    // customers arrive one after another.
    let start = now_s() * 1000;
    let mut lines = String::new();
    for i in 0..20u64 {
        writeln!(
            lines,
            r#"{{"t_ms":{},"address":"c0:00:00:00:00:99","rssi":-90,"data":"020106"}}"#,
            start + i * 100
        )
        .unwrap();
    }
    for c in 1..=50u64 {
        for s in 0..3u64 {
            let t = start + 2000 + c * 60 + s * 10;
            writeln!(
                lines,
                r#"{{"t_ms":{t},"address":"c0:00:00:00:00:{c:02x}","rssi":-60,"data":"{}"}}"#,
                ibeacon(UUID, 1, c as u16)
            )
            .unwrap();
        }
    }
    let recording = shop.write("arrival.jsonl", &lines);
    let full = shop.write("full.toml", &config_text(&shop, &recording, 1));
    let daemon = Daemon::start(&full, "unix:path=/nonexistent");
    let stream = stream(&address(&daemon), &token, None);
    let alert = stream
        .recv_timeout(Duration::from_secs(10))
        .expect("the alert still reaches the tablet");
    assert_eq!(alert.kind, "arrival");
    assert_eq!(alert.data["display_name"], "Customer 1");
    let log = daemon.wait_for_log("free disk space");
    assert!(
        log.iter().any(|l| l.contains("database or disk is full")),
        "{log:?}"
    );
    assert!(daemon.terminate(), "the box did not crash");
    assert_eq!(
        shop.edge_ok(&["customers", "list", "--db", &shop.db()]),
        stored_before,
        "nothing stored was lost"
    );
}

fn config_text(shop: &Shop, replay: &std::path::Path, max_mb: u64) -> String {
    format!(
        "database = {:?}\ndatabase_max_mb = {max_mb}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\n[pos]\nlisten = \"127.0.0.1:0\"\nannounce = false\n",
        shop.db(),
        replay.display().to_string()
    )
}

fn address(daemon: &Daemon) -> String {
    let log = daemon.wait_for_log("POS listening on ");
    log.last()
        .and_then(|l| l.split("POS listening on ").nth(1))
        .unwrap()
        .trim()
        .to_string()
}
