//! Kafka for the end-to-end tests: a real Kafka-protocol broker (tansu, built once by
//! `scripts/install-kafka.sh`, keeping records in memory), and a reader that collects what a
//! topic holds, the way a consumer of another team would.

use std::collections::BTreeMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

use crate::cloud::free_port;
use crate::workspace;

/// The tansu binary: `TASTESYNC_KAFKA_BROKER` (the test script sets it), else built now by
/// `scripts/install-kafka.sh` (about 15 minutes, once per machine).
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TASTESYNC_KAFKA_BROKER") {
        return PathBuf::from(path);
    }
    let output = Command::new("bash")
        .arg(workspace().join("scripts/install-kafka.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/install-kafka.sh");
    assert!(output.status.success(), "scripts/install-kafka.sh failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(stdout.lines().last().expect("the broker's path").trim())
}

/// A tansu broker on a free port, killed on drop.
pub struct Tansu {
    child: Option<Child>,
    port: u16,
    /// The network between the broker and its clients, when the test cuts it.
    link: Option<Link>,
    /// Its log.
    dir: tempfile::TempDir,
}

impl Tansu {
    pub fn start() -> Tansu {
        let mut broker = Tansu::not_started();
        broker.start_again();
        broker
    }

    /// A broker its clients reach through a [`Link`] the test can cut ([`Tansu::cut`]).
    pub fn start_behind_link() -> Tansu {
        let mut broker = Tansu::not_started();
        broker.link = Some(Link::to(broker.port));
        broker.start_again();
        broker
    }

    /// A broker whose port is chosen but that does not run yet ([`Tansu::start_again`]):
    /// until then its clients find nothing listening, as when Kafka is down.
    pub fn not_started() -> Tansu {
        Tansu {
            child: None,
            port: free_port(),
            link: None,
            dir: tempfile::tempdir().expect("a directory for the broker"),
        }
    }

    /// Cuts the network to the broker: open connections are reset, with whatever they were
    /// carrying, and new ones refused, until [`Tansu::mend`].
    pub fn cut(&self) {
        self.link.as_ref().expect("a broker behind a link").cut();
    }

    pub fn mend(&self) {
        self.link.as_ref().expect("a broker behind a link").mend();
    }

    /// The port clients connect to (the link's, if there is one).
    fn client_port(&self) -> u16 {
        self.link.as_ref().map_or(self.port, |link| link.port)
    }

    /// `host:port`, as `[kafka] brokers` takes it.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.client_port())
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("the broker's log")
    }

    /// What the broker logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Kills the broker (what it held is gone with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port, and waits until it answers.
    pub fn start_again(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.client_port());
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("CLUSTER_ID")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(self.log_file())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A TCP hop between Kafka clients and a broker, standing for the network: cut, it resets
/// every connection (what was in flight is lost, as on a real partition) and refuses new
/// ones until mended.
struct Link {
    port: u16,
    open: Arc<AtomicBool>,
    /// Both ends of every connection carried, to reset them on a cut.
    carried: Arc<Mutex<Vec<TcpStream>>>,
}

impl Link {
    fn to(target: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the link");
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let carried: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (is_open, connections) = (open.clone(), carried.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let Ok(broker) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = broker.set_nodelay(true);
                let mut connections = connections.lock().unwrap();
                for (from, to) in [(&client, &broker), (&broker, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
                connections.extend([client, broker]);
            }
        });
        Link {
            port,
            open,
            carried,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for stream in self.carried.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn mend(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One record as a consumer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// The value as JSON; `None` for a tombstone.
    pub value: Option<serde_json::Value>,
}

impl Record {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or_else(|| panic!("no {name} header in {self:?}"), String::as_str)
    }
}

/// Reads topics from their beginning, in a consumer group of its own.
pub struct Reader {
    consumer: BaseConsumer,
    pub records: Vec<Record>,
}

impl Reader {
    pub fn new(brokers: &str, topics: &[&str]) -> Reader {
        let group = format!("tastesync-test-{}-{}", std::process::id(), free_port());
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", &group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            // A topic the relay has not created yet is found within a second.
            .set("topic.metadata.refresh.interval.ms", "1000")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("a Kafka consumer");
        consumer.subscribe(topics).expect("subscribe");
        Reader {
            consumer,
            records: Vec::new(),
        }
    }

    /// Reads until `done` holds for what was read, or `seconds` pass; returns whether it
    /// held.
    pub fn read_until(&mut self, seconds: u64, mut done: impl FnMut(&[Record]) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !done(&self.records) {
            if Instant::now() > deadline {
                return false;
            }
            self.poll(Duration::from_millis(200));
        }
        true
    }

    /// Reads until `topic` holds `count` distinct events (by `ce_id`), or `seconds` pass;
    /// returns whether it did.
    pub fn read_distinct(&mut self, seconds: u64, topic: &str, count: usize) -> bool {
        self.read_until(seconds, |records| distinct_ids(records, topic) == count)
    }

    /// Reads whatever arrives within `duration`.
    pub fn poll(&mut self, duration: Duration) {
        let until = Instant::now() + duration;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            let Some(message) = self.consumer.poll(left) else {
                break;
            };
            let Ok(message) = message else {
                continue; // a broker away for a while: the consumer reconnects
            };
            let mut headers = BTreeMap::new();
            if let Some(all) = message.headers() {
                for header in all.iter() {
                    let value = header
                        .value
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    headers.insert(header.key.to_string(), value.into_owned());
                }
            }
            self.records.push(Record {
                topic: message.topic().to_string(),
                partition: message.partition(),
                offset: message.offset(),
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                headers,
                value: message
                    .payload()
                    .map(|v| serde_json::from_slice(v).expect("a JSON value")),
            });
        }
    }

    /// Records of `topic` after dropping repeats of an id already seen (what an at-least-once
    /// consumer does), in the order they came.
    pub fn first_of_each(&self, topic: &str) -> Vec<&Record> {
        let mut seen = std::collections::HashSet::new();
        self.records
            .iter()
            .filter(|r| r.topic == topic && seen.insert(r.header("ce_id").to_string()))
            .collect()
    }
}

/// How many distinct events (by `ce_id`) of `topic` there are among `records`.
pub fn distinct_ids(records: &[Record], topic: &str) -> usize {
    records
        .iter()
        .filter(|r| r.topic == topic)
        .map(|r| r.header("ce_id"))
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Checks what a consumer of the shop events sees after dropping repeats: every event of
/// `expected` (per stream, its seqs 1..=n as stored) exactly once, each stream in seq order,
/// and a repeat only ever with an id it had already. Returns how many repeats there were.
pub fn assert_streams_complete_and_in_order(
    reader: &Reader,
    topic: &str,
    expected: &BTreeMap<String, i64>,
) -> usize {
    let all: Vec<&Record> = reader.records.iter().filter(|r| r.topic == topic).collect();
    let firsts = reader.first_of_each(topic);
    let mut next: BTreeMap<String, i64> = BTreeMap::new();
    for record in &firsts {
        let stream = record.header("ce_stream").to_string();
        let seq: i64 = record.header("ce_streamseq").parse().unwrap();
        let expected_seq = next.entry(stream.clone()).or_insert(1);
        assert_eq!(
            seq, *expected_seq,
            "stream {stream}: seq {seq} came where {expected_seq} was due"
        );
        *expected_seq += 1;
    }
    let got: BTreeMap<String, i64> = next.into_iter().map(|(s, n)| (s, n - 1)).collect();
    assert_eq!(&got, expected, "events per stream on Kafka");
    // A repeat carries the same id and the same stream position as the first copy.
    let mut first_position: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for record in &all {
        let position = (record.header("ce_stream"), record.header("ce_streamseq"));
        let first = *first_position
            .entry(record.header("ce_id"))
            .or_insert(position);
        assert_eq!(first, position, "one id, two events: {record:?}");
    }
    all.len() - firsts.len()
}
