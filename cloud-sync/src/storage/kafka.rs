//! The Kafka outbox: what the relay still has to publish, and its marks.
//!
//! Shop events: the events table is the outbox. A stream's `kafka_marks.published_seq` says
//! how far its events are on Kafka; the relay publishes the seqs after it up to the stream's
//! `acked_seq`. That bound is what makes a cursor safe here: `acked_seq` is raised in the
//! transaction that stores the events it covers, under the stream's row lock, and only over
//! a contiguous run, so every event at or below it is committed and visible in any snapshot
//! that sees it. A transaction still in flight can never be skipped (the trap of a global
//! "highest id seen" cursor), and a stream's events leave in seq order even when two
//! instances stored its batches out of order.
//!
//! HQ's customer changes: `kafka_customer_outbox`, one row per change, written under the
//! customer's lock in the changing transaction. A row holds the customer's ref only: the
//! relay publishes the record as it is when it publishes (or a tombstone), so nothing
//! personal waits in the outbox and an erasure has nothing to scrub here. Published rows are
//! kept `kafka.outbox_retention_hours`, then trimmed.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::{GenericClient, Transaction};

/// The channel the relay listens on for a wake-up (no payload): events were stored or a
/// customer changed. Only a hint: the relay also polls.
pub const CHANNEL: &str = "tastesync_kafka";

/// One stored event due on Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    pub stream_id: String,
    pub shop_id: String,
    /// `None` for a protocol-1 box.
    pub box_id: Option<String>,
    pub seq: i64,
    pub event_id: String,
    pub kind: String,
    pub at_ms: i64,
    /// The body as stored, JSON text.
    pub body: String,
}

/// Events due on Kafka, at most `max_events`: of at most `streams` streams (those waiting
/// longest first), each stream's next `per_stream` events after its mark, in seq order.
pub async fn pending_events(
    db: &impl GenericClient,
    streams: i64,
    per_stream: i64,
    max_events: usize,
) -> anyhow::Result<Vec<PendingEvent>> {
    let rows = db
        .query(
            "WITH due AS (
                SELECT s.stream_id, s.shop_id, s.box_id, s.acked_seq,
                       coalesce(m.published_seq, 0) AS after,
                       coalesce(m.published_at, s.created_at) AS waiting_since
                FROM streams s LEFT JOIN kafka_marks m USING (stream_id)
                WHERE s.acked_seq > coalesce(m.published_seq, 0)
                ORDER BY waiting_since, stream_id LIMIT $1
             )
             SELECT d.stream_id::text, d.shop_id, d.box_id, e.seq, e.event_id, e.kind, e.at_ms,
                    e.body::text
             FROM due d CROSS JOIN LATERAL (
                SELECT seq, event_id, kind, at_ms, body FROM events
                WHERE events.stream_id = d.stream_id AND seq > d.after AND seq <= d.acked_seq
                ORDER BY seq LIMIT $2
             ) e
             ORDER BY d.waiting_since, d.stream_id, e.seq LIMIT $3",
            &[&streams, &per_stream, &(max_events as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PendingEvent {
            stream_id: r.get(0),
            shop_id: r.get(1),
            box_id: r.get(2),
            seq: r.get(3),
            event_id: r.get(4),
            kind: r.get(5),
            at_ms: r.get(6),
            body: r.get(7),
        })
        .collect())
}

/// Records that each stream's events up to its seq are on Kafka (a mark never goes back).
pub async fn mark_published(
    db: &impl GenericClient,
    marks: &[(String, i64)],
) -> anyhow::Result<()> {
    if marks.is_empty() {
        return Ok(());
    }
    let (ids, seqs): (Vec<&str>, Vec<i64>) = marks.iter().map(|(s, q)| (s.as_str(), *q)).unzip();
    db.execute(
        "INSERT INTO kafka_marks AS m (stream_id, published_seq)
         SELECT * FROM unnest($1::text[]::uuid[], $2::bigint[]) ORDER BY 1
         ON CONFLICT (stream_id) DO UPDATE
            SET published_seq = greatest(m.published_seq, excluded.published_seq),
                published_at = now()",
        &[&ids, &seqs],
    )
    .await?;
    Ok(())
}

