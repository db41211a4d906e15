//! HQ's customers, and how a change to one becomes a versioned change for every shop that
//! should hold them.
//!
//! Saving a customer gives each of their shops its next downlink version and replaces the
//! customer's entry in that shop's change log (`shop_changes`) with their whole record; a shop
//! taken off the customer's list, or a deletion, leaves a tombstone there instead. All in one
//! transaction that also notifies the downlink publisher (`NOTIFY tastesync_downlink`), so a
//! shop's versions are committed, and published, in order, and notes the change for the
//! Kafka relay (`storage::kafka`).
//!
//! A customer's EID identity key never leaves this database: the record a shop receives holds
//! the temporary keys derived from it for the coming `eid_days`, renewed daily
//! ([`refresh_eid_keys`]).

use serde::Serialize;
use tastesync_shared::TagId;
use tastesync_shared::downlink::{CustomerRecord, EidKeys, EpochKey, MAX_REF_LEN};
use tastesync_shared::eid::{epoch_of, temporary_key};
use tastesync_shared::hexfmt::hex;
use tastesync_shared::wire::is_valid_shop_id;
use tokio_postgres::{Client, GenericClient, Transaction};

use super::audit::{self, Actor};

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
    pub fn validate(&self) -> Result<(), Refused> {
        let invalid = |reason: String| Err(Refused::Invalid(reason));
        if !(1..=MAX_REF_LEN).contains(&self.customer_ref.len())
            || self.customer_ref.chars().any(char::is_control)
        {
            return invalid(format!(
                "the customer ref must be 1 to {MAX_REF_LEN} printable characters"
            ));
        }
        if self.shops.is_empty() {
            return invalid("a customer needs at least one shop".into());
        }
        if let Some(shop) = self.shops.iter().find(|s| !is_valid_shop_id(s)) {
            return invalid(format!(
                "{shop:?} is not a valid shop id (letters, digits, - and _)"
            ));
        }
        self.record(0, 1).validate().map_err(Refused::Invalid)
    }

    /// The names of the fields that differ from `other` (for the audit log: names, never
    /// values).
    fn changed_fields(&self, other: &Customer) -> Vec<&'static str> {
        [
            ("display_name", self.display_name != other.display_name),
            ("tier", self.tier != other.tier),
            ("notes", self.notes != other.notes),
            ("preferences", self.preferences != other.preferences),
            ("tag_ids", self.tag_ids != other.tag_ids),
            ("shops", self.shops != other.shops),
            (
                "eid",
                self.eid_exponent != other.eid_exponent
                    || self.eid_identity_key != other.eid_identity_key,
            ),
        ]
        .into_iter()
        .filter_map(|(field, changed)| changed.then_some(field))
        .collect()
    }
}

/// Why a change to a customer was refused (the caller's mistake, said as is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Invalid(String),
    #[error("customer {0:?} already exists")]
    Exists(String),
    #[error("no customer {0:?}")]
    NotFound(String),
    #[error("a tag is already given to customer {0:?}")]
    TagTaken(String),
    #[error("customer {0:?} was erased; enroll the person again under a new ref")]
    Erased(String),
    #[error("{0}")]
    NotAllowed(String),
}

/// Tags in their canonical text form (as shops store and match them).
pub fn canonical_tags(tags: &[String]) -> Result<Vec<String>, Refused> {
    tags.iter()
        .map(|t| {
            t.parse::<TagId>()
                .map(|tag| tag.to_string())
                .map_err(|e| Refused::Invalid(format!("tag {t:?}: {e}")))
        })
        .collect()
}

/// A new EID identity key (shown once to whoever provisions the customer's tag).
pub fn new_identity_key() -> [u8; 16] {
    let mut key = [0; 16];
    getrandom::fill(&mut key).expect("the OS random number generator");
    key
}

