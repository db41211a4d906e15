//! HQ's customers, and how a change to one becomes a versioned change for every shop that
//! should hold them.
//!
//! Saving a customer gives each of their shops its next downlink version and replaces the
//! customer's entry in that shop's change log (`shop_changes`) with their whole record; a shop
//! taken off the customer's list, or a deletion, leaves a tombstone there instead. All in one
//! transaction that also notifies the downlink publisher (`NOTIFY tastesync_downlink`), so a
//! shop's versions are committed, and published, in order.
//!
//! A customer's EID identity key never leaves this database: the record a shop receives holds
//! the temporary keys derived from it for the coming `eid_days`, renewed daily
//! ([`refresh_eid_keys`]).

use serde::Serialize;
use tastesync_shared::downlink::{CustomerRecord, EidKeys, EpochKey, MAX_REF_LEN};
use tastesync_shared::eid::{epoch_of, temporary_key};
use tastesync_shared::hexfmt::hex;
use tastesync_shared::wire::is_valid_shop_id;
use tokio_postgres::{Client, GenericClient, Transaction};

/// The channel the downlink publisher listens on; the payload is a shop id.
pub const CHANNEL: &str = "tastesync_downlink";

/// A customer as HQ holds them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Customer {
    pub customer_ref: String,
    pub display_name: String,
    pub tier: String,
    pub notes: String,
    pub preferences: String,
    pub tag_ids: Vec<String>,
    /// The shops that hold this customer.
    pub shops: Vec<String>,
    /// The EID tag's rotation exponent, if the customer has one.
    pub eid_exponent: Option<u8>,
    #[serde(skip)]
    pub eid_identity_key: Option<[u8; 16]>,
}

impl Customer {
    /// What the shops get: the identity key replaced by temporary keys from `now_s` for
    /// `eid_days` (one epoch back too, for tags whose clock runs late).
    pub fn record(&self, now_s: u32, eid_days: u32) -> CustomerRecord {
        let eid = self
            .eid_identity_key
            .zip(self.eid_exponent)
            .map(|(key, exponent)| EidKeys {
                exponent,
                keys: (epoch_of(now_s).saturating_sub(1)
                    ..=epoch_of(now_s.saturating_add(eid_days * 86_400)))
                    .map(|epoch| EpochKey {
                        epoch,
                        temporary_key: hex(&temporary_key(&key, epoch)),
                    })
                    .collect(),
            });
        CustomerRecord {
            display_name: self.display_name.clone(),
            tier: self.tier.clone(),
            notes: self.notes.clone(),
            preferences: self.preferences.clone(),
            tag_ids: self.tag_ids.clone(),
            eid,
        }
    }

    /// Checks what a shop would check, and the shop list.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=MAX_REF_LEN).contains(&self.customer_ref.len())
            || self.customer_ref.chars().any(char::is_control)
        {
            anyhow::bail!("the customer ref must be 1 to {MAX_REF_LEN} printable characters");
        }
        if self.shops.is_empty() {
            anyhow::bail!("a customer needs at least one shop");
        }
        if let Some(shop) = self.shops.iter().find(|s| !is_valid_shop_id(s)) {
            anyhow::bail!("{shop:?} is not a valid shop id (letters, digits, - and _)");
        }
        self.record(0, 1)
            .validate()
            .map_err(|reason| anyhow::anyhow!(reason))
    }
}

/// Creates or replaces a customer and writes the change for every shop concerned.
pub async fn save(
    client: &mut Client,
    customer: &Customer,
    now_s: u32,
    eid_days: u32,
) -> anyhow::Result<()> {
    customer.validate()?;
    let tx = client.transaction().await?;
    save_in(&tx, customer, now_s, eid_days).await?;
    tx.commit().await?;
    Ok(())
}

