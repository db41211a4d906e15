//! The Kafka stream end to end: box → MQTT → cloud-sync → PostgreSQL → relay → a real
//! Kafka-protocol broker (tansu) → a consumer, as another team's service would read it; and
//! the relay's faults: the broker unreachable for a while (frozen, as behind a cut network),
//! the relay killed between a delivery and its mark, two instances with the relaying one
//! killed, and (librdkafka's mock cluster) every broker down, refusing connections, and
//! request errors. What a consumer must see every time: after
//! dropping repeats of a `ce_id`, every stored event once, each stream in seq order.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::{Value, json};
use tastesync_e2e::asyncapi::Contract;
use tastesync_e2e::cloud::{CloudSync, Database, Mosquitto, eventually, psql_command};
use tastesync_e2e::console::Console;
use tastesync_e2e::kafka::{Reader, Tansu, assert_streams_complete_and_in_order, distinct_ids};
use tastesync_e2e::*;

const EVENTS: &str = "tastesync.shop-events";
const CUSTOMERS: &str = "tastesync.customers";
const PASSWORD: &str = "a long enough password";
const SECTIONS: &str = "[http]\nlisten = \"\"\n[provisioning]\ncredentials = \"none\"\n";

fn kafka_section(brokers: &str, extra: &str) -> String {
    format!(
        "[kafka]\nbrokers = {brokers:?}\npartitions = 3\nreplication_factor = 1\n\
         message_timeout_ms = 3000\n{extra}\n"
    )
}

/// cloud-sync named `name` relaying to `brokers`.
fn cloud_with_kafka(
    files: &Shop,
    database: &Database,
    broker: &Mosquitto,
    name: &str,
    brokers: &str,
    extra: &str,
) -> CloudSync {
    CloudSync::start_configured(
        files,
        database,
        broker,
        name,
        ("", ""),
        "",
        &format!("{SECTIONS}{}", kafka_section(brokers, extra)),
    )
}

/// Each stream's highest stored seq (every seq from 1 is stored in these tests).
fn stored_streams(database: &Database) -> BTreeMap<String, i64> {
    database
        .query("SELECT stream_id, max(seq) FROM events GROUP BY stream_id")
        .iter()
        .map(|row| {
            let (stream, seq) = row.split_once('|').unwrap();
            (stream.to_string(), seq.parse().unwrap())
        })
        .collect()
}

fn total(streams: &BTreeMap<String, i64>) -> usize {
    streams.values().sum::<i64>() as usize
}

