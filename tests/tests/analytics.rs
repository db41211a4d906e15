//! Chain analytics against a small data set computed by hand: two shops in different time
//! zones, two boxes of one shop, an earlier visit arriving late from a box that was offline,
//! a replayed batch, items typed differently. The rollups kept at ingest must give the hand's
//! figures, and equal a rebuild from the raw events.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tastesync_e2e::cloud::eventually;
use tastesync_e2e::console::Console;
use tastesync_shared::days;

const PASSWORD: &str = "a long enough password";

/// Unix ms of a UTC date and time.
fn utc(y: i64, m: i64, d: i64, h: i64, min: i64) -> i64 {
    ((days::days_from_civil(y, m, d) * 24 + h) * 60 + min) * 60_000
}

fn arrived(customer: &str, at: i64) -> (String, i64, Value) {
    (
        "customer_arrived".into(),
        at,
        json!({"visit_id": format!("v-{customer}-{at}"), "customer_ref": customer, "zone": "counter", "arrived_at_ms": at}),
    )
}

fn left(customer: &str, at: i64, dwell_s: Option<i64>) -> (String, i64, Value) {
    (
        "customer_left".into(),
        at,
        json!({"visit_id": "v", "customer_ref": customer, "zone": "counter", "dwell_s": dwell_s}),
    )
}

fn order(customer: &str, at: i64, items: &[&str]) -> (String, i64, Value) {
    (
        "order_recorded".into(),
        at,
        json!({"action_id": format!("o-{at}"), "visit_id": "v", "customer_ref": customer, "device_id": 1, "items": items}),
    )
}

fn feedback(customer: &str, at: i64, score: i64, comment: &str) -> (String, i64, Value) {
    (
        "feedback_recorded".into(),
        at,
        json!({"action_id": format!("f-{at}"), "visit_id": "v", "customer_ref": customer, "device_id": 1, "score": score, "comment": comment}),
    )
}

/// Publishes a box's stream as one protocol-2 batch and waits until it is stored.
fn deliver(
    console: &Console,
    shop: &str,
    box_id: &str,
    stream: &str,
    events: &[(String, i64, Value)],
) {
    let events: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, (kind, at, body))| json!({"seq": i + 1, "event_id": format!("{stream}-{}", i + 1), "type": kind, "at_ms": at, "body": body}))
        .collect();
    let batch = json!({"v": 2, "shop_id": shop, "box_id": box_id, "stream_id": stream, "low_water": 0, "events": events});
    console.broker.publish(
        &format!("tastesync/v1/shops/{shop}/boxes/{box_id}/events"),
        &batch.to_string(),
    );
    let last = events.len().to_string();
    let stored = eventually(20, || {
        console.database.query(&format!(
            "SELECT acked_seq FROM streams WHERE stream_id = '{stream}'"
        )) == [last.clone()]
    });
    assert!(
        stored,
        "stream {stream} was not stored: {:?}",
        console.database.query("SELECT reason FROM dead_letters")
    );
}

/// Every rollup table's rows, for comparing.
fn rollups(console: &Console) -> Vec<Vec<String>> {
    [
        "shop_days",
        "shop_hours",
        "shop_day_items",
        "chain_days",
        "chain_hours",
        "chain_day_items",
        "customer_shops",
    ]
    .iter()
    .map(|table| {
        console
            .database
            .query(&format!("SELECT t::text FROM {table} t ORDER BY 1"))
    })
    .collect()
}

const S1: &str = "0190e6b2-0000-7000-8000-00000000000a";
const S2: &str = "0190e6b2-0000-7000-8000-00000000000b";
const S3: &str = "0190e6b2-0000-7000-8000-00000000000c";

