//! Shops, their boxes, and the claim codes that attach a blank box to a shop.
//!
//! A claim code is shown to HQ once and stored only as its SHA-256 (60 random bits: a hash
//! is enough, nobody can try 2^60 codes through a rate-limited API). It is single use and
//! expires. Failed claims are counted per client, before the code is checked and under the
//! client's row lock, so parallel guesses cannot slip past the limit.

use std::time::Duration;

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tastesync_shared::provisioning::BoxStanding;
use tastesync_shared::typed_code;
use tastesync_shared::wire::is_valid_id;
use tokio_postgres::{GenericClient, Transaction};
use utoipa::ToSchema;

/// Claim codes: 12 symbols of Crockford's base32 (60 bits), shown as XXXX-XXXX-XXXX.
const CODE_LEN: usize = 12;

/// Why a shop could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShopRefused {
    #[error("{0:?} is not a valid shop id: 1 to 64 letters, digits, - and _")]
    BadId(String),
    #[error("the shop's name must be at most 200 printable characters")]
    BadName,
    #[error("{0:?} is not a time zone (an IANA name such as Asia/Seoul)")]
    BadTimeZone(String),
    #[error("shop {0:?} already exists")]
    Exists(String),
}

/// Creates a shop whose days and hours are counted in `time_zone`.
pub async fn add_shop(
    client: &impl GenericClient,
    shop_id: &str,
    name: &str,
    time_zone: &str,
) -> anyhow::Result<Result<(), ShopRefused>> {
    if !is_valid_id(shop_id) {
        return Ok(Err(ShopRefused::BadId(shop_id.to_string())));
    }
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Ok(Err(ShopRefused::BadName));
    }
    let known_zone = client
        .query_opt(
            "SELECT 1 FROM pg_timezone_names WHERE name = $1",
            &[&time_zone],
        )
        .await?
        .is_some();
    if !known_zone {
        return Ok(Err(ShopRefused::BadTimeZone(time_zone.to_string())));
    }
    let inserted = client
        .execute(
            "INSERT INTO shops (shop_id, name, time_zone) VALUES ($1, $2, $3)
             ON CONFLICT (shop_id) DO NOTHING",
            &[&shop_id, &name, &time_zone],
        )
        .await?;
    Ok(if inserted == 1 {
        Ok(())
    } else {
        Err(ShopRefused::Exists(shop_id.to_string()))
    })
}

pub async fn shop_exists(client: &impl GenericClient, shop_id: &str) -> anyhow::Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM shops WHERE shop_id = $1", &[&shop_id])
        .await?
        .is_some())
}

/// A claim code as shown, once, to HQ.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewClaimCode {
    pub shop_id: String,
    /// XXXX-XXXX-XXXX.
    pub claim_code: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// A new claim code for `shop_id`, valid for `valid_for`; `None` if there is no such shop.
pub async fn new_claim_code(
    client: &impl GenericClient,
    shop_id: &str,
    valid_for: Duration,
) -> anyhow::Result<Option<NewClaimCode>> {
    if !shop_exists(client, shop_id).await? {
        return Ok(None);
    }
    let mut random = [0u8; CODE_LEN];
    getrandom::fill(&mut random).expect("the OS random number generator");
    let code = typed_code::from_random(&random);
    let expires_at: String = client
        .query_one(
            &"INSERT INTO claim_codes (code_hash, shop_id, expires_at)
                 VALUES ($1, $2, now() + make_interval(secs => $3))
                 RETURNING tastesync_rfc3339(expires_at)"
                .to_string(),
            &[&code_hash(&code), &shop_id, &(valid_for.as_secs_f64())],
        )
        .await?
        .get(0);
    Ok(Some(NewClaimCode {
        shop_id: shop_id.to_string(),
        claim_code: format!("{}-{}-{}", &code[..4], &code[4..8], &code[8..]),
        expires_at,
    }))
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
/// credentials. The caller charges the attempt to the client's failure budget first.
pub async fn redeem_claim_code(
    tx: &Transaction<'_>,
    normalized_code: &str,
    box_id: &str,
    credential_hash: &[u8],
) -> anyhow::Result<Result<Claimed, ClaimRefused>> {
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

pub async fn box_exists(client: &impl GenericClient, box_id: &str) -> anyhow::Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM boxes WHERE box_id = $1", &[&box_id])
        .await?
        .is_some())
}

