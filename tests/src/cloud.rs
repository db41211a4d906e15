//! Real services for the sync tests: a Mosquitto of the test's own on a free port, a fresh
//! PostgreSQL database (dropped afterwards), and `tastesync-cloud serve` against them.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{Shop, bin};

/// A Mosquitto broker of the test's own.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Mosquitto {
    /// `extra` is appended to the config (ACLs, passwords...).
    pub fn start(extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\npersistence false\n{extra}\n"),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Publishes one message with mosquitto_pub.
    pub fn publish(&self, topic: &str, payload: &str) {
        let status = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                payload,
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh database on the machine's PostgreSQL (127.0.0.1:5432, trust authentication).
pub struct Database {
    pub name: String,
}

impl Database {
    pub fn create() -> Database {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tastesync_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Database { name }
    }

    pub fn url(&self) -> String {
        format!("host=127.0.0.1 user=postgres dbname={}", self.name)
    }

    /// Runs a query; returns the rows as `|`-separated text lines.
    pub fn query(&self, sql: &str) -> Vec<String> {
        psql(&self.name, sql).lines().map(String::from).collect()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(database: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-AtX",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `tastesync-cloud serve`, killed on drop.
pub struct CloudSync {
    child: Child,
}

impl CloudSync {
    pub fn start(shop: &Shop, database: &Database, broker: &Mosquitto, name: &str) -> CloudSync {
        let config = shop.write(
            &format!("{name}.toml"),
            &format!(
                "database_url = {:?}\nbroker = {:?}\nclient_id = {:?}\n",
                database.url(),
                broker.address(),
                name
            ),
        );
        let child = Command::new(bin("tastesync-cloud"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        CloudSync { child }
    }
}

impl Drop for CloudSync {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it holds or `seconds` pass.
pub fn eventually(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    check()
}