/// `kafka status` with `config`, as JSON.
fn kafka_status(config: &std::path::Path) -> Value {
    let output = Command::new(bin("tastesync-cloud"))
        .args(["kafka", "status", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).unwrap()
}

#[test]
fn every_event_and_customer_change_reaches_kafka_as_cloud_events() {
    let tansu = Tansu::start();
    let console = Console::start(&kafka_section(&tansu.brokers(), ""));
    console.add_shop("seoul-1", "Seoul Station", "Asia/Seoul");
    console.add_user("admin@example.com", "admin", &[], PASSWORD);
    let admin = console.token("admin@example.com", PASSWORD);

    // HQ's customers: one enrolled and changed, one deleted, one erased.
    let tag = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:9:1";
    for args in [
        &[
            "enroll",
            "--ref",
            "HQ-1",
            "--name",
            "Seo-yeon Lee",
            "--notes",
            "vegan",
        ][..],
        &["update", "--ref", "HQ-1", "--tier", "gold", "--tag", tag],
        &["enroll", "--ref", "HQ-2", "--name", "Ji-ho Park"],
        &["delete", "--ref", "HQ-2"],
        &["enroll", "--ref", "HQ-3", "--name", "Min-seo Kim"],
    ] {
        let mut args = [&["customers"][..], args].concat();
        if args[1] == "enroll" {
            args.extend(["--shop", "seoul-1"]);
        }
        console.command(&args, "");
    }
    let erased = console.call(
        "POST",
        "/api/v1/customers/HQ-3/erasure",
        Some(&admin),
        Some(json!({"confirm": "HQ-3"})),
    );
    assert_eq!(
        erased.status,
        reqwest::StatusCode::ACCEPTED,
        "{:?}",
        erased.body
    );

    // A box's events: recorded offline, then sent.
    let shop = Shop::new();
    shop.record_offline("seoul-1", 20);
    let uplink = format!("broker = {:?}", console.broker.address());
    assert!(shop.drain_online("seoul-1", &uplink, 30));
    let streams = stored_streams(&console.database);
    let events = total(&streams);
    assert!(events >= 40, "{streams:?}");

    let mut reader = Reader::new(&tansu.brokers(), &[EVENTS, CUSTOMERS]);
    let last_of = |records: &[tastesync_e2e::kafka::Record], key: &str| {
        records
            .iter()
            .rfind(|r| r.topic == CUSTOMERS && r.key.as_deref() == Some(key))
            .map(|r| (r.header("ce_type").to_string(), r.value.clone()))
    };
    let arrived = reader.read_until(60, |records| {
        distinct_ids(records, EVENTS) == events
            && last_of(records, "HQ-1").is_some_and(|(_, v)| v.is_some_and(|v| v["tier"] == "gold"))
            && last_of(records, "HQ-2").is_some_and(|(t, _)| t.ends_with(".deleted"))
            && last_of(records, "HQ-3").is_some_and(|(t, _)| t.ends_with(".erased"))
    });
    assert!(
        arrived,
        "{} records: {:#?}",
        reader.records.len(),
        reader.records.last()
    );
    assert_eq!(
        assert_streams_complete_and_in_order(&reader, EVENTS, &streams),
        0
    );

    // Each record is the event PostgreSQL holds, as a CloudEvent keyed by its shop.
    let box_id = shop.identity()["box_id"].as_str().unwrap().to_string();
    for record in reader.first_of_each(EVENTS) {
        let stored = console.database.query(&format!(
            "SELECT event_id, kind, at_ms, body::text FROM events
             WHERE stream_id = '{}' AND seq = {}",
            record.header("ce_stream"),
            record.header("ce_streamseq")
        ));
        let [event_id, kind, at_ms, body] = stored[0].splitn(4, '|').collect::<Vec<_>>()[..] else {
            panic!("{stored:?}")
        };
        assert_eq!(record.header("ce_id"), event_id);
        assert_eq!(record.key.as_deref(), Some("seoul-1"));
        assert_eq!(record.header("ce_specversion"), "1.0");
        assert_eq!(
            record.header("ce_source"),
            format!("/shops/seoul-1/boxes/{box_id}")
        );
        assert_eq!(record.header("ce_box"), box_id);
        let expected_type = match kind {
            "customer_arrived" => "com.tastesync.customer.identified",
            "customer_left" => "com.tastesync.customer.left",
            "box_health" => "com.tastesync.box.health",
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(record.header("ce_type"), expected_type);
        let at_ms: i64 = at_ms.parse().unwrap();
        let time = record.header("ce_time");
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
        assert_eq!(
            &time[20..23],
            format!("{:03}", at_ms % 1000),
            "{time} for {at_ms}"
        );
        assert_eq!(
            record.value.as_ref(),
            Some(&serde_json::from_str::<Value>(body).unwrap())
        );
    }
    // One key per shop: all of its events on one partition.
    let partitions: std::collections::HashSet<i32> = reader
        .first_of_each(EVENTS)
        .iter()
        .map(|r| r.partition)
        .collect();
    assert_eq!(partitions.len(), 1);

    // The customers topic: what the console shows, never tags or keys; tombstones after.
    let (kind, record) = last_of(&reader.records, "HQ-1").unwrap();
    assert_eq!(kind, "com.tastesync.customer.updated");
    let record = record.unwrap();
    assert_eq!(record["display_name"], "Seo-yeon Lee");
    assert_eq!(record["notes"], "vegan");
    assert_eq!(record["tags"], 1);
    assert_eq!(record["shops"], json!(["seoul-1"]));
    assert!(
        !record.to_string().contains("f7826da6"),
        "a tag id on Kafka: {record}"
    );
    assert_eq!(last_of(&reader.records, "HQ-2").unwrap().1, None);
    assert_eq!(last_of(&reader.records, "HQ-3").unwrap().1, None);

    // Every record matches the published document.
    let contract = Contract::load();
    for record in &reader.records {
        contract.check_kafka(record);
    }

    // `kafka tail` prints what a consumer reads; `kafka status` says nothing waits.
    let customer_records = reader
        .records
        .iter()
        .filter(|r| r.topic == CUSTOMERS)
        .count();
    let tail = Command::new(bin("tastesync-cloud"))
        .args(["kafka", "tail", "--from-beginning", "--topic", CUSTOMERS])
        .args(["--count", &customer_records.to_string(), "--config"])
        .arg(&console.cloud.config)
        .output()
        .unwrap();
    assert!(tail.status.success(), "{}", stderr(&tail));
    let lines: Vec<Value> = stdout(&tail)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), customer_records);
    let tombstone = lines
        .iter()
        .rfind(|l| l["key"] == "HQ-3")
        .expect("HQ-3 in the tail");
    assert_eq!(tombstone["value"], Value::Null);
    assert_eq!(
        tombstone["headers"]["ce_type"],
        "com.tastesync.customer.erased"
    );
    let status = kafka_status(&console.cloud.config);
    assert_eq!(status["events"], 0, "{status}");
    assert_eq!(status["customer_changes"], 0, "{status}");
}