/// Notes a change to a customer for the compacted customers topic, within the changing
/// transaction (the caller holds the customer's lock, so a customer's rows are numbered in
/// the order their changes commit).
pub async fn customer_changed(tx: &Transaction<'_>, customer_ref: &str) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO kafka_customer_outbox (customer_ref, event_id) VALUES ($1, $2)",
        &[&customer_ref, &uuid::Uuid::now_v7()],
    )
    .await?;
    tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
    Ok(())
}

/// A customer's change due on Kafka, with their record as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCustomer {
    /// The outbox rows this publication covers.
    pub ids: Vec<i64>,
    pub customer_ref: String,
    /// The latest change's id (the record's CloudEvents id).
    pub event_id: String,
    pub changed_at_ms: i64,
    /// What the customers topic says of them now.
    pub state: CustomerState,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CustomerState {
    /// Their record as HQ holds it (JSON), for the compacted topic.
    Current(serde_json::Value),
    /// Deleted at HQ: a tombstone.
    Deleted,
    /// Erased: a tombstone, so that downstream copies are erased too.
    Erased,
}

/// The oldest unpublished customer changes (at most `limit` rows), one entry per customer
/// with their record as it is now. Only what the console shows of a customer goes out:
/// never the tags' ids or the EID identity key.
pub async fn pending_customers(
    db: &impl GenericClient,
    limit: i64,
) -> anyhow::Result<Vec<PendingCustomer>> {
    let rows = db
        .query(
            "WITH due AS (
                SELECT id, customer_ref, event_id, changed_at FROM kafka_customer_outbox
                WHERE published_at IS NULL ORDER BY id LIMIT $1
             ), latest AS (
                SELECT customer_ref, array_agg(id ORDER BY id) AS ids,
                       (array_agg(event_id::text ORDER BY id DESC))[1] AS event_id,
                       max(changed_at) AS changed_at, min(id) AS first_id
                FROM due GROUP BY customer_ref
             )
             SELECT l.ids, l.customer_ref, l.event_id,
                    (extract(epoch FROM l.changed_at) * 1000)::bigint,
                    CASE WHEN c.customer_ref IS NOT NULL THEN jsonb_build_object(
                        'customer_ref', c.customer_ref, 'display_name', c.display_name,
                        'tier', c.tier, 'notes', c.notes, 'preferences', c.preferences,
                        'shops', to_jsonb(c.shops), 'tags', cardinality(c.tag_ids),
                        'eid', c.eid_identity_key IS NOT NULL,
                        'updated_at', tastesync_rfc3339(c.updated_at)) END,
                    EXISTS (SELECT 1 FROM erasures x WHERE x.customer_ref = l.customer_ref)
             FROM latest l LEFT JOIN customers c USING (customer_ref)
             ORDER BY l.first_id",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let record: Option<serde_json::Value> = r.get(4);
            let erased: bool = r.get(5);
            PendingCustomer {
                ids: r.get(0),
                customer_ref: r.get(1),
                event_id: r.get(2),
                changed_at_ms: r.get(3),
                state: match record {
                    Some(record) => CustomerState::Current(record),
                    None if erased => CustomerState::Erased,
                    None => CustomerState::Deleted,
                },
            }
        })
        .collect())
}

