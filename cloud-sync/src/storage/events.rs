//! The boxes' events: stored per stream (replays of a `(stream, seq)` are no-ops) and added
//! to the analytics rollups in the same transaction, each stream's acknowledged seq (the
//! highest up to which everything is stored), the gaps a restored database or a restored box
//! leaves, dead letters, and the boxes' status, health and downlink progress.

use std::collections::{BTreeMap, HashSet};

use tastesync_shared::wire::{EventBatch, LEGACY_VERSION, WireEvent};
use tokio_postgres::Transaction;

use super::{analytics, customers, privacy};

/// What may be acknowledged to one stream after a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAck {
    pub shop_id: String,
    /// `None` for a protocol-1 box.
    pub box_id: Option<String>,
    pub stream_id: String,
    /// Everything up to here is stored.
    pub up_to_seq: i64,
    /// The cloud holds other events at and after this seq: the box must start a new stream.
    pub conflict_at: Option<i64>,
}

/// One stream's part of a group of batches.
struct StreamBatches<'a> {
    shop_id: &'a str,
    box_id: Option<&'a str>,
    protocol: i32,
    low_water: i64,
    batches: Vec<&'a EventBatch>,
}

/// What storing batches did: the acks to send, and how many events were new.
#[derive(Debug, Default)]
pub struct Stored {
    pub acks: Vec<StreamAck>,
    pub events: usize,
}

