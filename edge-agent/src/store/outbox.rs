//! The outbox: every domain event the box produces (arrivals, departures, acknowledgements,
//! orders, feedback, and `box_health` reports) is written here in the same transaction as
//! its local effect, with an `event_id` (UUIDv7) and a gap-free `seq` in the store's stream
//! (an AUTOINCREMENT key: a rolled-back transaction takes its number back with it, and
//! numbers are never reused). Commits are durable (`synchronous=FULL`). Rows leave only when
//! the cloud acknowledges them (the uplink).
//!
//! The stream id names this numbering for the cloud. If the cloud reports that it holds other
//! events under the same numbers (this store was restored from a backup, or copied to another
//! box), the store starts a new stream: a new id, its waiting events renumbered from 1.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use uuid::Uuid;

use super::Store;
use crate::Millis;

/// One pending event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRow {
    pub seq: i64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub at_ms: Millis,
    /// The event's JSON.
    pub body: serde_json::Value,
}

/// Gives a store its first stream id, unless it is a store of the first release whose events
/// belong to its shop's legacy stream (see [`Store::stream_id`]).
pub(super) fn name_new_stream(conn: &Connection) -> anyhow::Result<()> {
    conn.execute(
        "UPDATE meta SET stream_id = ?1 WHERE stream_id IS NULL AND stream_legacy = 0",
        [Uuid::now_v7().to_string()],
    )?;
    Ok(())
}

/// Appends an event inside the caller's transaction; returns its seq. An event too large for
/// any batch (`MAX_EVENT_BYTES`) is refused: callers validate what they accept so that it
/// never comes to that.
pub(super) fn append(
    conn: &Connection,
    kind: &str,
    at_ms: Millis,
    body: &serde_json::Value,
) -> anyhow::Result<i64> {
    let body = body.to_string();
    if body.len() + kind.len() + 128 > tastesync_shared::wire::MAX_EVENT_BYTES {
        anyhow::bail!(
            "a {kind} event of {} bytes is over the {}-byte limit",
            body.len(),
            tastesync_shared::wire::MAX_EVENT_BYTES
        );
    }
    let event_id = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        at_ms / 1000,
        ((at_ms % 1000) * 1_000_000) as u32,
    ));
    conn.execute(
        "INSERT INTO outbox (event_id, kind, at_ms, body) VALUES (?1, ?2, ?3, ?4)",
        params![event_id.to_string(), kind, at_ms, body],
    )?;
    Ok(conn.last_insert_rowid())
}

/// The customer reference (HQ's id) of a visit, for event bodies.
pub(super) fn customer_ref_of_visit(conn: &Connection, visit_id: &str) -> anyhow::Result<String> {
    Ok(conn.query_row(
        "SELECT c.customer_ref FROM visits v JOIN customers c ON c.id = v.customer_id WHERE v.visit_id = ?1",
        [visit_id],
        |r| r.get(0),
    )?)
}

impl Store {
    /// Pending events after `after_seq`, oldest first, up to the first stamped at or after
    /// `held_from` (a provisional time, see `crate::clock`; `Millis::MAX`: none held).
    pub fn outbox(
        &self,
        after_seq: i64,
        limit: usize,
        held_from: Millis,
    ) -> anyhow::Result<Vec<OutboxRow>> {
        // While nothing is held (the common case) the query stays a range read of the key.
        let held_from = held_from.min(i64::MAX as Millis) as i64;
        let mut stmt = self.conn.prepare_cached(if held_from == i64::MAX {
            "SELECT seq, event_id, kind, at_ms, body FROM outbox WHERE seq > ?1 AND ?3 = ?3
             ORDER BY seq LIMIT ?2"
        } else {
            "SELECT seq, event_id, kind, at_ms, body FROM outbox WHERE seq > ?1
             AND seq < coalesce((SELECT min(seq) FROM outbox WHERE seq > ?1 AND at_ms >= ?3),
                                9223372036854775807)
             ORDER BY seq LIMIT ?2"
        })?;
        let rows = stmt.query_map(params![after_seq, limit as i64, held_from], |r| {
            let body: String = r.get(4)?;
            Ok(OutboxRow {
                seq: r.get(0)?,
                event_id: r.get(1)?,
                kind: r.get(2)?,
                at_ms: r.get(3)?,
                body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Store {
    /// Records a `box_health` event: the box's own state, for HQ (no local effect), with the
    /// outbox's backlog added (`outbox_pending`, `oldest_unsent_ms`).
    pub fn record_health(&mut self, at_ms: Millis, body: &serde_json::Value) -> anyhow::Result<()> {
        let mut body = body.clone();
        body["outbox_pending"] = self.outbox_pending()?.into();
        body["oldest_unsent_ms"] = self.outbox_oldest_at_ms()?.into();
        let tx = self.write()?;
        append(&tx, "box_health", at_ms, &body)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes events the cloud acknowledged (all up to `seq`); returns how many.
    pub fn delete_outbox_up_to(&mut self, seq: i64) -> anyhow::Result<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM outbox WHERE seq <= ?1", [seq])?)
    }

    /// The seq of the oldest pending event, or of the next event when none is pending.
    pub fn outbox_first_seq(&self) -> anyhow::Result<i64> {
        let first: Option<i64> = self
            .conn
            .query_row("SELECT min(seq) FROM outbox", [], |r| r.get(0))?;
        if let Some(first) = first {
            return Ok(first);
        }
        let last: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(last.unwrap_or(0) + 1)
    }

    /// Events waiting for the cloud.
    pub fn outbox_pending(&self) -> anyhow::Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?)
    }

    /// When the oldest event waiting for the cloud happened.
    pub fn outbox_oldest_at_ms(&self) -> anyhow::Result<Option<Millis>> {
        Ok(self
            .conn
            .query_row("SELECT at_ms FROM outbox ORDER BY seq LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// The store's stream id. A store of the first release continues its shop's legacy
    /// stream (`shop_id`'s: the shop it synced as), fixed here on first use.
    pub fn stream_id(&mut self, shop_id: &str) -> anyhow::Result<String> {
        self.conn.execute(
            "UPDATE meta SET stream_id = ?1 WHERE stream_id IS NULL",
            [tastesync_shared::wire::legacy_stream_id(shop_id)],
        )?;
        Ok(self
            .conn
            .query_row("SELECT stream_id FROM meta", [], |r| r.get(0))?)
    }

    /// The stream id if the store has one yet (`tastesync-edge identity`).
    pub fn current_stream_id(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT stream_id FROM meta", [], |r| r.get(0))?)
    }

    /// Starts a new stream for the waiting events: a new id, and the events renumbered from 1
    /// in their order, in one transaction. Returns the new id.
    pub fn start_new_stream(&mut self) -> anyhow::Result<String> {
        let id = Uuid::now_v7().to_string();
        let tx = self.write()?;
        tx.execute_batch(
            "CREATE TEMP TABLE renumbered AS
                SELECT seq AS old, row_number() OVER (ORDER BY seq) AS new FROM outbox;
             UPDATE outbox SET seq = -(SELECT new FROM renumbered WHERE old = outbox.seq);
             UPDATE outbox SET seq = -seq;
             DROP TABLE renumbered;
             UPDATE sqlite_sequence SET seq = (SELECT count(*) FROM outbox) WHERE name = 'outbox';",
        )?;
        tx.execute("UPDATE meta SET stream_id = ?1", [&id])?;
        tx.commit()?;
        Ok(id)
    }
}
