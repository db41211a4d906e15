//! The box killed with SIGKILL at random moments while it records visits (and, in the second
//! test, syncs them): every restart finds the store consistent. Each visit has exactly one
//! arrival event, each closed visit exactly one departure, and seq has no gap and no repeat,
//! in the outbox and, after syncing, in PostgreSQL.

use std::collections::HashMap;
use std::fmt::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tastesync_e2e::cloud::{CloudSync, Database, Mosquitto, eventually};
use tastesync_e2e::*;

const UUID: &str = "f7826da64fa24e988024bc5b71e0893e";
const KILLS: usize = 20;

/// A minimal deterministic generator (the seed is printed, so a failure can be replayed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// The seed of this run (set CRASH_SEED to replay a failure).
fn seed() -> u64 {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("CRASH_SEED={seed}");
    seed
}

/// A shop recording one minute of a busy counter (thirty customers, 15 s each, 2 s apart),
/// SIGKILLed `KILLS` times at random moments, then run once to the end of the recording.
/// `uplink` is appended to the config's `[uplink]` section.
fn record_with_kills(shop: &Shop, seed: u64, uplink: &str) {
    let mut rng = Lcg(seed);
    shop.enroll_tag_customers(30);
    let start = now_s() * 1000;
    let mut lines = String::new();
    for tick in 0..600u64 {
        let t = start + tick * 100;
        for c in 1..=30u64 {
            let (from, to) = (c * 2000, c * 2000 + 15_000);
            if (from..to).contains(&(tick * 100)) && tick % 5 == c % 5 {
                let data = ibeacon(UUID, 1, c as u16);
                writeln!(lines, r#"{{"t_ms":{t},"address":"c0:00:00:00:00:{c:02x}","rssi":-60,"data":"{data}"}}"#).unwrap();
            }
        }
    }
    let recording = shop.write("busy.jsonl", &lines);
    let config = shop.write(
        "edge.toml",
        &format!(
            "shop_id = \"seoul-9\"\ndatabase = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\nreplay_speed = 40\n[presence]\nabsence_ms = 3000\n[pos]\nlisten = \"\"\n[uplink]\n{uplink}\n",
            shop.db(),
            recording.display().to_string()
        ),
    );
    let run_once = |kill_after: Option<Duration>| {
        let mut child = Command::new(bin("tastesync-edge"))
            .args(["run", "--config", config.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        match kill_after {
            Some(after) => {
                std::thread::sleep(after);
                let _ = child.kill(); // SIGKILL
                let _ = child.wait();
            }
            None => assert!(child.wait().unwrap().success()),
        }
    };
    for _ in 0..KILLS {
        run_once(Some(Duration::from_millis(50 + rng.next(1500))));
    }
    run_once(None); // one full run to the end: it closes what the last kill left open
}

/// Checks events (`seq`, `type`, `body.visit_id`) against the box's visits: seq gap-free from
/// 1, one arrival per visit, one departure per closed visit, nothing else.
fn check_against_visits(events: &[Value], visits: &[Value], seed: u64) {
    println!(
        "{} visits, {} events after {KILLS} kills",
        visits.len(),
        events.len()
    );
    assert!(
        visits.len() >= 30,
        "at least the last full run's visits: {}",
        visits.len()
    );
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, expected, "seq is gap-free (seed {seed})");
    let mut per_visit: HashMap<String, (usize, usize)> = HashMap::new();
    for e in events {
        let visit = e["body"]["visit_id"].as_str().unwrap().to_string();
        let entry = per_visit.entry(visit).or_default();
        match e["type"].as_str().unwrap() {
            "customer_arrived" => entry.0 += 1,
            "customer_left" => entry.1 += 1,
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(
        per_visit.len(),
        visits.len(),
        "no event without a visit, no visit without events (seed {seed})"
    );
    for v in visits {
        let id = v["visit_id"].as_str().unwrap();
        let (arrivals, departures) = per_visit.get(id).copied().unwrap_or_default();
        assert_eq!(arrivals, 1, "visit {id} (seed {seed})");
        assert_eq!(
            departures,
            usize::from(!v["left_at_ms"].is_null()),
            "visit {id} (seed {seed})"
        );
    }
    assert!(
        visits.iter().all(|v| !v["left_at_ms"].is_null()),
        "every visit closed at the end"
    );
}

#[test]
fn sigkill_at_random_moments_never_loses_or_duplicates_an_event() {
    let seed = seed();
    let shop = Shop::new();
    record_with_kills(&shop, seed, "");
    let events: Vec<Value> = shop
        .edge_ok(&["outbox", "--db", &shop.db(), "--limit", "1000000"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    check_against_visits(&events, &shop.visits_all(), seed);
}

#[test]
fn sigkill_while_syncing_loses_and_duplicates_nothing_in_postgres() {
    let seed = seed();
    let shop = Shop::new();
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-crash");
    let uplink = format!(
        "broker = {:?}\nbatch_size = 10\nack_timeout_secs = 2",
        broker.address()
    );
    record_with_kills(&shop, seed, &uplink);
    // Let what the last run left in the outbox drain, with the box running on a quiet shop.
    let daemon = shop.run_online("seoul-9", &uplink);
    let drained = eventually(60, || {
        shop.edge_ok(&["outbox", "--db", &shop.db()]).is_empty()
    });
    drop(daemon);
    assert!(drained, "the outbox drained");
    let events: Vec<Value> = database
        .query("SELECT seq, kind, body->>'visit_id' FROM events WHERE shop_id = 'seoul-9' ORDER BY seq")
        .iter()
        .map(|row| {
            let cols: Vec<&str> = row.split('|').collect();
            serde_json::json!({"seq": cols[0].parse::<i64>().unwrap(), "type": cols[1], "body": {"visit_id": cols[2]}})
        })
        .collect();
    check_against_visits(&events, &shop.visits_all(), seed);
}
