//! The console's feedback page: private comments staff recorded on the tablets, for admins
//! and the shops' managers.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use tastesync_shared::provisioning::ErrorBody;
use utoipa::IntoParams;

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::storage::feedback::{self, Feedback};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedbackParams {
    /// One shop (default: every shop the caller may see).
    pub shop: Option<String>,
    /// Only feedback recorded before this time (Unix ms): the next page.
    pub before_ms: Option<i64>,
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/feedback", params(FeedbackParams), security(("bearer" = [])),
    responses(
    (status = 200, body = Vec<Feedback>, description = "newest first"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn page(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<FeedbackParams>, QueryRejection>,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    caller.require_people()?;
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 200"));
    }
    let shops: Option<Vec<String>> = match (params.shop, caller.shop_scope()) {
        (Some(shop), _) => {
            caller.check_shop(&shop)?;
            Some(vec![shop])
        }
        (None, scope) => scope.map(<[String]>::to_vec),
    };
    let db = state.db.get().await?;
    let page = feedback::page(&**db, shops.as_deref(), params.before_ms, limit).await?;
    Ok(Json(page))
}
