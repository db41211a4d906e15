//! Chain analytics without scanning events: rollups kept in the transaction that stores the
//! events, so dashboards read a few hundred rows whatever the chain's size.
//!
//! - `shop_days` / `chain_days`: per local day (the shop's time zone): visits, returning
//!   visits, dwell, private feedback, orders.
//! - `shop_hours` / `chain_hours`: visits per local day and hour (the weekday x hour map).
//! - `shop_day_items` / `chain_day_items`: ordered items per day.
//! - `customer_shops`: each customer's first and last visit to each shop.
//!
//! Definitions (the same in [`record`], run at ingest, and [`rebuild`], run over all events):
//! a *visit* is a `customer_arrived` event; it is *returning* if the customer (by ref) has an
//! earlier visit to the same shop, so of a customer's visits to a shop exactly the earliest
//! is not (an earlier one arriving late, from a box that was offline, takes its place, and
//! the day it replaced gains a returning visit). Dwell comes from `customer_left` events
//! with a dwell time (whole seconds), satisfaction (the share of scores 4 and 5, of whole
//! scores 1 to 5) from `feedback_recorded`, orders
//! and items from `order_recorded` (items trimmed of spaces and ASCII-lower-cased).
//! Rollup rows are locked in one order (shop rows, then chain rows, each sorted), after the
//! streams', so concurrent ingest transactions cannot deadlock.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{GenericClient, Transaction};

use super::days::format_day;
use utoipa::ToSchema;

/// The event kinds the rollups read.
pub const ARRIVED: &str = "customer_arrived";
pub const LEFT: &str = "customer_left";
pub const FEEDBACK: &str = "feedback_recorded";
pub const ORDER: &str = "order_recorded";

/// A newly stored event, as the rollups see it.
pub struct NewEvent<'a> {
    pub shop_id: &'a str,
    pub kind: &'a str,
    pub at_ms: i64,
    pub body: &'a Value,
}

/// A visit's customer ref, if it names one.
pub fn customer_ref(body: &Value) -> Option<&str> {
    body.get("customer_ref")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
}

/// An ordered item as the rollups count it.
fn normalize_item(item: &str) -> Option<String> {
    let item = item.trim_matches(' ').to_ascii_lowercase();
    (!item.is_empty()).then_some(item)
}

/// Events' (and corrections') parts of the figures, summed per shop and quarter hour (UTC):
/// every time zone's offset is a whole number of quarter hours, so the events of one quarter
/// hour share a local day and hour, and the SQL converts one instant per group.
#[derive(Default)]
struct Contributions<'a> {
    sums: BTreeMap<(&'a str, i64), QuarterSums>,
    /// Orders of each item (trimmed, lower-cased) per shop and quarter hour.
    items: BTreeMap<(&'a str, i64, String), i32>,
}

/// One group's sums, as the day rollups keep them.
#[derive(Default, Clone, Copy)]
struct QuarterSums {
    visits: i32,
    returning: i32,
    dwell_s_sum: i64,
    dwell_visits: i32,
    feedback: i32,
    satisfied: i32,
    score_sum: i32,
    orders: i32,
}

const QUARTER_HOUR_MS: i64 = 15 * 60 * 1000;

/// The start of the UTC quarter hour holding `at_ms`.
fn quarter_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(QUARTER_HOUR_MS) * QUARTER_HOUR_MS
}

impl<'a> Contributions<'a> {
    fn at(&mut self, shop: &'a str, at_ms: i64) -> &mut QuarterSums {
        self.sums.entry((shop, quarter_of(at_ms))).or_default()
    }

    fn visit(&mut self, shop: &'a str, at_ms: i64, returning: bool) {
        let sums = self.at(shop, at_ms);
        sums.visits += 1;
        sums.returning += i32::from(returning);
    }

    /// A visit recorded earlier as a first visit that is a returning one now.
    fn now_returning(&mut self, shop: &'a str, at_ms: i64) {
        self.at(shop, at_ms).returning += 1;
    }

