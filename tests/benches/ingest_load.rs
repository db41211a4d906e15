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
//! With `LOAD_KAFKA=1`, cloud-sync also relays to a Kafka-protocol broker (tansu, in memory)
//! that starts `LOAD_KAFKA_LATE_SECS` (15) after the shops: the backlog built meanwhile is
//! drained with the load running, which gives the relay's throughput (events/s marked
//! published, from the relay's marks sampled twice a second); after that, a consumer in this
//! process times each record from the box's commit (`at_ms`, the record's `ce_time`) to the
//! moment it can read it (p50/p99).
//!
//! Env: `LOAD_SHOPS` (1000), `LOAD_SECS` (30), `CLOUD_BIN` (another cloud-sync build to
//! compare; default the workspace's release binary). Needs an open-files limit of a few thousand
//! (`scripts/bench.sh` raises it) and the release binaries (`cargo build --release --bins`).

use std::collections::VecDeque;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tastesync_e2e::cloud::{Database, Mosquitto, free_port};
use tastesync_e2e::kafka::Tansu;
use tastesync_e2e::{KillOnDrop, Shop, now_ms, workspace};
use tastesync_shared::days;
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

/// Mosquitto, a fresh database and cloud-sync (relaying to `kafka` if given), ready once a
/// probe batch went all the way into PostgreSQL.
fn start_services(cloud_bin: &std::path::Path, kafka: Option<&str>) -> Services {
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
            "database_url = {:?}\nbroker = {:?}\nclient_id = \"load\"\n[http]\nlisten = \"\"\n[provisioning]\ncredentials = \"none\"\n{}",
            database.url(),
            broker.address(),
            kafka.map_or(String::new(), |brokers| format!("[kafka]\nbrokers = {brokers:?}\n"))
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

/// A record of a load shop: `(at_ms, milliseconds until the producer was handed it,
/// milliseconds until read)`.
type Timed = (u64, u64, u64);

/// The broker and what this process sees of the relay: a consumer timing each record, and
/// the relay's marks sampled twice a second.
struct KafkaWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// The broker (kept running until the end) and the records it read.
    consumer: std::thread::JoinHandle<(Tansu, Vec<Timed>)>,
    /// `(ms since the shops started, events acknowledged to the shops, events marked
    /// published)`, every 500 ms.
    marks: Arc<Mutex<Vec<(u64, i64, i64)>>>,
    sampler: std::thread::JoinHandle<()>,
}

