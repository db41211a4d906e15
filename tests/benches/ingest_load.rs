//! Ingest load benchmark (BENCHMARKS.md): ONE release `tastesync-cloud serve` fed by 1,000
//! simulated shops through a Mosquitto of the benchmark's own into a fresh PostgreSQL database.
//! Each shop is one box speaking protocol 2 (its own topics and stream, the low-water mark in
//! every batch), its own MQTT connection, and publishes a 4-event batch every 200 ms in seq order
//! (20 events/s per shop, 20,000 events/s in all), `at_ms` being the moment the batch was made
//! (the box's commit). Shops keep sending whatever the acks say, and time each ack.
//!
//! Reported, leaving out the first seconds (connections warming up):
//! - from PostgreSQL, events stored per second, and `received_at - at_ms` (p50/p99/max);
//!   `received_at` is `now()`, the start of cloud-sync's transaction;
//! - from the shops, batch made → ack received, which includes the commit and the ack's trip;
//! - the CPU each process used, to show where the time goes.
//!
//! Env: `LOAD_SHOPS` (1000), `LOAD_SECS` (30), `CLOUD_BIN` (another cloud-sync build to
//! compare; default the workspace's release binary). Needs an open-files limit of a few thousand
//! (`scripts/bench.sh` raises it) and the release binaries (`cargo build --release --bins`).

use std::collections::VecDeque;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tastesync_e2e::cloud::{Database, Mosquitto};
use tastesync_e2e::{KillOnDrop, Shop, now_ms, workspace};
use tastesync_shared::wire::{self, Ack, BoxTopics, EventBatch, WireEvent};

const EVENTS_PER_BATCH: i64 = 4;
const PERIOD: Duration = Duration::from_millis(200);
/// Left out of the figures: connections and caches warming up.
const WARM_UP: Duration = Duration::from_secs(5);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

/// Batches a shop sent and not yet saw acknowledged: (last seq, at_ms).
type Unacked = Arc<Mutex<VecDeque<(i64, u64)>>>;
/// Every acknowledged batch: (at_ms, milliseconds until its ack arrived).
type AckLatencies = Arc<Mutex<Vec<(u64, u64)>>>;

/// One simulated shop's connection.
struct SimulatedShop {
    index: usize,
    id: String,
    topics: BoxTopics,
    client: AsyncClient,
    unacked: Unacked,
    /// The highest seq acknowledged: the batches' low-water mark.
    acked: Arc<AtomicI64>,
}

fn stream_id(index: usize) -> String {
    format!("0190e6b2-{index:04x}-7000-8000-000000000000")
}

/// Connects a shop and keeps polling its connection; `ready` fires once its ack subscription
/// is in place.
fn connect(
    index: usize,
    port: u16,
    latencies: AckLatencies,
    ready: tokio::sync::mpsc::Sender<()>,
) -> SimulatedShop {
    let id = format!("load-{index:04}");
    let mut options = MqttOptions::new(id.clone(), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = AsyncClient::new(options, 64);
    let unacked: Unacked = Arc::default();
    let acked = Arc::new(AtomicI64::new(0));
    let topics = BoxTopics::new(&id, &format!("box-{index:04}"));
    let (subscriber, pending, ack_topic) = (client.clone(), unacked.clone(), topics.ack.clone());
    let acked_seq = acked.clone();
    tokio::spawn(async move {
        let mut ready = Some(ready);
        loop {
            match connection.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // Clean sessions: subscribe on every (re)connection.
                    let _ = subscriber.try_subscribe(&ack_topic, QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(()).await;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(message))) => {
                    let Ok(ack) = serde_json::from_slice::<Ack>(&message.payload) else {
                        continue;
                    };
                    acked_seq.fetch_max(ack.up_to_seq, Ordering::Relaxed);
                    let now = now_ms();
                    let mut acked = Vec::new();
                    {
                        let mut pending = pending.lock().unwrap();
                        while pending
                            .front()
                            .is_some_and(|(seq, _)| *seq <= ack.up_to_seq)
                        {
                            let (_, at_ms) = pending.pop_front().unwrap();
                            acked.push((at_ms, now.saturating_sub(at_ms)));
                        }
                    }
                    latencies.lock().unwrap().extend(acked);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await, // reconnects
            }
        }
    });
    SimulatedShop {
        index,
        id,
        topics,
        client,
        unacked,
        acked,
    }
}

