//! The console's shops: every shop with its boxes (online from their retained status and
//! last will, last event, outbox backlog, software), gaps and claim codes; adding a shop,
//! a claim code for a box, revoking a box. Admins see every shop, managers their own;
//! analysts have the analytics instead.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tastesync_shared::provisioning::ErrorBody;
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::mqtt::dynsec;
use crate::storage::audit;
use crate::storage::shops::{self, NewClaimCode, ShopRefused, ShopSummary};

#[utoipa::path(get, path = "/api/v1/shops", security(("bearer" = [])), responses(
    (status = 200, body = Vec<ShopSummary>, description = "the shops the caller may see"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ShopSummary>>, ApiError> {
    caller.require_people()?;
    let db = state.db.get().await?;
    Ok(Json(
        shops::list_of(&**db, caller.shop_scope(), state.config.kafka.enabled()).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShop {
    /// 1 to 64 letters, digits, - and _.
    pub shop_id: String,
    #[serde(default)]
    pub name: String,
    /// IANA time zone (default Asia/Seoul).
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/shops", request_body = NewShop, security(("bearer" = [])),
    responses(
    (status = 201, body = ShopSummary, description = "added"),
    (status = 400, body = ErrorBody, description = "a bad id, name or time zone"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "the shop exists")))]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<NewShop>, JsonRejection>,
) -> Result<(StatusCode, Json<ShopSummary>), ApiError> {
    caller.require_admin()?;
    let Json(shop) = body?;
    let time_zone = shop.time_zone.unwrap_or_else(|| "Asia/Seoul".into());
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    match shops::add_shop(&*tx, &shop.shop_id, &shop.name, &time_zone).await? {
        Ok(()) => {}
        Err(refused @ ShopRefused::Exists(_)) => {
            return Err(ApiError::new(StatusCode::CONFLICT, refused.to_string()));
        }
        Err(refused) => return Err(ApiError::bad_request(refused.to_string())),
    }
    let detail = serde_json::json!({ "time_zone": time_zone });
    audit::record(&*tx, &caller.actor(), "shop_added", &shop.shop_id, detail).await?;
    tx.commit().await?;
    let summary = shops::list(&**db, Some(&shop.shop_id), state.config.kafka.enabled())
        .await?
        .pop();
    Ok((StatusCode::CREATED, Json(summary.expect("just added"))))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimCodeRequest {
    /// How long the code is valid, hours (1 to 720; default 24).
    #[serde(default)]
    pub valid_hours: Option<u64>,
}

#[utoipa::path(post, path = "/api/v1/shops/{shop_id}/claim-codes",
    params(("shop_id" = String, Path)), request_body = ClaimCodeRequest,
    security(("bearer" = [])), responses(
    (status = 201, body = NewClaimCode, description = "the code, shown this once"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "no such shop")))]
pub async fn new_claim_code(
    State(state): State<AppState>,
    caller: Caller,
    Path(shop_id): Path<String>,
    body: Result<Json<ClaimCodeRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<NewClaimCode>), ApiError> {
    caller.require_people()?;
    caller.check_shop(&shop_id)?;
    let Json(request) = body?;
    let valid_hours = request.valid_hours.unwrap_or(24);
    if !(1..=720).contains(&valid_hours) {
        return Err(ApiError::bad_request("valid_hours must be 1 to 720"));
    }
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    let code = shops::new_claim_code(&*tx, &shop_id, Duration::from_secs(valid_hours * 3600))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no shop {shop_id:?}")))?;
    let detail = serde_json::json!({ "valid_hours": valid_hours });
    audit::record(
        &*tx,
        &caller.actor(),
        "claim_code_created",
        &shop_id,
        detail,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(code)))
}

#[utoipa::path(post, path = "/api/v1/boxes/{box_id}/revoke", params(("box_id" = String, Path)),
    security(("bearer" = [])), responses(
    (status = 204, description = "revoked: the broker refuses the box from now on"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "no such box"),
    (status = 503, body = ErrorBody, description = "revoked at HQ; the broker could not be told")))]
pub async fn revoke_box(
    State(state): State<AppState>,
    caller: Caller,
    Path(box_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let db = state.db.get().await?;
    if !shops::box_exists(&**db, &box_id).await? {
        return Err(ApiError::not_found(format!("no box {box_id:?}")));
    }
    // Recorded first: the box is revoked at HQ even if the broker cannot be told now.
    audit::record(
        &**db,
        &caller.actor(),
        "box_revoked",
        &box_id,
        serde_json::json!({}),
    )
    .await?;
    match dynsec::revoke_box(&**db, state.broker_admin.as_ref(), &box_id).await {
        Ok(Some(_)) => Ok(StatusCode::NO_CONTENT),
        Ok(None) => Err(ApiError::not_found(format!("no box {box_id:?}"))),
        Err(e) => {
            tracing::error!("{e:#}");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the box is revoked at HQ, but the broker could not be told; revoke it again",
            ))
        }
    }
}