/// Stores the batches of one or more streams in one transaction (events already stored are
/// skipped) and returns, for each stream, what may be acknowledged.
///
/// A batch's low-water mark above the stream's acknowledged seq means this database lost
/// acknowledged events (restored from a backup): the missing seqs are recorded as a gap and
/// the stream moves on to the mark. A batch that replays a seq the stream already holds
/// with a different event means the box's store went back in time (restored from a backup,
/// or copied): nothing from that seq on is stored, the conflict is recorded, and the box is
/// told to start a new stream.
pub async fn store_batches(tx: &Transaction<'_>, batches: &[EventBatch]) -> anyhow::Result<Stored> {
    // Rows are locked in one order (shops, boxes, streams sorted), so concurrent instances
    // cannot deadlock.
    let mut streams: BTreeMap<String, StreamBatches> = BTreeMap::new();
    for batch in batches {
        let entry = streams
            .entry(batch.stream())
            .or_insert_with(|| StreamBatches {
                shop_id: &batch.shop_id,
                box_id: batch.box_id.as_deref(),
                protocol: batch.v as i32,
                low_water: 0,
                batches: Vec::new(),
            });
        entry.low_water = entry.low_water.max(batch.low_water.unwrap_or(0));
        entry.batches.push(batch);
    }
    let mut shops: Vec<&str> = streams.values().map(|s| s.shop_id).collect();
    shops.sort_unstable();
    shops.dedup();
    tx.execute(
        "INSERT INTO shops (shop_id) SELECT unnest($1::text[]) ON CONFLICT (shop_id) DO NOTHING",
        &[&shops],
    )
    .await?;
    let mut boxes: Vec<(&str, &str)> = streams
        .values()
        .filter_map(|s| Some((s.box_id?, s.shop_id)))
        .collect();
    boxes.sort_unstable();
    boxes.dedup_by_key(|(b, _)| *b);
    let (box_ids, box_shops): (Vec<&str>, Vec<&str>) = boxes.into_iter().unzip();
    tx.execute(
        "INSERT INTO boxes (box_id, shop_id)
         SELECT b, s FROM unnest($1::text[], $2::text[]) AS u(b, s)
         ON CONFLICT (box_id) DO NOTHING",
        &[&box_ids, &box_shops],
    )
    .await?;

    // Each stream's row, created if new, then locked (a lock writes no new row version, which
    // an upsert's update would, for every stream of every group): its acknowledged seq and
    // owner.
    let ids: Vec<&str> = streams.keys().map(String::as_str).collect();
    let shop_of: Vec<&str> = streams.values().map(|s| s.shop_id).collect();
    let box_of: Vec<Option<&str>> = streams.values().map(|s| s.box_id).collect();
    let protocol_of: Vec<i32> = streams.values().map(|s| s.protocol).collect();
    tx.execute(
        "INSERT INTO streams (stream_id, shop_id, box_id, protocol)
         SELECT i::uuid, s, b, p
         FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS u(i, s, b, p)
         ORDER BY i
         ON CONFLICT (stream_id) DO NOTHING",
        &[&ids, &shop_of, &box_of, &protocol_of],
    )
    .await?;
    let rows = tx
        .query(
            "SELECT stream_id::text, acked_seq, box_id FROM streams
             WHERE stream_id = ANY($1::text[]::uuid[]) ORDER BY stream_id FOR UPDATE",
            &[&ids],
        )
        .await?;
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    let mut conflicts: BTreeMap<String, i64> = BTreeMap::new();
    let mut foreign: Vec<String> = Vec::new();
    for row in &rows {
        let (id, acked_seq, owner): (String, i64, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        let stream = &streams[&id];
        match (owner.as_deref(), stream.box_id) {
            (Some(owner), Some(sender)) if owner != sender => {
                // Another box's stream: a store copied to another box. Its events must go to
                // a stream of its own; nothing of it is stored here.
                conflicts.insert(id.clone(), stream.low_water + 1);
                foreign.push(id.clone());
            }
            (None, Some(sender)) => {
                // A shop's legacy stream, continued by its box upgraded in place.
                tx.execute(
                    "UPDATE streams SET box_id = $2 WHERE stream_id = $1::text::uuid",
                    &[&id, &sender],
                )
                .await?;
            }
            _ => {}
        }
        acked.insert(id, acked_seq);
    }

    for (id, stream) in &streams {
        let acked_seq = acked[id];
        if stream.low_water > acked_seq && !conflicts.contains_key(id) {
            record_restore_gap(tx, id, acked_seq, stream.low_water).await?;
            acked.insert(id.clone(), stream.low_water);
            // The shop's downlink versions went back with the database too: move them past
            // anything its boxes may hold, or they would take new changes for ones they have.
            let head: i64 = tx
                .query_one(
                    "SELECT downlink_version FROM shops WHERE shop_id = $1 FOR UPDATE",
                    &[&stream.shop_id],
                )
                .await?
                .get(0);
            customers::renumber_changes(tx, stream.shop_id, head + customers::RESTORE_JUMP).await?;
        }
    }
    find_conflicts(tx, &streams, &acked, &mut conflicts).await?;

    // Events of erased customers still in a box's outbox lose their personal fields here.
    let mut to_store: Vec<(&str, &StreamBatches, &WireEvent)> = Vec::new();
    for (id, stream) in &streams {
        let stop = conflicts.get(id).copied().unwrap_or(i64::MAX);
        for batch in &stream.batches {
            for e in batch.events.iter().filter(|e| e.seq < stop) {
                to_store.push((id, stream, e));
            }
        }
    }
    let erased = privacy::erased_among(
        tx,
        to_store
            .iter()
            .filter_map(|(_, _, e)| analytics::customer_ref(&e.body)),
    )
    .await?;
    let scrubbed: Vec<Option<serde_json::Value>> = to_store
        .iter()
        .map(|(_, _, e)| {
            analytics::customer_ref(&e.body)
                .filter(|r| erased.contains(*r))
                .map(|_| privacy::scrub(&e.body))
        })
        .collect();
    // One statement for all the events (row-by-row inserts cut the ingest rate by 4).
    let mut columns = EventColumns::default();
    for ((id, stream, e), scrubbed) in to_store.iter().zip(&scrubbed) {
        columns.push(id, stream, e, scrubbed.as_ref().unwrap_or(&e.body));
    }
    let inserted = columns.insert(tx).await?;
    let new_events: Vec<analytics::NewEvent> = to_store
        .iter()
        .zip(&scrubbed)
        .filter(|((id, _, e), _)| inserted.contains(&(id.to_string(), e.seq)))
        .map(|((_, stream, e), scrubbed)| analytics::NewEvent {
            shop_id: stream.shop_id,
            kind: &e.kind,
            at_ms: e.at_ms as i64,
            body: scrubbed.as_ref().unwrap_or(&e.body),
        })
        .collect();
    analytics::record(tx, &new_events).await?;
    update_health(tx, &streams).await?;

    // Each stream advances over the contiguous run of stored seqs after its acknowledged one
    // (instances sharing the load may store a stream's batches out of order).
    tx.execute(
        "UPDATE streams SET acked_seq = r.up_to, last_seen = now() FROM (
            SELECT s.stream_id, max(e.seq) AS up_to
            FROM streams s CROSS JOIN LATERAL (
                SELECT seq, seq - row_number() OVER (ORDER BY seq) AS run
                FROM events WHERE events.stream_id = s.stream_id AND events.seq > s.acked_seq
            ) e
            WHERE s.stream_id = ANY($1::text[]::uuid[]) AND e.run = s.acked_seq
            GROUP BY s.stream_id
         ) r WHERE streams.stream_id = r.stream_id",
        &[&ids],
    )
    .await?;
    let rows = tx
        .query(
            "SELECT stream_id::text, acked_seq FROM streams WHERE stream_id = ANY($1::text[]::uuid[])",
            &[&ids],
        )
        .await?;
    let acks = rows
        .iter()
        .map(|row| {
            let id: String = row.get(0);
            let stream = &streams[&id];
            let conflict_at = conflicts.get(&id).copied();
            let stored: i64 = row.get(1);
            // Below a conflict, everything was stored with the same events; of a foreign
            // stream nothing was.
            let up_to_seq = match conflict_at {
                _ if foreign.contains(&id) => stream.low_water,
                Some(at) => stored.min(at - 1),
                None => stored,
            };
            StreamAck {
                shop_id: stream.shop_id.to_string(),
                box_id: stream.box_id.map(String::from),
                up_to_seq,
                conflict_at,
                stream_id: id,
            }
        })
        .collect();
    Ok(Stored {
        acks,
        events: inserted.len(),
    })
}

