//! Applying HQ's customer changes (the downlink, see `tastesync_shared::downlink`): a whole
//! batch in one transaction with the version it brings the box to, so a crash leaves either
//! all of it or none.

use rusqlite::{Transaction, params};
use tastesync_shared::downlink::{ChangeBatch, CustomerRecord};

use super::Store;

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied: the box is now at the batch's `to_version`.
    Applied { changes: usize },
    /// The box already had it: it is at `have`, at or past the batch's end.
    AlreadyApplied { have: i64 },
    /// Changes between the box's version and the batch's start are missing: ask for a resync
    /// from `have`.
    Gap { have: i64 },
}

impl Store {
    /// The version of HQ's changes applied so far (0: none).
    pub fn downlink_version(&self) -> anyhow::Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT downlink_version FROM meta", [], |r| r.get(0))?)
    }

    /// Applies a validated batch atomically, if it continues what the box has.
    pub fn apply_changes(&mut self, batch: &ChangeBatch) -> anyhow::Result<Applied> {
        let tx = self.write()?;
        let have: i64 = tx.query_row("SELECT downlink_version FROM meta", [], |r| r.get(0))?;
        if have >= batch.to_version {
            return Ok(Applied::AlreadyApplied { have });
        }
        if have < batch.from_version {
            return Ok(Applied::Gap { have });
        }
        for change in &batch.changes {
            match &change.customer {
                Some(record) => upsert(&tx, &change.customer_ref, record)?,
                // Cascades to tags, keys, visits, staff actions and the tablets' event log.
                None => {
                    tx.execute(
                        "DELETE FROM customers WHERE customer_ref = ?1",
                        [&change.customer_ref],
                    )?;
                }
            }
        }
        tx.execute("UPDATE meta SET downlink_version = ?1", [batch.to_version])?;
        tx.commit()?;
        Ok(Applied::Applied {
            changes: batch.changes.len(),
        })
    }
}

/// Makes the customer exactly `record`: fields, tags (HQ's binding wins over a local one) and
/// EID keys (the given set replaces the old, so expired epochs go).
fn upsert(tx: &Transaction, customer_ref: &str, record: &CustomerRecord) -> anyhow::Result<()> {
    let id: i64 = tx.query_row(
        "INSERT INTO customers (customer_ref, display_name, tier, notes, preferences)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (customer_ref) DO UPDATE SET display_name = excluded.display_name,
            tier = excluded.tier, notes = excluded.notes, preferences = excluded.preferences
         RETURNING id",
        params![
            customer_ref,
            record.display_name,
            record.tier,
            record.notes,
            record.preferences
        ],
        |r| r.get(0),
    )?;
    tx.execute("DELETE FROM tag_bindings WHERE customer_id = ?1", [id])?;
    for tag in record.tags() {
        tx.execute(
            "INSERT INTO tag_bindings (tag_id, customer_id) VALUES (?1, ?2)
             ON CONFLICT (tag_id) DO UPDATE SET customer_id = excluded.customer_id",
            params![tag.to_string(), id],
        )?;
    }
    match &record.eid {
        None => {
            tx.execute("DELETE FROM eid_tags WHERE customer_id = ?1", [id])?;
        }
        Some(eid) => {
            tx.execute(
                "INSERT INTO eid_tags (customer_id, exponent) VALUES (?1, ?2)
                 ON CONFLICT (customer_id) DO UPDATE SET exponent = excluded.exponent",
                params![id, eid.exponent],
            )?;
            tx.execute(
                "DELETE FROM eid_temporary_keys WHERE customer_id = ?1",
                [id],
            )?;
            for key in &eid.keys {
                let Some(bytes) = key.key() else { continue };
                tx.execute(
                    "INSERT INTO eid_temporary_keys (customer_id, epoch, temporary_key)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT (customer_id, epoch) DO UPDATE SET temporary_key = excluded.temporary_key",
                    params![id, key.epoch, bytes.as_slice()],
                )?;
            }
        }
    }
    Ok(())
}
