//! The Debian packages `scripts/package.sh` builds (cargo-deb): for each, what dpkg will see
//! (architecture, dependencies, files, conffiles, maintainer scripts enabling the unit and
//! making the system user), and the arm64 box binary running here under qemu-aarch64 user
//! emulation: it decodes an advertisement and runs its demo.
//!
//! Then the amd64 box package on a real systemd: a Debian bookworm VM (qemu, systemd as PID
//! 1, real BlueZ with two virtual controllers) where dpkg installs and starts it, and the box
//! is seen ready, answering on its POS port, hearing a customer's tag, checked by `doctor`,
//! restarted by the watchdog when it hangs, and purged without a trace.

use std::path::{Path, PathBuf};
use std::process::Command;

use tastesync_e2e::vm::Vm;
use tastesync_e2e::{Shop, workspace};

/// Builds the packages and returns their paths: arm64 box, amd64 box, amd64 cloud.
fn build_packages() -> Vec<PathBuf> {
    {
        let output = Command::new("bash")
            .arg(workspace().join("scripts/package.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("scripts/package.sh");
        assert!(output.status.success(), "scripts/package.sh failed");
        let paths: Vec<PathBuf> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| workspace().join(l.trim()))
            .collect();
        assert_eq!(paths.len(), 3, "{paths:?}");
        paths
    }
}

/// One test: the packages are built once, then each is checked.
#[test]
fn the_packages_are_complete_and_the_arm64_box_runs() {
    let packages = build_packages();
    the_box_packages_hold_the_binary_unit_config_and_the_user_for_both_architectures(&packages);
    the_cloud_package_is_enabled_but_waits_for_its_configuration(&packages[2]);
    the_arm64_box_binary_decodes_and_runs_its_demo_under_qemu(&packages[0]);
    the_amd64_box_installs_runs_and_purges_on_a_real_systemd(&packages[1]);
}

fn dpkg_deb(args: &[&str], package: &Path) -> String {
    let output = Command::new("dpkg-deb")
        .args(args)
        .arg(package)
        .output()
        .expect("dpkg-deb");
    assert!(
        output.status.success(),
        "dpkg-deb {args:?} {}",
        package.display()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A control member of the package (`control`, `conffiles`, `postinst`...).
fn control_file(package: &Path, member: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("dpkg-deb")
        .arg("--control")
        .arg(package)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(dir.path().join(member)).unwrap_or_default()
}

fn field(control: &str, name: &str) -> String {
    control
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {control}"))
        .to_string()
}

fn the_box_packages_hold_the_binary_unit_config_and_the_user_for_both_architectures(
    packages: &[PathBuf],
) {
    for (package, arch) in [(&packages[0], "arm64"), (&packages[1], "amd64")] {
        let control = control_file(package, "control");
        assert_eq!(field(&control, "Package"), "tastesync-edge");
        assert_eq!(field(&control, "Architecture"), arch);
        let depends = field(&control, "Depends");
        assert!(
            depends.contains("bluez") && depends.contains("libc6"),
            "{depends}"
        );
        let files = dpkg_deb(&["--contents"], package);
        for path in [
            "./usr/bin/tastesync-edge",
            "./etc/tastesync/edge.toml",
            "tastesync-edge.service",
        ] {
            assert!(files.contains(path), "{arch}: no {path} in\n{files}");
        }
        assert_eq!(
            control_file(package, "conffiles").trim(),
            "/etc/tastesync/edge.toml"
        );
        let postinst = control_file(package, "postinst");
        assert!(postinst.contains("adduser --system"), "{postinst}");
        assert!(
            postinst.contains("adduser tastesync bluetooth"),
            "{postinst}"
        );
        assert!(
            postinst.contains("deb-systemd-helper") && postinst.contains("enable"),
            "the unit is enabled on install: {postinst}"
        );
        assert!(
            postinst.contains("deb-systemd-invoke") && postinst.contains("start"),
            "and started: {postinst}"
        );
        let postrm = control_file(package, "postrm");
        assert!(
            postrm.contains("purge") && postrm.contains("/var/lib/tastesync"),
            "{postrm}"
        );
    }
}

fn the_cloud_package_is_enabled_but_waits_for_its_configuration(package: &Path) {
    let control = control_file(package, "control");
    assert_eq!(field(&control, "Package"), "tastesync-cloud");
    assert_eq!(field(&control, "Architecture"), "amd64");
    let files = dpkg_deb(&["--contents"], package);
    assert!(files.contains("./usr/bin/tastesync-cloud"), "{files}");
    assert!(files.contains("tastesync-cloud.service"), "{files}");
    assert_eq!(
        control_file(package, "conffiles").trim(),
        "/etc/tastesync/cloud.toml"
    );
    let postinst = control_file(package, "postinst");
    assert!(postinst.contains("deb-systemd-helper"), "{postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
}

fn the_arm64_box_binary_decodes_and_runs_its_demo_under_qemu(package: &Path) {
    let unpacked = tempfile::tempdir().unwrap();
    let status = Command::new("dpkg-deb")
        .arg("--extract")
        .arg(package)
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(status.success());
    let binary = unpacked.path().join("usr/bin/tastesync-edge");
    let file = Command::new("file").arg(&binary).output();
    if let Ok(file) = file {
        let kind = String::from_utf8_lossy(&file.stdout);
        assert!(
            kind.contains("aarch64") || kind.contains("ARM aarch64"),
            "{kind}"
        );
    }
    let qemu = |args: &[&str]| {
        Command::new("qemu-aarch64")
            .args(["-L", "/usr/aarch64-linux-gnu"])
            .arg(&binary)
            .args(args)
            .output()
            .expect("qemu-aarch64")
    };
    let decoded = qemu(&[
        "decode",
        "0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00010002c5",
    ]);
    assert!(decoded.status.success(), "{decoded:?}");
    let json: serde_json::Value = serde_json::from_slice(&decoded.stdout).unwrap();
    assert_eq!(json["format"], "ibeacon");
    assert_eq!(json["minor"], 2);
    let shop = Shop::new();
    let db = shop.dir.path().join("demo.db");
    let demo = qemu(&[
        "demo",
        "--duration",
        "15",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
    ]);
    let printed = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    assert!(
        printed.contains("is here"),
        "the demo announced arrivals: {printed}"
    );
}

/// The box's package in the VM `scripts/install-vm.sh` builds (TASTESYNC_VM_IMAGE).
fn the_amd64_box_installs_runs_and_purges_on_a_real_systemd(package: &Path) {
    let image = std::env::var_os("TASTESYNC_VM_IMAGE")
        .map(PathBuf::from)
        .expect("TASTESYNC_VM_IMAGE: the VM image scripts/install-vm.sh builds (scripts/test.sh sets it)");
    let shop = Shop::new();
    let customers = shop.write(
        "customers.csv",
        "customer_ref,display_name,tag_ids\n\
         C1,Minji Kim,ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:1\n",
    );
    let mut vm = Vm::boot(&image, &[package, &customers], 8080);
    let installed = vm.sh("dpkg -i /mnt/tastesync-edge_*_amd64.deb");
    assert!(
        installed.contains("Setting up tastesync-edge"),
        "{installed}"
    );

    // dpkg enabled and started it; Type=notify: active once the daemon said it is ready.
    let (active, state) = vm.until("systemctl is-active tastesync-edge", 90);
    assert!(
        active,
        "the unit is not active: {state}\n{}",
        vm.console_tail()
    );
    assert_eq!(
        vm.sh("systemctl is-enabled tastesync-edge").trim(),
        "enabled"
    );
    let user = vm.sh("ps -o user= -C tastesync-edge");
    assert_eq!(user.trim(), "tastesync", "runs as its own user");

    // The POS from outside the VM, through the forwarded port.
    let page = tastesync_e2e::http()
        .get(format!("http://127.0.0.1:{}/pos", vm.port))
        .send()
        .expect("the POS answers through the forwarded port");
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("<html"), "the tablet page");

    // A customer's tag advertising from the second controller: BlueZ, D-Bus and the
    // sandbox all let the box hear it.
    // The box scans with hci0, as a technician sets it with two adapters; hci1 is the tag.
    vm.sh(
        "sed -i 's/^adapter = \"\"/adapter = \"hci0\"/' /etc/tastesync/edge.toml \
         && systemctl restart tastesync-edge",
    );
    vm.sh("runuser -u tastesync -- tastesync-edge customers import /mnt/customers.csv");
    // BlueZ reports a device again when its data changes (a real tag's RSSI does): the
    // tag's measured-power byte steps, its identity stays.
    vm.sh(
        "for power in c1 c2 c3 c4 c5 c6 c7 c8; do btmgmt --index 1 add-adv -d \
         0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00010001$power 1 || exit 1; \
         sleep 0.5; done",
    );
    let (heard, visits) = vm.until(
        "runuser -u tastesync -- tastesync-edge visits --json | grep C1",
        60,
    );
    if !heard {
        let (_, why) = vm.run(
            "journalctl -u tastesync-edge --no-pager | tail -n 20; \
             curl -s http://127.0.0.1:8080/metrics | grep -E 'advertisements|beacons'",
        );
        panic!("no visit from the tag: {visits}\n{why}");
    }
    let metrics = vm.sh("curl -s http://127.0.0.1:8080/metrics");
    assert!(
        metrics.contains("tastesync_edge_clock_synchronised 0"),
        "the daemon asked systemd-timedated (no NTP in the VM) through its sandbox: {metrics}"
    );

    let (_, doctor) = vm.run(
        "runuser -u tastesync -- tastesync-edge doctor --config /etc/tastesync/edge.toml --json",
    );
    let report: serde_json::Value = serde_json::from_str(
        doctor
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("doctor printed no JSON: {doctor}")),
    )
    .unwrap();
    let status = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name} check: {report}"))
    };
    for check in ["config", "bluetooth", "database", "pos"] {
        assert_eq!(status(check), "ok", "{check}: {report}");
    }
    assert_eq!(status("clock"), "warn", "no NTP in the VM: {report}");

    // A hung daemon (SIGSTOP) stops pinging the watchdog: systemd kills and restarts it.
    let before = vm.sh("systemctl show -p MainPID --value tastesync-edge");
    vm.sh(&format!("kill -STOP {}", before.trim()));
    let (restarted, _) = vm.until(
        &format!(
            "test \"$(systemctl show -p MainPID --value tastesync-edge)\" != {} \
             && systemctl is-active tastesync-edge",
            before.trim()
        ),
        120,
    );
    assert!(restarted, "not restarted:\n{}", vm.console_tail());
    let journal = vm.sh("journalctl -u tastesync-edge --no-pager");
    assert!(journal.contains("Watchdog timeout"), "{journal}");

    // Purge: no unit, config, state, user or process left.
    vm.sh("dpkg --purge tastesync-edge");
    for gone in [
        "systemctl cat tastesync-edge",
        "test -e /etc/tastesync/edge.toml",
        "test -e /var/lib/tastesync",
        "id tastesync",
        "pgrep -x tastesync-edge",
    ] {
        let (code, output) = vm.run(gone);
        assert_ne!(code, 0, "left after purge ({gone}): {output}");
    }
}