/// Publishes a batch every `PERIOD` from `first` until `until`; returns the events sent.
async fn publish_batches(shop: SimulatedShop, first: tokio::time::Instant, until: Instant) -> i64 {
    let topic = shop.topics.events.clone();
    let box_id = shop.topics.events.split('/').nth(5).unwrap().to_string();
    let mut tick = tokio::time::interval_at(first, PERIOD);
    let mut next_seq = 1;
    loop {
        tick.tick().await;
        if Instant::now() >= until {
            return next_seq - 1;
        }
        let at_ms = now_ms();
        let events = (next_seq..next_seq + EVENTS_PER_BATCH)
            .map(|seq| WireEvent {
                seq,
                event_id: format!("0190e6b2-{:04x}-7000-8000-{seq:012}", shop.index),
                kind: "customer_arrived".into(),
                at_ms,
                body: serde_json::json!({
                    "visit_id": format!("{}-v{seq}", shop.id),
                    "customer_ref": format!("C{}", seq % 1000),
                    "zone": "counter",
                    "arrived_at_ms": at_ms,
                }),
            })
            .collect();
        let batch = EventBatch {
            v: wire::VERSION,
            shop_id: shop.id.clone(),
            box_id: Some(box_id.clone()),
            stream_id: Some(stream_id(shop.index)),
            low_water: Some(shop.acked.load(Ordering::Relaxed)),
            events,
        };
        let last = next_seq + EVENTS_PER_BATCH - 1;
        shop.unacked.lock().unwrap().push_back((last, at_ms));
        let payload = serde_json::to_vec(&batch).unwrap();
        shop.client
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("the shop's connection task is running");
        next_seq = last + 1;
    }
}

/// CPU seconds (user + system) a process used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let output = Command::new("getconf").arg("CLK_TCK").output();
        output
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Processes by command name (`/proc/<pid>/comm`), e.g. every `postgres` process.
fn pids_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// Busy CPU seconds of the whole machine so far (all cores, from /proc/stat).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    (ticks.iter().sum::<f64>() - ticks[3] - ticks[4]) / clock_ticks()
}

