//! Benchmarks of the box (issue targets in BENCHMARKS.md). Run with `scripts/bench.sh`, which
//! also prepares beacontools for the comparison and the release binary for the memory figure.
//!
//! Prints medians of repeated runs; compares ratios measured in the same run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tastesync_edge::pipeline::{Advertisement, Pipeline};
use tastesync_edge::presence::PresenceConfig;
use tastesync_edge::resolve::{CustomerId, EidResolver, EidTag, IndexSnapshot};
use tastesync_edge::simulate::{Broadcast, Rng, Schedule, Simulation, ibeacon_advertisement};
use tastesync_shared::TagId;
use tastesync_shared::eid::{epoch_of, temporary_key};
use tastesync_shared::hexfmt::hex;

const CUSTOMERS: usize = 100_000;
const EID_SHARE: usize = 5; // one in five customers uses an EID phone
const UUID: [u8; 16] = [0x5a; 16];
const START_S: u32 = 1_764_000_000;
const RUNS: usize = 5;

fn main() {
    let target = target_dir();
    println!("TasteSync Edge benchmarks ({} runs each, medians)\n", RUNS);
    let (snapshot, identity_keys) = enrolled(CUSTOMERS, START_S);
    let traffic = shop_traffic(&identity_keys);
    pipeline_throughput(&snapshot, &traffic, &target);
    eid_table(&identity_keys);
    daemon_memory(&target);
}

/// 100,000 customers: four fifths with iBeacon tags, one fifth with EID phones (K = 10),
/// temporary keys for the current epoch and its neighbours.
fn enrolled(count: usize, now_s: u32) -> (IndexSnapshot, Vec<(CustomerId, [u8; 16])>) {
    let mut rng = Rng::new(99);
    let mut snapshot = IndexSnapshot::default();
    let mut identity_keys = Vec::new();
    let epoch = epoch_of(now_s);
    for i in 0..count {
        let customer = CustomerId(i as i64 + 1);
        if i % EID_SHARE == 0 {
            let key: [u8; 16] = rng.bytes();
            identity_keys.push((customer, key));
            snapshot.eid_tags.push((customer, eid_tag(&key, epoch)));
        } else {
            let tag = TagId::IBeacon {
                uuid: UUID,
                major: (i / 65536) as u16,
                minor: i as u16,
            };
            snapshot.tags.push((tag, customer));
        }
    }
    (snapshot, identity_keys)
}

fn eid_tag(key: &[u8; 16], epoch: u16) -> EidTag {
    EidTag {
        exponent: 10,
        temporary_keys: (epoch - 1..=epoch + 1)
            .map(|e| (e, temporary_key(key, e)))
            .collect(),
    }
}

