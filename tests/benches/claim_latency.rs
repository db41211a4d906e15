//! Claim benchmark (BENCHMARKS.md): from `tastesync-edge claim CODE` (a new process, as the
//! owner or a technician runs it) on a running blank box to the box's first event committed
//! in PostgreSQL, with the release binaries, a Mosquitto with dynamic security (the box gets
//! its own broker user), the provisioning API over HTTPS, and a real PostgreSQL.
//!
//! Each round is a new blank box whose outbox holds one event (recorded before the claim, as
//! a box in setup mode does). Also timed: revoking a box until the broker refuses it. Run by
//! `scripts/bench.sh` (after `cargo build --release --bins`).

use std::time::{Duration, Instant};

use tastesync_e2e::cloud::eventually;
use tastesync_e2e::provisioning::{BlankBox, Cloud};

const ROUNDS: usize = 20;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let cloud = Cloud::start();
    cloud.hq().shops(&["add", "bench-1"]);
    let mut claim_to_event = Vec::new();
    let mut claim_command = Vec::new();
    let mut revoke_to_refused = Vec::new();
    for round in 0..ROUNDS {
        let blank = BlankBox::new(&cloud);
        blank.shop.write_outbox_backlog(1);
        let blank = blank.run();
        let code = cloud.claim_code("bench-1");
        let box_id = blank.box_id();
        let started = Instant::now();
        let output = blank.claim(&code);
        let claimed = started.elapsed();
        assert!(output.status.success(), "round {round}: {output:?}");
        let query = format!("SELECT count(*) FROM events WHERE box_id = '{box_id}'");
        let stored = loop {
            if cloud.database.query(&query) != ["0"] {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "round {round}: no event"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        claim_command.push(claimed.as_secs_f64() * 1000.0);
        claim_to_event.push(stored.as_secs_f64() * 1000.0);

        let (user, password) = blank.credentials();
        let started = Instant::now();
        cloud.hq().shops(&["revoke", &box_id]);
        assert!(eventually(10, || cloud.broker.refuses((&user, &password))));
        revoke_to_refused.push(started.elapsed().as_secs_f64() * 1000.0);
        println!(
            "round {round}: claim command {:.0} ms, first event stored {:.0} ms",
            claimed.as_secs_f64() * 1000.0,
            stored.as_secs_f64() * 1000.0
        );
    }
    for (what, samples) in [
        (
            "claim command (HTTPS, broker user created)",
            &mut claim_command,
        ),
        ("claim -> first event in PostgreSQL", &mut claim_to_event),
        (
            "revoke command -> broker refuses the box",
            &mut revoke_to_refused,
        ),
    ] {
        samples.sort_by(f64::total_cmp);
        println!(
            "{what}: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms ({} rounds)",
            percentile(samples, 0.5),
            percentile(samples, 0.9),
            samples[samples.len() - 1],
            samples.len()
        );
    }
}