/// Marks a box revoked; returns its shop, or `None` if there is no such box.
pub async fn revoke_box(
    client: &impl GenericClient,
    box_id: &str,
) -> anyhow::Result<Option<String>> {
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
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShopSummary {
    pub shop_id: String,
    pub name: String,
    /// The IANA time zone its days and hours are counted in.
    pub time_zone: String,
    pub boxes: Vec<BoxSummary>,
    /// Gaps recorded in the shop's streams: seqs lost with a restored database, or where a
    /// box's store went back in time.
    pub gaps: Vec<GapSummary>,
    /// Claim codes given out for the shop (never the codes themselves).
    pub claim_codes: Vec<ClaimCodeSummary>,
    /// Its events waiting for the Kafka relay (absent when Kafka is not configured).
    pub kafka: Option<super::kafka::Waiting>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BoxSummary {
    /// `None` for a box still speaking protocol 1 (it has no box id; one per shop).
    pub box_id: Option<String>,
    pub protocol: i32,
    /// From its retained status; its last will turns it off when it drops.
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

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GapSummary {
    pub stream_id: String,
    pub box_id: Option<String>,
    pub from_seq: i64,
    pub to_seq: i64,
    /// `restore` (the database lost them) or `conflict` (the box's store went back).
    pub kind: String,
    pub detected_at: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClaimCodeSummary {
    pub created_at: String,
    pub expires_at: String,
    /// `open`, `used` or `expired`.
    pub state: String,
    /// The box that used it.
    pub used_by: Option<String>,
}

/// Every shop (or those of `only`, or one), with its boxes, gaps and claim codes, and with
/// `kafka` what waits for the Kafka relay.
pub async fn list(
    client: &impl GenericClient,
    shop: Option<&str>,
    kafka: bool,
) -> anyhow::Result<Vec<ShopSummary>> {
    let only: Option<Vec<String>> = shop.map(|s| vec![s.to_string()]);
    list_of(client, only.as_deref(), kafka).await
}

/// Every shop, or those of `only`, with their boxes, gaps and claim codes, and with `kafka`
/// what waits for the Kafka relay.
pub async fn list_of(
    client: &impl GenericClient,
    only: Option<&[String]>,
    kafka: bool,
) -> anyhow::Result<Vec<ShopSummary>> {
    let only: Option<Vec<&str>> = only.map(|s| s.iter().map(String::as_str).collect());
    let shops_sql = "SELECT shop_id, name, time_zone FROM shops
         WHERE $1::text[] IS NULL OR shop_id = ANY($1) ORDER BY shop_id";
    let boxes_sql = "SELECT b.shop_id, b.box_id, 2, b.online,
            tastesync_rfc3339(greatest(b.last_seen, s.last_seen)), tastesync_rfc3339(s.last_seen),
            (b.health->>'outbox_pending')::bigint, (b.health->>'oldest_unsent_ms')::bigint,
            b.software, tastesync_rfc3339(b.claimed_at), b.revoked_at IS NOT NULL
         FROM boxes b LEFT JOIN (
            SELECT box_id, max(last_seen) AS last_seen FROM streams
            WHERE box_id IS NOT NULL GROUP BY box_id
         ) s USING (box_id)
         WHERE $1::text[] IS NULL OR b.shop_id = ANY($1)
         UNION ALL
         SELECT s.shop_id, NULL, 1, sh.online, tastesync_rfc3339(sh.last_seen),
            tastesync_rfc3339(s.last_seen), NULL, NULL, NULL, NULL, false
         FROM streams s JOIN shops sh USING (shop_id)
         WHERE s.protocol = 1 AND s.box_id IS NULL AND ($1::text[] IS NULL OR s.shop_id = ANY($1))
         ORDER BY 1, 2 NULLS FIRST"
        .to_string();
    let gaps_sql = "SELECT s.shop_id, g.stream_id::text, s.box_id, g.from_seq, g.to_seq, g.kind,
            tastesync_rfc3339(g.detected_at)
         FROM stream_gaps g JOIN streams s USING (stream_id)
         WHERE $1::text[] IS NULL OR s.shop_id = ANY($1) ORDER BY g.id"
        .to_string();
    let codes_sql = "SELECT shop_id, tastesync_rfc3339(created_at), tastesync_rfc3339(expires_at),
            CASE WHEN used_by IS NOT NULL THEN 'used' WHEN expires_at < now() THEN 'expired'
                 ELSE 'open' END,
            used_by
         FROM claim_codes
         WHERE ($1::text[] IS NULL OR shop_id = ANY($1))
           AND created_at > now() - interval '30 days'
         ORDER BY created_at DESC"
        .to_string();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&only];
    let waiting = async {
        match kafka {
            true => super::kafka::waiting_per_shop(client, only.as_deref()).await,
            false => Ok(Default::default()),
        }
    };
    let (shops, boxes, gaps, codes, mut waiting) = tokio::try_join!(
        async { Ok(client.query(shops_sql, &params).await?) },
        async { Ok(client.query(&boxes_sql, &params).await?) },
        async { Ok(client.query(&gaps_sql, &params).await?) },
        async { Ok(client.query(&codes_sql, &params).await?) },
        waiting,
    )?;
    let mut summaries: BTreeMap<String, ShopSummary> = shops
        .iter()
        .map(|row| {
            let shop_id: String = row.get(0);
            let summary = ShopSummary {
                shop_id: shop_id.clone(),
                name: row.get(1),
                time_zone: row.get(2),
                boxes: Vec::new(),
                gaps: Vec::new(),
                claim_codes: Vec::new(),
                kafka: kafka.then(|| waiting.remove(&shop_id).unwrap_or_default()),
            };
            (shop_id, summary)
        })
        .collect();
    for b in &boxes {
        if let Some(shop) = summaries.get_mut(b.get::<_, &str>(0)) {
            shop.boxes.push(BoxSummary {
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
            });
        }
    }
    for g in &gaps {
        if let Some(shop) = summaries.get_mut(g.get::<_, &str>(0)) {
            shop.gaps.push(GapSummary {
                stream_id: g.get(1),
                box_id: g.get(2),
                from_seq: g.get(3),
                to_seq: g.get(4),
                kind: g.get(5),
                detected_at: g.get(6),
            });
        }
    }
    for c in &codes {
        if let Some(shop) = summaries.get_mut(c.get::<_, &str>(0)) {
            shop.claim_codes.push(ClaimCodeSummary {
                created_at: c.get(1),
                expires_at: c.get(2),
                state: c.get(3),
                used_by: c.get(4),
            });
        }
    }
    Ok(summaries.into_values().collect())
}
