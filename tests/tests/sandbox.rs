//! The systemd units' sandbox, checked without a running systemd: the box's daemon is run
//! under strace through what a shop's day asks of it (BLE over the system D-Bus, the POS with
//! its mDNS announcement, a tablet, an arrival, the uplink, `/metrics`, a clean stop), and
//! every system call and socket family it used must be allowed by the unit it ships with
//! (`SystemCallFilter=`, `RestrictAddressFamilies=`, expanded by `systemd-analyze
//! syscall-filter`). And `systemd-analyze security --offline` scores both units.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use tastesync_e2e::ble::{Daemon, MockBluez};
use tastesync_e2e::cloud::Mosquitto;
use tastesync_e2e::pos::{CUSTOMERS, UUID, pair};
use tastesync_e2e::{Shop, bin, http, ibeacon_manufacturer_payload, run, stdout, workspace};

/// A unit's values of `key` (every line of it, in order).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join("systemd").join(unit)).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

/// Every syscall systemd-analyze lists in each group, groups within groups expanded.
fn syscall_groups() -> std::collections::BTreeMap<String, Vec<String>> {
    let out = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .expect("systemd-analyze (scripts/install-test-tools.sh installs it)");
    let mut groups = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let item = line.trim();
        if line.starts_with('@') {
            current = Some(item.to_string());
            groups.insert(item.to_string(), Vec::new());
        } else if let Some(group) = &current
            && !item.is_empty()
            && !item.starts_with('#')
        {
            groups.get_mut(group).unwrap().push(item.to_string());
        }
    }
    groups
}

fn expand(
    groups: &std::collections::BTreeMap<String, Vec<String>>,
    item: &str,
    into: &mut BTreeSet<String>,
) {
    match groups.get(item) {
        Some(members) => {
            for member in members {
                if !into.contains(member) {
                    expand(groups, member, into);
                }
            }
        }
        None if !item.starts_with('@') => {
            into.insert(item.to_string());
        }
        None => {}
    }
}

/// What the unit's `SystemCallFilter=` lines allow: the allow list minus the `~` lists.
fn allowed_syscalls(unit: &str) -> BTreeSet<String> {
    let groups = syscall_groups();
    let (mut allowed, mut denied) = (BTreeSet::new(), BTreeSet::new());
    for value in unit_values(unit, "SystemCallFilter") {
        let (set, items) = match value.strip_prefix('~') {
            Some(rest) => (&mut denied, rest.to_string()),
            None => (&mut allowed, value),
        };
        for item in items.split_whitespace() {
            expand(&groups, item, set);
        }
    }
    assert!(!allowed.is_empty(), "{unit} has an allow list");
    allowed.difference(&denied).cloned().collect()
}

#[test]
fn the_box_uses_only_what_its_units_sandbox_allows() {
    let shop = Shop::new();
    let broker = Mosquitto::start("allow_anonymous true");
    let config = shop.write(
        "edge.toml",
        &format!(
            "shop_id = \"sandbox-1\"\ndatabase = {:?}\n[scanner]\nsource = \"ble\"\nzone = \"counter\"\n\
             [pos]\nlisten = \"0.0.0.0:0\"\nannounce = true\n[uplink]\nbroker = {:?}\n",
            shop.db(),
            broker.address()
        ),
    );
    shop.import_customers(CUSTOMERS);
    let trace_file = shop.dir.path().join("edge.strace");
    let traced = shop.write(
        "traced.sh",
        &format!(
            "#!/bin/sh\nexec strace -f -qq -o {:?} {:?} \"$@\"\n",
            trace_file,
            bin("tastesync-edge")
        ),
    );
    Command::new("chmod")
        .arg("+x")
        .arg(&traced)
        .status()
        .unwrap();

    let mut mock = MockBluez::start(&[]);
    let daemon = Daemon::start_binary(&traced, &config, &mock.bus);
    let log = daemon.wait_for_log("POS listening on ");
    let port = log
        .last()
        .and_then(|l| l.rsplit(':').next())
        .expect("the POS address")
        .trim()
        .to_string();
    let base = format!("http://127.0.0.1:{port}");
    daemon.wait_for_log("BLE discovery started");
    let code = stdout(&run("tastesync-edge", &["pair", "--db", &shop.db()]));
    let token = pair(&base, code.split_whitespace().nth(2).unwrap(), "counter");
    mock.send(serde_json::json!({"cmd": "add_device", "mac": "c0:11:22:33:44:01", "name": "tag"}));
    for _ in 0..3 {
        mock.send(serde_json::json!({
            "cmd": "advertise", "mac": "c0:11:22:33:44:01", "rssi": -58,
            "manufacturer_data": {"76": ibeacon_manufacturer_payload(UUID, 1, 1)}
        }));
    }
    daemon.wait_for_log("customer arrived");
    for path in ["/pos", "/metrics", "/api/present"] {
        let _ = http()
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send();
    }
    std::thread::sleep(Duration::from_secs(2)); // the uplink sends the arrival
    // Stopped as systemd stops it: SIGTERM to the daemon (strace's first traced process).
    let pid = std::fs::read_to_string(&trace_file)
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .expect("the daemon's pid in the trace");
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let stopped = tastesync_e2e::cloud::eventually(10, || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(stopped, "the daemon stopped on SIGTERM");
    drop(daemon);

    let trace = std::fs::read_to_string(&trace_file).expect("strace's output");
    let used: BTreeSet<String> = trace
        .lines()
        .filter_map(|l| {
            let call = l.split_whitespace().nth(1)?;
            let name = call.split('(').next()?;
            (call.contains('(')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .then(|| name.to_string())
        })
        .collect();
    assert!(used.len() > 30, "strace saw the daemon's calls: {used:?}");
    let allowed = allowed_syscalls("tastesync-edge.service");
    // SQLite gives its files to the database's owner when it runs as root (this test does;
    // the unit runs it as its own user, where it never calls fchown).
    let refused: Vec<&String> = used
        .iter()
        .filter(|call| !allowed.contains(*call) && call.as_str() != "fchown")
        .collect();
    assert!(
        refused.is_empty(),
        "system calls the unit's SystemCallFilter refuses: {refused:?}"
    );

    let families: BTreeSet<&str> = trace
        .split("socket(")
        .skip(1)
        .filter_map(|rest| rest.split(',').next())
        .collect();
    let restricted = unit_values("tastesync-edge.service", "RestrictAddressFamilies").join(" ");
    let restricted: BTreeSet<&str> = restricted.split_whitespace().collect();
    assert!(
        families.contains("AF_NETLINK"),
        "mDNS lists interfaces over netlink"
    );
    let missing: Vec<&&str> = families.difference(&restricted).collect();
    assert!(
        missing.is_empty(),
        "socket families the unit's RestrictAddressFamilies refuses: {missing:?}"
    );
}

#[test]
fn both_units_score_ok_in_systemd_analyze_security() {
    for unit in ["tastesync-edge.service", "tastesync-cloud.service"] {
        let output = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(workspace().join("systemd").join(unit))
            .output()
            .expect("systemd-analyze");
        let text = String::from_utf8_lossy(&output.stdout);
        let exposure: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}: {text}"));
        assert!(exposure < 3.0, "{unit}: exposure {exposure}\n{text}");
    }
}
