//! Helpers for the end-to-end tests: they run the real binaries as separate processes,
//! against real files (and, for the BLE tests, a real D-Bus with a mocked BlueZ), and assert
//! on what a user sees: command output, exit codes, the visits the box lists.

pub mod asyncapi;
pub mod ble;
pub mod cloud;
pub mod console;
pub mod kafka;
pub mod pos;
pub mod postgres;
pub mod provisioning;
pub mod vm;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A browser flow of tests/browser/ (Playwright driving headless Chromium) as a `node`
/// command, its screenshots going to the returned directory (target/test-artifacts/).
pub fn browser_flow(script: &str) -> (Command, PathBuf) {
    let browser_dir = workspace().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "run scripts/test.sh, which installs Chromium and playwright-core"
    );
    let shots = workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = Command::new("node");
    node.arg(browser_dir.join(script))
        .current_dir(&browser_dir)
        .env("SCREENSHOT_DIR", &shots);
    (node, shots)
}

/// A browser flow running: it prints a line for each step it reaches, and some flows wait on
/// their stdin for the test to say what it did.
pub struct RunningFlow {
    node: std::process::Child,
    to_browser: std::process::ChildStdin,
    steps: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl RunningFlow {
    /// Starts a flow made by [`browser_flow`] (with its environment set).
    pub fn start(flow: &mut Command) -> RunningFlow {
        use std::process::Stdio;
        let mut node = flow
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node");
        let to_browser = node.stdin.take().unwrap();
        let steps = std::io::BufRead::lines(std::io::BufReader::new(node.stdout.take().unwrap()));
        RunningFlow {
            node,
            to_browser,
            steps,
        }
    }

    /// The next line the flow prints (empty if it ended).
    pub fn next_step(&mut self) -> String {
        self.steps.next().and_then(Result::ok).unwrap_or_default()
    }

    /// Waits for the flow to print `step`; anything else fails the test with what the flow
    /// wrote to stderr.
    pub fn expect(&mut self, step: &str) {
        let line = self.next_step();
        if line != step {
            self.fail(&format!("expected {step}, got {line:?}"));
        }
    }

    /// Tells the flow what the test did (a line on its stdin).
    pub fn tell(&mut self, what: &str) {
        writeln!(self.to_browser, "{what}").unwrap();
    }

    /// Waits for the flow to end; it must succeed.
    pub fn finish(mut self) {
        if !self.node.wait().unwrap().success() {
            self.fail("the flow failed");
        }
    }

    /// Fails the test with `what` and what the flow wrote to stderr.
    pub fn fail(&mut self, what: &str) -> ! {
        let _ = self.node.kill();
        let _ = self.node.wait();
        let mut err = String::new();
        if let Some(mut stderr) = self.node.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
        }
        panic!("{what}\n{err}");
    }
}

/// A binary of the workspace, built by `cargo build --workspace --bins` (the test script does
/// this before running the tests).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// An HTTP client for the tests. reqwest is built with rustls and no crypto provider of its
/// own (the box's choice, unified across the workspace), so the process's provider is
/// installed first.
pub fn http() -> reqwest::blocking::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::blocking::Client::new()
}

/// The directory holding the previous release's `tastesync-edge` and `tastesync-cloud`
/// (protocol 1, before box identity), built once from this repository's history by
/// `scripts/install-previous.sh` (which `scripts/test.sh` runs and names in
/// `TASTESYNC_PREVIOUS_BIN`).
pub fn previous_release() -> PathBuf {
    if let Some(dir) = std::env::var_os("TASTESYNC_PREVIOUS_BIN") {
        return dir.into();
    }
    let output = Command::new("bash")
        .arg(workspace().join("scripts/install-previous.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/install-previous.sh");
    assert!(
        output.status.success(),
        "scripts/install-previous.sh failed"
    );
    let dir = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(dir.lines().last().expect("the binaries' directory").trim())
}

/// Runs schemathesis against the OpenAPI document at `openapi_url` (`extra`: headers,
/// exclusions, TLS) and asserts that every generated request (valid and invalid) got no 5xx
/// and a response matching the documented schema, status codes and content types.
pub fn assert_schemathesis_passes(openapi_url: &str, extra: &[&str]) {
    let output = Command::new(schemathesis())
        .args(["run", openapi_url])
        .args(extra)
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--max-examples",
            "30",
            "--seed",
            "1",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let report = stdout(&output);
    assert!(output.status.success(), "{report}\n{}", stderr(&output));
    // e.g. "654 generated, 654 passed"
    let cases = report
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        cases.contains(" passed") && !cases.contains("fail"),
        "{cases}"
    );
}