/// Ten minutes of a busy shop: 400 enrolled customers coming and going (tags at 1 Hz, EID
/// phones at 4 Hz), 400 strangers' devices (phones, other beacons, malformed frames).
fn shop_traffic(identity_keys: &[(CustomerId, [u8; 16])]) -> Vec<Advertisement> {
    let start = u64::from(START_S) * 1000;
    let mut sim = Simulation::new(
        5,
        "counter",
        Schedule {
            stay_ms: (30_000, 240_000),
            gap_ms: (60_000, 300_000),
        },
    );
    for i in 0..300u64 {
        let n = (i * 97 % (CUSTOMERS as u64)) as usize;
        let n = if n.is_multiple_of(EID_SHARE) {
            n + 1
        } else {
            n
        };
        let ad = ibeacon_advertisement(&UUID, (n / 65536) as u16, n as u16);
        sim.add_customer(Broadcast::Fixed(ad), 1000, start, i * 1000);
    }
    for (i, (_, key)) in identity_keys.iter().take(100).enumerate() {
        sim.add_customer(
            Broadcast::Eid {
                identity_key: *key,
                exponent: 10,
            },
            250,
            start,
            i as u64 * 2000,
        );
    }
    sim.add_strangers(400);
    sim.advertisements_between(start, start + 600_000)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn pipeline_throughput(snapshot: &IndexSnapshot, traffic: &[Advertisement], target: &Path) {
    let start_ms = u64::from(START_S) * 1000;
    let mut rates = Vec::new();
    let mut decode_rates = Vec::new();
    let mut arrivals = 0;
    let mut recognised = 0;
    for _ in 0..RUNS {
        let mut pipeline = Pipeline::new(snapshot.clone(), PresenceConfig::default(), 1, start_ms);
        let mut events = Vec::with_capacity(1024);
        let started = Instant::now();
        for ad in traffic {
            pipeline.process(ad, &mut events);
        }
        rates.push(traffic.len() as f64 / started.elapsed().as_secs_f64());
        arrivals = events.len();
        recognised = pipeline.stats().recognised;

        let started = Instant::now();
        let mut found = 0usize;
        for ad in traffic {
            found += std::hint::black_box(tastesync_shared::decode_advertisement(&ad.data))
                .is_ok_and(|b| b.is_some()) as usize;
        }
        std::hint::black_box(found);
        decode_rates.push(traffic.len() as f64 / started.elapsed().as_secs_f64());
    }
    let rate = median(rates);
    let decode_rate = median(decode_rates);
    println!(
        "pipeline (decode + resolve + presence), one core, {CUSTOMERS} customers enrolled (1/{EID_SHARE} EID):"
    );
    println!(
        "  traffic: {} advertisements over 10 simulated minutes, {recognised} from enrolled customers, {arrivals} presence events",
        traffic.len()
    );
    println!(
        "  throughput: {:.2} M advertisements/s (target >= 1.0 M/s)",
        rate / 1e6
    );
    println!("  decode only: {:.2} M advertisements/s", decode_rate / 1e6);

    // beacontools on the same frames, in the same run.
    let frames = target.join("bench-frames.txt");
    let mut text = String::new();
    for ad in traffic.iter().take(200_000) {
        let _ = writeln!(text, "{}", hex(&ad.data));
    }
    std::fs::write(&frames, text).expect("write frames");
    match std::env::var("BEACONTOOLS_PYTHON") {
        Ok(python) => {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_beacontools.py");
            let output = Command::new(python)
                .arg(script)
                .arg(&frames)
                .output()
                .expect("run beacontools");
            let theirs: f64 = String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|_| {
                    panic!(
                        "beacontools bench failed: {}",
                        String::from_utf8_lossy(&output.stderr)
                    )
                });
            println!(
                "  beacontools 2.1.0 parse_packet (decode only), same frames: {:.0} advertisements/s",
                theirs
            );
            println!(
                "  ratio: pipeline {:.0}x beacontools' decode; decode {:.0}x",
                rate / theirs,
                decode_rate / theirs
            );
        }
        Err(_) => println!(
            "  (set BEACONTOOLS_PYTHON, as scripts/bench.sh does, to compare with beacontools)"
        ),
    }
    println!();
}

fn eid_table(identity_keys: &[(CustomerId, [u8; 16])]) {
    let now = START_S - START_S % 1024 + 1000; // 24 s before a K=10 window boundary
    let epoch = epoch_of(now);
    for count in [identity_keys.len(), CUSTOMERS] {
        let mut rng = Rng::new(3);
        let tags: Vec<(CustomerId, EidTag)> = (0..count)
            .map(|i| (CustomerId(i as i64), eid_tag(&rng.bytes(), epoch)))
            .collect();
        let mut resolver = EidResolver::new(1);
        resolver.sync(tags, now);
        let mut full = Vec::new();
        let mut roll = Vec::new();
        for _ in 0..RUNS {
            let started = Instant::now();
            resolver.rebuild(now);
            full.push(started.elapsed().as_secs_f64() * 1000.0);
            let started = Instant::now();
            resolver.advance_to(now + 1024); // cross one window boundary
            roll.push(started.elapsed().as_secs_f64() * 1000.0);
            resolver.advance_to(now);
        }
        println!(
            "EID table, {count} EID customers, K = 10, current window +/- 1 ({} EIDs):",
            resolver.table_len()
        );
        println!(
            "  window roll (incremental, one new window): {:.1} ms (target < 100 ms)",
            median(roll)
        );
        println!("  full rebuild (three windows): {:.1} ms", median(full));
    }
    println!();
}

