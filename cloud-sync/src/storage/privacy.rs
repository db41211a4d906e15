//! A customer's rights: everything held about them as one document ([`export`]), and
//! erasure everywhere ([`erase`]).
//!
//! Erasing deletes the customer at HQ (identity key included), sends every shop that holds
//! them a tombstone (the box deletes them with their visits, orders and feedback), removes
//! the personal fields (`customer_ref`, `comment`) from their stored events and redacts dead
//! letters that name them, and drops their per-shop visit history; analytics keep only
//! anonymous counts. The erased ref is kept, so that events still waiting in a box's outbox
//! are scrubbed as they arrive ([`erased_among`]) and the ref is never given to someone
//! else. The erasure is done when every active box of those shops has reported applying its
//! tombstone (boxes report the downlink version they applied; a box revoked meanwhile is not
//! waited for).

use std::collections::HashSet;

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{GenericClient, Transaction};
use utoipa::ToSchema;

use super::audit::{self, Actor};
use super::customers;

/// The fields of an event that concern the person.
const PERSONAL_FIELDS: [&str; 2] = ["customer_ref", "comment"];

/// An event body without the person's fields, marked erased.
pub fn scrub(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(fields) = body.as_object_mut() {
        for field in PERSONAL_FIELDS {
            fields.remove(field);
        }
        fields.insert("erased".into(), Value::Bool(true));
    }
    body
}

/// The refs among `refs` that were erased.
pub async fn erased_among<'a>(
    tx: &Transaction<'_>,
    refs: impl Iterator<Item = &'a str>,
) -> anyhow::Result<HashSet<String>> {
    let mut refs: Vec<&str> = refs.collect();
    if refs.is_empty() {
        return Ok(HashSet::new());
    }
    refs.sort_unstable();
    refs.dedup();
    let rows = tx
        .query(
            "SELECT customer_ref FROM erasures WHERE customer_ref = ANY($1)",
            &[&refs],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn was_erased(db: &impl GenericClient, customer_ref: &str) -> anyhow::Result<bool> {
    Ok(db
        .query_opt(
            "SELECT 1 FROM erasures WHERE customer_ref = $1",
            &[&customer_ref],
        )
        .await?
        .is_some())
}

/// Everything held about a customer, or `None` if nothing is.
pub async fn export(db: &impl GenericClient, customer_ref: &str) -> anyhow::Result<Option<Value>> {
    let record = customers::list(db, Some(customer_ref), None).await?.pop();
    let visits = db
        .query(
            r#"SELECT shop_id, tastesync_rfc3339(to_timestamp(first_visit_ms / 1000.0)),
                      tastesync_rfc3339(to_timestamp(last_visit_ms / 1000.0)), visits
               FROM customer_shops WHERE customer_ref = $1 ORDER BY shop_id"#,
            &[&customer_ref],
        )
        .await?;
    let events = db
        .query(
            "SELECT shop_id, box_id, event_id, kind, at_ms, body FROM events
             WHERE body->>'customer_ref' = $1 AND body ? 'customer_ref'
             ORDER BY at_ms, event_id",
            &[&customer_ref],
        )
        .await?;
    let erasure = status(db, customer_ref).await?;
    if record.is_none() && visits.is_empty() && events.is_empty() && erasure.is_none() {
        return Ok(None);
    }
    Ok(Some(serde_json::json!({
        "customer_ref": customer_ref,
        "hq_record": record.map(|c| serde_json::json!({
            "display_name": c.display_name,
            "tier": c.tier,
            "notes": c.notes,
            "preferences": c.preferences,
            "tag_ids": c.tag_ids,
            "shops": c.shops,
            // The key itself is a secret of the customer's tag; that one is held is not.
            "eid_tag": c.eid_exponent.map(|k| serde_json::json!({
                "rotation_exponent": k,
                "identity_key_held_by_hq": c.eid_identity_key.is_some(),
            })),
        })),
        "visits_by_shop": visits.iter().map(|r| serde_json::json!({
            "shop_id": r.get::<_, String>(0),
            "first_visit": r.get::<_, String>(1),
            "last_visit": r.get::<_, String>(2),
            "visits": r.get::<_, i32>(3),
        })).collect::<Vec<_>>(),
        "events": events.iter().map(|r| serde_json::json!({
            "shop_id": r.get::<_, String>(0),
            "box_id": r.get::<_, Option<String>>(1),
            "event_id": r.get::<_, String>(2),
            "kind": r.get::<_, String>(3),
            "at_ms": r.get::<_, i64>(4),
            "body": r.get::<_, Value>(5),
        })).collect::<Vec<_>>(),
        "erasure": erasure,
    })))
}

/// An erasure and the boxes it waits for.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Erasure {
    pub id: i64,
    pub customer_ref: String,
    pub requested_by: String,
    /// RFC 3339.
    pub requested_at: String,
    /// Stored events whose personal fields were removed.
    pub events_scrubbed: i64,
    pub boxes: Vec<ErasureBox>,
    /// Every active box has applied the customer's deletion.
    pub done: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErasureBox {
    pub shop_id: String,
    /// `None`: the shop's box running the first release (it reports when it reconnects).
    pub box_id: Option<String>,
    /// The box reported applying the deletion.
    pub applied: bool,
    /// The box was revoked since: not waited for.
    pub revoked: bool,
}

/// Erases a customer everywhere (see the module's documentation); `None` if nothing is held
/// about them. Erasing again returns the first erasure.
pub async fn erase(
    db: &mut tokio_postgres::Client,
    customer_ref: &str,
    actor: &Actor,
) -> anyhow::Result<Option<Erasure>> {
    let tx = db.transaction().await?;
    customers::lock_customer(&tx, customer_ref).await?;
    if was_erased(&tx, customer_ref).await? {
        return status(&tx, customer_ref).await;
    }
    let tombstones = customers::delete_in(&tx, customer_ref)
        .await?
        .unwrap_or_default();
    let visited: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM customer_shops WHERE customer_ref = $1)
                 OR EXISTS (SELECT 1 FROM events
                            WHERE body->>'customer_ref' = $1 AND body ? 'customer_ref')",
            &[&customer_ref],
        )
        .await?
        .get(0);
    if tombstones.is_empty() && !visited {
        return Ok(None);
    }
    let scrubbed = tx
        .execute(
            r#"UPDATE events SET body = body - 'customer_ref' - 'comment' || '{"erased": true}'
               WHERE body->>'customer_ref' = $1 AND body ? 'customer_ref'"#,
            &[&customer_ref],
        )
        .await?;
    // Dead letters are raw payloads: one naming the customer is redacted whole.
    let named = format!(
        "\"customer_ref\":{}",
        serde_json::to_string(customer_ref).expect("a string serialises")
    );
    let redacted = tx
        .execute(
            "UPDATE dead_letters SET payload = convert_to('redacted: it named an erased customer', 'UTF8')
             WHERE position(convert_to($1, 'UTF8') IN payload) > 0",
            &[&named],
        )
        .await?;
    tx.execute(
        "DELETE FROM customer_shops WHERE customer_ref = $1",
        &[&customer_ref],
    )
    .await?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO erasures (customer_ref, requested_by, events_scrubbed)
             VALUES ($1, $2, $3) RETURNING id",
            &[&customer_ref, &actor.name, &(scrubbed as i64)],
        )
        .await?
        .get(0);
    for (shop_id, version) in &tombstones {
        // Every active box of the shop, and the shop's first-release box if it has one.
        tx.execute(
            "INSERT INTO erasure_boxes (erasure_id, shop_id, box_id, version)
             SELECT $1::bigint, $2::text, box_id, $3::bigint FROM boxes
             WHERE shop_id = $2 AND revoked_at IS NULL
             UNION
             SELECT $1, $2, '', $3 FROM streams
             WHERE shop_id = $2 AND protocol = 1 AND box_id IS NULL",
            &[&id, shop_id, version],
        )
        .await?;
    }
    audit::record(
        &tx,
        actor,
        "customer_erased",
        customer_ref,
        serde_json::json!({
            "shops": tombstones.iter().map(|(shop, _)| shop).collect::<Vec<_>>(),
            "events_scrubbed": scrubbed,
            "dead_letters_redacted": redacted,
        }),
    )
    .await?;
    let erasure = status(&tx, customer_ref).await?;
    tx.commit().await?;
    Ok(erasure)
}

