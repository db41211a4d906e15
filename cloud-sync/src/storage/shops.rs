//! Shops, their boxes, and the claim codes that attach a blank box to a shop.
//!
//! A claim code is shown to HQ once and stored only as its SHA-256 (60 random bits: a hash
//! is enough, nobody can try 2^60 codes through a rate-limited API). It is single use and
//! expires. Failed claims are counted per client, before the code is checked and under the
//! client's row lock, so parallel guesses cannot slip past the limit.

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tastesync_shared::provisioning::BoxStanding;
use tastesync_shared::typed_code;
use tastesync_shared::wire::is_valid_id;
use tokio_postgres::{Client, GenericClient, Transaction};

/// Failed claims a client may make per window before it must wait for the window's end.
pub const CLAIM_FAILURES_ALLOWED: i32 = 10;
pub const CLAIM_FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// Claim codes: 12 symbols of Crockford's base32 (60 bits), shown as XXXX-XXXX-XXXX.
const CODE_LEN: usize = 12;

/// Creates a shop; false if it already exists.
pub async fn add_shop(client: &Client, shop_id: &str, name: &str) -> anyhow::Result<bool> {
    if !is_valid_id(shop_id) {
        anyhow::bail!("{shop_id:?} is not a valid shop id: 1 to 64 letters, digits, - and _");
    }
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        anyhow::bail!("the shop's name must be at most 200 printable characters");
    }
    let inserted = client
        .execute(
            "INSERT INTO shops (shop_id, name) VALUES ($1, $2) ON CONFLICT (shop_id) DO NOTHING",
            &[&shop_id, &name],
        )
        .await?;
    Ok(inserted == 1)
}

pub async fn shop_exists(client: &impl GenericClient, shop_id: &str) -> anyhow::Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM shops WHERE shop_id = $1", &[&shop_id])
        .await?
        .is_some())
}

/// A new claim code for `shop_id`, valid for `valid_for`; returns the code as shown.
pub async fn new_claim_code(
    client: &Client,
    shop_id: &str,
    valid_for: Duration,
) -> anyhow::Result<String> {
    if !shop_exists(client, shop_id).await? {
        anyhow::bail!("no shop {shop_id:?}; add it first with `tastesync-cloud shops add`");
    }
    let mut random = [0u8; CODE_LEN];
    getrandom::fill(&mut random).expect("the OS random number generator");
    let code = typed_code::from_random(&random);
    client
        .execute(
            "INSERT INTO claim_codes (code_hash, shop_id, expires_at)
             VALUES ($1, $2, now() + make_interval(secs => $3))",
            &[&code_hash(&code), &shop_id, &(valid_for.as_secs_f64())],
        )
        .await?;
    Ok(format!("{}-{}-{}", &code[..4], &code[4..8], &code[8..]))
}

/// A claim code as typed (see `typed_code::normalize`); `None` if it cannot be one.
pub fn normalize_code(typed: &str) -> Option<String> {
    typed_code::normalize(typed, CODE_LEN)
}

fn code_hash(normalized: &str) -> Vec<u8> {
    Sha256::digest(normalized.as_bytes()).to_vec()
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefused {
    #[error("no such claim code; check it, or ask HQ for a new one")]
    Unknown,
    #[error("this claim code has expired; ask HQ for a new one")]
    Expired,
    #[error("this claim code was already used by another box; ask HQ for a new one")]
    Used,
    #[error("too many wrong claim codes from this address; try again in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
}

/// The shop a claim attached the box to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub shop_id: String,
}

