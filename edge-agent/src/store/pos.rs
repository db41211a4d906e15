//! What the POS needs from the store: paired tablets, pairing codes, the owner's PIN, the
//! event log tablets resume from, staff actions, and the figures of the owner's page.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::Store;
use crate::Millis;
use crate::events::CustomerArrived;
use crate::pos::auth::StoredPin;
use crate::resolve::CustomerId;

/// One entry of the live event log (`arrival`, `departure`, `ack`).
#[derive(Debug, Clone, PartialEq)]
pub struct PosEvent {
    pub id: i64,
    pub kind: String,
    /// JSON text, sent to tablets as is.
    pub body: String,
    /// When it happened (an arrival: when the customer arrived).
    pub at_ms: Millis,
}

/// What a tablet shows when a customer arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    pub visit_id: String,
    pub customer_ref: String,
    pub display_name: String,
    pub tier: String,
    /// Things to be careful of, such as allergies.
    pub notes: String,
    pub preferences: String,
    /// This visit included.
    pub visit_count: u64,
    pub last_visit_ms: Option<Millis>,
    /// The customer's most frequent items in past orders here.
    pub usual_order: Vec<String>,
    /// Suggestions pushed by the cloud (none until sync exists).
    pub suggestions: Vec<String>,
    pub zone: String,
    pub arrived_at_ms: Millis,
    /// Name of the tablet that acknowledged the alert, if any.
    pub acknowledged_by: Option<String>,
}

/// A customer currently in the shop, as the "in the shop now" list shows them.
pub type Present = Alert;

/// A paired tablet (or scanner box).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Device {
    pub id: i64,
    pub name: String,
    pub kind: DeviceKind,
    pub paired_at_ms: Millis,
    pub revoked_at_ms: Option<Millis>,
}

/// What a paired device may do: a tablet everything staff do; a scanner box only send what
/// it hears (it never sees a customer).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Tablet,
    Scanner,
}

impl DeviceKind {
    fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Tablet => "tablet",
            DeviceKind::Scanner => "scanner",
        }
    }
}

/// What a presented device token is.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceAuth {
    Valid(Device),
    Revoked,
    /// Not used for longer than the idle limit: the tablet must be paired again.
    Expired,
    Unknown,
}

/// A tablet's last use is written at most this often (not on every request).
const LAST_USED_RESOLUTION_MS: Millis = 3_600_000;

/// A staff action, recorded once however often a tablet retries it.
#[derive(Debug, Clone, PartialEq)]
pub enum StaffAction {
    Order { items: Vec<String> },
    Feedback { score: u8, comment: String },
}

/// The result of recording a staff action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    Recorded,
    /// The same action (same id, same content) was already recorded: a retry.
    Duplicate,
    /// The action id was already used for something else.
    Conflict,
    UnknownVisit,
}

/// The owner's page figures.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OwnerSummary {
    pub present: usize,
    pub visits_today: u64,
    /// Share of today's visits by customers who had visited before today, 0-100.
    pub returning_rate_pct: Option<f64>,
    pub average_dwell_s: Option<f64>,
    /// Share of today's feedback scoring 4 or 5, 0-100. Private to the owner.
    pub satisfaction_pct: Option<f64>,
    pub feedback_count: u64,
    /// Visits per local hour of the day (24 entries).
    pub visits_by_hour: Vec<u64>,
}

impl Store {
    /// Builds the alert of a visit that just started.
    pub fn alert_for(&self, arrived: &CustomerArrived) -> anyhow::Result<Option<Alert>> {
        let visit_id = arrived.visit_id.to_string();
        if let Some(alert) = self.alert(&visit_id)? {
            return Ok(Some(alert));
        }
        // The visit could not be stored (a full disk): alert from the customer alone.
        let Some(customer) = self.customer(arrived.customer)? else {
            return Ok(None);
        };
        Ok(Some(Alert {
            visit_id,
            visit_count: self.visit_count(customer.id)? + 1,
            last_visit_ms: self.previous_visit(customer.id, arrived.arrived_at_ms)?,
            usual_order: self.usual_order(customer.id, 3)?,
            customer_ref: customer.customer_ref,
            display_name: customer.display_name,
            tier: customer.tier,
            notes: customer.notes,
            preferences: customer.preferences,
            suggestions: Vec::new(),
            zone: arrived.zone.clone(),
            arrived_at_ms: arrived.arrived_at_ms,
            acknowledged_by: None,
        }))
    }

    /// The alert of a visit, with its acknowledgement state.
    pub fn alert(&self, visit_id: &str) -> anyhow::Result<Option<Alert>> {
        Ok(self.alerts_where("v.visit_id = ?1", [visit_id])?.pop())
    }