    /// The columns of the rollup statement's first ten parameters.
    #[allow(clippy::type_complexity)]
    fn columns(&self) -> (Vec<&str>, Vec<i64>, [Vec<i32>; 7], Vec<i64>) {
        let (mut shops, mut at, mut dwell_sums) = (vec![], vec![], vec![]);
        let mut counts: [Vec<i32>; 7] = Default::default();
        for (&(shop, quarter), s) in &self.sums {
            shops.push(shop);
            at.push(quarter);
            dwell_sums.push(s.dwell_s_sum);
            let figures = [
                s.visits,
                s.returning,
                s.dwell_visits,
                s.feedback,
                s.satisfied,
                s.score_sum,
                s.orders,
            ];
            for (column, figure) in counts.iter_mut().zip(figures) {
                column.push(figure);
            }
        }
        (shops, at, counts, dwell_sums)
    }
}

/// Adds newly stored events to the rollups, within the transaction that stored them.
pub async fn record(tx: &Transaction<'_>, events: &[NewEvent<'_>]) -> anyhow::Result<()> {
    let mut figures = Contributions::default();
    let mut arrivals: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    for e in events {
        match e.kind {
            ARRIVED => match customer_ref(e.body) {
                Some(customer) => arrivals
                    .entry((e.shop_id, customer))
                    .or_default()
                    .push(e.at_ms),
                None => figures.visit(e.shop_id, e.at_ms, false),
            },
            LEFT => {
                let dwell = e.body.get("dwell_s").and_then(Value::as_i64);
                // Up to 9 digits, as the rebuild reads them.
                if let Some(dwell) = dwell.filter(|d| (0..1_000_000_000).contains(d)) {
                    let sums = figures.at(e.shop_id, e.at_ms);
                    sums.dwell_s_sum += dwell;
                    sums.dwell_visits += 1;
                }
            }
            FEEDBACK => {
                let score = e.body.get("score").and_then(Value::as_i64);
                if let Some(score) = score.filter(|s| (1..=5).contains(s)) {
                    let sums = figures.at(e.shop_id, e.at_ms);
                    sums.feedback += 1;
                    sums.satisfied += i32::from(score >= 4);
                    sums.score_sum += score as i32;
                }
            }
            ORDER => {
                figures.at(e.shop_id, e.at_ms).orders += 1;
                let ordered = e.body.get("items").and_then(Value::as_array);
                for item in ordered.into_iter().flatten().filter_map(Value::as_str) {
                    if let Some(item) = normalize_item(item) {
                        let key = (e.shop_id, quarter_of(e.at_ms), item);
                        *figures.items.entry(key).or_default() += 1;
                    }
                }
            }
            _ => {}
        }
    }
    record_visits(tx, &arrivals, &mut figures).await?;
    if figures.sums.is_empty() && figures.items.is_empty() {
        return Ok(());
    }
    let (shops, at, counts, dwell_sums) = figures.columns();
    let [
        visits,
        returning,
        dwell_visits,
        feedback,
        satisfied,
        score_sum,
        orders,
    ] = &counts;
    let (mut item_shops, mut item_at, mut items, mut item_orders) =
        (vec![], vec![], vec![], vec![]);
    for ((shop, quarter, item), n) in &figures.items {
        item_shops.push(*shop);
        item_at.push(*quarter);
        items.push(item.as_str());
        item_orders.push(*n);
    }
    tx.execute(
        ROLLUP_SQL,
        &[
            &shops,
            &at,
            visits,
            returning,
            &dwell_sums,
            dwell_visits,
            feedback,
            satisfied,
            score_sum,
            orders,
            &item_shops,
            &item_at,
            &items,
            &item_orders,
        ],
    )
    .await?;
    Ok(())
}