/// CPU seconds per process group (cloud-sync, Mosquitto, PostgreSQL, this load generator).
fn cpu_snapshot(groups: &[(&str, Vec<u32>)]) -> Vec<f64> {
    groups
        .iter()
        .map(|(_, pids)| pids.iter().map(|&pid| cpu_seconds(pid)).sum())
        .chain([machine_busy_seconds()])
        .collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// What the shops talk to.
struct Services {
    broker: Mosquitto,
    database: Database,
    cloud: KillOnDrop,
    /// cloud-sync's configuration file.
    _files: Shop,
}

/// Mosquitto, a fresh database and cloud-sync, ready once a probe batch went all the way into
/// PostgreSQL.
fn start_services(cloud_bin: &std::path::Path) -> Services {
    // The defaults hold 20 QoS 1 messages in flight and queue 1,000 per client, then drop:
    // cloud-sync's one connection receives every shop's messages.
    let broker = Mosquitto::start_with(tempfile::tempdir().unwrap(), |port| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_connections -1\nmax_inflight_messages 1000\nmax_queued_messages 1000000\n\
             set_tcp_nodelay true\n"
        )
    });
    let database = Database::create();
    let files = Shop::new();
    let config = files.write(
        "cloud.toml",
        &format!(
            "database_url = {:?}\nbroker = {:?}\nclient_id = \"load\"\n[http]\nlisten = \"\"\n[provisioning]\ncredentials = \"none\"\n",
            database.url(),
            broker.address()
        ),
    );
    let cloud = KillOnDrop(
        Command::new(cloud_bin)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let probe = r#"{"v":1,"shop_id":"probe","events":[{"seq":1,"event_id":"probe-1","type":"customer_arrived","at_ms":1,"body":{}}]}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "cloud-sync did not come up");
        if database.query("SELECT to_regclass('public.events') IS NOT NULL") == ["t"] {
            broker.publish(&wire::legacy::events_topic("probe"), probe);
            if database.query("SELECT count(*) FROM events WHERE shop_id = 'probe'") == ["1"] {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Services {
        broker,
        database,
        cloud,
        _files: files,
    }
}

fn main() {
    let shops = env_or("LOAD_SHOPS", 1000) as usize;
    let seconds = env_or("LOAD_SECS", 30);
    let run = Duration::from_secs(seconds);
    assert!(
        run > WARM_UP + Duration::from_secs(5),
        "LOAD_SECS must be over 10"
    );
    let cloud_bin = std::env::var_os("CLOUD_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/release/tastesync-cloud"));
    assert!(
        cloud_bin.exists(),
        "build the release binaries first (scripts/bench.sh does)"
    );
    let open_files: u64 = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        open_files >= shops as u64 * 2 + 256,
        "the open-files limit ({open_files}) is too low for {shops} connections: `ulimit -n 8192` (scripts/bench.sh does)"
    );

    let Services {
        broker,
        database,
        cloud,
        _files,
    } = start_services(&cloud_bin);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let latencies: AckLatencies = Arc::default();
    let connecting = Instant::now();
    let simulated: Vec<SimulatedShop> = runtime.block_on(async {
        let (ready, mut readies) = tokio::sync::mpsc::channel(shops);
        let mut simulated = Vec::new();
        for i in 1..=shops {
            simulated.push(connect(i, broker.port, latencies.clone(), ready.clone()));
            if i % 50 == 0 {
                // Spread the connection storm over the broker's accept backlog.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        for _ in 0..shops {
            tokio::time::timeout(Duration::from_secs(60), readies.recv())
                .await
                .expect("every shop connected and subscribed within a minute");
        }
        simulated
    });
    println!(
        "{shops} shops connected and subscribed in {:.1} s",
        connecting.elapsed().as_secs_f64()
    );

    // Shops start spread over one period, as real shops' clocks are.
    let started = Instant::now() + Duration::from_millis(100);
    let started_ms = now_ms() + 100;
    let until = started + run;
    let publishers: Vec<_> = simulated
        .into_iter()
        .enumerate()
        .map(|(i, shop)| {
            let first = started + PERIOD * i as u32 / shops as u32;
            runtime.spawn(publish_batches(shop, first.into(), until))
        })
        .collect();

    let postgres_pids = || {
        let backends = database.query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        );
        let backends: Vec<u32> = backends.iter().filter_map(|p| p.parse().ok()).collect();
        let others: Vec<u32> = pids_named("postgres")
            .into_iter()
            .filter(|p| !backends.contains(p))
            .collect();
        (backends, others)
    };
    let (backends, postgres_others) = postgres_pids();
    let groups = [
        ("cloud-sync", vec![cloud.0.id()]),
        ("mosquitto", pids_named("mosquitto")),
        ("PostgreSQL: cloud-sync's backends", backends),
        (
            "PostgreSQL: other processes (WAL writer, checkpointer...)",
            postgres_others,
        ),
        ("this load generator (1 process)", vec![std::process::id()]),
    ];
    std::thread::sleep(WARM_UP + Duration::from_millis(100));
    let cpu_from = cpu_snapshot(&groups);
    let window_from = Instant::now();
    let window_from_ms = started_ms + WARM_UP.as_millis() as u64;
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let cpu_to = cpu_snapshot(&groups);
    let window = window_from.elapsed().as_secs_f64();
    let window_to_ms = started_ms + run.as_millis() as u64;

    let published: i64 = runtime.block_on(async {
        let mut total = 0;
        for publisher in publishers {
            total += publisher.await.unwrap();
        }
        total
    });
    let sending_ended = Instant::now();
    let stored = || -> i64 {
        database.query("SELECT count(*) FROM events WHERE shop_id LIKE 'load-%'")[0]
            .parse()
            .unwrap()
    };
    // Wait for the backlog to drain; give up after 20 s without progress (a stall).
    let (mut last, mut progressed) = (-1, Instant::now());
    loop {
        let now_stored = stored();
        if now_stored >= published || progressed.elapsed() > Duration::from_secs(20) {
            break;
        }
        if now_stored > last {
            (last, progressed) = (now_stored, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let caught_up = sending_ended.elapsed().as_secs_f64();
    let stored = stored();
    std::thread::sleep(Duration::from_secs(1)); // the last acks in flight
    drop(runtime); // disconnects the shops

    // received_at is now(), one value per transaction: distinct values count transactions.
    let window_sql = format!(
        "received_at >= to_timestamp({window_from_ms} / 1000.0) AND received_at < to_timestamp({window_to_ms} / 1000.0)"
    );
    let in_window: Vec<String> = database.query(&format!(
        "SELECT count(*), count(DISTINCT received_at) FROM events WHERE shop_id LIKE 'load-%' AND {window_sql}"
    ))[0]
        .split('|')
        .map(String::from)
        .collect();
    let (ingested, transactions): (f64, f64) =
        (in_window[0].parse().unwrap(), in_window[1].parse().unwrap());
    let window_s = (window_to_ms - window_from_ms) as f64 / 1000.0;
    let latency = database.query(&format!(
        "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY l)), \
                round(percentile_cont(0.99) WITHIN GROUP (ORDER BY l)), round(max(l)), count(*) \
         FROM (SELECT extract(epoch FROM received_at) * 1000 - at_ms AS l FROM events \
               WHERE shop_id LIKE 'load-%' AND at_ms >= {window_from_ms} AND at_ms < {window_to_ms}) made"
    ))[0]
        .clone();
    let latency: Vec<&str> = latency.split('|').collect();
    // Seconds with nothing stored show as 0 (a stall).
    let last_second = (now_ms() - started_ms) / 1000;
    let per_second = database.query(&format!(
        "SELECT coalesce(n, 0) FROM generate_series(0, {last_second}) s LEFT JOIN ( \
           SELECT floor(extract(epoch FROM received_at) - {started_ms} / 1000.0)::int AS s, count(*) AS n \
           FROM events WHERE shop_id LIKE 'load-%' GROUP BY 1) stored USING (s) ORDER BY s"
    ));
    let acked_sum: i64 = database
        .query("SELECT coalesce(sum(acked_seq), 0) FROM streams WHERE shop_id LIKE 'load-%'")[0]
        .parse()
        .unwrap();
    let mut ack_ms: Vec<u64> = latencies
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| (window_from_ms..window_to_ms).contains(at))
        .map(|&(_, ms)| ms)
        .collect();
    ack_ms.sort_unstable();

    println!(
        "ingest load: {shops} shops (one MQTT connection each), {EVENTS_PER_BATCH}-event batches every {} ms, {seconds} s, \
         one release cloud-sync, Mosquitto, PostgreSQL",
        PERIOD.as_millis()
    );
    println!(
        "  offered: {published} events, {:.0} events/s",
        published as f64 / run.as_secs_f64()
    );
    println!(
        "  stored (steady state, {window_s:.0} s after {} s of warm-up): {:.0} events/s in {:.0} transactions/s ({:.0} events per transaction)",
        WARM_UP.as_secs(),
        ingested / window_s,
        transactions / window_s,
        ingested / transactions.max(1.0)
    );
    println!(
        "  batch made -> row in PostgreSQL (received_at = transaction start), {} events: p50 {} ms, p99 {} ms, max {} ms",
        latency[3], latency[0], latency[1], latency[2]
    );
    println!(
        "  batch made -> ack back at the shop, {} batches: p50 {} ms, p99 {} ms, max {} ms",
        ack_ms.len(),
        percentile(&ack_ms, 0.5),
        percentile(&ack_ms, 0.99),
        ack_ms.last().copied().unwrap_or(0)
    );
    println!(
        "  {stored} of {published} rows stored {caught_up:.1} s after the shops stopped; acked seqs sum to {acked_sum}"
    );
    println!(
        "  rows stored per second since the start: {}",
        per_second.join(" ")
    );
    println!("  CPU over the {window:.0} s steady state (100 % = one core):");
    for (i, (name, _)) in groups.iter().enumerate() {
        let share = (cpu_to[i] - cpu_from[i]) / window * 100.0;
        println!("    {name:<60} {share:5.0} %");
    }
    let machine = (cpu_to[groups.len()] - cpu_from[groups.len()]) / window * 100.0;
    println!("    {:<60} {machine:5.0} %", "whole machine (all cores)");
    assert_eq!(
        stored, published,
        "cloud-sync stored every event (missing ones: lost or stuck, see the seconds above)"
    );
    assert_eq!(
        acked_sum, published,
        "every shop acknowledged up to its last seq"
    );
}
