//! Retention on the box: a year and more of visits (with orders, feedback and
//! acknowledgements) is trimmed to `retention_days` when the box starts, and daily after;
//! nothing the outbox still waits to send is deleted, and the outbox itself is never trimmed.

use tastesync_e2e::*;

const DAY_MS: i64 = 86_400_000;

/// Visits of customers C1..C10: one every `step_ms` over the last `days`, each with an order
/// and feedback; the oldest `unsent` of them still named by events waiting in the outbox.
fn a_year_of_visits(shop: &Shop, days: i64, step_ms: i64, unsent: usize) -> i64 {
    shop.enroll_tag_customers(10);
    let mut db = rusqlite::Connection::open(shop.db()).unwrap();
    let tx = db.transaction().unwrap();
    let now = now_ms() as i64;
    let mut count = 0;
    let mut at = now - days * DAY_MS;
    while at < now - 3_600_000 {
        let visit = format!("0190e6b2-0000-7000-8000-{count:012}");
        let customer = count % 10 + 1;
        tx.execute(
            "INSERT INTO visits (visit_id, customer_id, zone, arrived_at_ms, left_at_ms, dwell_s)
             SELECT ?1, id, 'counter', ?2, ?2 + 600000, 600 FROM customers WHERE customer_ref = ?3",
            rusqlite::params![visit, at, format!("C{customer}")],
        )
        .unwrap();
        let action = format!("7c9e6679-0000-40de-944b-{count:012}");
        tx.execute(
            "INSERT INTO orders (action_id, visit_id, device_id, items, at_ms) VALUES (?1, ?2, 1, '[\"tea\"]', ?3)",
            rusqlite::params![action, visit, at + 60_000],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO order_items (action_id, item) VALUES (?1, 'tea')",
            [&action],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO feedback (action_id, visit_id, device_id, score, comment, at_ms)
             VALUES (?1, ?2, 1, 5, '', ?3)",
            rusqlite::params![format!("{action}-f"), visit, at + 120_000],
        )
        .unwrap();
        if (count as usize) < unsent {
            tx.execute(
                "INSERT INTO outbox (event_id, kind, at_ms, body) VALUES (?1, 'customer_arrived', ?2, ?3)",
                rusqlite::params![
                    format!("0190e6b2-1111-7000-8000-{count:012}"),
                    at,
                    format!(r#"{{"visit_id":"{visit}","customer_ref":"C{customer}"}}"#)
                ],
            )
            .unwrap();
        }
        count += 1;
        at += step_ms;
    }
    tx.commit().unwrap();
    count
}

fn query(shop: &Shop, sql: &str) -> i64 {
    rusqlite::Connection::open(shop.db())
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// Starts the box briefly (a short quiet recording), as a restart would.
fn run_box(shop: &Shop, retention_days: u64) {
    let quiet = shop.quiet_recording("quiet.jsonl", 3, 10);
    let config = shop.write(
        "retention.toml",
        &format!(
            "database = {:?}\nretention_days = {retention_days}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\nreplay_speed = 0\n[pos]\nlisten = \"\"\n",
            shop.db(),
            quiet.display().to_string()
        ),
    );
    shop.edge_ok(&["run", "--config", config.to_str().unwrap()]);
}

/// Visits that arrived after `days` ago shifted by `shift_ms`.
fn visits_since(shop: &Shop, days: i64, shift_ms: i64) -> i64 {
    let cutoff = now_ms() as i64 - days * DAY_MS + shift_ms;
    query(
        shop,
        &format!("SELECT count(*) FROM visits WHERE arrived_at_ms >= {cutoff}"),
    )
}

/// Checks that the store holds the visits of the last `days` (give or take the ten minutes
/// between this check and the box's own clock), and the 50 unsent ones.
fn trimmed_to(shop: &Shop, days: i64, expected: (i64, i64)) {
    let unsent_older = query(
        shop,
        &format!(
            "SELECT count(*) FROM visits WHERE arrived_at_ms < {}",
            now_ms() as i64 - days * DAY_MS - 600_000
        ),
    );
    assert_eq!(
        unsent_older, 50,
        "older visits are gone, but for those the outbox still names"
    );
    let kept = query(shop, "SELECT count(*) FROM visits") - 50;
    assert!(
        (expected.0..=expected.1).contains(&kept),
        "kept {kept}, expected {expected:?}"
    );
}

#[test]
fn a_year_of_visits_is_trimmed_to_the_setting_and_nothing_unsent_is_deleted() {
    let shop = Shop::new();
    // 400 days, a visit every 5 minutes: 115,000 visits; the 50 oldest not yet sent.
    let visits = a_year_of_visits(&shop, 400, 300_000, 50);
    assert!(visits > 100_000, "{visits}");
    let outbox = query(&shop, "SELECT count(*) FROM outbox");
    let year = (
        visits_since(&shop, 365, 600_000),
        visits_since(&shop, 365, -600_000),
    );

    run_box(&shop, 365);
    trimmed_to(&shop, 365, year);
    assert_eq!(
        query(&shop, "SELECT count(*) FROM outbox"),
        outbox,
        "the outbox untouched"
    );
    assert_eq!(
        query(
            &shop,
            "SELECT count(*) FROM orders o LEFT JOIN visits v USING (visit_id) WHERE v.visit_id IS NULL"
        ),
        0,
        "orders went with their visits"
    );
    assert_eq!(
        query(&shop, "SELECT count(*) FROM feedback"),
        query(&shop, "SELECT count(*) FROM visits"),
        "feedback went with its visits"
    );

    // A shorter setting, on the next start.
    let month = (
        visits_since(&shop, 30, 600_000),
        visits_since(&shop, 30, -600_000),
    );
    run_box(&shop, 30);
    trimmed_to(&shop, 30, month);
    assert_eq!(query(&shop, "SELECT count(*) FROM outbox"), outbox);
}