/// Decides which arrivals are returning visits against each customer's first visit to the
/// shop (read under the row's lock), records the visits, and keeps `customer_shops` up to
/// date, in one statement.
async fn record_visits<'a>(
    tx: &Transaction<'_>,
    arrivals: &BTreeMap<(&'a str, &'a str), Vec<i64>>,
    figures: &mut Contributions<'a>,
) -> anyhow::Result<()> {
    if arrivals.is_empty() {
        return Ok(());
    }
    let (shops, customers): (Vec<&str>, Vec<&str>) = arrivals.keys().copied().unzip();
    let (mut first_of, mut last_of, mut count_of) = (vec![], vec![], vec![]);
    for times in arrivals.values() {
        first_of.push(*times.iter().min().expect("at least one arrival"));
        last_of.push(*times.iter().max().expect("at least one arrival"));
        count_of.push(times.len() as i32);
    }
    // The main query (reading `before`, locking its rows) runs before the unreferenced
    // upsert, so `before` holds the first visits as they were.
    let rows = tx
        .query(
            "WITH input AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::int[])
                    AS u(shop_id, customer_ref, first_visit_ms, last_visit_ms, visits)
             ), before AS (
                SELECT c.shop_id, c.customer_ref, c.first_visit_ms
                FROM customer_shops c JOIN input i USING (shop_id, customer_ref)
                ORDER BY 1, 2 FOR UPDATE OF c
             ), upserted AS (
                INSERT INTO customer_shops AS c
                    SELECT * FROM input ORDER BY shop_id, customer_ref
                ON CONFLICT (customer_ref, shop_id) DO UPDATE SET
                    first_visit_ms = least(c.first_visit_ms, excluded.first_visit_ms),
                    last_visit_ms = greatest(c.last_visit_ms, excluded.last_visit_ms),
                    visits = c.visits + excluded.visits
             )
             SELECT * FROM before",
            &[&shops, &customers, &first_of, &last_of, &count_of],
        )
        .await?;
    let known: BTreeMap<(&str, &str), i64> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    for (&(shop, customer), times) in arrivals {
        let mut times = times.clone();
        times.sort_unstable();
        let mut first = known.get(&(shop, customer)).copied();
        for &at in &times {
            match first {
                Some(earliest) if earliest <= at => figures.visit(shop, at, true),
                _ => {
                    if let Some(replaced) = first {
                        // The visit that was first is a return now.
                        figures.now_returning(shop, replaced);
                    }
                    figures.visit(shop, at, false);
                    first = Some(at);
                }
            }
        }
    }
    Ok(())
}

/// Adds the quarter hours' sums ($1-$10) and ordered items ($11-$14) to the shop rollups,
/// then to the chain's. Unreferenced data-modifying CTEs run in the order written.
const ROLLUP_SQL: &str = "
WITH c AS (
    SELECT u.shop, (to_timestamp(u.at / 1000.0) AT TIME ZONE coalesce(s.time_zone, 'UTC')) AS local,
           u.visits, u.ret, u.dwell_sum, u.dwell_n, u.feedback, u.satisfied, u.score_sum, u.orders
    FROM unnest($1::text[], $2::bigint[], $3::int[], $4::int[], $5::bigint[], $6::int[],
                $7::int[], $8::int[], $9::int[], $10::int[])
         AS u(shop, at, visits, ret, dwell_sum, dwell_n, feedback, satisfied, score_sum, orders)
    LEFT JOIN shops s ON s.shop_id = u.shop
), d AS (
    SELECT shop, local::date AS day, sum(visits)::int AS visits, sum(ret)::int AS ret,
           sum(dwell_sum)::bigint AS dwell_sum, sum(dwell_n)::int AS dwell_n,
           sum(feedback)::int AS feedback, sum(satisfied)::int AS satisfied,
           sum(score_sum)::int AS score_sum, sum(orders)::int AS orders
    FROM c GROUP BY 1, 2
), h AS (
    SELECT shop, local::date AS day, extract(hour FROM local)::smallint AS hour,
           sum(visits)::int AS visits
    FROM c WHERE visits > 0 GROUP BY 1, 2, 3
), i AS (
    SELECT u.shop, (to_timestamp(u.at / 1000.0) AT TIME ZONE coalesce(s.time_zone, 'UTC'))::date AS day,
           u.item, sum(u.orders)::int AS orders
    FROM unnest($11::text[], $12::bigint[], $13::text[], $14::int[]) AS u(shop, at, item, orders)
    LEFT JOIN shops s ON s.shop_id = u.shop
    GROUP BY 1, 2, 3
), shop_days_added AS (
    INSERT INTO shop_days AS t (shop_id, day, visits, returning_visits, dwell_s_sum, dwell_visits,
                                feedback, feedback_satisfied, feedback_score_sum, orders)
    SELECT * FROM d ORDER BY shop, day
    ON CONFLICT (shop_id, day) DO UPDATE SET
        visits = t.visits + excluded.visits,
        returning_visits = t.returning_visits + excluded.returning_visits,
        dwell_s_sum = t.dwell_s_sum + excluded.dwell_s_sum,
        dwell_visits = t.dwell_visits + excluded.dwell_visits,
        feedback = t.feedback + excluded.feedback,
        feedback_satisfied = t.feedback_satisfied + excluded.feedback_satisfied,
        feedback_score_sum = t.feedback_score_sum + excluded.feedback_score_sum,
        orders = t.orders + excluded.orders
), shop_hours_added AS (
    INSERT INTO shop_hours AS t (shop_id, day, hour, visits)
    SELECT * FROM h ORDER BY shop, day, hour
    ON CONFLICT (shop_id, day, hour) DO UPDATE SET visits = t.visits + excluded.visits
), shop_items_added AS (
    INSERT INTO shop_day_items AS t (shop_id, day, item, orders)
    SELECT * FROM i ORDER BY shop, day, item
    ON CONFLICT (shop_id, day, item) DO UPDATE SET orders = t.orders + excluded.orders
), chain_days_added AS (
    INSERT INTO chain_days AS t (day, visits, returning_visits, dwell_s_sum, dwell_visits,
                                 feedback, feedback_satisfied, feedback_score_sum, orders)
    SELECT day, sum(visits), sum(ret), sum(dwell_sum), sum(dwell_n), sum(feedback),
           sum(satisfied), sum(score_sum), sum(orders)
    FROM d GROUP BY day ORDER BY day
    ON CONFLICT (day) DO UPDATE SET
        visits = t.visits + excluded.visits,
        returning_visits = t.returning_visits + excluded.returning_visits,
        dwell_s_sum = t.dwell_s_sum + excluded.dwell_s_sum,
        dwell_visits = t.dwell_visits + excluded.dwell_visits,
        feedback = t.feedback + excluded.feedback,
        feedback_satisfied = t.feedback_satisfied + excluded.feedback_satisfied,
        feedback_score_sum = t.feedback_score_sum + excluded.feedback_score_sum,
        orders = t.orders + excluded.orders
), chain_hours_added AS (
    INSERT INTO chain_hours AS t (day, hour, visits)
    SELECT day, hour, sum(visits) FROM h GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, hour) DO UPDATE SET visits = t.visits + excluded.visits
), chain_items_added AS (
    INSERT INTO chain_day_items AS t (day, item, orders)
    SELECT day, item, sum(orders) FROM i GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, item) DO UPDATE SET orders = t.orders + excluded.orders
)
SELECT 1";

