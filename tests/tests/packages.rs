//! The Debian packages `scripts/package.sh` builds (cargo-deb): for each, what dpkg will see
//! (architecture, dependencies, files, conffiles, maintainer scripts enabling the unit and
//! making the system user), and the arm64 box binary running here under qemu-aarch64 user
//! emulation: it decodes an advertisement and runs its demo.
//!
//! Not covered here: installing them on a booted systemd (a VM test).

use std::path::{Path, PathBuf};
use std::process::Command;

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
        "8",
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
