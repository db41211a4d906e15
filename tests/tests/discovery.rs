//! mDNS/DNS-SD: a tablet finds the box without an IP address. Announced and browsed on the
//! loopback interface only, so the test sends nothing onto the network.

use std::process::{Command, Stdio};

use tastesync_e2e::*;

#[test]
fn the_box_announces_its_pos_and_discover_finds_it() {
    let shop = Shop::new();
    // Forty seconds of a quiet shop keep the daemon running during the test.
    let recording = shop.quiet_recording("quiet.jsonl", 40, 1000);
    let config = shop.write(
        "edge.toml",
        &format!(
            "shop_id = \"seoul-7\"\ndatabase = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\n[pos]\nlisten = \"127.0.0.1:0\"\nannounce_interface = \"lo\"\n",
            shop.db(),
            recording.display().to_string()
        ),
    );
    let mut daemon = Command::new(bin("tastesync-edge"))
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut found = String::new();
    for _ in 0..5 {
        found = stdout(&run(
            "tastesync-edge",
            &["discover", "--interface", "lo", "--seconds", "2"],
        ));
        if found.contains("seoul-7") && found.contains("http://127.0.0.1:") {
            break;
        }
    }
    let line = found
        .lines()
        .find(|l| l.starts_with("TasteSync seoul-7"))
        .map(str::to_string);
    let page = line
        .as_deref()
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("http://127.0.0.1:"))
        })
        .map(|url| http().get(url).send().and_then(|r| r.text()));
    let _ = daemon.kill();
    let _ = daemon.wait();
    let line = line.unwrap_or_else(|| panic!("not found: {found}"));
    let page = page
        .unwrap_or_else(|| panic!("no loopback URL in {line}"))
        .expect("the announced URL answers");
    assert!(
        page.contains("TasteSync POS"),
        "the announced URL is the POS page"
    );
}
