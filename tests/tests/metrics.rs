//! Both binaries' `/metrics`, read as Prometheus reads them (the prometheus-parse crate): the
//! counters say what the test made them do, the gauges what they hold, a scrape from
//! elsewhere needs the metrics token, and the Grafana dashboard shipped in docs/ asks only
//! for metrics cloud-sync has.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tastesync_e2e::cloud::{Database, eventually, free_port};
use tastesync_e2e::console::Console;
use tastesync_e2e::pos::PosBox;
use tastesync_e2e::{now_s, workspace};

const TOKEN: &str = "a metrics token for Prometheus";

/// Scrapes cloud-sync's `/metrics`, presenting `token`.
fn scrape(console: &Console, token: Option<&str>) -> (StatusCode, String) {
    scrape_url(&console.url("/metrics"), token)
}

fn scrape_url(url: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = reqwest::blocking::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().expect("the server answers");
    (response.status(), response.text().unwrap_or_default())
}

/// The page parsed; each sample by its name (no labels here but histogram buckets).
fn parse(page: &str) -> prometheus_parse::Scrape {
    let lines = page.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("a Prometheus page")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    labelled(scrape, name, None)
}

/// The sample `name`, the one with `label` if given.
fn labelled(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {name} {label:?} in the scrape"));
    match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name} is {other:?}"),
    }
}

fn publish_batch(
    console: &Console,
    box_id: &str,
    stream: &str,
    seqs: std::ops::RangeInclusive<i64>,
) {
    let events: Vec<Value> = seqs
        .map(|seq| {
            json!({"seq": seq, "event_id": format!("{stream}-{seq}"), "type": "customer_arrived",
                   "at_ms": 1_780_000_000_000i64 + seq, "body": {"visit_id": format!("v{seq}")}})
        })
        .collect();
    let batch = json!({"v": 2, "shop_id": "metrics-1", "box_id": box_id, "stream_id": stream,
                       "low_water": 0, "events": events});
    console.broker.publish(
        &format!("tastesync/v1/shops/metrics-1/boxes/{box_id}/events"),
        &batch.to_string(),
    );
}

#[test]
fn metrics_count_what_ingest_did_need_the_token_and_feed_the_dashboard() {
    // Kafka configured but unreachable: the relay's backlog shows.
    let kafka = format!("[kafka]\nbrokers = \"127.0.0.1:{}\"\n", free_port());
    let console = Console::start_with(
        Database::create(),
        &format!("metrics_token = {TOKEN:?}"),
        &kafka,
    );
    console.add_shop("metrics-1", "Metrics", "Asia/Seoul");

    // Without the token, or with another, nothing but a clear refusal.
    for token in [None, Some("not the metrics token at all")] {
        let (status, body) = scrape(&console, token);
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("metrics token"), "{body}");
    }

    // Three events, the same batch again (nothing new), and a message that is not JSON.
    const STREAM: &str = "0190e6b2-0000-7000-8000-0000000000e1";
    publish_batch(&console, "box-m1", STREAM, 1..=3);
    publish_batch(&console, "box-m1", STREAM, 1..=3);
    console.broker.publish(
        "tastesync/v1/shops/metrics-1/boxes/box-m1/events",
        "not a batch",
    );
    assert!(eventually(20, || {
        console.database.query("SELECT count(*) FROM dead_letters") == ["1"]
            && console.database.query(&format!(
                "SELECT acked_seq FROM streams WHERE stream_id = '{STREAM}'"
            )) == ["3"]
    }));

    let (status, page) = scrape(&console, Some(TOKEN));
    assert_eq!(status, StatusCode::OK, "{page}");
    let scraped = parse(&page);
    assert!(eventually(10, || {
        let scraped = parse(&scrape(&console, Some(TOKEN)).1);
        value(&scraped, "tastesync_cloud_events_stored_total") == 3.0
    }));
    assert_eq!(value(&scraped, "tastesync_cloud_dead_letters_total"), 1.0);
    assert_eq!(value(&scraped, "tastesync_cloud_dead_letters_stored"), 1.0);
    assert_eq!(value(&scraped, "tastesync_cloud_shops"), 1.0);
    // The transactions were timed (the batches and the dead letter may share one).
    assert!(value(&scraped, "tastesync_cloud_store_transaction_seconds_count") >= 1.0);
    // Nothing reached the unreachable Kafka: the three events wait, the oldest for a while.
    assert_eq!(value(&scraped, "tastesync_cloud_kafka_events_waiting"), 3.0);
    assert_eq!(
        value(&scraped, "tastesync_cloud_kafka_records_published_total"),
        0.0
    );
    assert!(
        value(
            &scraped,
            "tastesync_cloud_kafka_oldest_waiting_event_age_seconds"
        ) > 0.0
    );
    // Every sample has its HELP.
    for sample in &scraped.samples {
        let family = ["_total", "_count", "_sum", "_bucket"]
            .iter()
            .find_map(|suffix| sample.metric.strip_suffix(suffix))
            .unwrap_or(&sample.metric);
        assert!(
            scraped.docs.contains_key(family),
            "{} has no HELP",
            sample.metric
        );
    }

    // The dashboard's queries name only metrics the page has.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("docs/grafana/cloud-sync.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let exposed: BTreeSet<&str> = scraped.samples.iter().map(|s| s.metric.as_str()).collect();
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("tastesync_"))
            {
                // The parser files a histogram's buckets under the histogram's name.
                let family = name.strip_suffix("_bucket").unwrap_or(name);
                assert!(
                    exposed.contains(family),
                    "the dashboard asks for {name}, not on /metrics"
                );
                asked += 1;
            }
        }
    }
    assert!(asked >= 8, "the dashboard asks for {asked} metrics");
}

