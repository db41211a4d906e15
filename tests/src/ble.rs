//! Running the box against a mocked BlueZ: python-dbusmock's bluez5 template on a private
//! D-Bus, driven by `tests/ble/mock_bluez.py`, and the daemon as a child process.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{bin, stderr, stdout, workspace};

/// The Python interpreter that has python-dbusmock, installing it if needed.
fn mock_python() -> String {
    if let Ok(python) = std::env::var("TASTESYNC_BLE_PYTHON") {
        return python;
    }
    let output = Command::new("bash")
        .arg(workspace().join("scripts/install-ble-mock.sh"))
        .output()
        .expect("run install-ble-mock.sh");
    assert!(
        output.status.success(),
        "install-ble-mock.sh failed: {}",
        stderr(&output)
    );
    stdout(&output)
        .lines()
        .last()
        .expect("python path")
        .to_string()
}

/// The mock BlueZ driver (tests/ble/mock_bluez.py).
pub struct MockBluez {
    child: Child,
    /// Closing it ends the mock (and its bus).
    stdin: Option<ChildStdin>,
    replies: mpsc::Receiver<String>,
    pub bus: String,
}

impl MockBluez {
    pub fn start(args: &[&str]) -> MockBluez {
        let mut child = Command::new(mock_python())
            .arg(workspace().join("tests/ble/mock_bluez.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mock_bluez.py");
        let stdin = child.stdin.take().unwrap();
        let (tx, replies) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let ready = replies
            .recv_timeout(Duration::from_secs(30))
            .expect("mock ready");
        let bus = ready
            .strip_prefix("READY ")
            .expect("READY line")
            .to_string();
        MockBluez {
            child,
            stdin: Some(stdin),
            replies,
            bus,
        }
    }

    pub fn send(&mut self, command: serde_json::Value) {
        let stdin = self.stdin.as_mut().expect("the mock is running");
        writeln!(stdin, "{command}").unwrap();
        let reply = self
            .replies
            .recv_timeout(Duration::from_secs(10))
            .expect("reply");
        assert_eq!(reply, "OK", "{command}");
    }

    /// Ends the mock and its bus, and waits for it.
    pub fn stop(self) {}
}

/// Ends the mock when a test is done with it, and waits, so that its bus is gone before the
/// test is (a mock left behind would hold the test's output open).
impl Drop for MockBluez {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tastesync-edge run` on the mock's bus, with its log lines collected.
pub struct Daemon {
    child: Child,
    log: mpsc::Receiver<String>,
}

impl Daemon {
    pub fn start(config: &std::path::Path, bus: &str) -> Daemon {
        Daemon::start_binary(&bin("tastesync-edge"), config, bus)
    }

    /// With another `tastesync-edge` binary (a previous release's).
    pub fn start_binary(binary: &std::path::Path, config: &std::path::Path, bus: &str) -> Daemon {
        Daemon::start_with_env(binary, config, bus, &[])
    }

    /// With more environment variables (a faked clock).
    pub fn start_with_env(
        binary: &std::path::Path,
        config: &std::path::Path,
        bus: &str,
        env: &[(String, String)],
    ) -> Daemon {
        let mut child = Command::new(binary)
            .args(["run", "--config", config.to_str().unwrap()])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let (tx, log) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Daemon { child, log }
    }

    /// The process id (of what was started: a wrapper that `exec`s the daemon is the daemon).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_for_log(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = self.log.recv_timeout(Duration::from_millis(200)) {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
        }
        panic!(
            "the daemon never logged {needle:?}; it logged:\n{}",
            seen.join("\n")
        );
    }

    /// The lines logged since the last look.
    pub fn drain_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// SIGTERM, as systemd stops it; returns whether it exited cleanly within 10 s
    /// (otherwise it is killed).
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

/// A daemon a test is done with is killed, not left running after the test.
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