/// Recomputes every rollup from the stored events, set-based, in one transaction that
/// holds ingest off (a migration's backfill, `tastesync-cloud analytics rebuild`). The
/// second implementation of the definitions above: tests hold the two to each other.
pub async fn rebuild(db: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    let tx = db.transaction().await?;
    tx.batch_execute(REBUILD_SQL).await?;
    tx.commit().await?;
    Ok(())
}

const REBUILD_SQL: &str = "
LOCK TABLE events IN SHARE MODE;
TRUNCATE shop_days, shop_hours, shop_day_items, chain_days, chain_hours, chain_day_items,
         customer_shops;
INSERT INTO customer_shops (shop_id, customer_ref, first_visit_ms, last_visit_ms, visits)
    SELECT shop_id, body->>'customer_ref', min(at_ms), max(at_ms), count(*)
    FROM events
    WHERE kind = 'customer_arrived' AND jsonb_typeof(body->'customer_ref') = 'string'
      AND body->>'customer_ref' <> ''
    GROUP BY 1, 2;
CREATE TEMP TABLE rollup_events ON COMMIT DROP AS
    SELECT e.shop_id, e.kind,
           (to_timestamp(e.at_ms / 1000.0) AT TIME ZONE coalesce(s.time_zone, 'UTC')) AS local,
           e.kind = 'customer_arrived' AND jsonb_typeof(e.body->'customer_ref') = 'string'
               AND e.body->>'customer_ref' <> '' AS with_ref,
           CASE WHEN e.kind = 'customer_left' AND e.body->>'dwell_s' ~ '^[0-9]{1,9}$'
                     AND jsonb_typeof(e.body->'dwell_s') = 'number'
                THEN (e.body->>'dwell_s')::bigint END AS dwell,
           CASE WHEN e.kind = 'feedback_recorded' AND e.body->>'score' ~ '^[1-5]$'
                     AND jsonb_typeof(e.body->'score') = 'number'
                THEN (e.body->>'score')::int END AS score,
           CASE WHEN e.kind = 'order_recorded' AND jsonb_typeof(e.body->'items') = 'array'
                THEN e.body->'items' END AS items
    FROM events e LEFT JOIN shops s USING (shop_id)
    WHERE e.kind IN ('customer_arrived', 'customer_left', 'feedback_recorded', 'order_recorded');