    /// Customers in the shop now (open visits of the last 12 hours), earliest first.
    pub fn present(&self, now: Millis) -> anyhow::Result<Vec<Present>> {
        let since = now.saturating_sub(12 * 3_600_000) as i64;
        self.alerts_where("v.left_at_ms IS NULL AND v.arrived_at_ms >= ?1", [since])
    }

    fn alerts_where<P: rusqlite::Params>(
        &self,
        condition: &str,
        params: P,
    ) -> anyhow::Result<Vec<Alert>> {
        let sql = format!(
            "SELECT v.visit_id, c.id, c.customer_ref, c.display_name, c.tier, c.notes, c.preferences,
                    (SELECT count(*) FROM visits w WHERE w.customer_id = c.id AND w.arrived_at_ms <= v.arrived_at_ms),
                    (SELECT max(w.arrived_at_ms) FROM visits w WHERE w.customer_id = c.id AND w.arrived_at_ms < v.arrived_at_ms),
                    v.zone, v.arrived_at_ms,
                    (SELECT d.name FROM alert_acks a JOIN pos_devices d ON d.id = a.device_id WHERE a.visit_id = v.visit_id)
             FROM visits v JOIN customers c ON c.id = v.customer_id
             WHERE {condition} ORDER BY v.arrived_at_ms"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get::<_, i64>(1)?,
                Alert {
                    visit_id: r.get(0)?,
                    customer_ref: r.get(2)?,
                    display_name: r.get(3)?,
                    tier: r.get(4)?,
                    notes: r.get(5)?,
                    preferences: r.get(6)?,
                    visit_count: r.get(7)?,
                    last_visit_ms: r.get(8)?,
                    usual_order: Vec::new(),
                    suggestions: Vec::new(),
                    zone: r.get(9)?,
                    arrived_at_ms: r.get(10)?,
                    acknowledged_by: r.get(11)?,
                },
            ))
        })?;
        let mut alerts = Vec::new();
        for row in rows {
            let (customer, mut alert) = row?;
            alert.usual_order = self.usual_order(CustomerId(customer), 3)?;
            alerts.push(alert);
        }
        Ok(alerts)
    }

    /// The customer's most frequently ordered items here, most frequent first.
    pub fn usual_order(&self, customer: CustomerId, limit: usize) -> anyhow::Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT i.item FROM order_items i JOIN orders o USING (action_id)
             JOIN visits v ON v.visit_id = o.visit_id
             WHERE v.customer_id = ?1
             GROUP BY i.item ORDER BY count(*) DESC, max(o.at_ms) DESC LIMIT ?2",
        )?;
        let items = stmt.query_map(params![customer.0, limit as i64], |r| r.get(0))?;
        Ok(items.collect::<Result<_, _>>()?)
    }

    /// Appends to the live event log; returns the event's id. Callers serialise appends and
    /// broadcasts (see `pos::hub`), so ids reach tablets in order.
    pub fn append_pos_event(
        &mut self,
        kind: &str,
        customer: Option<CustomerId>,
        body: &str,
        at: Millis,
    ) -> anyhow::Result<i64> {
        self.conn.execute(
            "INSERT INTO pos_events (at_ms, kind, customer_id, body) VALUES (?1, ?2, ?3, ?4)",
            params![at, kind, customer.map(|c| c.0), body],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Events after `since`, oldest first, at most `limit`.
    pub fn pos_events_after(&self, since: i64, limit: usize) -> anyhow::Result<Vec<PosEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, kind, body, at_ms FROM pos_events WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since, limit as i64], |r| {
            Ok(PosEvent {
                id: r.get(0)?,
                kind: r.get(1)?,
                body: r.get(2)?,
                at_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// (oldest retained id, newest id) of the event log; (0, 0) when empty.
    pub fn pos_event_bounds(&self) -> anyhow::Result<(i64, i64)> {
        let (oldest, newest): (Option<i64>, Option<i64>) =
            self.conn
                .query_row("SELECT min(id), max(id) FROM pos_events", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        // AUTOINCREMENT never reuses ids, so an emptied log still knows its last id.
        let last_ever: i64 = self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'pos_events'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        Ok((oldest.unwrap_or(last_ever + 1), newest.unwrap_or(last_ever)))
    }

    /// Drops events older than `before`; tablets away longer than that reload their state.
    pub fn prune_pos_events(&mut self, before: Millis) -> anyhow::Result<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM pos_events WHERE at_ms < ?1", [before as i64])?)
    }

    /// Records that a tablet handled an alert. The first acknowledgement wins.
    pub fn acknowledge(
        &mut self,
        visit_id: &str,
        device: i64,
        at: Millis,
    ) -> anyhow::Result<ActionOutcome> {
        if !self.visit_exists(visit_id)? {
            return Ok(ActionOutcome::UnknownVisit);
        }
        let tx = self.write()?;
        let inserted = tx.execute(
            "INSERT INTO alert_acks (visit_id, device_id, at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (visit_id) DO NOTHING",
            params![visit_id, device, at],
        )?;
        if inserted == 1 {
            let body = serde_json::json!({
                "visit_id": visit_id,
                "customer_ref": super::outbox::customer_ref_of_visit(&tx, visit_id)?,
                "device_id": device,
                "at_ms": at,
            });
            super::outbox::append(&tx, "alert_acknowledged", at, &body)?;
        }
        tx.commit()?;
        Ok(if inserted == 1 {
            ActionOutcome::Recorded
        } else {
            ActionOutcome::Duplicate
        })
    }

    fn visit_exists(&self, visit_id: &str) -> anyhow::Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM visits WHERE visit_id = ?1",
                [visit_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Records an order or feedback once per `action_id`.
    pub fn record_action(
        &mut self,
        action_id: &str,
        visit_id: &str,
        device: i64,
        action: &StaffAction,
        at: Millis,
    ) -> anyhow::Result<ActionOutcome> {
        let tx = self.write()?;
        let exists = |sql: &str| -> rusqlite::Result<Option<String>> {
            tx.query_row(sql, [action_id], |r| r.get(0)).optional()
        };
        let fingerprint = match action {
            StaffAction::Order { items } => serde_json::to_string(items)?,
            StaffAction::Feedback { score, comment } => format!("{score}:{comment}"),
        };
        let previous = match action {
            StaffAction::Order { .. } => {
                exists("SELECT visit_id || ' ' || items FROM orders WHERE action_id = ?1")?
            }
            StaffAction::Feedback { .. } => exists(
                "SELECT visit_id || ' ' || score || ':' || comment FROM feedback WHERE action_id = ?1",
            )?,
        };
        if let Some(previous) = previous {
            return Ok(if previous == format!("{visit_id} {fingerprint}") {
                ActionOutcome::Duplicate
            } else {
                ActionOutcome::Conflict
            });
        }
        let visit: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM visits WHERE visit_id = ?1",
                [visit_id],
                |r| r.get(0),
            )
            .optional()?;
        if visit.is_none() {
            return Ok(ActionOutcome::UnknownVisit);
        }
        match action {
            StaffAction::Order { items } => {
                tx.execute(
                    "INSERT INTO orders (action_id, visit_id, device_id, items, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![action_id, visit_id, device, fingerprint, at],
                )?;
                for item in items {
                    tx.execute(
                        "INSERT INTO order_items (action_id, item) VALUES (?1, ?2)",
                        params![action_id, item],
                    )?;
                }
            }
            StaffAction::Feedback { score, comment } => {
                tx.execute(
                    "INSERT INTO feedback (action_id, visit_id, device_id, score, comment, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![action_id, visit_id, device, score, comment, at],
                )?;
            }
        }
        let customer_ref = super::outbox::customer_ref_of_visit(&tx, visit_id)?;
        let (kind, body) = match action {
            StaffAction::Order { items } => (
                "order_recorded",
                serde_json::json!({"action_id": action_id, "visit_id": visit_id,
                    "customer_ref": customer_ref, "device_id": device, "items": items}),
            ),
            StaffAction::Feedback { score, comment } => (
                "feedback_recorded",
                serde_json::json!({"action_id": action_id, "visit_id": visit_id,
                    "customer_ref": customer_ref, "device_id": device, "score": score, "comment": comment}),
            ),
        };
        super::outbox::append(&tx, kind, at, &body)?;
        tx.commit()?;
        Ok(ActionOutcome::Recorded)
    }

    /// Pairs a tablet: stores the hash of its token.
    pub fn add_device(
        &mut self,
        name: &str,
        kind: DeviceKind,
        token_hash: &[u8; 32],
        at: Millis,
    ) -> anyhow::Result<Device> {
        self.conn.execute(
            "INSERT INTO pos_devices (name, kind, token_hash, paired_at_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![name, kind.as_str(), token_hash.as_slice(), at],
        )?;
        Ok(Device {
            id: self.conn.last_insert_rowid(),
            name: name.to_string(),
            kind,
            paired_at_ms: at,
            revoked_at_ms: None,
        })
    }

    /// Looks a device token up by its hash; a tablet unused for `idle_ms` has expired. Notes
    /// the use (at most hourly).
    pub fn device_by_token(
        &mut self,
        token_hash: &[u8; 32],
        now: Millis,
        idle_ms: Millis,
    ) -> anyhow::Result<DeviceAuth> {
        let found = self
            .conn
            .query_row(
                "SELECT id, name, paired_at_ms, revoked_at_ms, kind,
                        coalesce(last_used_ms, paired_at_ms)
                 FROM pos_devices WHERE token_hash = ?1",
                [token_hash.as_slice()],
                |r| Ok((device_row(r)?, r.get::<_, Millis>(5)?)),
            )
            .optional()?;
        let Some((device, last_used)) = found else {
            return Ok(DeviceAuth::Unknown);
        };
        if device.revoked_at_ms.is_some() {
            return Ok(DeviceAuth::Revoked);
        }
        if now.saturating_sub(last_used) > idle_ms {
            return Ok(DeviceAuth::Expired);
        }
        if now.saturating_sub(last_used) > LAST_USED_RESOLUTION_MS {
            self.conn.execute(
                "UPDATE pos_devices SET last_used_ms = ?2 WHERE id = ?1",
                params![device.id, now],
            )?;
        }
        Ok(DeviceAuth::Valid(device))
    }

    /// Gives a tablet a new token (the old one stops working), keeping its pairing.
    pub fn rotate_device_token(
        &mut self,
        device: i64,
        token_hash: &[u8; 32],
        now: Millis,
    ) -> anyhow::Result<bool> {
        Ok(self.conn.execute(
            "UPDATE pos_devices SET token_hash = ?2, last_used_ms = ?3
             WHERE id = ?1 AND revoked_at_ms IS NULL",
            params![device, token_hash.as_slice(), now],
        )? == 1)
    }

    pub fn devices(&self) -> anyhow::Result<Vec<Device>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, paired_at_ms, revoked_at_ms, kind FROM pos_devices ORDER BY id",
        )?;
        let rows = stmt.query_map([], device_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a tablet; returns whether it existed and was active.
    pub fn revoke_device(&mut self, id: i64, at: Millis) -> anyhow::Result<bool> {
        Ok(self.conn.execute(
            "UPDATE pos_devices SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
            params![id, at],
        )? == 1)
    }

    /// Stores a one-time pairing code (its hash) valid until `expires_at`.
    pub fn add_pairing_code(
        &mut self,
        code_hash: &[u8; 32],
        expires_at: Millis,
    ) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO pairing_codes (code_hash, expires_at_ms) VALUES (?1, ?2)",
            params![code_hash.as_slice(), expires_at],
        )?;
        Ok(())
    }

    /// Uses up a pairing code; returns whether it was valid (known and not expired).
    pub fn take_pairing_code(&mut self, code_hash: &[u8; 32], now: Millis) -> anyhow::Result<bool> {
        self.conn.execute(
            "DELETE FROM pairing_codes WHERE expires_at_ms < ?1",
            [now as i64],
        )?;
        Ok(self.conn.execute(
            "DELETE FROM pairing_codes WHERE code_hash = ?1",
            [code_hash.as_slice()],
        )? == 1)
    }

    /// The owner's PIN, once set.
    pub fn owner_pin(&self) -> anyhow::Result<Option<StoredPin>> {
        read_owner_pin(&self.conn)
    }

    /// Sets the owner's PIN (a PHC string) if none is set yet, and forgets the setup code;
    /// returns whether it was set.
    pub fn set_owner_pin(&mut self, phc: &str) -> anyhow::Result<bool> {
        let tx = self.write()?;
        let set = tx.execute(
            "INSERT INTO owner (id, pin_salt, pin_hash, pin_phc) VALUES (1, x'', x'', ?1)
             ON CONFLICT (id) DO NOTHING",
            [phc],
        )? == 1;
        if set {
            tx.execute("UPDATE meta SET setup_code = NULL", [])?;
        }
        tx.commit()?;
        Ok(set)
    }

    /// Replaces the owner's PIN if it is still `current` (a change, or a first-release hash
    /// upgraded to a PHC string); returns whether it did.
    pub fn replace_owner_pin(&mut self, current: &StoredPin, phc: &str) -> anyhow::Result<bool> {
        let tx = self.write()?;
        if read_owner_pin(&tx)?.as_ref() != Some(current) {
            return Ok(false);
        }
        tx.execute(
            "UPDATE owner SET pin_phc = ?1, pin_salt = x'', pin_hash = x'' WHERE id = 1",
            [phc],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Forgets the owner's PIN (`tastesync-edge owner reset-pin`, shell access on the box
    /// needed) and returns a new setup code for setting one again.
    pub fn reset_owner_pin(&mut self) -> anyhow::Result<String> {
        let code = crate::pos::auth::new_setup_code();
        let tx = self.write()?;
        tx.execute("DELETE FROM owner", [])?;
        tx.execute("UPDATE meta SET setup_code = ?1", [&code])?;
        tx.commit()?;
        Ok(code)
    }

    /// The one-time setup code, made now if there is none; `None` once the PIN is set.
    pub fn setup_code(&mut self) -> anyhow::Result<Option<String>> {
        let tx = self.write()?;
        if read_owner_pin(&tx)?.is_some() {
            return Ok(None);
        }
        let code: Option<String> = tx.query_row("SELECT setup_code FROM meta", [], |r| r.get(0))?;
        let code = match code {
            Some(code) => code,
            None => {
                let code = crate::pos::auth::new_setup_code();
                tx.execute("UPDATE meta SET setup_code = ?1", [&code])?;
                code
            }
        };
        tx.commit()?;
        Ok(Some(code))
    }

    /// Deletes visits (with their acknowledgements, orders and feedback) that arrived before
    /// `before`, except any an event still waiting for the cloud names: the outbox is never
    /// trimmed, and what it refers to stays until the cloud has it. Returns how many.
    pub fn apply_retention(&mut self, before: Millis) -> anyhow::Result<usize> {
        let tx = self.write()?;
        let deleted = tx.execute(
            "DELETE FROM visits WHERE arrived_at_ms < ?1 AND left_at_ms IS NOT NULL
             AND visit_id NOT IN (SELECT json_extract(body, '$.visit_id') FROM outbox
                                  WHERE json_extract(body, '$.visit_id') IS NOT NULL)",
            [before as i64],
        )?;
        tx.commit()?;
        Ok(deleted)
    }

    /// The owner's page figures for visits since `since` (the owner's local midnight);
    /// `tz_offset_min` is the browser's offset from UTC, for the busiest hours.
    pub fn owner_summary(
        &self,
        since: Millis,
        tz_offset_min: i64,
        now: Millis,
    ) -> anyhow::Result<OwnerSummary> {
        let since = since as i64;
        let (visits_today, returning, average_dwell_s): (u64, u64, Option<f64>) = self.conn.query_row(
            "SELECT count(*),
                    coalesce(sum(EXISTS (SELECT 1 FROM visits p WHERE p.customer_id = v.customer_id AND p.arrived_at_ms < ?1)), 0),
                    avg(v.dwell_s)
             FROM visits v WHERE v.arrived_at_ms >= ?1",
            [since],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let (feedback_count, satisfied): (u64, u64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(score >= 4), 0) FROM feedback WHERE at_ms >= ?1",
            [since],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut visits_by_hour = vec![0u64; 24];
        let mut stmt = self.conn.prepare(
            "SELECT ((arrived_at_ms / 1000 + ?2 * 60) / 3600) % 24, count(*) FROM visits
             WHERE arrived_at_ms >= ?1 GROUP BY 1",
        )?;
        let rows = stmt.query_map(params![since, tz_offset_min], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, u64>(1)?))
        })?;
        for row in rows {
            let (hour, count) = row?;
            visits_by_hour[hour.rem_euclid(24) as usize] = count;
        }
        let pct = |part: u64, whole: u64| (whole > 0).then(|| part as f64 * 100.0 / whole as f64);
        Ok(OwnerSummary {
            present: self.present(now)?.len(),
            visits_today,
            returning_rate_pct: pct(returning, visits_today),
            average_dwell_s,
            satisfaction_pct: pct(satisfied, feedback_count),
            feedback_count,
            visits_by_hour,
        })
    }
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    let kind: String = r.get(4)?;
    Ok(Device {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: if kind == "scanner" {
            DeviceKind::Scanner
        } else {
            DeviceKind::Tablet
        },
        paired_at_ms: r.get(2)?,
        revoked_at_ms: r.get(3)?,
    })
}

/// The owner's PIN as a connection (or a transaction) sees it.
fn read_owner_pin(conn: &rusqlite::Connection) -> anyhow::Result<Option<StoredPin>> {
    Ok(conn
        .query_row(
            "SELECT pin_phc, pin_salt, pin_hash FROM owner WHERE id = 1",
            [],
            |r| {
                Ok(match r.get::<_, Option<String>>(0)? {
                    Some(phc) => StoredPin::Phc(phc),
                    None => StoredPin::Legacy {
                        salt: r.get(1)?,
                        hash: r.get(2)?,
                    },
                })
            },
        )
        .optional()?)
}