/// Redeems a claim code for `box_id` within `tx` (committed by the caller once the box's
/// broker credentials exist): marks the code used and the box claimed for the code's shop,
/// with `credential_hash` the SHA-256 of its new password. A box that already redeemed this
/// code (its answer was lost) may redeem it again while it is valid: it gets new
/// credentials. Failures are counted for `client`, and committed even though the claim fails.
pub async fn redeem_claim_code(
    tx: &Transaction<'_>,
    client: &str,
    normalized_code: &str,
    box_id: &str,
    credential_hash: &[u8],
) -> anyhow::Result<Result<Claimed, ClaimRefused>> {
    let row = tx
        .query_one(
            "INSERT INTO claim_failures (client, window_start, failures) VALUES ($1, now(), 0)
             ON CONFLICT (client) DO UPDATE SET
                window_start = CASE WHEN claim_failures.window_start < now() - make_interval(secs => $2)
                                    THEN now() ELSE claim_failures.window_start END,
                failures = CASE WHEN claim_failures.window_start < now() - make_interval(secs => $2)
                                THEN 0 ELSE claim_failures.failures END
             RETURNING failures,
                extract(epoch FROM window_start + make_interval(secs => $2) - now())::float8",
            &[&client, &CLAIM_FAILURE_WINDOW.as_secs_f64()],
        )
        .await?;
    let (failures, window_left): (i32, f64) = (row.get(0), row.get(1));
    if failures >= CLAIM_FAILURES_ALLOWED {
        return Ok(Err(ClaimRefused::RateLimited {
            retry_after_s: window_left.ceil().max(1.0) as u64,
        }));
    }
    let code = tx
        .query_opt(
            "SELECT shop_id, expires_at < now(), used_by FROM claim_codes
             WHERE code_hash = $1 FOR UPDATE",
            &[&code_hash(normalized_code)],
        )
        .await?;
    let refused = match &code {
        None => Some(ClaimRefused::Unknown),
        Some(row) if row.get::<_, bool>(1) => Some(ClaimRefused::Expired),
        Some(row) => match row.get::<_, Option<String>>(2) {
            Some(used_by) if used_by != box_id => Some(ClaimRefused::Used),
            _ => None,
        },
    };
    if let Some(refused) = refused {
        tx.execute(
            "UPDATE claim_failures SET failures = failures + 1 WHERE client = $1",
            &[&client],
        )
        .await?;
        return Ok(Err(refused));
    }
    let shop_id: String = code.expect("checked above").get(0);
    tx.execute(
        "UPDATE claim_codes SET used_at = coalesce(used_at, now()), used_by = $2 WHERE code_hash = $1",
        &[&code_hash(normalized_code), &box_id],
    )
    .await?;
    tx.execute(
        "INSERT INTO boxes (box_id, shop_id, claimed_at, credential_hash)
         VALUES ($1, $2, now(), $3)
         ON CONFLICT (box_id) DO UPDATE SET shop_id = $2, claimed_at = now(), revoked_at = NULL,
            credential_hash = $3",
        &[&box_id, &shop_id, &credential_hash],
    )
    .await?;
    Ok(Ok(Claimed { shop_id }))
}

/// The box's standing if `credential_hash` matches its credentials, else `None`.
pub async fn box_standing(
    client: &impl GenericClient,
    box_id: &str,
    credential_hash: &[u8],
) -> anyhow::Result<Option<BoxStanding>> {
    let row = client
        .query_opt(
            "SELECT shop_id, revoked_at IS NOT NULL FROM boxes
             WHERE box_id = $1 AND credential_hash = $2",
            &[&box_id, &credential_hash],
        )
        .await?;
    Ok(row.map(|r| BoxStanding {
        box_id: box_id.to_string(),
        shop_id: r.get(0),
        state: if r.get(1) { "revoked" } else { "active" }.into(),
    }))
}