async fn save_in(
    tx: &Transaction<'_>,
    customer: &Customer,
    now_s: u32,
    eid_days: u32,
) -> anyhow::Result<()> {
    // One writer per customer, even before their row exists (FOR UPDATE below locks nothing
    // then): two enrollments of the same new customer must not lose a tombstone.
    lock_customer(tx, &customer.customer_ref).await?;
    if !customer.tag_ids.is_empty() {
        // Serialises tag checks, so two enrollments cannot both take a free tag.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('tastesync tags'))",
            &[],
        )
        .await?;
    }
    let taken = tx
        .query_opt(
            "SELECT customer_ref FROM customers WHERE tag_ids && $1 AND customer_ref <> $2 LIMIT 1",
            &[&customer.tag_ids, &customer.customer_ref],
        )
        .await?;
    if let Some(row) = taken {
        let owner: String = row.get(0);
        anyhow::bail!("a tag is already given to customer {owner:?}");
    }
    let before: Vec<String> = tx
        .query_opt(
            "SELECT shops FROM customers WHERE customer_ref = $1 FOR UPDATE",
            &[&customer.customer_ref],
        )
        .await?
        .map(|r| r.get(0))
        .unwrap_or_default();
    let keys_until = customer
        .eid_identity_key
        .map(|_| i64::from(now_s) + i64::from(eid_days) * 86_400);
    tx.execute(
        "INSERT INTO customers (customer_ref, display_name, tier, notes, preferences, tag_ids,
                                shops, eid_identity_key, eid_exponent, eid_keys_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (customer_ref) DO UPDATE SET display_name = $2, tier = $3, notes = $4,
            preferences = $5, tag_ids = $6, shops = $7, eid_identity_key = $8,
            eid_exponent = $9, eid_keys_until = $10, updated_at = now()",
        &[
            &customer.customer_ref,
            &customer.display_name,
            &customer.tier,
            &customer.notes,
            &customer.preferences,
            &customer.tag_ids,
            &customer.shops,
            &customer.eid_identity_key.as_ref().map(|k| &k[..]),
            &customer.eid_exponent.map(i16::from),
            &keys_until,
        ],
    )
    .await?;
    let record = serde_json::to_value(customer.record(now_s, eid_days))?;
    let mut shops: Vec<(&str, Option<&serde_json::Value>)> = customer
        .shops
        .iter()
        .map(|shop| (shop.as_str(), Some(&record)))
        .collect();
    shops.extend(
        before
            .iter()
            .filter(|shop| !customer.shops.contains(shop))
            .map(|shop| (shop.as_str(), None)),
    );
    write_changes(tx, &customer.customer_ref, shops).await
}

/// Deletes a customer at HQ, identity key included, and leaves a tombstone for each of their
/// shops. Returns whether there was such a customer.
pub async fn delete(client: &mut Client, customer_ref: &str) -> anyhow::Result<bool> {
    let tx = client.transaction().await?;
    lock_customer(&tx, customer_ref).await?;
    let Some(row) = tx
        .query_opt(
            "DELETE FROM customers WHERE customer_ref = $1 RETURNING shops",
            &[&customer_ref],
        )
        .await?
    else {
        return Ok(false);
    };
    let shops: Vec<String> = row.get(0);
    write_changes(
        &tx,
        customer_ref,
        shops.iter().map(|s| (s.as_str(), None)).collect(),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

async fn lock_customer(tx: &Transaction<'_>, customer_ref: &str) -> anyhow::Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('tastesync customer ' || $1))",
        &[&customer_ref],
    )
    .await?;
    Ok(())
}

/// Gives each shop (in a fixed order, so concurrent writers cannot deadlock) its next version
/// with this customer's record, or a tombstone for `None`.
async fn write_changes(
    tx: &Transaction<'_>,
    customer_ref: &str,
    mut shops: Vec<(&str, Option<&serde_json::Value>)>,
) -> anyhow::Result<()> {
    shops.sort_by_key(|(shop, _)| *shop);
    for (shop, record) in shops {
        let version: i64 = tx
            .query_one(
                "INSERT INTO shops (shop_id, downlink_version) VALUES ($1, 1)
                 ON CONFLICT (shop_id) DO UPDATE SET downlink_version = shops.downlink_version + 1
                 RETURNING downlink_version",
                &[&shop],
            )
            .await?
            .get(0);
        tx.execute(
            "INSERT INTO shop_changes (shop_id, customer_ref, version, customer)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (shop_id, customer_ref) DO UPDATE SET version = $3, customer = $4",
            &[&shop, &customer_ref, &version, &record],
        )
        .await?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &shop])
            .await?;
    }
    Ok(())
}

/// Makes a shop's change log newer than `box_version` if a box has applied changes past the
/// log's head: this database was restored from a backup, so versions the box holds would
/// otherwise be given to other changes, which the box would take for ones it has. Returns
/// whether it did.
pub async fn catch_up_versions(
    client: &mut Client,
    shop_id: &str,
    box_version: i64,
) -> anyhow::Result<bool> {
    let tx = client.transaction().await?;
    let head: Option<i64> = tx
        .query_opt(
            "SELECT downlink_version FROM shops WHERE shop_id = $1 FOR UPDATE",
            &[&shop_id],
        )
        .await?
        .map(|r| r.get(0));
    if head.is_none_or(|head| head >= box_version) {
        return Ok(false);
    }
    renumber_changes(&tx, shop_id, box_version).await?;
    tx.commit().await?;
    Ok(true)
}