/// Marks customer changes as published.
pub async fn customers_published(db: &impl GenericClient, ids: &[i64]) -> anyhow::Result<()> {
    if !ids.is_empty() {
        db.execute(
            "UPDATE kafka_customer_outbox SET published_at = now() WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    }
    Ok(())
}

/// Deletes customer changes published more than `retention` ago; returns how many.
pub async fn trim_customer_outbox(
    db: &impl GenericClient,
    retention: Duration,
) -> anyhow::Result<u64> {
    Ok(db
        .execute(
            "DELETE FROM kafka_customer_outbox
             WHERE published_at < now() - make_interval(secs => $1)",
            &[&(retention.as_secs_f64())],
        )
        .await?)
}

/// How much waits for Kafka: events and customer changes, and the oldest one's age.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Backlog {
    /// Stored events not yet on Kafka (acknowledged to their boxes, in order, or later).
    pub events: i64,
    /// When the oldest of them was stored (RFC 3339), if any.
    pub oldest_event_stored_at: Option<String>,
    /// HQ's customer changes not yet on Kafka.
    pub customer_changes: i64,
    pub oldest_customer_change_at: Option<String>,
    /// How long ago the oldest waiting event was stored, seconds (for `/metrics`).
    #[serde(skip)]
    pub oldest_event_age_s: Option<f64>,
}

/// A shop's events waiting for the relay.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Waiting {
    /// Stored events not yet on Kafka.
    pub events: i64,
    /// When the oldest of them was stored (RFC 3339), if any.
    pub oldest_event_stored_at: Option<String>,
}

/// What waits for the relay, per shop (of `only`, or all); shops with nothing waiting are
/// left out.
pub async fn waiting_per_shop(
    db: &impl GenericClient,
    only: Option<&[&str]>,
) -> anyhow::Result<HashMap<String, Waiting>> {
    let rows = db
        .query(
            "SELECT s.shop_id, sum(s.acked_seq - coalesce(m.published_seq, 0))::bigint,
                    tastesync_rfc3339(min(e.received_at))
             FROM streams s LEFT JOIN kafka_marks m USING (stream_id)
             CROSS JOIN LATERAL (
                SELECT received_at FROM events
                WHERE events.stream_id = s.stream_id AND seq > coalesce(m.published_seq, 0)
                ORDER BY seq LIMIT 1
             ) e
             WHERE s.acked_seq > coalesce(m.published_seq, 0)
               AND ($1::text[] IS NULL OR s.shop_id = ANY($1))
             GROUP BY s.shop_id",
            &[&only],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let waiting = Waiting {
                events: r.get(1),
                oldest_event_stored_at: r.get(2),
            };
            (r.get(0), waiting)
        })
        .collect())
}

/// The whole chain's backlog, or `shop`'s events only.
pub async fn backlog(db: &impl GenericClient, shop: Option<&str>) -> anyhow::Result<Backlog> {
    let row = db
        .query_one(
            "WITH due AS (
                SELECT s.stream_id, s.acked_seq - coalesce(m.published_seq, 0) AS events,
                       coalesce(m.published_seq, 0) AS after
                FROM streams s LEFT JOIN kafka_marks m USING (stream_id)
                WHERE s.acked_seq > coalesce(m.published_seq, 0)
                  AND ($1::text IS NULL OR s.shop_id = $1)
             )
             SELECT coalesce(sum(d.events), 0)::bigint,
                    tastesync_rfc3339(min(oldest.received_at)),
                    (SELECT count(*) FROM kafka_customer_outbox
                     WHERE published_at IS NULL AND $1::text IS NULL),
                    (SELECT tastesync_rfc3339(min(changed_at)) FROM kafka_customer_outbox
                     WHERE published_at IS NULL AND $1::text IS NULL),
                    extract(epoch FROM now() - min(oldest.received_at))::float8
             FROM due d LEFT JOIN LATERAL (SELECT received_at FROM events
                WHERE events.stream_id = d.stream_id AND seq > d.after
                ORDER BY seq LIMIT 1) oldest ON true",
            &[&shop],
        )
        .await?;
    Ok(Backlog {
        events: row.get(0),
        oldest_event_stored_at: row.get(1),
        customer_changes: row.get(2),
        oldest_customer_change_at: row.get(3),
        oldest_event_age_s: row.get(4),
    })
}