/// Records the seqs in `(acked, low_water]` the stream does not hold (acknowledged once, then
/// lost with the database's restore) and moves its acknowledged seq to the mark.
async fn record_restore_gap(
    tx: &Transaction<'_>,
    stream_id: &str,
    acked: i64,
    low_water: i64,
) -> anyhow::Result<()> {
    let inserted = tx
        .execute(
            "INSERT INTO stream_gaps (stream_id, from_seq, to_seq, kind)
             SELECT $1::text::uuid, prev + 1, seq - 1, 'restore' FROM (
                SELECT seq, lag(seq, 1, $2) OVER (ORDER BY seq) AS prev FROM (
                    SELECT seq FROM events
                    WHERE stream_id = $1::text::uuid AND seq > $2 AND seq <= $3
                    UNION ALL SELECT $3 + 1
                ) present
             ) runs WHERE seq > prev + 1",
            &[&stream_id, &acked, &low_water],
        )
        .await?;
    tx.execute(
        "UPDATE streams SET acked_seq = $2 WHERE stream_id = $1::text::uuid",
        &[&stream_id, &low_water],
    )
    .await?;
    tracing::warn!(
        stream = stream_id,
        from_seq = acked + 1,
        to_seq = low_water,
        ranges = inserted,
        "a box had events acknowledged that this database does not hold (restored from a \
         backup?); recorded as a gap"
    );
    Ok(())
}

