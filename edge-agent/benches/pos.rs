//! POS benchmarks (BENCHMARKS.md): alert latency to connected tablets under background radio
//! traffic, then the same while attackers on the LAN flood the setup route and guess pairing
//! codes and PINs; the owner page's overview with a year of visits; and the daemon's memory
//! per connected tablet. Run by `scripts/bench.sh`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tastesync_edge::config::{Config, PosConfig};
use tastesync_edge::daemon::{self, Source};
use tastesync_edge::pipeline::{Advertisement, Scanner};
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
    let quiet = runtime.block_on(alert_latency(false));
    let attacked = runtime.block_on(alert_latency(true));
    println!(
        "  p99 under attack / p99 without: {:.2} (target <= 2)",
        attacked / quiet
    );
    runtime.block_on(owner_overview_latency());
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
                .add_device(
                    &format!("Tablet {i}"),
                    tastesync_edge::store::DeviceKind::Tablet,
                    &auth::hash(&token),
                    now_ms(),
                )
                .unwrap();
            token
        })
        .collect();
    store.set_owner_pin(&auth::hash_pin("482915")).unwrap();
    (db, tokens)
}

/// One attacker: sends the same request again and again, a new connection each time, as
/// fast as the box answers; returns how many it sent.
async fn attacker(
    address: std::net::SocketAddr,
    path: &'static str,
    body: impl Fn(u64) -> String,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let mut sent = 0;
    while !*stop.borrow() {
        let body = body(sent);
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let answered = async {
            let mut socket = TcpStream::connect(address).await?;
            socket.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            socket.read_to_end(&mut response).await?;
            std::io::Result::Ok(())
        };
        tokio::select! {
            _ = answered => sent += 1,
            _ = stop.changed() => break,
        }
    }
    sent
}

/// A tablet: opens the stream and reports (customer_ref, receive instant) per arrival frame.
async fn tablet(
    address: std::net::SocketAddr,
    token: String,
    frames: mpsc::UnboundedSender<(String, Instant)>,
) {
    let mut socket = TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
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
            if frame.contains("event: arrival")
                && let Some(r) = frame
                    .split("\"customer_ref\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
            {
                let _ = frames.send((r.to_string(), at));
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Alert latency to 50 tablets; with `attack`, while attackers flood the setup route and
/// guess pairing codes and PINs. Returns the p99, ms.
async fn alert_latency(attack: bool) -> f64 {
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
    let scanner = Scanner::local("main");
    let background = {
        let tx = ad_tx.clone();
        let scanner = scanner.clone();
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
                        scanner: scanner.clone(),
                    };
                    sent += 1;
                    if tx.send(ad).await.is_err() {
                        return sent;
                    }
                }
            }
        })
    };

    let (stop_attack, attack_stopped) = watch::channel(false);
    let mut attackers = Vec::new();
    if attack {
        for _ in 0..4 {
            attackers.push(tokio::spawn(attacker(
                address,
                "/api/owner/setup",
                |_| r#"{"pin":"918273","setup_code":"AAAA-AAAA"}"#.to_string(),
                attack_stopped.clone(),
            )));
        }
        for _ in 0..2 {
            attackers.push(tokio::spawn(attacker(
                address,
                "/api/pair",
                |i| format!(r#"{{"code":"{:08}","name":"x"}}"#, 10_000_000 + i),
                attack_stopped.clone(),
            )));
            attackers.push(tokio::spawn(attacker(
                address,
                "/api/owner/login",
                |i| format!(r#"{{"pin":"{:06}"}}"#, 100_000 + i),
                attack_stopped.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let attack_started = Instant::now();

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
                scanner: scanner.clone(),
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
                && r == reference
            {
                latencies.push(at.duration_since(injected).as_secs_f64() * 1000.0);
                received += 1;
            }
        }
        assert_eq!(received, TABLETS, "every tablet gets every alert");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_attack.send(true);
    let mut attack_requests = 0;
    for a in attackers {
        attack_requests += a.await.unwrap();
    }
    let attack_secs = attack_started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    background.abort();
    let stats = daemon.await.unwrap().unwrap();
    latencies.sort_by(f64::total_cmp);
    if attack {
        println!(
            "\nUNDER ATTACK: 8 attackers ({:.0} requests/s: setup floods, wrong pairing codes, wrong PINs)",
            attack_requests as f64 / attack_secs
        );
    }
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
    percentile(&latencies, 0.99)
}

/// The owner page's overview call with a year of visits in the store (one every 5 minutes:
/// 105,000), through the real server.
async fn owner_overview_latency() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    {
        let (seeded, _) = seed(dir.path(), 1000);
        assert_eq!(seeded, db);
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("DELETE FROM owner; BEGIN").unwrap();
        let now = now_ms() as i64;
        let mut at = now - 365 * 86_400_000;
        let mut n = 0i64;
        while at < now {
            conn.execute(
                "INSERT INTO visits (visit_id, customer_id, zone, arrived_at_ms, left_at_ms, dwell_s)
                 VALUES (?1, ?2, 'counter', ?3, ?3 + 900000, 900)",
                rusqlite::params![format!("v{n}"), n % 1000 + 1, at],
            )
            .unwrap();
            if n % 7 == 0 {
                conn.execute(
                    "INSERT INTO feedback (action_id, visit_id, device_id, score, comment, at_ms)
                     VALUES (?1, ?2, 1, ?3, '', ?4)",
                    rusqlite::params![format!("f{n}"), format!("v{n}"), n % 5 + 1, at + 60_000],
                )
                .unwrap();
            }
            n += 1;
            at += 300_000;
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    let config = Config {
        database: db,
        pos: PosConfig {
            listen: "127.0.0.1:0".into(),
            announce: false,
            ..PosConfig::default()
        },
        ..Config::default()
    };
    let (_ad_tx, ad_rx) = mpsc::channel(16);
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
    let request = |method: &str, path: &str, auth: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             {auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let call = |text: String| async move {
        let mut socket = TcpStream::connect(address).await.unwrap();
        socket.write_all(text.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        socket.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response).into_owned()
    };
    let setup = call(request(
        "POST",
        "/api/owner/setup",
        "",
        r#"{"pin":"482915"}"#,
    ))
    .await;
    let token = setup
        .split("\"token\":\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("an owner session")
        .to_string();
    let midnight = now_ms() - now_ms() % 86_400_000;
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let response = call(request(
            "GET",
            &format!("/api/owner/overview?since_ms={midnight}&tz_offset_min=540"),
            &format!("Authorization: Bearer {token}\r\n"),
            "",
        ))
        .await;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let _ = stop_tx.send(true);
    let _ = daemon.await;
    latencies.sort_by(f64::total_cmp);
    println!(
        "\nowner overview (GET /api/owner/overview, a new connection each) with 105,120 visits in the store:"
    );
    println!(
        "  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} calls (target p99 < 20 ms)",
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
            "database = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\n[pos]\nlisten = \"127.0.0.1:0\"\nannounce = false\nmax_streams = 256\n",
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
