//! Console benchmark (BENCHMARKS.md): the analytics API over a year of a 1,000-shop chain
//! (50 million events), and the shops page with 1,000 shops, each call timed from the client
//! (the release `tastesync-cloud serve`, its API over loopback HTTP, a real PostgreSQL).
//!
//! The data set is generated once into the database `tastesync_bench_analytics` (kept; set
//! `CONSOLE_REGENERATE=1` to make it again): 1,000 shops (Asia/Seoul), each with one box and
//! stream, and for every day of 2025, 137 events per shop between 07:00 and 21:00 local time
//! (peaking in the afternoon): 40 % arrivals of one of the shop's 3,000 customers (a few
//! regulars come often), 35 % departures with a dwell of 10 to 60 minutes, 15 % orders of one
//! or two of 20 menu items, 5 % feedback scored 1 to 5 with a comment, 5 % box health
//! reports. It is inserted set-based by PostgreSQL (`generate_series`), then the rollups are
//! computed by `tastesync-cloud analytics rebuild` (the set-based definitions the tests hold
//! equal to the rollups kept at ingest). Both steps are timed.
//!
//! Env: `CONSOLE_SHOPS` (1000), `CONSOLE_ROUNDS` (40 calls per scenario).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tastesync_e2e::cloud::Database;
use tastesync_e2e::console::Console;

const DATABASE: &str = "tastesync_bench_analytics";
const EVENTS_PER_SHOP_DAY: i64 = 137;
const PASSWORD: &str = "a long enough password";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let shops = env_or("CONSOLE_SHOPS", 1000) as i64;
    let rounds = env_or("CONSOLE_ROUNDS", 40) as usize;
    if std::env::var_os("CONSOLE_REGENERATE").is_some() {
        let status = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (database, _) = Database::kept(DATABASE);
    let console = Console::start_on(database, "");
    let generated = console
        .database
        .query("SELECT count(*) FROM pg_tables WHERE tablename = 'bench_generated'")
        == ["1"];
    if !generated {
        generate(&console, shops);
    }
    let events = console.database.query("SELECT count(*) FROM events");
    println!("data set: {} events, {shops} shops", events[0]);

    let _ = console.command_output(
        &[
            "users",
            "add",
            "--email",
            "admin@example.com",
            "--admin",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    let managed: Vec<String> = (1..=10).map(|s| format!("--shop=shop-{s:04}")).collect();
    let mut args = vec![
        "users",
        "add",
        "--email",
        "manager@example.com",
        "--role",
        "manager",
        "--password-stdin",
    ];
    args.extend(managed.iter().map(String::as_str));
    let _ = console.command_output(&args, &format!("{PASSWORD}\n"));
    let admin = console.token("admin@example.com", PASSWORD);
    let manager = console.token("manager@example.com", PASSWORD);

    let scenarios: [(&str, &str, &str); 6] = [
        (
            "chain, 7 days",
            "/api/v1/analytics?from=2025-12-25&to=2025-12-31",
            &admin,
        ),
        (
            "chain, 30 days",
            "/api/v1/analytics?from=2025-12-02&to=2025-12-31",
            &admin,
        ),
        (
            "chain, a quarter",
            "/api/v1/analytics?from=2025-10-01&to=2025-12-31",
            &admin,
        ),
        (
            "chain, the year",
            "/api/v1/analytics?from=2025-01-01&to=2025-12-31",
            &admin,
        ),
        (
            "one shop, the year",
            "/api/v1/analytics?from=2025-01-01&to=2025-12-31&shop=shop-0500",
            &admin,
        ),
        (
            "a manager's 10 shops, the year",
            "/api/v1/analytics?from=2025-01-01&to=2025-12-31",
            &manager,
        ),
    ];
    println!("| analytics call | p50 | p95 | max |");
    println!("| --- | --- | --- | --- |");
    for (name, path, token) in scenarios {
        let mut samples = Vec::new();
        for round in 0..rounds + 3 {
            let started = Instant::now();
            let answer = console.get(path, Some(token));
            let took = started.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(answer.status, StatusCode::OK, "{name}: {:?}", answer.body);
            assert!(
                answer.body["totals"]["visits"].as_i64().unwrap() > 0,
                "{name}"
            );
            if round >= 3 {
                samples.push(took); // the first calls warm PostgreSQL's caches
            }
        }
        samples.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms |",
            percentile(&samples, 0.5),
            percentile(&samples, 0.95),
            samples[samples.len() - 1]
        );
    }

    // The shops page: every shop with its box, four clients at once for 10 s.
    let page = console.get("/api/v1/shops", Some(&admin));
    assert_eq!(page.body.as_array().unwrap().len() as i64, shops);
    let deadline = Instant::now() + Duration::from_secs(10);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = console.url("/api/v1/shops");
            let admin = admin.clone();
            std::thread::spawn(move || {
                let client = tastesync_e2e::http();
                let mut samples = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let response = client.get(&url).bearer_auth(&admin).send().unwrap();
                    assert!(response.status().is_success());
                    let _ = response.bytes().unwrap();
                    samples.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                samples
            })
        })
        .collect();
    let mut samples: Vec<f64> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    samples.sort_by(f64::total_cmp);
    println!(
        "shops page ({shops} shops, 4 clients, 10 s): {:.0} requests/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} bytes)",
        samples.len() as f64 / 10.0,
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
        page.body.to_string().len()
    );
}