#[test]
fn rollups_give_the_hand_computed_figures_and_equal_a_rebuild_from_raw_events() {
    let console = Console::start("");
    console.add_shop("seoul-1", "Seoul Station", "Asia/Seoul");
    console.add_shop("nyc-1", "New York", "America/New_York");
    console.add_user("admin@example.com", "admin", &[], PASSWORD);
    console.add_user("manager@example.com", "manager", &["nyc-1"], PASSWORD);
    let admin = console.token("admin@example.com", PASSWORD);

    // Seoul (UTC+9), box a1. Monday 2 March 2026 and Tuesday 3 March, local time.
    let s1 = [
        arrived("c1", utc(2026, 3, 2, 0, 30)), // Mon 09:30
        order("c1", utc(2026, 3, 2, 0, 40), &["Oat Latte ", "croissant"]),
        feedback("c1", utc(2026, 3, 2, 0, 45), 5, "Lovely as always"),
        left("c1", utc(2026, 3, 2, 0, 50), Some(1200)), // Mon
        arrived("c2", utc(2026, 3, 2, 14, 59)),         // Mon 23:59
        arrived("c1", utc(2026, 3, 3, 1, 0)),           // Tue 10:00, returning
        left("c1", utc(2026, 3, 3, 1, 20), None),       // interrupted: no dwell
        feedback("c2", utc(2026, 3, 3, 1, 30), 3, "Too loud"), // Tue
    ];
    deliver(&console, "seoul-1", "box-a1", S1, &s1);
    // Box a2 was offline: its visits arrive late. c1's Monday 08:00 visit is now their first
    // at Seoul, so the 09:30 one becomes a return.
    let s2 = [
        arrived("c1", utc(2026, 3, 1, 23, 0)),              // Mon 08:00
        arrived("c2", utc(2026, 3, 2, 15, 30)),             // Tue 00:30, returning
        order("c2", utc(2026, 3, 3, 2, 0), &["oat latte"]), // Tue
    ];
    deliver(&console, "seoul-1", "box-a2", S2, &s2);
    // New York (UTC-5 in early March).
    let s3 = [
        arrived("c1", utc(2026, 3, 3, 4, 0)), // Mon 23:00, first visit in NY
        left("c1", utc(2026, 3, 3, 4, 10), Some(600)), // Mon 23:10
        arrived("c3", utc(2026, 3, 3, 5, 30)), // Tue 00:30
        feedback("c3", utc(2026, 3, 3, 5, 45), 4, ""), // Tue
    ];
    deliver(&console, "nyc-1", "box-n1", S3, &s3);
    // A replayed batch changes nothing.
    let before_replay = rollups(&console);
    deliver(&console, "seoul-1", "box-a1", S1, &s1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(rollups(&console), before_replay);

    let report = console.get(
        "/api/v1/analytics?from=2026-03-02&to=2026-03-03",
        Some(&admin),
    );
    assert_eq!(report.status, StatusCode::OK, "{:?}", report.body);
    let r = &report.body;
    // By hand: Seoul Mon 3 visits (1 returning), Tue 2 (2); NY Mon 1 (0), Tue 1 (0).
    assert_eq!(
        r["days"],
        json!([
            {"day": "2026-03-02", "visits": 4, "returning_visits": 1},
            {"day": "2026-03-03", "visits": 3, "returning_visits": 2},
        ])
    );
    let totals = &r["totals"];
    assert_eq!(totals["visits"], 7);
    assert_eq!(totals["returning_visits"], 3);
    assert_eq!(totals["returning_rate"], json!(3.0 / 7.0));
    assert_eq!(totals["average_dwell_s"], json!(900.0)); // (1200 + 600) / 2
    assert_eq!(totals["feedback"], 3);
    assert_eq!(totals["satisfaction"], json!(2.0 / 3.0)); // 5 and 4 of 5, 3, 4
    assert_eq!(totals["average_score"], json!(4.0));
    assert_eq!(totals["orders"], 2);
    assert_eq!(
        r["top_items"],
        json!([{"item": "oat latte", "orders": 2}, {"item": "croissant", "orders": 1}])
    );
    // Weekday x hour, local: Monday 08, 09, 23 (Seoul) and 23 (NY); Tuesday 00 (both), 10.
    let mut hours = vec![vec![0; 24]; 7];
    hours[0][8] = 1;
    hours[0][9] = 1;
    hours[0][23] = 2;
    hours[1][0] = 2;
    hours[1][10] = 1;
    assert_eq!(r["busiest_hours"], json!(hours));
    let shops: Vec<(String, i64, i64)> = r["shops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["shop_id"].as_str().unwrap().into(),
                s["visits"].as_i64().unwrap(),
                s["returning_visits"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shops,
        [("seoul-1".to_string(), 5, 3), ("nyc-1".to_string(), 2, 0)]
    );

    // One shop, and a manager's scope (their shop only, whatever they ask for).
    let seoul = console
        .get(
            "/api/v1/analytics?from=2026-03-02&to=2026-03-03&shop=seoul-1",
            Some(&admin),
        )
        .body;
    assert_eq!(seoul["totals"]["visits"], 5);
    assert_eq!(seoul["totals"]["average_dwell_s"], json!(1200.0));
    assert_eq!(seoul["totals"]["satisfaction"], json!(0.5));
    let manager = console.token("manager@example.com", PASSWORD);
    let theirs = console
        .get(
            "/api/v1/analytics?from=2026-03-02&to=2026-03-03",
            Some(&manager),
        )
        .body;
    assert_eq!(theirs["totals"]["visits"], 2);
    assert_eq!(theirs["shops"].as_array().unwrap().len(), 1);
    // A range that misses the data, and bad ranges.
    let empty = console
        .get(
            "/api/v1/analytics?from=2026-03-04&to=2026-03-31",
            Some(&admin),
        )
        .body;
    assert_eq!(empty["totals"]["visits"], 0);
    assert_eq!(empty["totals"]["returning_rate"], Value::Null);
    for bad in [
        "from=2026-03-05&to=2026-03-01",
        "from=2026-02-30",
        "to=yesterday",
        "from=2020-01-01&to=2026-01-01",
    ] {
        let answer = console.get(&format!("/api/v1/analytics?{bad}"), Some(&admin));
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // The feedback page: newest first, with the customer's name where they are enrolled.
    let page = console.get("/api/v1/feedback", Some(&admin)).body;
    let comments: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["comment"].as_str().unwrap())
        .collect();
    assert_eq!(comments, ["", "Too loud", "Lovely as always"]);
    let nyc = console.get("/api/v1/feedback", Some(&manager)).body;
    assert_eq!(nyc.as_array().unwrap().len(), 1);

    // The same definitions computed set-based from the raw events.
    let incremental = rollups(&console);
    console.command(&["analytics", "rebuild"], "");
    assert_eq!(rollups(&console), incremental);
}

/// The date (YYYY-MM-DD) `offset_h` hours east of UTC, now.
fn date_now_at(offset_h: i64) -> String {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    days::format_day((now_s + offset_h * 3600).div_euclid(86_400))
}

#[test]
fn a_report_without_dates_ends_with_the_day_under_way_in_its_shops() {
    // Kiritimati is 14 hours ahead of UTC (its day starts first), Pago Pago 11 behind: at any
    // hour at least one of them is on another date than UTC. A default range ending on UTC's
    // date would miss a shop's today.
    let console = Console::start("");
    console.add_shop("kiritimati", "Line Islands", "Pacific/Kiritimati");
    console.add_shop("pago-pago", "Pago Pago", "Pacific/Pago_Pago");
    console.add_user("admin@example.com", "admin", &[], PASSWORD);
    let admin = console.token("admin@example.com", PASSWORD);
    for (query, to) in [
        ("", date_now_at(14)),
        ("?shop=kiritimati", date_now_at(14)),
        ("?shop=pago-pago", date_now_at(-11)),
    ] {
        let report = console.get(&format!("/api/v1/analytics{query}"), Some(&admin));
        assert_eq!(report.status, StatusCode::OK, "{:?}", report.body);
        assert_eq!(report.body["to"], json!(to), "{query}");
    }
}