#[test]
fn kafka_unreachable_for_a_while_delays_the_stream_and_loses_nothing() {
    let tansu = Tansu::start_behind_link();
    let files = Shop::new();
    let database = Database::create();
    let broker = Mosquitto::start("allow_anonymous true");
    let cloud = cloud_with_kafka(&files, &database, &broker, "cloud", &tansu.brokers(), "");
    let shop = Shop::new();
    let uplink = format!("broker = {:?}", broker.address());

    // The first part reaches Kafka; then the network to Kafka is cut while the rest is
    // relayed: what was in flight is lost, and must be sent again.
    shop.write_outbox_backlog(20_000);
    let mut reader = Reader::new(&tansu.brokers(), &[EVENTS]);
    {
        let _online = shop.run_online("shop-k", &uplink);
        assert!(
            reader.read_until(60, |r| !r.is_empty()),
            "nothing on Kafka: {}",
            tansu.log()
        );
        tansu.cut();
        // Ingest and the box's acks go on without Kafka.
        assert!(
            eventually(30, || shop.outbox_is_empty()),
            "the box's outbox drained"
        );
    }
    let more = Shop::new();
    more.record_offline("shop-k", 10);
    assert!(more.drain_online("shop-k", &uplink, 30));

    // What waits is visible: in `kafka status` and per shop in `shops list`, and the relay
    // keeps trying (rounds time out after `message_timeout_ms`, 3 s here).
    let streams = stored_streams(&database);
    let status = kafka_status(&cloud.config);
    assert!(status["events"].as_i64().unwrap() > 0, "{status}");
    assert!(status["oldest_event_stored_at"].is_string(), "{status}");
    let hq = tastesync_e2e::cloud::Hq::of(&cloud);
    let listed = hq.shops(&["list", "--shop", "shop-k"]);
    let waiting = listed[0]["kafka"]["events"].as_i64().unwrap();
    assert!(waiting > 0, "{listed:?}");
    std::thread::sleep(Duration::from_secs(8));

    // Kafka comes back: everything follows, in order, for the consumer reading since before
    // the cut.
    tansu.mend();
    let events = total(&streams);
    let complete = reader.read_distinct(90, EVENTS, events);
    assert!(
        complete,
        "{} of {events} events; waiting: {}; {}",
        reader.first_of_each(EVENTS).len(),
        kafka_status(&cloud.config),
        tansu.log()
    );
    assert_streams_complete_and_in_order(&reader, EVENTS, &streams);
    assert!(eventually(20, || kafka_status(&cloud.config)["events"] == 0));
}

/// Holds a SHARE lock on the relay's marks from a psql session of its own: the relay can
/// read and publish, but not move a mark, until the lock is released.
struct MarksLocked(std::process::Child);

impl MarksLocked {
    fn take(database: &Database) -> MarksLocked {
        let mut psql = psql_command(&database.name)
            .arg("-q")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = psql.stdin.as_mut().unwrap();
        writeln!(stdin, "BEGIN; LOCK TABLE kafka_marks IN SHARE MODE;").unwrap();
        stdin.flush().unwrap();
        assert!(eventually(10, || database.query(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             WHERE c.relname = 'kafka_marks' AND l.mode = 'ShareLock' AND l.granted"
        ) == ["1"]));
        MarksLocked(psql)
    }

    fn release(mut self) {
        let stdin = self.0.stdin.as_mut().unwrap();
        writeln!(stdin, "ROLLBACK;").unwrap();
        drop(self.0.stdin.take());
        self.0.wait().unwrap();
    }
}