/// Marks a box revoked; returns its shop, or `None` if there is no such box.
pub async fn revoke_box(client: &Client, box_id: &str) -> anyhow::Result<Option<String>> {
    let row = client
        .query_opt(
            "UPDATE boxes SET revoked_at = coalesce(revoked_at, now()), online = false
             WHERE box_id = $1 RETURNING shop_id",
            &[&box_id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Every revoked box, as (shop, box) (the broker is told again at start, in case it missed
/// one).
pub async fn revoked_boxes(client: &impl GenericClient) -> anyhow::Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT shop_id, box_id FROM boxes WHERE revoked_at IS NOT NULL ORDER BY box_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A shop as `shops list` and the console show it.
#[derive(Debug, Clone, Serialize)]
pub struct ShopSummary {
    pub shop_id: String,
    pub name: String,
    pub boxes: Vec<BoxSummary>,
    /// Gaps recorded in the shop's streams: seqs lost with a restored database, or where a
    /// box's store went back in time.
    pub gaps: Vec<GapSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BoxSummary {
    /// `None` for a box still speaking protocol 1 (it has no box id; one per shop).
    pub box_id: Option<String>,
    pub protocol: i32,
    pub online: bool,
    /// When the cloud last heard from it (events or status), RFC 3339.
    pub last_seen: Option<String>,
    /// When its last events arrived, RFC 3339.
    pub last_event: Option<String>,
    /// Events waiting in its outbox at its last health report, and the oldest one's time.
    pub backlog: Option<i64>,
    pub oldest_unsent_ms: Option<i64>,
    pub software: Option<String>,
    pub claimed_at: Option<String>,
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct GapSummary {
    pub stream_id: String,
    pub box_id: Option<String>,
    pub from_seq: i64,
    pub to_seq: i64,
    /// `restore` (the database lost them) or `conflict` (the box's store went back).
    pub kind: String,
    pub detected_at: String,
}

/// Every shop (or one), with its boxes and gaps.
pub async fn list(
    client: &impl GenericClient,
    shop: Option<&str>,
) -> anyhow::Result<Vec<ShopSummary>> {
    const TIME: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.MSOF'"#;
    let shops = client
        .query(
            "SELECT shop_id, name FROM shops WHERE $1::text IS NULL OR shop_id = $1 ORDER BY shop_id",
            &[&shop],
        )
        .await?;
    let boxes = client
        .query(
            &format!(
                "SELECT b.shop_id, b.box_id, 2, b.online,
                    to_char(greatest(b.last_seen, (SELECT max(s.last_seen) FROM streams s
                                                   WHERE s.box_id = b.box_id)), {TIME}),
                    (SELECT to_char(max(s.last_seen), {TIME}) FROM streams s WHERE s.box_id = b.box_id),
                    (b.health->>'outbox_pending')::bigint, (b.health->>'oldest_unsent_ms')::bigint,
                    b.software, to_char(b.claimed_at, {TIME}), b.revoked_at IS NOT NULL
                 FROM boxes b WHERE $1::text IS NULL OR b.shop_id = $1
                 UNION ALL
                 SELECT s.shop_id, NULL, 1, sh.online, to_char(sh.last_seen, {TIME}),
                    to_char(s.last_seen, {TIME}), NULL, NULL, NULL, NULL, false
                 FROM streams s JOIN shops sh USING (shop_id)
                 WHERE s.protocol = 1 AND s.box_id IS NULL AND ($1::text IS NULL OR s.shop_id = $1)
                 ORDER BY 1, 2 NULLS FIRST"
            ),
            &[&shop],
        )
        .await?;
    let gaps = client
        .query(
            &format!(
                "SELECT s.shop_id, g.stream_id::text, s.box_id, g.from_seq, g.to_seq, g.kind,
                    to_char(g.detected_at, {TIME})
                 FROM stream_gaps g JOIN streams s USING (stream_id)
                 WHERE $1::text IS NULL OR s.shop_id = $1 ORDER BY g.id"
            ),
            &[&shop],
        )
        .await?;
    Ok(shops
        .iter()
        .map(|row| {
            let shop_id: String = row.get(0);
            ShopSummary {
                boxes: boxes
                    .iter()
                    .filter(|b| b.get::<_, String>(0) == shop_id)
                    .map(|b| BoxSummary {
                        box_id: b.get(1),
                        protocol: b.get(2),
                        online: b.get(3),
                        last_seen: b.get(4),
                        last_event: b.get(5),
                        backlog: b.get(6),
                        oldest_unsent_ms: b.get(7),
                        software: b.get(8),
                        claimed_at: b.get(9),
                        revoked: b.get(10),
                    })
                    .collect(),
                gaps: gaps
                    .iter()
                    .filter(|g| g.get::<_, String>(0) == shop_id)
                    .map(|g| GapSummary {
                        stream_id: g.get(1),
                        box_id: g.get(2),
                        from_seq: g.get(3),
                        to_seq: g.get(4),
                        kind: g.get(5),
                        detected_at: g.get(6),
                    })
                    .collect(),
                name: row.get(1),
                shop_id,
            }
        })
        .collect())
}