#[test]
fn the_boxs_metrics_count_what_it_heard_and_answer_only_the_box_itself_or_the_token() {
    let mut pos = PosBox::start_on_lan("");
    let token = pos.pair("counter");
    let stream = pos.stream(&token, None);
    std::thread::sleep(Duration::from_millis(300)); // the stream is subscribed
    pos.customer_arrives(1);
    let arrival = std::iter::from_fn(|| stream.recv_timeout(Duration::from_secs(10)).ok())
        .find(|e| e.kind == "arrival");
    assert!(arrival.is_some(), "the tablet got the alert");

    // From the shop's network, nothing without a token.
    let (status, body) = scrape_url(&pos.url("/metrics"), None);
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // From the box itself.
    let local = format!("http://127.0.0.1:{}/metrics", pos.port());
    let (status, page) = scrape_url(&local, None);
    assert_eq!(status, StatusCode::OK, "{page}");
    // The pipeline's counters reach the page with its next tick (every second).
    let ble = Some(("source", "ble"));
    let heard = |page: &str| {
        labelled(
            &parse(page),
            "tastesync_edge_advertisements_heard_total",
            ble,
        )
    };
    let mut page = page;
    assert!(eventually(5, || {
        page = scrape_url(&local, None).1;
        heard(&page) >= 3.0
    }));
    let scraped = parse(&page);
    let heard = labelled(&scraped, "tastesync_edge_advertisements_heard_total", ble);
    let identified = labelled(&scraped, "tastesync_edge_beacons_identified_total", ble);
    assert!(heard >= 3.0 && identified >= 3.0, "{page}");
    assert!(labelled(&scraped, "tastesync_edge_beacons_decoded_total", ble) >= identified);
    assert_eq!(value(&scraped, "tastesync_edge_arrivals_total"), 1.0);
    assert_eq!(
        value(&scraped, "tastesync_edge_alert_delivery_seconds_count"),
        1.0
    );
    assert!(value(&scraped, "tastesync_edge_alert_delivery_seconds_sum") < 10.0);
    assert_eq!(value(&scraped, "tastesync_edge_tablets_connected"), 1.0);
    // No uplink: the arrival waits in the outbox.
    assert!(
        value(&scraped, "tastesync_edge_outbox_pending") >= 1.0,
        "{page}"
    );
    // A blank box: not claimed yet (the state reaches the page within two seconds).
    let state = |page: &str, s: &str| {
        labelled(
            &parse(page),
            "tastesync_edge_cloud_sync_state",
            Some(("state", s)),
        )
    };
    assert!(eventually(5, || {
        let page = scrape_url(&local, None).1;
        state(&page, "not claimed yet") == 1.0 && state(&page, "connected") == 0.0
    }));
    assert_eq!(value(&scraped, "tastesync_edge_storage_ok"), 1.0);
    // The box's own radio, in the counter zone, heard lately (within two seconds' refresh).
    assert!(eventually(5, || {
        let page = scrape_url(&local, None).1;
        parse(&page).samples.iter().any(|s| {
            s.metric == "tastesync_edge_scanner_last_heard_timestamp_seconds"
                && s.labels.get("scanner") == Some("local")
                && s.labels.get("zone") == Some("counter")
                && matches!(s.value, prometheus_parse::Value::Gauge(at)
                    if (now_s() as f64 - at).abs() < 60.0)
        })
    }));

    // A box with a metrics token answers the network to that token only.
    let guarded = PosBox::start_on_lan(&format!("metrics_token = {TOKEN:?}"));
    let url = guarded.url("/metrics");
    assert_eq!(scrape_url(&url, None).0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        scrape_url(&url, Some("not the metrics token at all")).0,
        StatusCode::UNAUTHORIZED
    );
    let (status, page) = scrape_url(&url, Some(TOKEN));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value(&parse(&page), "tastesync_edge_arrivals_total"), 0.0);
}
