//! systemd's side of the unit (`Type=notify`, `WatchdogSec=`), spoken to a socket of the
//! test's own as systemd's notify socket: the daemon says it is ready once its store, POS
//! and scanner run, pings the watchdog from its pipeline loop at a third of the period, and
//! says it is stopping on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use tastesync_e2e::ble::{Daemon, MockBluez};
use tastesync_e2e::{Shop, bin};

/// What arrives on the notify socket within `within`, one datagram per entry.
fn messages(socket: &UnixDatagram, within: Duration) -> Vec<String> {
    messages_until(socket, within, |_| false)
}

/// Datagrams until one is `last` (included), or `within` passes.
fn messages_until(
    socket: &UnixDatagram,
    within: Duration,
    last: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv(&mut buffer) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buffer[..n]).trim().to_string();
                let done = last(&message);
                got.push(message);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    got
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_pings_its_watchdog_and_says_when_it_stops() {
    let shop = Shop::new();
    let config = shop.write(
        "edge.toml",
        &format!(
            "database = {:?}\n[scanner]\nsource = \"ble\"\nzone = \"counter\"\n[pos]\nlisten = \"127.0.0.1:0\"\nannounce = false\n",
            shop.db()
        ),
    );
    let socket_path = shop.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("a notify socket");
    // As systemd starts a Type=notify unit with WatchdogSec=0.6.
    let wrapper = shop.write(
        "under-systemd.sh",
        &format!(
            "#!/bin/sh\nexport NOTIFY_SOCKET={socket_path:?} WATCHDOG_USEC=600000 WATCHDOG_PID=$$\nexec {:?} \"$@\"\n",
            bin("tastesync-edge")
        ),
    );
    Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .unwrap();
    let mock = MockBluez::start(&[]);
    let daemon = Daemon::start_binary(&wrapper, &config, &mock.bus);

    let first = messages_until(&socket, Duration::from_secs(20), |m| m == "READY=1");
    assert!(first.iter().any(|m| m == "READY=1"), "ready: {first:?}");
    // The watchdog is pinged every 200 ms or so.
    let pings = messages(&socket, Duration::from_secs(2))
        .into_iter()
        .filter(|m| m == "WATCHDOG=1")
        .count();
    assert!((5..=15).contains(&pings), "{pings} pings in 2 s");
    // Stopped (SIGSTOP, as a wedged process): no pings, so systemd would restart it.
    let pid = daemon.pid().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let _ = messages(&socket, Duration::from_millis(300)); // what was already on its way
    let frozen = messages(&socket, Duration::from_secs(1));
    assert!(
        frozen.is_empty(),
        "pings from a stopped process: {frozen:?}"
    );
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    assert!(
        !messages(&socket, Duration::from_secs(1)).is_empty(),
        "pings again"
    );

    assert!(daemon.terminate(), "the daemon stopped cleanly on SIGTERM");
    let last = messages(&socket, Duration::from_millis(500));
    assert!(last.iter().any(|m| m == "STOPPING=1"), "stopping: {last:?}");
}