/// Finds, for batches that replay seqs the stream already acknowledged, the first seq where
/// the stored event differs from the one sent. Only replays are checked: a new seq cannot
/// conflict, and replays are rare (a reconnection, a lost ack).
async fn find_conflicts(
    tx: &Transaction<'_>,
    streams: &BTreeMap<String, StreamBatches<'_>>,
    acked: &BTreeMap<String, i64>,
    conflicts: &mut BTreeMap<String, i64>,
) -> anyhow::Result<()> {
    let (mut ids, mut seqs, mut event_ids) = (vec![], vec![], vec![]);
    for (id, stream) in streams
        .iter()
        .filter(|(id, _)| !conflicts.contains_key(*id))
    {
        let acked = acked[id];
        for batch in &stream.batches {
            for e in batch.events.iter().take_while(|e| e.seq <= acked) {
                ids.push(id.as_str());
                seqs.push(e.seq);
                event_ids.push(e.event_id.as_str());
            }
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    let rows = tx
        .query(
            "SELECT b.stream_id, min(b.seq)
             FROM unnest($1::text[], $2::bigint[], $3::text[]) AS b(stream_id, seq, event_id)
             JOIN events e ON e.stream_id = b.stream_id::uuid AND e.seq = b.seq
             WHERE e.event_id <> b.event_id GROUP BY b.stream_id",
            &[&ids, &seqs, &event_ids],
        )
        .await?;
    for row in rows {
        let (id, at): (String, i64) = (row.get(0), row.get(1));
        let to_seq = streams[&id]
            .batches
            .iter()
            .filter_map(|b| b.events.last())
            .map(|e| e.seq)
            .max()
            .unwrap_or(at);
        // Once per conflict: a protocol-1 box cannot start a new stream and sends it again.
        tx.execute(
            "INSERT INTO stream_gaps (stream_id, from_seq, to_seq, kind)
             SELECT $1::text::uuid, $2, $3, 'conflict'
             WHERE NOT EXISTS (SELECT 1 FROM stream_gaps
                 WHERE stream_id = $1::text::uuid AND from_seq = $2 AND kind = 'conflict')",
            &[&id, &at, &to_seq],
        )
        .await?;
        tracing::warn!(
            stream = id,
            seq = at,
            "a box sent other events for seqs this stream already holds (its store was \
             restored or copied); it is told to start a new stream"
        );
        let entry = conflicts.entry(id).or_insert(at);
        *entry = (*entry).min(at);
    }
    Ok(())
}

/// Column vectors for one `INSERT ... SELECT FROM unnest(...)`.
#[derive(Default)]
struct EventColumns<'a> {
    shop: Vec<&'a str>,
    box_id: Vec<Option<&'a str>>,
    stream: Vec<&'a str>,
    seq: Vec<i64>,
    event_id: Vec<&'a str>,
    kind: Vec<&'a str>,
    at_ms: Vec<i64>,
    body: Vec<&'a serde_json::Value>,
}

impl<'a> EventColumns<'a> {
    fn push(
        &mut self,
        stream_id: &'a str,
        stream: &StreamBatches<'a>,
        e: &'a WireEvent,
        body: &'a serde_json::Value,
    ) {
        self.shop.push(stream.shop_id);
        self.box_id.push(stream.box_id);
        self.stream.push(stream_id);
        self.seq.push(e.seq);
        self.event_id.push(&e.event_id);
        self.kind.push(&e.kind);
        self.at_ms.push(e.at_ms as i64);
        self.body.push(body);
    }

    /// Inserts the events not stored yet; returns their (stream, seq).
    async fn insert(&self, tx: &Transaction<'_>) -> anyhow::Result<HashSet<(String, i64)>> {
        if self.seq.is_empty() {
            return Ok(HashSet::new());
        }
        let rows = tx
            .query(
                "INSERT INTO events (shop_id, box_id, stream_id, seq, event_id, kind, at_ms, body)
             SELECT s, b, i::uuid, q, e, k, a, j
             FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                         $6::text[], $7::bigint[], $8::jsonb[]) AS u(s, b, i, q, e, k, a, j)
             ON CONFLICT (stream_id, seq) DO NOTHING
             RETURNING stream_id::text, seq",
                &[
                    &self.shop,
                    &self.box_id,
                    &self.stream,
                    &self.seq,
                    &self.event_id,
                    &self.kind,
                    &self.at_ms,
                    &self.body,
                ],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// Keeps each box's latest `box_health` report (backlog, scanner, storage) for HQ.
async fn update_health(
    tx: &Transaction<'_>,
    streams: &BTreeMap<String, StreamBatches<'_>>,
) -> anyhow::Result<()> {
    let mut latest: BTreeMap<&str, (i64, &serde_json::Value)> = BTreeMap::new();
    for stream in streams.values() {
        let Some(box_id) = stream.box_id else {
            continue;
        };
        for batch in &stream.batches {
            for e in batch.events.iter().filter(|e| e.kind == "box_health") {
                let at = e.at_ms as i64;
                if latest.get(box_id).is_none_or(|(seen, _)| *seen <= at) {
                    latest.insert(box_id, (at, &e.body));
                }
            }
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    let boxes: Vec<&str> = latest.keys().copied().collect();
    let at: Vec<i64> = latest.values().map(|(at, _)| *at).collect();
    let bodies: Vec<&serde_json::Value> = latest.values().map(|(_, b)| *b).collect();
    tx.execute(
        "UPDATE boxes SET health = u.h, health_at_ms = u.a
         FROM unnest($1::text[], $2::bigint[], $3::jsonb[]) AS u(b, a, h)
         WHERE boxes.box_id = u.b AND (boxes.health_at_ms IS NULL OR boxes.health_at_ms <= u.a)",
        &[&boxes, &at, &bodies],
    )
    .await?;
    Ok(())
}

/// Records a refused message with the reason.
pub async fn dead_letter(
    tx: &Transaction<'_>,
    topic: &str,
    payload: &[u8],
    reason: &str,
) -> anyhow::Result<i64> {
    Ok(tx
        .query_one(
            "INSERT INTO dead_letters (topic, payload, reason) VALUES ($1, $2, $3) RETURNING id",
            &[&topic, &payload, &reason],
        )
        .await?
        .get(0))
}

/// Records a box's (or, for protocol 1, a shop's) online/offline status.
pub async fn set_status(
    tx: &Transaction<'_>,
    shop_id: &str,
    box_id: Option<&str>,
    status: &tastesync_shared::wire::BoxStatus,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO shops (shop_id) VALUES ($1) ON CONFLICT (shop_id) DO NOTHING",
        &[&shop_id],
    )
    .await?;
    match box_id {
        Some(box_id) => {
            tx.execute(
                "INSERT INTO boxes (box_id, shop_id, online, software, status_at, last_seen)
                 VALUES ($1, $2, $3, $4, now(), now())
                 ON CONFLICT (box_id) DO UPDATE SET shop_id = $2, online = $3,
                    software = coalesce($4, boxes.software), status_at = now(), last_seen = now()",
                &[&box_id, &shop_id, &status.online, &status.software],
            )
            .await?;
        }
        None => {
            debug_assert_eq!(status.v, LEGACY_VERSION);
            tx.execute(
                "UPDATE shops SET online = $2, last_seen = now() WHERE shop_id = $1",
                &[&shop_id, &status.online],
            )
            .await?;
        }
    }
    Ok(())
}

/// Records the downlink version a box (`None`: a shop's protocol-1 box) reported holding.
/// The latest report wins: a box whose store was recreated starts again from 0.
pub async fn record_downlink_applied(
    tx: &Transaction<'_>,
    shop_id: &str,
    box_id: Option<&str>,
    version: i64,
) -> anyhow::Result<()> {
    match box_id {
        Some(box_id) => {
            tx.execute(
                "UPDATE boxes SET downlink_applied = $3 WHERE box_id = $1 AND shop_id = $2",
                &[&box_id, &shop_id, &version],
            )
            .await?
        }
        None => {
            tx.execute(
                "UPDATE shops SET legacy_downlink_applied = $2 WHERE shop_id = $1",
                &[&shop_id, &version],
            )
            .await?
        }
    };
    Ok(())
}