CREATE TEMP TABLE first_visits ON COMMIT DROP AS
    SELECT c.shop_id,
           (to_timestamp(c.first_visit_ms / 1000.0) AT TIME ZONE coalesce(s.time_zone, 'UTC'))::date AS day,
           count(*) AS firsts
    FROM customer_shops c LEFT JOIN shops s USING (shop_id) GROUP BY 1, 2;
INSERT INTO shop_days (shop_id, day, visits, returning_visits, dwell_s_sum, dwell_visits,
                       feedback, feedback_satisfied, feedback_score_sum, orders)
    SELECT r.shop_id, r.day, r.visits, r.with_ref - coalesce(f.firsts, 0), r.dwell_sum, r.dwell_n,
           r.feedback, r.satisfied, r.score_sum, r.orders
    FROM (
        SELECT shop_id, local::date AS day,
            count(*) FILTER (WHERE kind = 'customer_arrived') AS visits,
            count(*) FILTER (WHERE with_ref) AS with_ref,
            coalesce(sum(dwell), 0) AS dwell_sum, count(dwell) AS dwell_n,
            count(score) AS feedback, count(*) FILTER (WHERE score >= 4) AS satisfied,
            coalesce(sum(score), 0) AS score_sum,
            count(*) FILTER (WHERE kind = 'order_recorded') AS orders
        FROM rollup_events GROUP BY 1, 2
    ) r LEFT JOIN first_visits f USING (shop_id, day)
    WHERE r.visits + r.dwell_n + r.feedback + r.orders > 0;
INSERT INTO shop_hours (shop_id, day, hour, visits)
    SELECT shop_id, local::date, extract(hour FROM local), count(*)
    FROM rollup_events WHERE kind = 'customer_arrived' GROUP BY 1, 2, 3;
INSERT INTO shop_day_items (shop_id, day, item, orders)
    SELECT shop_id, day, item, count(*) FROM (
        SELECT shop_id, local::date AS day,
               translate(btrim(item, ' '), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
                         'abcdefghijklmnopqrstuvwxyz') AS item
        FROM rollup_events, jsonb_array_elements(items) AS element,
             LATERAL (SELECT element #>> '{}' AS item) i
        WHERE items IS NOT NULL AND jsonb_typeof(element) = 'string'
    ) o WHERE item <> '' GROUP BY 1, 2, 3;
INSERT INTO chain_days (day, visits, returning_visits, dwell_s_sum, dwell_visits, feedback,
                        feedback_satisfied, feedback_score_sum, orders)
    SELECT day, sum(visits), sum(returning_visits), sum(dwell_s_sum), sum(dwell_visits),
           sum(feedback), sum(feedback_satisfied), sum(feedback_score_sum), sum(orders)
    FROM shop_days GROUP BY day;
INSERT INTO chain_hours (day, hour, visits)
    SELECT day, hour, sum(visits) FROM shop_hours GROUP BY 1, 2;
INSERT INTO chain_day_items (day, item, orders)
    SELECT day, item, sum(orders) FROM shop_day_items GROUP BY 1, 2;
UPDATE analytics_state SET rebuild_needed = false;
";

/// Rebuilds the rollups if a migration asked for it (a database that had events before the
/// rollups existed).
pub async fn rebuild_if_needed(db: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    let needed: bool = db
        .query_one("SELECT rebuild_needed FROM analytics_state", &[])
        .await?
        .get(0);
    if needed {
        tracing::info!("computing the analytics rollups of the events stored so far");
        rebuild(db).await?;
    }
    Ok(())
}

/// Which shops a report covers.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The whole chain (its own rollups).
    Chain,
    /// Some shops (a manager's, or one shop).
    Shops(Vec<String>),
}