/// The erasure of `customer_ref`, if there was one, with each box's progress.
pub async fn status(
    db: &impl GenericClient,
    customer_ref: &str,
) -> anyhow::Result<Option<Erasure>> {
    Ok(list(db, Some(customer_ref), 1).await?.pop())
}

/// The latest erasures (or the one of `customer_ref`), newest first.
pub async fn list(
    db: &impl GenericClient,
    customer_ref: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<Erasure>> {
    let erasures = db
        .query(
            r#"SELECT id, customer_ref, requested_by,
                      tastesync_rfc3339(requested_at), events_scrubbed
               FROM erasures WHERE $1::text IS NULL OR customer_ref = $1
               ORDER BY id DESC LIMIT $2"#,
            &[&customer_ref, &limit],
        )
        .await?;
    let ids: Vec<i64> = erasures.iter().map(|r| r.get(0)).collect();
    let boxes = db
        .query(
            "SELECT e.erasure_id, e.shop_id, nullif(e.box_id, ''),
                    CASE WHEN e.box_id = '' THEN coalesce(s.legacy_downlink_applied, 0) >= e.version
                         ELSE coalesce(b.downlink_applied, 0) >= e.version END,
                    b.revoked_at IS NOT NULL
             FROM erasure_boxes e
             LEFT JOIN boxes b ON b.box_id = e.box_id
             LEFT JOIN shops s ON s.shop_id = e.shop_id
             WHERE e.erasure_id = ANY($1) ORDER BY e.shop_id, e.box_id",
            &[&ids],
        )
        .await?;
    Ok(erasures
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            let boxes: Vec<ErasureBox> = boxes
                .iter()
                .filter(|b| b.get::<_, i64>(0) == id)
                .map(|b| ErasureBox {
                    shop_id: b.get(1),
                    box_id: b.get(2),
                    applied: b.get(3),
                    revoked: b.get(4),
                })
                .collect();
            Erasure {
                id,
                customer_ref: r.get(1),
                requested_by: r.get(2),
                requested_at: r.get(3),
                events_scrubbed: r.get(4),
                done: boxes.iter().all(|b| b.applied || b.revoked),
                boxes,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_removes_the_person_and_keeps_the_counts() {
        let body = serde_json::json!({"visit_id": "v1", "customer_ref": "c-1",
            "comment": "Minji was lovely", "score": 5, "items": ["oat latte"]});
        let scrubbed = scrub(&body);
        assert_eq!(
            scrubbed,
            serde_json::json!({"visit_id": "v1", "score": 5, "items": ["oat latte"], "erased": true})
        );
    }
}
