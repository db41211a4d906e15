//! Downlink benchmark (BENCHMARKS.md): how long from an HQ enrollment (`tastesync-cloud
//! customers enroll`, a new process, as HQ's staff would run it) until the box recognises the
//! customer, with the release binaries, a real Mosquitto and a real PostgreSQL.
//!
//! The customer's tag is already advertising (10 times a second, like a phone) when HQ
//! enrolls them. Two moments are timed: the customer is in the box's cache (the downlink
//! proper), and the box records their arrival (which also needs the presence rule's three
//! sightings). Run by `scripts/bench.sh` (after `cargo build --release --bins`).

use std::io::Write;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tastesync_e2e::cloud::{CloudSync, Database, Hq, Mosquitto, eventually};
use tastesync_e2e::*;

const ROUNDS: u16 = 100;
const UUID: &str = "f7826da64fa24e988024bc5b71e0893e";

fn main() {
    let shop = Shop::new();
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let _cloud = CloudSync::start(&shop, &database, &broker, "bench");
    let hq = Hq::new(&shop, &database);
    let (_edge, mut air) = shop.run_on_air("bench-1", &broker.address());
    // The air: the tag of the customer about to be enrolled, 10 times a second.
    let advertising = Arc::new(AtomicU16::new(1));
    let (stop, stopped) = mpsc::channel::<()>();
    let radio = {
        let advertising = advertising.clone();
        std::thread::spawn(move || {
            while stopped.recv_timeout(Duration::from_millis(100))
                == Err(mpsc::RecvTimeoutError::Timeout)
            {
                let minor = advertising.load(Ordering::SeqCst);
                let t = now_ms();
                let data = ibeacon(UUID, 7, minor);
                let line = format!(
                    r#"{{"t_ms":{t},"address":"c0:00:00:00:{:02x}:{:02x}","rssi":-60,"data":"{data}"}}"#,
                    minor >> 8,
                    minor & 0xff
                );
                if writeln!(air, "{line}").and_then(|_| air.flush()).is_err() {
                    break;
                }
            }
        })
    };
    assert!(
        eventually(20, || database
            .query("SELECT online FROM boxes WHERE shop_id = 'bench-1'")
            == ["t"]),
        "the box connects"
    );
    let store = rusqlite::Connection::open(shop.db()).unwrap();
    let (mut cached, mut arrived) = (Vec::new(), Vec::new());
    for minor in 1..=ROUNDS {
        advertising.store(minor, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300)); // unknown until enrolled
        let customer_ref = format!("B{minor}");
        let tag = format!("ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:7:{minor}");
        let start = Instant::now();
        hq.ok(&[
            "enroll",
            "--ref",
            &customer_ref,
            "--name",
            "Bench",
            "--shop",
            "bench-1",
            "--tag",
            &tag,
        ]);
        let mut in_cache = None;
        loop {
            let (known, visits): (i64, i64) = store
                .query_row(
                    "SELECT count(*), (SELECT count(*) FROM visits v WHERE v.customer_id = c.id)
                     FROM customers c WHERE customer_ref = ?1",
                    [&customer_ref],
                    |r| Ok((r.get(0)?, r.get(1).unwrap_or(0))),
                )
                .unwrap();
            if known > 0 && in_cache.is_none() {
                in_cache = Some(start.elapsed());
            }
            if visits > 0 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{customer_ref} was not identified"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        arrived.push(start.elapsed());
        cached.push(in_cache.unwrap());
    }
    drop(stop);
    radio.join().unwrap();
    println!("HQ enrollment -> box, {ROUNDS} customers (release binaries):");
    for (what, mut samples) in [
        ("in the box's cache", cached),
        ("arrival recorded", arrived),
    ] {
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        println!(
            "  {what:<20} p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms",
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(1.0))
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
