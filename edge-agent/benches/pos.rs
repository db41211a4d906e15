//! POS benchmarks (BENCHMARKS.md): alert latency to connected tablets under background radio
//! traffic, and the daemon's memory per connected tablet. Run by `scripts/bench.sh`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tastesync_edge::config::{Config, PosConfig};
use tastesync_edge::daemon::{self, Source};
use tastesync_edge::pipeline::Advertisement;
use tastesync_edge::pos::auth;
use tastesync_edge::simulate::{Rng, ibeacon_advertisement};
use tastesync_edge::store::Store;
use tastesync_edge::{Millis, now_ms};
use tastesync_shared::TagId;
use tastesync_shared::hexfmt::hex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

const UUID: [u8; 16] = [0x3c; 16];
const TABLETS: usize = 50;
const ARRIVALS: usize = 50;
const BACKGROUND_PER_S: u64 = 10_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(alert_latency());
    tablet_memory();
}

fn seed(dir: &Path, customers: usize) -> (std::path::PathBuf, Vec<String>) {
    let db = dir.join("edge.db");
    let mut csv = String::from("customer_ref,display_name,tier,notes,preferences,tag_ids\n");
    for i in 1..=customers {
        let tag = TagId::IBeacon {
            uuid: UUID,
            major: 1,
            minor: i as u16,
        };
        let _ = writeln!(
            csv,
            "C{i},Customer {i},gold,allergic to peanuts,oat latte,{tag}"
        );
    }
    std::fs::write(dir.join("c.csv"), csv).unwrap();
    let mut store = Store::open(&db).unwrap();
    store.import_customers(&dir.join("c.csv")).unwrap();
    let tokens = (0..200)
        .map(|i| {
            let token = auth::new_token();
            store
                .add_device(&format!("Tablet {i}"), &auth::hash(&token), now_ms())
                .unwrap();
            token
        })
        .collect();
    (db, tokens)
}

/// A tablet: opens the stream and reports (customer_ref, receive instant) per arrival frame.
async fn tablet(
    address: std::net::SocketAddr,
    token: String,
    frames: mpsc::UnboundedSender<(String, Instant)>,
) {
    let mut socket = TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET /api/stream?token={token} HTTP/1.1\r\nHost: box\r\nAccept: text/event-stream\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        let at = Instant::now();
        buffer.extend_from_slice(&chunk[..n]);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let frame = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 2);
            if frame.contains("event: arrival") {
                if let Some(r) = frame
                    .split("\"customer_ref\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                {
                    let _ = frames.send((r.to_string(), at));
                }
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn alert_latency() {
    let dir = tempfile::tempdir().unwrap();
    let (db, tokens) = seed(dir.path(), 1000);
    let config = Config {
        database: db,
        pos: PosConfig {
            listen: "127.0.0.1:0".into(),
            announce: false,
            ..PosConfig::default()
        },
        ..Config::default()
    };
    let (ad_tx, ad_rx) = mpsc::channel(100_000);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel();
    let daemon = tokio::spawn(async move {
        daemon::run(
            &config,
            Source::Channel(ad_rx),
            stop_rx,
            None,
            Some(ready_tx),
        )
        .await
    });
    let address = ready_rx.await.unwrap();

    let (frame_tx, mut frame_rx) = mpsc::unbounded_channel();
    for token in tokens.iter().take(TABLETS) {
        tokio::spawn(tablet(address, token.clone(), frame_tx.clone()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Background: 10,000 strangers' advertisements per second, in 10 ms batches.
    let zone: Arc<str> = Arc::from("main");
    let background = {
        let tx = ad_tx.clone();
        let zone = zone.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new(1);
            let strangers: Vec<Vec<u8>> = (0..500)
                .map(|_| ibeacon_advertisement(&rng.bytes(), 7, 7))
                .collect();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut sent = 0u64;
            loop {
                tick.tick().await;
                for _ in 0..BACKGROUND_PER_S / 100 {
                    let ad = Advertisement {
                        at_ms: now_ms(),
                        address: [1; 6],
                        rssi: -80,
                        data: strangers[(sent % 500) as usize].clone(),
                        zone: zone.clone(),
                    };
                    sent += 1;
                    if tx.send(ad).await.is_err() {
                        return sent;
                    }
                }
            }
        })
    };

    let mut latencies = Vec::new();
    for i in 1..=ARRIVALS {
        let data = ibeacon_advertisement(&UUID, 1, i as u16);
        let mut injected = Instant::now();
        for _ in 0..3 {
            let ad = Advertisement {
                at_ms: now_ms(),
                address: [2; 6],
                rssi: -55,
                data: data.clone(),
                zone: zone.clone(),
            };
            injected = Instant::now(); // the third sighting completes the arrival
            ad_tx.send(ad).await.unwrap();
        }
        let reference = format!("C{i}");
        let mut received = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while received < TABLETS && Instant::now() < deadline {
            if let Ok(Some((r, at))) =
                tokio::time::timeout(Duration::from_secs(5), frame_rx.recv()).await
            {
                if r == reference {
                    latencies.push(at.duration_since(injected).as_secs_f64() * 1000.0);
                    received += 1;
                }
            }
        }
        assert_eq!(received, TABLETS, "every tablet gets every alert");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    background.abort();
    let stats = daemon.await.unwrap().unwrap();
    latencies.sort_by(f64::total_cmp);
    println!(
        "alert latency, advertisement into the pipeline -> SSE frame at each of {TABLETS} tablets,"
    );
    println!(
        "  with {BACKGROUND_PER_S} background advertisements/s ({} processed in all), {ARRIVALS} arrivals:",
        stats.advertisements
    );
    println!(
        "  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} deliveries (target p99 < 5 ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        latencies.len()
    );
}

/// The release daemon's resident memory with 0, 50 and 200 tablets connected.
fn tablet_memory() {
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tastesync-edge");
    if !binary.exists() {
        println!("memory per tablet: build the release binary first (scripts/bench.sh does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, tokens) = seed(dir.path(), 1000);
    let start: Millis = now_ms();
    let mut replay = String::new();
    for i in 0..120u64 {
        let _ = writeln!(
            replay,
            r#"{{"t_ms":{},"address":"c0:00:00:00:00:01","rssi":-90,"data":"{}"}}"#,
            start + i * 1000,
            hex(&ibeacon_advertisement(&[9; 16], 1, 1))
        );
    }
    std::fs::write(dir.path().join("quiet.jsonl"), replay).unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "database = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\n[pos]\nlisten = \"127.0.0.1:0\"\nannounce = false\n",
            db.to_str().unwrap(),
            dir.path().join("quiet.jsonl").to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = Command::new(&binary)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(a) = line.split("POS listening on http://").nth(1) {
                let _ = addr_tx.send(a.trim().to_string());
            }
        }
    });
    let address: std::net::SocketAddr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .parse()
        .unwrap();
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss();
    let mut figures = vec![(0usize, idle)];
    runtime.block_on(async {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut opened = 0;
        for target in [50usize, 200] {
            while opened < target {
                tokio::spawn(tablet(address, tokens[opened].clone(), tx.clone()));
                opened += 1;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            figures.push((target, rss()));
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    println!("\ndaemon resident memory by connected tablets (release build):");
    for (n, kb) in &figures {
        println!("  {n:>3} tablets: {:.1} MB", kb / 1024.0);
    }
    let (n, kb) = figures.last().unwrap();
    println!("  per tablet: {:.1} kB", (kb - idle) / *n as f64);
}