#[test]
fn a_relay_killed_between_delivery_and_marking_sends_again_and_skips_nothing() {
    let tansu = Tansu::start();
    let files = Shop::new();
    let database = Database::create();
    let broker = Mosquitto::start("allow_anonymous true");
    let mut cloud = cloud_with_kafka(&files, &database, &broker, "cloud", &tansu.brokers(), "");
    let shop = Shop::new();
    shop.record_offline("shop-k", 15);
    let marks = MarksLocked::take(&database);
    assert!(shop.drain_online("shop-k", &format!("broker = {:?}", broker.address()), 30));
    let streams = stored_streams(&database);
    let events = total(&streams);

    // Delivered, not marked: the relay waits on the lock. Killed there.
    let mut reader = Reader::new(&tansu.brokers(), &[EVENTS]);
    assert!(
        reader.read_until(60, |r| r.len() >= events),
        "delivered before the kill"
    );
    drop(cloud);
    marks.release();
    assert_eq!(
        database.query("SELECT coalesce(max(published_seq), 0) FROM kafka_marks"),
        ["0"],
        "nothing was marked"
    );

    // Started again, it sends the same events again, and marks them this time.
    cloud = cloud_with_kafka(&files, &database, &broker, "cloud", &tansu.brokers(), "");
    assert!(reader.read_until(60, |r| r.len() >= 2 * events));
    let repeats = assert_streams_complete_and_in_order(&reader, EVENTS, &streams);
    assert_eq!(repeats, events, "each event once more, with its id");
    assert!(eventually(20, || kafka_status(&cloud.config)["events"] == 0));
}

/// The instance holding the relay's lock, by its PostgreSQL `application_name`.
fn relaying_instance(database: &Database) -> Vec<String> {
    database.query(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'cloud-%'
           AND l.objid = hashtext('tastesync kafka relay')::oid",
    )
}

#[test]
fn two_instances_relay_one_at_a_time_and_the_other_takes_over_when_it_is_killed() {
    let tansu = Tansu::start();
    let files = Shop::new();
    let database = Database::create();
    let broker = Mosquitto::start("allow_anonymous true");
    let mut instances = BTreeMap::new();
    for name in ["cloud-a", "cloud-b"] {
        let db = database.as_application(name);
        instances.insert(
            name.to_string(),
            cloud_with_kafka(&files, &db, &broker, name, &tansu.brokers(), ""),
        );
    }
    assert!(eventually(20, || relaying_instance(&database).len() == 1));

    let shop = Shop::new();
    shop.write_outbox_backlog(20_000);
    let mut reader = Reader::new(&tansu.brokers(), &[EVENTS]);
    let _online = shop.run_online("shop-k", &format!("broker = {:?}", broker.address()));
    assert!(
        reader.read_until(60, |r| r.len() >= 2_000),
        "relaying started"
    );
    // Kill the relaying instance mid-stream; the other one takes over.
    let relaying = relaying_instance(&database)
        .pop()
        .expect("a relaying instance");
    drop(instances.remove(&relaying));
    let survivor = instances.keys().next().unwrap().clone();
    assert!(eventually(20, || relaying_instance(&database) == [survivor.clone()]));

    assert!(eventually(60, || shop.outbox_is_empty()));
    let streams = stored_streams(&database);
    assert_eq!(total(&streams), 20_000);
    let complete = reader.read_distinct(90, EVENTS, 20_000);
    assert!(complete, "{} events", reader.first_of_each(EVENTS).len());
    assert_streams_complete_and_in_order(&reader, EVENTS, &streams);
}

#[test]
fn the_relay_rides_out_brokers_down_and_request_errors() {
    // librdkafka's mock cluster, run by this test: three brokers, faults on demand.
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic(EVENTS, 3, 3).unwrap();
    mock.create_topic(CUSTOMERS, 3, 3).unwrap();
    let brokers = mock.bootstrap_servers();
    let files = Shop::new();
    let database = Database::create();
    let broker = Mosquitto::start("allow_anonymous true");
    let _cloud = cloud_with_kafka(
        &files,
        &database,
        &broker,
        "cloud",
        &brokers,
        "create_topics = false",
    );
    let shop = Shop::new();
    let uplink = format!("broker = {:?}", broker.address());
    let mut reader = Reader::new(&brokers, &[EVENTS]);

    // Produce requests failing for a while (errors librdkafka retries itself).
    let retriable = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
    ];
    mock.request_errors(RDKafkaApiKey::Produce, &retriable.repeat(10));
    shop.write_outbox_backlog(5_000);
    {
        let _online = shop.run_online("shop-k", &uplink);
        assert!(reader.read_until(60, |r| !r.is_empty()));
        // Every broker down: rounds time out and are tried again.
        for id in 1..=3 {
            mock.broker_down(id).unwrap();
        }
        assert!(eventually(30, || shop.outbox_is_empty()));
    }
    std::thread::sleep(Duration::from_secs(5));
    for id in 1..=3 {
        mock.broker_up(id).unwrap();
    }
    let streams = stored_streams(&database);
    let complete = reader.read_distinct(90, EVENTS, 5_000);
    assert!(complete, "{} events", reader.first_of_each(EVENTS).len());
    assert_streams_complete_and_in_order(&reader, EVENTS, &streams);
}