/// Starts `tansu` at `late` (cloud-sync's relay finds nothing listening until then), and
/// consumes everything from then on.
fn watch_kafka(
    mut tansu: Tansu,
    database: &Database,
    started_ms: u64,
    late: Instant,
) -> KafkaWatch {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let consumer = std::thread::spawn(move || {
        std::thread::sleep(late.saturating_duration_since(Instant::now()));
        tansu.start_again();
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", tansu.brokers())
            .set("group.id", format!("ingest-load-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .set("fetch.wait.max.ms", "10")
            .create()
            .expect("a Kafka consumer");
        consumer
            .subscribe(&["tastesync.shop-events"])
            .expect("subscribe");
        let mut timed = Vec::new();
        while !stopped.load(Ordering::Relaxed) {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let read_ms = now_ms();
            let header = |name: &str| {
                message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            if !header("ce_shop").is_some_and(|shop| shop.starts_with("load-")) {
                continue;
            }
            let at_ms = parse_instant_ms(&header("ce_time").expect("a ce_time header"));
            let handed_ms = message.timestamp().to_millis().unwrap_or(0) as u64;
            timed.push((
                at_ms,
                handed_ms.saturating_sub(at_ms),
                read_ms.saturating_sub(at_ms),
            ));
        }
        (tansu, timed)
    });
    let marks: Arc<Mutex<Vec<(u64, i64, i64)>>> = Arc::default();
    let (stopped, samples) = (stop.clone(), marks.clone());
    let sampled = database.as_application("ingest-load-marks");
    let sampler = std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            let row = sampled.query(
                "SELECT coalesce(sum(s.acked_seq), 0), coalesce(sum(m.published_seq), 0) \
                 FROM streams s LEFT JOIN kafka_marks m USING (stream_id) WHERE s.shop_id LIKE 'load-%'",
            );
            if let Some((acked, published)) = row.first().and_then(|r| r.split_once('|')) {
                let sample = (
                    now_ms().saturating_sub(started_ms),
                    acked.parse().unwrap(),
                    published.parse().unwrap(),
                );
                samples.lock().unwrap().push(sample);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    KafkaWatch {
        stop,
        consumer,
        marks,
        sampler,
    }
}

/// Unix ms of an RFC 3339 UTC instant as `ce_time` writes it (`2026-03-02T00:30:00.123Z`).
fn parse_instant_ms(text: &str) -> u64 {
    let day = days::parse_day(&text[..10]).expect("a ce_time date");
    let number = |range: std::ops::Range<usize>| -> i64 { text[range].parse().unwrap() };
    let in_day =
        ((number(11..13) * 60 + number(14..16)) * 60 + number(17..19)) * 1000 + number(20..23);
    (day * 86_400_000 + in_day) as u64
}

/// Reports the relay: its drain of the backlog built while Kafka was down (with the load
/// running), and the lag of what came after it caught up, up to `load_end_ms` (ms since
/// the shops started).
fn report_kafka(
    watch: KafkaWatch,
    shops: i64,
    published: i64,
    started_ms: u64,
    late: Duration,
    load_end_ms: u64,
) {
    // Wait until every event is marked published (30 s without progress is a stall).
    let (mut last, mut progressed) = (-1, Instant::now());
    loop {
        let now = watch.marks.lock().unwrap().last().map_or(0, |s| s.2);
        if now >= published || progressed.elapsed() > Duration::from_secs(30) {
            break;
        }
        if now > last {
            (last, progressed) = (now, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(1)); // the consumer reads the last records
    watch.stop.store(true, Ordering::Relaxed);
    let (_tansu, timed) = watch.consumer.join().unwrap();
    watch.sampler.join().unwrap();
    let samples = watch.marks.lock().unwrap().clone();
    let offered_per_s = 1000 / PERIOD.as_millis() as i64 * EVENTS_PER_BATCH;

    let Some(first) = samples.iter().position(|s| s.2 > 0) else {
        println!("  Kafka: nothing was ever marked published");
        return;
    };
    let (t0, acked0, published0) = samples[first.saturating_sub(1)];
    // Caught up: less than one second of events behind the acks.
    let caught = samples[first..]
        .iter()
        .position(|s| s.1 - s.2 < offered_per_s * shops)
        .map(|i| first + i);
    println!(
        "  Kafka: broker started {:.1} s after the shops; relaying began at {:.1} s with {} events waiting",
        late.as_secs_f64(),
        t0 as f64 / 1000.0,
        acked0 - published0
    );
    let Some(caught) = caught else {
        println!("  Kafka: the relay never caught up with the load");
        return;
    };
    let (t1, _, published1) = samples[caught];
    let peak = samples[first..=caught]
        .windows(3)
        .map(|w| (w[2].2 - w[0].2) as f64 / ((w[2].0 - w[0].0) as f64 / 1000.0))
        .fold(0.0, f64::max);
    println!(
        "  relay throughput while draining the backlog, load running: {:.0} events/s over {:.1} s (best second {peak:.0} events/s); caught up at {:.1} s",
        (published1 - published0) as f64 / ((t1 - t0) as f64 / 1000.0),
        (t1 - t0) as f64 / 1000.0,
        t1 as f64 / 1000.0
    );
    let steady_from = started_ms + t1 + 5000;
    let steady_to = started_ms + load_end_ms;
    let (mut handed, mut read): (Vec<u64>, Vec<u64>) = timed
        .iter()
        .filter(|(at, _, _)| (steady_from..steady_to).contains(at))
        .map(|&(_, handed, read)| (handed, read))
        .unzip();
    handed.sort_unstable();
    read.sort_unstable();
    println!(
        "  box's commit -> readable on Kafka, {} records after catching up (+5 s): p50 {} ms, p99 {} ms, max {} ms \
         (-> handed to the producer: p50 {} ms, p99 {} ms)",
        read.len(),
        percentile(&read, 0.5),
        percentile(&read, 0.99),
        read.last().copied().unwrap_or(0),
        percentile(&handed, 0.5),
        percentile(&handed, 0.99)
    );
    println!(
        "  records of the load shops read: {} for {published} events (repeats allowed)",
        timed.len()
    );
    assert!(
        samples.last().is_some_and(|s| s.2 == published),
        "every event marked published on Kafka"
    );
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

    let tansu = (env_or("LOAD_KAFKA", 0) == 1).then(Tansu::not_started);
    let kafka_late = Duration::from_secs(env_or("LOAD_KAFKA_LATE_SECS", 15));
    let Services {
        broker,
        database,
        cloud,
        _files,
    } = start_services(&cloud_bin, tansu.as_ref().map(Tansu::brokers).as_deref());

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
    let kafka = tansu.map(|tansu| watch_kafka(tansu, &database, started_ms, started + kafka_late));
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
    if let Some(kafka) = kafka {
        report_kafka(
            kafka,
            shops as i64,
            published,
            started_ms,
            kafka_late,
            run.as_millis() as u64,
        );
    }
    assert_eq!(
        stored, published,
        "cloud-sync stored every event (missing ones: lost or stuck, see the seconds above)"
    );
    assert_eq!(
        acked_sum, published,
        "every shop acknowledged up to its last seq"
    );
}