/// Enrolls a new customer and writes the change for each of their shops, with its audit
/// entry, in one transaction.
pub async fn enroll(
    client: &mut Client,
    customer: &Customer,
    now_s: u32,
    eid_days: u32,
    actor: &Actor,
) -> anyhow::Result<Result<(), Refused>> {
    if let Err(refused) = customer.validate() {
        return Ok(Err(refused));
    }
    let tx = client.transaction().await?;
    lock_customer(&tx, &customer.customer_ref).await?;
    if !list(&tx, Some(&customer.customer_ref), None)
        .await?
        .is_empty()
    {
        return Ok(Err(Refused::Exists(customer.customer_ref.clone())));
    }
    if let Err(refused) = save_in(&tx, customer, now_s, eid_days).await? {
        return Ok(Err(refused));
    }
    let detail =
        serde_json::json!({ "shops": customer.shops, "eid": customer.eid_exponent.is_some() });
    audit::record(
        &tx,
        actor,
        "customer_enrolled",
        &customer.customer_ref,
        detail,
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// Changes a customer: `edit` gets them as stored (under their lock) and returns them as they
/// should be, or refuses. Writes the changes and the audit entry in one transaction.
pub async fn update(
    client: &mut Client,
    customer_ref: &str,
    edit: impl FnOnce(Customer) -> Result<Customer, Refused>,
    now_s: u32,
    eid_days: u32,
    actor: &Actor,
) -> anyhow::Result<Result<Customer, Refused>> {
    let tx = client.transaction().await?;
    lock_customer(&tx, customer_ref).await?;
    let Some(before) = list_where(&tx, Some(customer_ref), None, "FOR UPDATE")
        .await?
        .pop()
    else {
        return Ok(Err(Refused::NotFound(customer_ref.to_string())));
    };
    let after = match edit(before.clone()) {
        Ok(after) if after.customer_ref == customer_ref => after,
        Ok(_) => {
            return Ok(Err(Refused::Invalid(
                "a customer's ref cannot change".into(),
            )));
        }
        Err(refused) => return Ok(Err(refused)),
    };
    if let Err(refused) = after.validate() {
        return Ok(Err(refused));
    }
    if let Err(refused) = save_in(&tx, &after, now_s, eid_days).await? {
        return Ok(Err(refused));
    }
    let mut detail = serde_json::json!({ "fields": after.changed_fields(&before) });
    if after.shops != before.shops {
        detail["shops"] = serde_json::json!(after.shops);
    }
    audit::record(&tx, actor, "customer_updated", customer_ref, detail).await?;
    tx.commit().await?;
    Ok(Ok(after))
}

/// Writes a customer and a change for every shop concerned (the caller holds their lock).
async fn save_in(
    tx: &Transaction<'_>,
    customer: &Customer,
    now_s: u32,
    eid_days: u32,
) -> anyhow::Result<Result<(), Refused>> {
    // One writer per customer, even before their row exists (FOR UPDATE below locks nothing
    // then): two enrollments of the same new customer must not lose a tombstone.
    lock_customer(tx, &customer.customer_ref).await?;
    if super::privacy::was_erased(tx, &customer.customer_ref).await? {
        return Ok(Err(Refused::Erased(customer.customer_ref.clone())));
    }
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
        return Ok(Err(Refused::TagTaken(row.get(0))));
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
    write_changes(tx, &customer.customer_ref, shops).await?;
    super::kafka::customer_changed(tx, &customer.customer_ref).await?;
    Ok(Ok(()))
}

/// Deletes a customer at HQ, identity key included, and leaves a tombstone for each of their
/// shops, if `allowed` (given the customer under their lock) agrees; with its audit entry.
pub async fn delete(
    client: &mut Client,
    customer_ref: &str,
    allowed: impl FnOnce(&Customer) -> Result<(), Refused>,
    actor: &Actor,
) -> anyhow::Result<Result<(), Refused>> {
    let tx = client.transaction().await?;
    lock_customer(&tx, customer_ref).await?;
    let Some(customer) = list_where(&tx, Some(customer_ref), None, "FOR UPDATE")
        .await?
        .pop()
    else {
        return Ok(Err(Refused::NotFound(customer_ref.to_string())));
    };
    if let Err(refused) = allowed(&customer) {
        return Ok(Err(refused));
    }
    delete_in(&tx, customer_ref).await?;
    let detail = serde_json::json!({ "shops": customer.shops });
    audit::record(&tx, actor, "customer_deleted", customer_ref, detail).await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// Deletes a customer within `tx`; returns each shop's tombstone version, or `None` if there
/// was no such customer.
pub async fn delete_in(
    tx: &Transaction<'_>,
    customer_ref: &str,
) -> anyhow::Result<Option<Vec<(String, i64)>>> {
    lock_customer(tx, customer_ref).await?;
    let Some(row) = tx
        .query_opt(
            "DELETE FROM customers WHERE customer_ref = $1 RETURNING shops",
            &[&customer_ref],
        )
        .await?
    else {
        return Ok(None);
    };
    let shops: Vec<String> = row.get(0);
    let versions = write_changes(
        tx,
        customer_ref,
        shops.iter().map(|s| (s.as_str(), None)).collect(),
    )
    .await?;
    super::kafka::customer_changed(tx, customer_ref).await?;
    Ok(Some(versions))
}

/// Takes the customer's lock for the rest of the transaction (held by every writer).
pub async fn lock_customer(tx: &Transaction<'_>, customer_ref: &str) -> anyhow::Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('tastesync customer ' || $1))",
        &[&customer_ref],
    )
    .await?;
    Ok(())
}

/// Gives each shop (in a fixed order, so concurrent writers cannot deadlock) its next version
/// with this customer's record, or a tombstone for `None`; returns each shop's version.
async fn write_changes(
    tx: &Transaction<'_>,
    customer_ref: &str,
    mut shops: Vec<(&str, Option<&serde_json::Value>)>,
) -> anyhow::Result<Vec<(String, i64)>> {
    shops.sort_by_key(|(shop, _)| *shop);
    let mut versions = Vec::with_capacity(shops.len());
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
        versions.push((shop.to_string(), version));
    }
    Ok(versions)
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

/// A customer as the console lists them, with their visits to the chain.
#[derive(Debug, Clone)]
pub struct Listed {
    pub customer: Customer,
    pub visits: i64,
    pub last_visit_ms: Option<i64>,
}

/// Customers whose ref, name (from its start, any case) or tag is `query` (all without
/// one), of `shop` and of the `scope` shops if given, by ref, a page at a time.
pub async fn search(
    client: &impl GenericClient,
    query: Option<&str>,
    shop: Option<&str>,
    scope: Option<&[String]>,
    limit: i64,
    offset: i64,
) -> anyhow::Result<Vec<Listed>> {
    let query = query.map(str::trim).filter(|q| !q.is_empty());
    let prefix = query.map(|q| {
        let escaped = q
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("{escaped}%")
    });
    let rows = client
        .query(
            &format!(
                "{LISTED}
                 WHERE ($1::text IS NULL OR c.customer_ref LIKE $2
                        OR lower(c.display_name) LIKE lower($2) OR $1 = ANY(c.tag_ids))
                   AND ($3::text IS NULL OR $3 = ANY(c.shops))
                   AND ($4::text[] IS NULL OR c.shops && $4)
                 ORDER BY c.customer_ref LIMIT $5 OFFSET $6"
            ),
            &[&query, &prefix, &shop, &scope, &limit, &offset],
        )
        .await?;
    rows.iter().map(listed_of).collect()
}

/// One customer, if they belong to one of the `scope` shops (when given).
pub async fn find(
    client: &impl GenericClient,
    customer_ref: &str,
    scope: Option<&[String]>,
) -> anyhow::Result<Option<Listed>> {
    let row = client
        .query_opt(
            &format!(
                "{LISTED} WHERE c.customer_ref = $1 AND ($2::text[] IS NULL OR c.shops && $2)"
            ),
            &[&customer_ref, &scope],
        )
        .await?;
    row.as_ref().map(listed_of).transpose()
}

const LISTED: &str = "SELECT c.customer_ref, c.display_name, c.tier, c.notes, c.preferences,
        c.tag_ids, c.shops, c.eid_identity_key, c.eid_exponent,
        coalesce(v.visits, 0), v.last_visit_ms
    FROM customers c
    LEFT JOIN LATERAL (
        SELECT sum(visits)::bigint AS visits, max(last_visit_ms) AS last_visit_ms
        FROM customer_shops WHERE customer_ref = c.customer_ref
    ) v ON true";

fn listed_of(r: &tokio_postgres::Row) -> anyhow::Result<Listed> {
    Ok(Listed {
        customer: customer_of(r)?,
        visits: r.get(9),
        last_visit_ms: r.get(10),
    })
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
    rows.iter().map(customer_of).collect()
}

/// A customer from columns 0-8: ref, name, tier, notes, preferences, tags, shops, identity
/// key, exponent.
fn customer_of(r: &tokio_postgres::Row) -> anyhow::Result<Customer> {
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
            match save_in(&tx, &customer, now_s, eid_days).await {
                Ok(Ok(())) => {}
                Ok(Err(refused)) => {
                    tracing::error!("cannot renew the keys of customer {customer_ref}: {refused}");
                    continue; // dropping the transaction rolls it back
                }
                Err(e) => {
                    tracing::error!("cannot renew the keys of customer {customer_ref}: {e:#}");
                    continue;
                }
            }
            renewed += 1;
        }
        tx.commit().await?;
    }
    Ok(renewed)
}