/// Today in the scope's shops, as days since 1970-01-01: the latest local date among them
/// (shops east of UTC start their day first), so a default range ends with the day that is
/// under way in every shop it covers. UTC's today when the scope holds no shop.
pub async fn today(db: &impl GenericClient, scope: &Scope) -> anyhow::Result<i64> {
    let shops: &[String] = match scope {
        Scope::Chain => &[],
        Scope::Shops(shops) => shops,
    };
    let row = db
        .query_one(
            "SELECT (coalesce(max((now() AT TIME ZONE time_zone)::date), (now() AT TIME ZONE 'UTC')::date)
                     - date '1970-01-01')::bigint
             FROM shops WHERE $1 OR shop_id = ANY($2)",
            &[&matches!(scope, Scope::Chain), &shops],
        )
        .await?;
    Ok(row.get(0))
}

/// A date range's figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    /// First and last day, inclusive (YYYY-MM-DD).
    pub from: String,
    pub to: String,
    pub totals: Figures,
    /// Each day of the range with visits or other figures (days without are left out).
    pub days: Vec<DayFigures>,
    /// Visits by weekday (0 Monday ... 6 Sunday) and hour (0-23), in each shop's local time.
    pub busiest_hours: Vec<Vec<i64>>,
    /// The most ordered items, most first (at most 10).
    pub top_items: Vec<ItemCount>,
    /// Each shop's figures, most visits first.
    pub shops: Vec<ShopFigures>,
}

