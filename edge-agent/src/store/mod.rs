//! The box's local store: SQLite (bundled, WAL), the only thing on the box's disk.
//!
//! Holds customers, their tag bindings and EID temporary keys, and visits. Raw advertisements
//! are never stored. Every write is one transaction; commits are durable (`synchronous=FULL`).

mod downlink;
pub mod floor;
mod import;
mod migrations;
mod outbox;
mod pos;

use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tastesync_shared::TagId;

use crate::Millis;
use crate::events::{CustomerArrived, CustomerLeft, ZoneChanged};
use crate::resolve::{CustomerId, EidTag, IndexSnapshot};

pub use downlink::Applied;
pub use import::{ImportError, ImportReport, RowError};
pub use outbox::OutboxRow;
pub use pos::{
    ActionOutcome, Alert, Device, DeviceAuth, DeviceKind, OwnerSummary, PosEvent, Present,
    StaffAction,
};

/// An open store.
/// A visit still open when the daemon stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenVisit {
    pub visit_id: String,
    pub customer: CustomerId,
    pub zone: String,
    pub arrived_at_ms: Millis,
}

pub struct Store {
    conn: Connection,
}

/// A customer as the owner and staff see them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Customer {
    pub id: CustomerId,
    /// The customer's id at HQ (or the owner's own reference): stable across boxes.
    pub customer_ref: String,
    pub display_name: String,
    pub tier: String,
    /// Things staff must know, such as allergies.
    pub notes: String,
    pub preferences: String,
    pub tag_ids: Vec<String>,
    /// Rotation exponent of the customer's EID tag, if they have one.
    pub eid_exponent: Option<u8>,
}

fn forget_clock_anchor(conn: &Connection) -> anyhow::Result<()> {
    conn.execute(
        "UPDATE meta SET provisional_since_ms = NULL, provisional_at_ms = NULL, provisional_boot_ms = NULL",
        [],
    )?;
    Ok(())
}

/// The clocks at a clean stop or a start (see [`Store::take_resumable_visits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopClock {
    pub wall_ms: Millis,
    pub wall_trusted: bool,
    /// Time since boot (`crate::clock::boot_ms`).
    pub boot_ms: Millis,
}

impl StopClock {
    pub fn now() -> StopClock {
        StopClock {
            wall_ms: crate::clock::now_ms(),
            wall_trusted: crate::clock::is_trusted(),
            boot_ms: crate::clock::boot_ms(),
        }
    }
}