/// Peak resident memory of the real daemon with 100,000 customers loaded.
fn daemon_memory(target: &Path) {
    let binary = target.join("release/tastesync-edge");
    if !binary.exists() {
        println!("memory: build the release binary first (scripts/bench.sh does)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("edge.db");
    let mut customers = String::from("customer_ref,display_name,tier,notes,preferences,tag_ids\n");
    let mut keys = String::from("customer_ref,exponent,epoch,temporary_key\n");
    let mut rng = Rng::new(11);
    let now = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()) as u32;
    let epoch = epoch_of(now);
    for i in 0..CUSTOMERS {
        let tag = if i % EID_SHARE == 0 {
            let key: [u8; 16] = rng.bytes();
            for e in epoch - 1..=epoch + 6 {
                let _ = writeln!(keys, "C{i},10,{e},{}", hex(&temporary_key(&key, e)));
            }
            String::new()
        } else {
            TagId::IBeacon {
                uuid: UUID,
                major: (i / 65536) as u16,
                minor: i as u16,
            }
            .to_string()
        };
        let _ = writeln!(
            customers,
            "C{i},Customer {i},silver,allergic to nothing,flat white,{tag}"
        );
    }
    std::fs::write(dir.path().join("c.csv"), customers).unwrap();
    std::fs::write(dir.path().join("k.csv"), keys).unwrap();
    let run = |args: &[&str]| {
        let started = Instant::now();
        let output = Command::new(&binary)
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .expect("run binary");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        (
            started.elapsed(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let db_arg = db.to_str().unwrap();
    let (t_customers, _) = run(&[
        "customers",
        "import",
        "--db",
        db_arg,
        dir.path().join("c.csv").to_str().unwrap(),
    ]);
    let (t_keys, _) = run(&[
        "eid-keys",
        "--db",
        db_arg,
        dir.path().join("k.csv").to_str().unwrap(),
    ]);
    // A short live replay so the daemon reaches its steady state (index, EID table, tasks).
    let mut replay = String::new();
    for i in 0..2000u64 {
        let ad = ibeacon_advertisement(&UUID, 0, (i % 50) as u16 + 1);
        let _ = writeln!(
            replay,
            r#"{{"t_ms":{},"address":"c0:00:00:00:00:01","rssi":-60,"data":"{}"}}"#,
            u64::from(now) * 1000 + i,
            hex(&ad)
        );
    }
    let replay_path = dir.path().join("r.jsonl");
    std::fs::write(&replay_path, replay).unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!("database = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\nreplay_speed = 0.5\n[pos]\nlisten = \"127.0.0.1:0\"\nannounce = false\n", db_arg, replay_path.to_str().unwrap()),
    )
    .unwrap();
    let (ready, scrapes, t_run, log) = run_watched(&binary, &config, dir.path());
    let peak = log
        .lines()
        .find_map(|l| l.split("peak_rss_kb=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok());
    println!(
        "daemon with {CUSTOMERS} customers (80,000 tags, 20,000 EID phones with 8 epochs of keys):"
    );
    println!(
        "  import: customers {:.1} s, EID keys {:.1} s",
        t_customers.as_secs_f64(),
        t_keys.as_secs_f64()
    );
    match ready {
        Some(ready) => println!(
            "  cold start to READY=1 (sd_notify): {:.0} ms",
            ready.as_secs_f64() * 1000.0
        ),
        None => println!("  cold start to READY=1: never notified"),
    }
    match peak {
        Some(kb) => println!(
            "  peak resident memory: {:.1} MB (target < 64 MB) with /metrics scraped {scrapes} times, run {:.1} s",
            kb as f64 / 1024.0,
            t_run.as_secs_f64()
        ),
        None => println!("  peak resident memory: not reported\n{log}"),
    }
}

/// Runs the daemon as systemd would (a notify socket), timing its start to `READY=1`, and
/// scrapes its `/metrics` every 100 ms until it stops. Returns the time to ready, the
/// scrapes, the run's duration and its log.
fn run_watched(
    binary: &Path,
    config: &Path,
    dir: &Path,
) -> (
    Option<std::time::Duration>,
    u32,
    std::time::Duration,
    String,
) {
    use std::io::{BufRead, Read, Write};
    let socket_path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the daemon");
    let mut ready = None;
    let mut buf = [0u8; 512];
    while let Ok(n) = socket.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            ready = Some(started.elapsed());
            break;
        }
    }
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut address = None;
    while address.is_none() {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        address = line
            .split("POS listening on ")
            .nth(1)
            .map(|a| a.trim().trim_start_matches("http://").to_string());
        log.push_str(&line);
    }
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    let mut scrapes = 0;
    while child.try_wait().ok().flatten().is_none() {
        if let Some(address) = &address
            && let Ok(mut stream) = std::net::TcpStream::connect(address)
        {
            let _ = write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut page = String::new();
            if stream.read_to_string(&mut page).is_ok() && page.contains("tastesync_edge_") {
                scrapes += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    log.push_str(&rest.join().unwrap_or_default());
    (ready, scrapes, elapsed, log)
}

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/release/deps/pipeline-xxx -> target
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}