/// Figures over some days.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Figures {
    pub visits: i64,
    pub returning_visits: i64,
    /// Returning visits / visits, 0 to 1 (none without visits).
    pub returning_rate: Option<f64>,
    /// Mean dwell of the visits whose departure was seen, seconds.
    pub average_dwell_s: Option<f64>,
    /// Private feedback given, and the share scoring 4 or 5 (0 to 1).
    pub feedback: i64,
    pub satisfaction: Option<f64>,
    pub average_score: Option<f64>,
    pub orders: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DayFigures {
    pub day: String,
    pub visits: i64,
    pub returning_visits: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ItemCount {
    pub item: String,
    pub orders: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShopFigures {
    pub shop_id: String,
    pub name: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// Sums of a range's day rows.
#[derive(Default)]
struct Sums {
    visits: i64,
    returning: i64,
    dwell_sum: i64,
    dwell_n: i64,
    feedback: i64,
    satisfied: i64,
    score_sum: i64,
    orders: i64,
}

impl Sums {
    /// From columns 1.. of a row: visits, returning, dwell sum, dwell count, feedback,
    /// satisfied, score sum, orders.
    fn of(row: &tokio_postgres::Row, at: usize) -> Sums {
        Sums {
            visits: row.get(at),
            returning: row.get(at + 1),
            dwell_sum: row.get(at + 2),
            dwell_n: row.get(at + 3),
            feedback: row.get(at + 4),
            satisfied: row.get(at + 5),
            score_sum: row.get(at + 6),
            orders: row.get(at + 7),
        }
    }

    fn add(&mut self, other: &Sums) {
        self.visits += other.visits;
        self.returning += other.returning;
        self.dwell_sum += other.dwell_sum;
        self.dwell_n += other.dwell_n;
        self.feedback += other.feedback;
        self.satisfied += other.satisfied;
        self.score_sum += other.score_sum;
        self.orders += other.orders;
    }

    fn figures(&self) -> Figures {
        let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
        Figures {
            visits: self.visits,
            returning_visits: self.returning,
            returning_rate: ratio(self.returning, self.visits),
            average_dwell_s: ratio(self.dwell_sum, self.dwell_n),
            feedback: self.feedback,
            satisfaction: ratio(self.satisfied, self.feedback),
            average_score: ratio(self.score_sum, self.feedback),
            orders: self.orders,
        }
    }
}

const SUMS: &str = "sum(visits)::bigint, sum(returning_visits)::bigint, sum(dwell_s_sum)::bigint,
    sum(dwell_visits)::bigint, sum(feedback)::bigint, sum(feedback_satisfied)::bigint,
    sum(feedback_score_sum)::bigint, sum(orders)::bigint";

/// The figures of `scope` from `from` to `to` (inclusive), read from the rollups only. The
/// four queries are pipelined on one connection.
pub async fn report(
    db: &impl GenericClient,
    scope: &Scope,
    from: i64,
    to: i64,
) -> anyhow::Result<Report> {
    let shops: Vec<String> = match scope {
        Scope::Chain => Vec::new(),
        Scope::Shops(shops) => shops.clone(),
    };
    let chain = matches!(scope, Scope::Chain);
    let (days_sql, hours_sql, items_sql) = if chain {
        (
            format!(
                "SELECT to_char(day, 'YYYY-MM-DD'), {SUMS} FROM chain_days
                 WHERE day BETWEEN date '1970-01-01' + $1::int AND date '1970-01-01' + $2::int
                 GROUP BY day ORDER BY day"
            ),
            "SELECT extract(isodow FROM day)::int - 1, hour::int, sum(visits)::bigint
             FROM chain_hours WHERE day BETWEEN date '1970-01-01' + $1::int AND date '1970-01-01' + $2::int
             GROUP BY 1, 2",
            "SELECT item, sum(orders)::bigint FROM chain_day_items
             WHERE day BETWEEN date '1970-01-01' + $1::int AND date '1970-01-01' + $2::int
             GROUP BY item ORDER BY 2 DESC, item LIMIT 10",
        )
    } else {
        (
            format!(
                "SELECT to_char(day, 'YYYY-MM-DD'), {SUMS} FROM shop_days
                 WHERE day BETWEEN date '1970-01-01' + $1::int AND date '1970-01-01' + $2::int AND shop_id = ANY($3)
                 GROUP BY day ORDER BY day"
            ),
            "SELECT extract(isodow FROM day)::int - 1, hour::int, sum(visits)::bigint
             FROM shop_hours WHERE day BETWEEN date '1970-01-01' + $1::int AND date '1970-01-01' + $2::int
                AND shop_id = ANY($3)
             GROUP BY 1, 2",
            "SELECT item, sum(orders)::bigint FROM shop_day_items
             WHERE day BETWEEN date '1970-01-01' + $1::int AND date '1970-01-01' + $2::int AND shop_id = ANY($3)
             GROUP BY item ORDER BY 2 DESC, item LIMIT 10",
        )
    };
    let shops_sql = format!(
        "SELECT d.*, s.name FROM (
            SELECT shop_id, {SUMS} FROM shop_days
            WHERE day BETWEEN date '1970-01-01' + $1::int AND date '1970-01-01' + $2::int AND ($4 OR shop_id = ANY($3))
            GROUP BY shop_id
         ) d JOIN shops s USING (shop_id) ORDER BY 2 DESC, 1"
    );
    // Day numbers, not text: a text parameter cast to a date is parsed again for every row
    // (the cast depends on DateStyle, so it is not folded), which tripled a year's call.
    let (first, last) = (i32::try_from(from)?, i32::try_from(to)?);
    let both: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&first, &last, &shops];
    let params = if chain { &both[..2] } else { &both[..] };
    let shop_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&first, &last, &shops, &chain];
    let (days, hours, items, per_shop) = tokio::try_join!(
        db.query(&days_sql, params),
        db.query(hours_sql, params),
        db.query(items_sql, params),
        db.query(&shops_sql, &shop_params),
    )?;
    let mut totals = Sums::default();
    let days = days
        .iter()
        .map(|row| {
            let sums = Sums::of(row, 1);
            totals.add(&sums);
            DayFigures {
                day: row.get(0),
                visits: sums.visits,
                returning_visits: sums.returning,
            }
        })
        .collect();
    let mut busiest_hours = vec![vec![0i64; 24]; 7];
    for row in &hours {
        let (weekday, hour, visits): (i32, i32, i64) = (row.get(0), row.get(1), row.get(2));
        busiest_hours[weekday.clamp(0, 6) as usize][hour.clamp(0, 23) as usize] += visits;
    }
    Ok(Report {
        from: format_day(from),
        to: format_day(to),
        totals: totals.figures(),
        days,
        busiest_hours,
        top_items: items
            .iter()
            .map(|r| ItemCount {
                item: r.get(0),
                orders: r.get(1),
            })
            .collect(),
        shops: per_shop
            .iter()
            .map(|r| ShopFigures {
                shop_id: r.get(0),
                figures: Sums::of(r, 1).figures(),
                name: r.get(9),
            })
            .collect(),
    })
}