/// schemathesis (PyPI), installed by `scripts/install-schemathesis.sh` (which
/// `scripts/test.sh` runs and names in `TASTESYNC_SCHEMATHESIS`).
fn schemathesis() -> String {
    if let Ok(path) = std::env::var("TASTESYNC_SCHEMATHESIS") {
        return path;
    }
    let output = Command::new("bash")
        .arg(workspace().join("scripts/install-schemathesis.sh"))
        .output()
        .expect("run install-schemathesis.sh");
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output).lines().last().expect("path").to_string()
}

/// Runs a binary to completion.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("spawn")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A shop's files in a temporary directory: its database, config and CSVs, and the
/// `tastesync-edge` binary its box runs (this workspace's, or a previous release's).
pub struct Shop {
    pub dir: tempfile::TempDir,
    pub edge: PathBuf,
}

impl Shop {
    pub fn new() -> Shop {
        Shop {
            dir: tempfile::tempdir().expect("temp dir"),
            edge: bin("tastesync-edge"),
        }
    }

    /// A shop whose box runs the previous release (see [`previous_release`]).
    pub fn on_previous_release() -> Shop {
        Shop {
            edge: previous_release().join("tastesync-edge"),
            ..Shop::new()
        }
    }

    /// Upgrades the box to this workspace's binary, keeping its files.
    pub fn upgrade(&mut self) {
        self.edge = bin("tastesync-edge");
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> String {
        self.path("edge.db").display().to_string()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write test file");
        path
    }

    /// Runs `tastesync-edge` with `args`, asserting success.
    pub fn edge_ok(&self, args: &[&str]) -> String {
        let output = Command::new(&self.edge)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("spawn");
        assert!(
            output.status.success(),
            "tastesync-edge {args:?} failed: {}",
            stderr(&output)
        );
        stdout(&output)
    }

    /// Imports customers from CSV text.
    pub fn import_customers(&self, csv: &str) {
        let file = self.write("customers.csv", csv);
        self.edge_ok(&[
            "customers",
            "import",
            "--db",
            &self.db(),
            file.to_str().unwrap(),
        ]);
    }

    /// Enrolls customers C1..C`count`, each with the iBeacon tag of minor 1..`count` under
    /// the test UUID f7826da6-4fa2-4e98-8024-bc5b71e0893e, major 1.
    pub fn enroll_tag_customers(&self, count: u16) {
        let mut csv = String::from("customer_ref,display_name,tag_ids\n");
        for c in 1..=count {
            csv.push_str(&format!(
                "C{c},Customer {c},ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:{c}\n"
            ));
        }
        self.import_customers(&csv);
    }

    /// Records `visits` visits of ten customers (C1..C10) with the uplink off, as `shop_id`
    /// (empty: a box not claimed yet): a backlog in the outbox, which is returned.
    pub fn record_offline(&self, shop_id: &str, visits: u64) -> Vec<serde_json::Value> {
        use std::fmt::Write as _;
        const UUID: &str = "f7826da64fa24e988024bc5b71e0893e";
        self.enroll_tag_customers(10);
        let start = now_s() * 1000;
        let mut lines = String::new();
        for v in 0..visits {
            let c = v % 10 + 1;
            for i in 0..3u64 {
                let t = start + v * 4_000 + i * 500;
                let data = ibeacon(UUID, 1, c as u16);
                writeln!(
                    lines,
                    r#"{{"t_ms":{t},"address":"c0:00:00:00:00:{c:02x}","rssi":-60,"data":"{data}"}}"#
                )
                .unwrap();
            }
        }
        let recording = self.write("backlog.jsonl", &lines);
        let config = self.write(
            "offline.toml",
            &format!(
                "shop_id = {shop_id:?}\ndatabase = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\nreplay_speed = 0\n[presence]\nabsence_ms = 2000\n[pos]\nlisten = \"\"\n",
                self.db(),
                recording.display().to_string()
            ),
        );
        self.edge_ok(&["run", "--config", config.to_str().unwrap()]);
        self.outbox()
    }

    /// The events waiting in the outbox, oldest first.
    pub fn outbox(&self) -> Vec<serde_json::Value> {
        self.edge_ok(&["outbox", "--db", &self.db(), "--limit", "1000000"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Whether nothing waits for the cloud (cheap with a large backlog).
    pub fn outbox_is_empty(&self) -> bool {
        self.edge_ok(&["outbox", "--db", &self.db(), "--limit", "1"])
            .is_empty()
    }

    /// The outbox as `seq|event_id|type` rows (the form `Database::stored` gives).
    pub fn outbox_rows(&self) -> Vec<String> {
        as_rows(&self.outbox())
    }

    /// Runs the box online (see [`run_online`](Self::run_online)) until its outbox is empty or
    /// `seconds` pass; returns whether it drained.
    pub fn drain_online(&self, shop_id: &str, uplink: &str, seconds: u64) -> bool {
        let _daemon = self.run_online(shop_id, uplink);
        cloud::eventually(seconds, || self.outbox_is_empty())
    }

    /// Whether the box's store holds this customer.
    pub fn has_customer(&self, customer_ref: &str) -> bool {
        self.edge_ok(&["customers", "list", "--db", &self.db()])
            .lines()
            .any(|line| line.starts_with(&format!("{customer_ref}\t")))
    }

    /// `tastesync-edge identity --json` of this box.
    pub fn identity(&self) -> serde_json::Value {
        serde_json::from_str(&self.edge_ok(&["identity", "--db", &self.db(), "--json"]))
            .expect("identity JSON")
    }

    /// A recording of a quiet shop: one faint unknown advertisement per `step_ms` for
    /// `count` steps from now. It keeps a replaying box running that long.
    pub fn quiet_recording(&self, name: &str, count: u64, step_ms: u64) -> PathBuf {
        let start = now_s() * 1000;
        let lines: String = (0..count)
            .map(|i| {
                format!(
                    r#"{{"t_ms":{},"address":"c0:00:00:00:00:99","rssi":-90,"data":"020106"}}"#,
                    start + i * step_ms
                ) + "\n"
            })
            .collect();
        self.write(name, &lines)
    }

    /// Runs the box as `shop_id` with its uplink (`uplink`: the `[uplink]` keys), on a quiet
    /// two-minute recording that keeps it running; killed when the guard drops.
    pub fn run_online(&self, shop_id: &str, uplink: &str) -> KillOnDrop {
        let quiet = self.quiet_recording("quiet.jsonl", 120, 1000);
        let config = self.write(
            "online.toml",
            &format!(
                "shop_id = {shop_id:?}\ndatabase = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\n[pos]\nlisten = \"\"\n[uplink]\n{uplink}\n",
                self.db(),
                quiet.display().to_string()
            ),
        );
        KillOnDrop(
            std::process::Command::new(&self.edge)
                .args(["run", "--config", config.to_str().unwrap()])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Writes a backlog of `count` arrival events (seq 1..=`count`) straight into the outbox,
    /// in one transaction, as a long offline spell would leave it; recording that many
    /// events through the pipeline would spend minutes on fsyncs.
    pub fn write_outbox_backlog(&self, count: i64) {
        self.write_outbox_events(count, |seq| {
            format!(
                r#"{{"visit_id":"v{seq}","customer_ref":"C{}","zone":"counter","arrived_at_ms":{seq}}}"#,
                seq % 1000
            )
        });
    }

    /// Writes `count` `customer_arrived` events whose bodies `body(seq)` gives straight into the
    /// outbox, in one transaction.
    pub fn write_outbox_events(&self, count: i64, body: impl Fn(i64) -> String) {
        self.edge_ok(&["outbox", "--db", &self.db()]); // creates the store's schema
        let mut db = rusqlite::Connection::open(self.db()).expect("open the store");
        let tx = db.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO outbox (event_id, kind, at_ms, body) VALUES (?1, 'customer_arrived', ?2, ?3)",
                )
                .unwrap();
            for seq in 1..=count {
                let body = body(seq);
                let event_id = format!("0190e6b2-0000-7000-8000-{seq:012}");
                insert
                    .execute(rusqlite::params![event_id, seq, body])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    /// Runs the box as `shop_id` with its uplink to `broker` (`host:port`), its scanner
    /// hearing whatever is written, as it is written, to the returned pipe (lines of the replay
    /// format). The box is killed when the guard drops.
    pub fn run_on_air(&self, shop_id: &str, broker: &str) -> (KillOnDrop, std::fs::File) {
        let air = self.path("air.fifo");
        let made = std::process::Command::new("mkfifo").arg(&air).status();
        assert!(made.unwrap().success(), "mkfifo");
        let config = self.write(
            "on-air.toml",
            &format!(
                "shop_id = {shop_id:?}\ndatabase = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\nreplay_speed = 0\n[pos]\nlisten = \"\"\n[uplink]\nbroker = {broker:?}\n",
                self.db(),
                air.display().to_string(),
            ),
        );
        let edge = KillOnDrop(
            std::process::Command::new(&self.edge)
                .args(["run", "--config", config.to_str().unwrap()])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        // Opening blocks until the box opens its end.
        let writer = std::fs::OpenOptions::new().write(true).open(&air).unwrap();
        (edge, writer)
    }

    /// Derives EID keys with the cloud tool and imports them, as a shop would receive them.
    pub fn enroll_eid(&self, customer_ref: &str, identity_key: &str, exponent: u8, from_s: u64) {
        let output = run(
            "tastesync-cloud",
            &[
                "eid-keys",
                "--customer-ref",
                customer_ref,
                "--identity-key",
                identity_key,
                "--exponent",
                &exponent.to_string(),
                "--from",
                &from_s.to_string(),
                "--days",
                "2",
            ],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let file = self.write("eid-keys.csv", &stdout(&output));
        self.edge_ok(&["eid-keys", "--db", &self.db(), file.to_str().unwrap()]);
    }

    /// The visits the box lists, as JSON objects.
    pub fn visits(&self) -> Vec<serde_json::Value> {
        self.visits_limited(50)
    }

    /// Every visit in the store.
    pub fn visits_all(&self) -> Vec<serde_json::Value> {
        self.visits_limited(1_000_000)
    }

    fn visits_limited(&self, limit: usize) -> Vec<serde_json::Value> {
        self.edge_ok(&[
            "visits",
            "--json",
            "--limit",
            &limit.to_string(),
            "--db",
            &self.db(),
        ])
        .lines()
        .map(|l| serde_json::from_str(l).expect("visit JSON"))
        .collect()
    }
}

impl Default for Shop {
    fn default() -> Self {
        Shop::new()
    }
}

/// Outbox events as `seq|event_id|type` rows.
pub fn as_rows(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}|{}|{}",
                e["seq"],
                e["event_id"].as_str().unwrap(),
                e["type"].as_str().unwrap()
            )
        })
        .collect()
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Unix time now, in seconds.
pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// Unix time now, in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Advertising data of an iBeacon.
pub fn ibeacon(uuid_hex: &str, major: u16, minor: u16) -> String {
    format!("0201061aff4c000215{uuid_hex}{major:04x}{minor:04x}c5")
}

/// The iBeacon payload after the company id, as BlueZ reports manufacturer data.
pub fn ibeacon_manufacturer_payload(uuid_hex: &str, major: u16, minor: u16) -> String {
    format!("0215{uuid_hex}{major:04x}{minor:04x}c5")
}

/// Advertising data of an Eddystone-EID frame.
pub fn eid_frame(eid_hex: &str) -> String {
    format!("02010603 03aafe0d16aafe30f6{eid_hex}").replace(' ', "")
}