/// How far a shop's versions jump when this database finds it was restored from a backup:
/// past any version a box may have seen from the lost database.
pub const RESTORE_JUMP: i64 = 1 << 32;

/// Gives every customer's latest change in a shop's log (tombstones included) a version after
/// `above`, in the same order, moves the shop's head past them, and tells the publisher:
/// boxes take them as news (or see a gap and resync) and reach HQ's whole state for the shop.
pub async fn renumber_changes(
    tx: &Transaction<'_>,
    shop_id: &str,
    above: i64,
) -> anyhow::Result<()> {
    // New versions are all above the old ones, so no two rows ever share one.
    tx.execute(
        "UPDATE shop_changes c SET version = $2 + r.n FROM (
            SELECT customer_ref, row_number() OVER (ORDER BY version) AS n
            FROM shop_changes WHERE shop_id = $1
         ) r WHERE c.shop_id = $1 AND c.customer_ref = r.customer_ref",
        &[&shop_id, &above],
    )
    .await?;
    tx.execute(
        "UPDATE shops SET downlink_version = $2
            + (SELECT count(*) FROM shop_changes WHERE shop_id = $1)
         WHERE shop_id = $1",
        &[&shop_id, &above],
    )
    .await?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &shop_id])
        .await?;
    Ok(())
}

/// One customer, or all of them (by ref), optionally only a shop's.
pub async fn list(
    client: &impl GenericClient,
    customer_ref: Option<&str>,
    shop: Option<&str>,
) -> anyhow::Result<Vec<Customer>> {
    list_where(client, customer_ref, shop, "").await
}

async fn list_where(
    client: &impl GenericClient,
    customer_ref: Option<&str>,
    shop: Option<&str>,
    locking: &str,
) -> anyhow::Result<Vec<Customer>> {
    let rows = client
        .query(
            &format!(
                "SELECT customer_ref, display_name, tier, notes, preferences, tag_ids, shops,
                        eid_identity_key, eid_exponent
                 FROM customers
                 WHERE ($1::text IS NULL OR customer_ref = $1)
                   AND ($2::text IS NULL OR $2 = ANY(shops))
                 ORDER BY customer_ref {locking}"
            ),
            &[&customer_ref, &shop],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let key: Option<Vec<u8>> = r.get(7);
            let exponent: Option<i16> = r.get(8);
            Ok(Customer {
                customer_ref: r.get(0),
                display_name: r.get(1),
                tier: r.get(2),
                notes: r.get(3),
                preferences: r.get(4),
                tag_ids: r.get(5),
                shops: r.get(6),
                eid_exponent: exponent.map(|k| k as u8),
                eid_identity_key: key
                    .map(|k| k.try_into())
                    .transpose()
                    .map_err(|_| anyhow::anyhow!("a stored identity key is not 16 bytes"))?,
            })
        })
        .collect()
}

/// Re-derives the temporary keys of every EID customer whose keys cover less than
/// `eid_days - 1` days ahead, so shops always hold about `eid_days` days. Instances running
/// it together renew each customer once (the row lock, then the horizon check). Returns how
/// many customers were renewed.
pub async fn refresh_eid_keys(
    client: &mut Client,
    now_s: u32,
    eid_days: u32,
) -> anyhow::Result<usize> {
    let horizon = i64::from(now_s) + i64::from(eid_days.saturating_sub(1)) * 86_400;
    let due: Vec<String> = client
        .query(
            "SELECT customer_ref FROM customers
             WHERE eid_identity_key IS NOT NULL AND eid_keys_until < $1",
            &[&horizon],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut renewed = 0;
    for customer_ref in due {
        // Read and write under the row lock, so an HQ edit in between is not undone.
        let tx = client.transaction().await?;
        let Some(customer) = list_where(&tx, Some(&customer_ref), None, "FOR UPDATE")
            .await?
            .pop()
        else {
            continue; // deleted meanwhile
        };
        let until: Option<i64> = tx
            .query_one(
                "SELECT eid_keys_until FROM customers WHERE customer_ref = $1",
                &[&customer_ref],
            )
            .await?
            .get(0);
        if until.is_some_and(|until| until < horizon) {
            // One customer HQ's data no longer lets us save must not stop everyone's renewal.
            if let Err(e) = save_in(&tx, &customer, now_s, eid_days).await {
                tracing::error!("cannot renew the keys of customer {customer_ref}: {e:#}");
                continue; // dropping the transaction rolls it back
            }
            renewed += 1;
        }
        tx.commit().await?;
    }
    Ok(renewed)
}