/// A visit, open (no `left_at_ms`) or closed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Visit {
    pub visit_id: String,
    pub customer_ref: String,
    pub zone: String,
    pub arrived_at_ms: Millis,
    pub left_at_ms: Option<Millis>,
    pub dwell_s: Option<u64>,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        keep_private(path);
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        set_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store { conn };
        migrations::apply(&mut store.conn)
            .with_context(|| format!("cannot migrate the database {}", path.display()))?;
        outbox::name_new_stream(&store.conn)?;
        Ok(store)
    }

    /// Caps the database at `max_mb` megabytes (0: no cap). Writes past it fail as on a full
    /// disk, which is also how a full disk is tested.
    pub fn limit_size(&self, max_mb: u64) -> anyhow::Result<()> {
        if max_mb > 0 {
            let page_size: u64 = self
                .conn
                .pragma_query_value(None, "page_size", |r| r.get(0))?;
            self.conn
                .pragma_update(None, "max_page_count", max_mb * 1024 * 1024 / page_size)?;
        }
        Ok(())
    }

    /// A counter that triggers bump on every change to customers, tags or EID keys, so the
    /// daemon notices an import by another process without reloading after every visit.
    pub fn customers_revision(&self) -> anyhow::Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT customers_revision FROM meta", [], |r| r.get(0))?)
    }

    /// Everything the in-memory index needs.
    pub fn index_snapshot(&self) -> anyhow::Result<IndexSnapshot> {
        let mut snapshot = IndexSnapshot::default();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT tag_id, customer_id FROM tag_bindings")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
        for row in rows {
            let (text, customer) = row?;
            let tag: TagId = text.parse()?;
            snapshot.tags.push((tag, CustomerId(customer)));
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT t.customer_id, t.exponent, k.epoch, k.temporary_key
             FROM eid_tags t JOIN eid_temporary_keys k USING (customer_id)
             ORDER BY t.customer_id, k.epoch",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let customer = CustomerId(row.get(0)?);
            let exponent: u8 = row.get(1)?;
            let epoch: u16 = row.get(2)?;
            let key: [u8; 16] = row.get(3)?;
            match snapshot.eid_tags.last_mut() {
                Some((c, tag)) if *c == customer => tag.temporary_keys.push((epoch, key)),
                _ => snapshot.eid_tags.push((
                    customer,
                    EidTag {
                        exponent,
                        temporary_keys: vec![(epoch, key)],
                    },
                )),
            }
        }
        Ok(snapshot)
    }

    /// All customers, by reference.
    pub fn customers(&self) -> anyhow::Result<Vec<Customer>> {
        self.customers_where("1 = 1", [])
    }

    pub fn customer(&self, id: CustomerId) -> anyhow::Result<Option<Customer>> {
        Ok(self.customers_where("c.id = ?1", [id.0])?.pop())
    }

    fn customers_where<P: rusqlite::Params>(
        &self,
        condition: &str,
        params: P,
    ) -> anyhow::Result<Vec<Customer>> {
        let sql = format!(
            "SELECT c.id, c.customer_ref, c.display_name, c.tier, c.notes, c.preferences,
                    (SELECT group_concat(tag_id, ';') FROM
                        (SELECT tag_id FROM tag_bindings b WHERE b.customer_id = c.id ORDER BY tag_id)),
                    (SELECT exponent FROM eid_tags e WHERE e.customer_id = c.id)
             FROM customers c WHERE {condition} ORDER BY c.customer_ref"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params, |r| {
            let tags: Option<String> = r.get(6)?;
            Ok(Customer {
                id: CustomerId(r.get(0)?),
                customer_ref: r.get(1)?,
                display_name: r.get(2)?,
                tier: r.get(3)?,
                notes: r.get(4)?,
                preferences: r.get(5)?,
                tag_ids: tags
                    .map(|t| t.split(';').map(String::from).collect())
                    .unwrap_or_default(),
                eid_exponent: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes a customer and everything the box holds about them (bindings, keys, visits).
    /// Returns whether there was such a customer.
    pub fn remove_customer(&mut self, customer_ref: &str) -> anyhow::Result<bool> {
        let removed = self.conn.execute(
            "DELETE FROM customers WHERE customer_ref = ?1",
            [customer_ref],
        )?;
        Ok(removed > 0)
    }

    /// Records the start of a visit (and its first stay, in its zone) and its
    /// `customer_arrived` event, in one transaction.
    pub fn record_arrival(&mut self, arrived: &CustomerArrived) -> anyhow::Result<()> {
        let tx = self.write()?;
        let visit_id = arrived.visit_id.to_string();
        let inserted = tx.execute(
            "INSERT INTO visits (visit_id, customer_id, zone, arrived_at_ms)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (visit_id) DO NOTHING",
            params![
                visit_id,
                arrived.customer.0,
                arrived.zone,
                arrived.arrived_at_ms
            ],
        )?;
        if inserted == 1 {
            floor::open_stay(&tx, &visit_id, &arrived.zone, arrived.arrived_at_ms)?;
            let body = serde_json::json!({
                "visit_id": visit_id,
                "customer_ref": outbox::customer_ref_of_visit(&tx, &visit_id)?,
                "zone": arrived.zone,
                "arrived_at_ms": arrived.arrived_at_ms,
            });
            outbox::append(&tx, "customer_arrived", arrived.arrived_at_ms, &body)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records the end of a visit (closing its stay) and its `customer_left` event, in one
    /// transaction.
    pub fn record_departure(&mut self, left: &CustomerLeft) -> anyhow::Result<()> {
        let tx = self.write()?;
        let visit_id = left.visit_id.to_string();
        let updated = tx.execute(
            "UPDATE visits SET left_at_ms = ?2, dwell_s = ?3, zone = ?4
             WHERE visit_id = ?1 AND left_at_ms IS NULL",
            params![visit_id, left.left_at_ms, left.dwell_s, left.zone],
        )?;
        if updated == 1 {
            floor::close_stay(&tx, &visit_id, left.left_at_ms)?;
            let body = serde_json::json!({
                "visit_id": visit_id,
                "customer_ref": outbox::customer_ref_of_visit(&tx, &visit_id)?,
                "zone": left.zone,
                "arrived_at_ms": left.arrived_at_ms,
                "left_at_ms": left.left_at_ms,
                "dwell_s": left.dwell_s,
            });
            outbox::append(&tx, "customer_left", left.left_at_ms, &body)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Moves an open visit to another zone (its stay there starts) and records its
    /// `zone_changed` event, in one transaction. A visit already ended (or unknown) is left
    /// alone.
    pub fn record_zone_change(&mut self, moved: &ZoneChanged) -> anyhow::Result<()> {
        let tx = self.write()?;
        let visit_id = moved.visit_id.to_string();
        let updated = tx.execute(
            "UPDATE visits SET zone = ?2 WHERE visit_id = ?1 AND left_at_ms IS NULL",
            params![visit_id, moved.zone],
        )?;
        if updated == 1 {
            floor::close_stay(&tx, &visit_id, moved.at_ms)?;
            floor::open_stay(&tx, &visit_id, &moved.zone, moved.at_ms)?;
            let body = serde_json::json!({
                "visit_id": visit_id,
                "customer_ref": outbox::customer_ref_of_visit(&tx, &visit_id)?,
                "from_zone": moved.from_zone,
                "zone": moved.zone,
                "at_ms": moved.at_ms,
            });
            outbox::append(&tx, "zone_changed", moved.at_ms, &body)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Notes that the daemon stops cleanly now, its open visits left open for the next start.
    pub fn record_clean_stop(&mut self, now: StopClock) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE meta SET stopped_at_ms = ?1, stopped_boot_ms = ?2",
            [now.wall_ms, now.boot_ms],
        )?;
        Ok(())
    }

    /// The visits to resume at start: those left open by a clean stop at most `within_ms`
    /// ago (the customer may still be in the shop), with how long ago the stop was. The stop
    /// is forgotten either way, so a crash later never resumes anything.
    ///
    /// How long ago: by the time since boot if the stop was in this boot (a restart, an
    /// upgrade), else by the wall clock if it can be trusted; otherwise nothing is resumed.
    pub fn take_resumable_visits(
        &mut self,
        now: StopClock,
        within_ms: Millis,
    ) -> anyhow::Result<(Vec<OpenVisit>, Millis)> {
        let tx = self.write()?;
        let (stopped_at, stopped_boot): (Option<Millis>, Option<Millis>) =
            tx.query_row("SELECT stopped_at_ms, stopped_boot_ms FROM meta", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        tx.execute(
            "UPDATE meta SET stopped_at_ms = NULL, stopped_boot_ms = NULL",
            [],
        )?;
        let since_stop = match (stopped_at, stopped_boot) {
            // A reboot starts the time since boot again from zero.
            (_, Some(boot)) if boot <= now.boot_ms => Some(now.boot_ms - boot),
            (Some(at), _) if now.wall_trusted && at <= now.wall_ms => Some(now.wall_ms - at),
            _ => None,
        };
        let visits = match since_stop {
            Some(ago) if ago <= within_ms => {
                let mut stmt = tx.prepare(
                    "SELECT visit_id, customer_id, zone, arrived_at_ms FROM visits
                     WHERE left_at_ms IS NULL ORDER BY arrived_at_ms",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(OpenVisit {
                        visit_id: r.get(0)?,
                        customer: CustomerId(r.get(1)?),
                        zone: r.get(2)?,
                        arrived_at_ms: r.get(3)?,
                    })
                })?;
                rows.collect::<Result<_, _>>()?
            }
            _ => Vec::new(),
        };
        tx.commit()?;
        Ok((visits, since_stop.unwrap_or(0)))
    }

    /// The latest wall time the store holds (visits, events, the last stop): a provisional
    /// clock starts after it, so times never run backwards across restarts.
    pub fn latest_stamp(&self) -> anyhow::Result<Millis> {
        Ok(self.conn.query_row(
            "SELECT max(
                coalesce((SELECT max(arrived_at_ms) FROM visits), 0),
                coalesce((SELECT max(left_at_ms) FROM visits), 0),
                coalesce((SELECT max(at_ms) FROM outbox), 0),
                coalesce((SELECT max(at_ms) FROM pos_events), 0),
                coalesce((SELECT stopped_at_ms FROM meta), 0))",
            [],
            |r| r.get(0),
        )?)
    }

    /// Moves every time stamped at or after `correction.since` (this run's provisional
    /// times) by `correction.delta_ms`, in one transaction: visits, their orders, feedback and
    /// acknowledgements, the tablets' log and devices, pairing codes, and the outbox's events
    /// with the times in their bodies. Returns how many rows changed.
    pub fn correct_times(&mut self, correction: crate::clock::Correction) -> anyhow::Result<usize> {
        let (since, delta) = (correction.since as i64, correction.delta_ms);
        let tx = self.write()?;
        let mut changed = 0;
        for (table, column) in [
            ("visits", "arrived_at_ms"),
            ("visits", "left_at_ms"),
            ("zone_stays", "from_ms"),
            ("zone_stays", "to_ms"),
            ("pos_events", "at_ms"),
            ("alert_acks", "at_ms"),
            ("orders", "at_ms"),
            ("feedback", "at_ms"),
            ("pos_devices", "paired_at_ms"),
            ("pos_devices", "last_used_ms"),
            ("pos_devices", "revoked_at_ms"),
            ("pairing_codes", "expires_at_ms"),
        ] {
            changed += tx.execute(
                &format!("UPDATE {table} SET {column} = {column} + ?2 WHERE {column} >= ?1"),
                params![since, delta],
            )?;
        }
        // Events not yet sent (the uplink holds provisional ones back), times in bodies too.
        for field in ["arrived_at_ms", "left_at_ms"] {
            tx.execute(
                &format!(
                    "UPDATE outbox SET body = json_set(body, '$.{field}',
                        json_extract(body, '$.{field}') + ?2)
                     WHERE at_ms >= ?1 AND json_extract(body, '$.{field}') >= ?1"
                ),
                params![since, delta],
            )?;
        }
        changed += tx.execute(
            "UPDATE outbox SET at_ms = at_ms + ?2 WHERE at_ms >= ?1",
            params![since, delta],
        )?;
        forget_clock_anchor(&tx)?;
        tx.commit()?;
        Ok(changed)
    }

    /// Where a provisional timeline of this boot stands (see `crate::clock::Anchor`).
    pub fn clock_anchor(&self) -> anyhow::Result<Option<crate::clock::Anchor>> {
        let row: (Option<Millis>, Option<Millis>, Option<Millis>) = self.conn.query_row(
            "SELECT provisional_since_ms, provisional_at_ms, provisional_boot_ms FROM meta",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(match row {
            (Some(since_ms), Some(at_ms), Some(boot_ms)) => Some(crate::clock::Anchor {
                since_ms,
                at_ms,
                boot_ms,
            }),
            _ => None,
        })
    }

    pub fn set_clock_anchor(&mut self, anchor: crate::clock::Anchor) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE meta SET provisional_since_ms = ?1, provisional_at_ms = ?2, provisional_boot_ms = ?3",
            [anchor.since_ms, anchor.at_ms, anchor.boot_ms],
        )?;
        Ok(())
    }

    /// The clock is trusted again and nothing is left to correct.
    pub fn clear_clock_anchor(&mut self) -> anyhow::Result<()> {
        forget_clock_anchor(&self.conn)
    }

    /// Closes visits a crash or power cut left open (their dwell is unknown), each with a
    /// `customer_left` event marked `interrupted`, except those in `resumed`. Returns how many.
    pub fn close_interrupted_visits(&mut self, resumed: &[OpenVisit]) -> anyhow::Result<usize> {
        let tx = self.write()?;
        let open: Vec<(String, String, String, Millis)> = {
            let mut stmt = tx.prepare(
                "SELECT v.visit_id, c.customer_ref, v.zone, v.arrived_at_ms
                 FROM visits v JOIN customers c ON c.id = v.customer_id WHERE v.left_at_ms IS NULL",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|(id, ..)| !resumed.iter().any(|v| &v.visit_id == id))
                .collect()
        };
        for (visit_id, customer_ref, zone, arrived_at_ms) in &open {
            tx.execute(
                "UPDATE visits SET left_at_ms = arrived_at_ms, dwell_s = NULL WHERE visit_id = ?1",
                [visit_id],
            )?;
            let body = serde_json::json!({
                "visit_id": visit_id,
                "customer_ref": customer_ref,
                "zone": zone,
                "arrived_at_ms": arrived_at_ms,
                "left_at_ms": arrived_at_ms,
                "dwell_s": null,
                "interrupted": true,
            });
            outbox::append(&tx, "customer_left", *arrived_at_ms, &body)?;
        }
        tx.commit()?;
        Ok(open.len())
    }

    /// How many visits this customer has made, this one included.
    pub fn visit_count(&self, customer: CustomerId) -> anyhow::Result<u64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM visits WHERE customer_id = ?1",
            [customer.0],
            |r| r.get(0),
        )?)
    }

    /// When the customer's previous visit (before `before_ms`) started.
    pub fn previous_visit(
        &self,
        customer: CustomerId,
        before_ms: Millis,
    ) -> anyhow::Result<Option<Millis>> {
        Ok(self
            .conn
            .query_row(
                "SELECT max(arrived_at_ms) FROM visits WHERE customer_id = ?1 AND arrived_at_ms < ?2",
                params![customer.0, before_ms],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// The most recent visits first.
    pub fn visits(&self, limit: usize) -> anyhow::Result<Vec<Visit>> {
        let mut stmt = self.conn.prepare(
            "SELECT v.visit_id, c.customer_ref, v.zone, v.arrived_at_ms, v.left_at_ms, v.dwell_s
             FROM visits v JOIN customers c ON c.id = v.customer_id
             ORDER BY v.arrived_at_ms DESC, v.visit_id LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(Visit {
                visit_id: r.get(0)?,
                customer_ref: r.get(1)?,
                zone: r.get(2)?,
                arrived_at_ms: r.get(3)?,
                left_at_ms: r.get(4)?,
                dwell_s: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A write transaction that takes the write lock at once (`BEGIN IMMEDIATE`): a deferred
    /// one that reads first can fail with `SQLITE_BUSY_SNAPSHOT` when another writer commits
    /// in between, which no busy timeout waits out.
    pub(crate) fn write(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    }
}

/// What went wrong with a store operation, for people: the owner page's health, the logs,
/// and the status an API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The disk (or `database_max_mb`) is full.
    Full,
    /// Another writer held the database longer than the busy timeout.
    Busy,
    /// A constraint refused the write (a bug or a race, never the disk).
    Constraint,
    /// The file cannot be written (permissions, a read-only file system) or is damaged.
    Unwritable,
    Other,
}

impl Failure {
    pub fn of(error: &anyhow::Error) -> Failure {
        let code = error
            .chain()
            .find_map(|e| e.downcast_ref::<rusqlite::Error>())
            .and_then(rusqlite::Error::sqlite_error_code);
        match code {
            Some(rusqlite::ErrorCode::DiskFull) => Failure::Full,
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Failure::Busy
            }
            Some(rusqlite::ErrorCode::ConstraintViolation) => Failure::Constraint,
            Some(
                rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::PermissionDenied
                | rusqlite::ErrorCode::SystemIoFailure
                | rusqlite::ErrorCode::DatabaseCorrupt
                | rusqlite::ErrorCode::NotADatabase,
            ) => Failure::Unwritable,
            _ => Failure::Other,
        }
    }

    /// What it is, and what to do.
    pub fn explain(self) -> &'static str {
        match self {
            Failure::Full => {
                "disk or database_max_mb full: free disk space (or raise database_max_mb)"
            }
            Failure::Busy => "the database was busy (another process writing); it is tried again",
            Failure::Constraint => {
                "the database refused an inconsistent write (a bug: see the log)"
            }
            Failure::Unwritable => {
                "the database cannot be written (permissions, a read-only or failing disk): see the log"
            }
            Failure::Other => "the database failed: see the log",
        }
    }
}

/// The store holds customers' names and notes: readable by its owner only (SQLite makes its
/// WAL and shared-memory files with the same permissions).
fn keep_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

/// Switches to WAL. SQLite answers "busy" at once, without the busy timeout, when another
/// process is creating the same new database: retry for a while.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut attempts = 0;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && attempts < 100 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests;
