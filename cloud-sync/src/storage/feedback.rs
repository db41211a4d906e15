//! The private feedback staff record on the tablets (`feedback_recorded` events), newest
//! first, for the console's feedback page.

use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Feedback {
    /// When it was recorded (Unix ms); pass the last one as `before_ms` for the next page.
    pub at_ms: i64,
    pub shop_id: String,
    pub box_id: Option<String>,
    pub visit_id: Option<String>,
    /// `None` once the customer was erased.
    pub customer_ref: Option<String>,
    /// The customer's name at HQ, if they are still enrolled.
    pub display_name: Option<String>,
    /// 1 to 5.
    pub score: Option<i64>,
    pub comment: Option<String>,
}

/// Feedback of `shops` (all with `None`), recorded before `before_ms`, newest first.
pub async fn page(
    db: &impl GenericClient,
    shops: Option<&[String]>,
    before_ms: Option<i64>,
    limit: i64,
) -> anyhow::Result<Vec<Feedback>> {
    let rows = db
        .query(
            "SELECT e.at_ms, e.shop_id, e.box_id, e.body->>'visit_id', e.body->>'customer_ref',
                    c.display_name,
                    CASE WHEN jsonb_typeof(e.body->'score') = 'number'
                         THEN (e.body->>'score')::numeric::bigint END,
                    e.body->>'comment'
             FROM events e LEFT JOIN customers c ON c.customer_ref = e.body->>'customer_ref'
             WHERE e.kind = 'feedback_recorded'
               AND ($1::text[] IS NULL OR e.shop_id = ANY($1))
               AND ($2::bigint IS NULL OR e.at_ms < $2)
             ORDER BY e.at_ms DESC LIMIT $3",
            &[&shops, &before_ms, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Feedback {
            at_ms: r.get(0),
            shop_id: r.get(1),
            box_id: r.get(2),
            visit_id: r.get(3),
            customer_ref: r.get(4),
            display_name: r.get(5),
            score: r.get(6),
            comment: r.get(7),
        })
        .collect())
}
