//! The audit log, for admins: who did what, when, newest first.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use tastesync_shared::provisioning::ErrorBody;
use utoipa::IntoParams;

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::storage::audit::{self, Entry};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Entries older than this id: the next page.
    pub before_id: Option<i64>,
    /// Only this action, e.g. `customer_erased`.
    pub action: Option<String>,
    /// Only this actor (an email, or `cli:<user>`).
    pub actor: Option<String>,
    /// 1 to 500 (default 100).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", params(AuditParams), security(("bearer" = [])),
    responses(
    (status = 200, body = Vec<Entry>, description = "newest first"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn page(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Vec<Entry>>, ApiError> {
    caller.require_admin()?;
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 500"));
    }
    let db = state.db.get().await?;
    let entries = audit::page(
        &**db,
        params.before_id,
        params.action.as_deref(),
        params.actor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(entries))
}