/// Inserts the year of events (see the file's documentation), then rebuilds the rollups.
fn generate(console: &Console, shops: i64) {
    let started = Instant::now();
    console.database.query(&format!(
        "INSERT INTO shops (shop_id, name, time_zone)
            SELECT 'shop-' || lpad(s::text, 4, '0'), 'Shop ' || s, 'Asia/Seoul'
            FROM generate_series(1, {shops}) s ON CONFLICT DO NOTHING;
         INSERT INTO boxes (box_id, shop_id, claimed_at, software, online, status_at, last_seen, health)
            SELECT 'box-' || s, 'shop-' || lpad(s::text, 4, '0'), now(), '0.1.0', s % 7 <> 0, now(), now(),
                   jsonb_build_object('outbox_pending', s % 13, 'oldest_unsent_ms', 0)
            FROM generate_series(1, {shops}) s ON CONFLICT DO NOTHING;
         INSERT INTO streams (stream_id, shop_id, box_id, protocol, acked_seq, last_seen)
            SELECT ('0190e6b2-' || lpad(to_hex(s), 4, '0') || '-7000-8000-000000000000')::uuid,
                   'shop-' || lpad(s::text, 4, '0'), 'box-' || s, 2, 365000, now()
            FROM generate_series(1, {shops}) s ON CONFLICT DO NOTHING;"
    ));
    // Indexes are built once at the end, not row by row.
    console.database.query(
        "DROP INDEX IF EXISTS events_feedback; DROP INDEX IF EXISTS events_customer;
         ALTER TABLE events DROP CONSTRAINT IF EXISTS events_pkey",
    );
    let chunk = (shops / 20).max(1);
    let mut first = 1;
    while first <= shops {
        let last = (first + chunk - 1).min(shops);
        console.database.query(&format!(
            "INSERT INTO events (shop_id, box_id, stream_id, seq, event_id, kind, at_ms, body)
             SELECT 'shop-' || lpad(s::text, 4, '0'), 'box-' || s,
                    ('0190e6b2-' || lpad(to_hex(s), 4, '0') || '-7000-8000-000000000000')::uuid,
                    d * 1000 + i, 'e-' || s || '-' || d || '-' || i, k, at,
                    CASE k
                      WHEN 'customer_arrived' THEN jsonb_build_object('visit_id', 'v' || s || '-' || d || '-' || i,
                           'customer_ref', 'c' || s || '-' || floor(power(random(), 3) * 3000)::int,
                           'zone', 'counter', 'arrived_at_ms', at)
                      WHEN 'customer_left' THEN jsonb_build_object('visit_id', 'v' || s || '-' || d || '-' || i,
                           'customer_ref', 'c' || s || '-' || floor(power(random(), 3) * 3000)::int,
                           'zone', 'counter', 'dwell_s', 600 + floor(random() * 3000)::int)
                      WHEN 'order_recorded' THEN jsonb_build_object('action_id', 'o' || d || '-' || i,
                           'visit_id', 'v', 'customer_ref', 'c' || s || '-' || floor(power(random(), 3) * 3000)::int,
                           'device_id', 1, 'items', jsonb_build_array('item ' || floor(power(random(), 2) * 20)::int))
                      WHEN 'feedback_recorded' THEN jsonb_build_object('action_id', 'f' || d || '-' || i,
                           'visit_id', 'v', 'customer_ref', 'c' || s || '-' || floor(power(random(), 3) * 3000)::int,
                           'device_id', 1, 'score', 1 + floor(power(random(), 0.5) * 5)::int,
                           'comment', 'fine, thank you')
                      ELSE jsonb_build_object('status', 'running', 'outbox_pending', 0)
                    END
             FROM generate_series({first}, {last}) s, generate_series(0, 364) d,
                  generate_series(1, {EVENTS_PER_SHOP_DAY}) i,
                  LATERAL (SELECT CASE WHEN i % 20 < 8 THEN 'customer_arrived'
                                       WHEN i % 20 < 15 THEN 'customer_left'
                                       WHEN i % 20 < 18 THEN 'order_recorded'
                                       WHEN i % 20 = 18 THEN 'feedback_recorded'
                                       ELSE 'box_health' END AS k,
                                  (extract(epoch FROM date '2025-01-01' + d) * 1000)::bigint
                                    - 9 * 3600000 + 7 * 3600000
                                    + floor((random() + random()) / 2 * 14 * 3600000)::bigint
                                    AS at) x"
        ));
        println!(
            "generated shops {first}-{last} in {:.0} s so far",
            started.elapsed().as_secs_f64()
        );
        first = last + 1;
    }
    console.database.query(
        "ALTER TABLE events ADD PRIMARY KEY (stream_id, seq);
         CREATE INDEX events_feedback ON events (at_ms) WHERE kind = 'feedback_recorded';
         CREATE INDEX events_customer ON events ((body->>'customer_ref')) WHERE body ? 'customer_ref'",
    );
    console.database.query("VACUUM ANALYZE events");
    let inserted = started.elapsed();
    let rebuild = Instant::now();
    console.command(&["analytics", "rebuild"], "");
    console.database.query("VACUUM ANALYZE");
    console.database.query("CREATE TABLE bench_generated ()");
    println!(
        "events inserted and indexed in {:.0} s; rollups rebuilt in {:.0} s",
        inserted.as_secs_f64(),
        rebuild.elapsed().as_secs_f64()
    );
}
