//! Chain analytics over a date range, read from the rollups only (`storage::analytics`):
//! visits per day, returning-customer rate, dwell, satisfaction, busiest hours, top items,
//! shops compared. Every role may read them: admins and analysts the whole chain or one
//! shop, managers their shops. Figures only: never a name, a note or a comment.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use tastesync_shared::provisioning::ErrorBody;
use utoipa::IntoParams;

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::storage::analytics::{self, Report, Scope};
use crate::storage::days::parse_day;

/// The longest range one call covers, days.
const MAX_DAYS: i64 = 3 * 366;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// First day, YYYY-MM-DD (default: 29 days before `to`).
    pub from: Option<String>,
    /// Last day, inclusive, YYYY-MM-DD (default: today in the shops covered, the latest of
    /// their local dates).
    pub to: Option<String>,
    /// One shop (default: the chain, or a manager's shops).
    pub shop: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/analytics", params(ReportParams), security(("bearer" = [])),
    responses(
    (status = 200, body = Report, description = "the range's figures"),
    (status = 400, body = ErrorBody, description = "a bad date or range"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "not your shop")))]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ReportParams>, QueryRejection>,
) -> Result<Json<Report>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let scope = match (&params.shop, caller.shop_scope()) {
        (Some(shop), _) => {
            caller.check_shop(shop)?;
            Scope::Shops(vec![shop.clone()])
        }
        (None, Some(shops)) => Scope::Shops(shops.to_vec()),
        (None, None) => Scope::Chain,
    };
    let db = state.db.get().await?;
    let to = match &params.to {
        Some(text) => parse_day(text).ok_or_else(|| bad_date("to"))?,
        None => analytics::today(&**db, &scope).await?,
    };
    let from = match &params.from {
        Some(text) => parse_day(text).ok_or_else(|| bad_date("from"))?,
        None => to - 29,
    };
    if from > to || to - from >= MAX_DAYS {
        return Err(ApiError::bad_request(format!(
            "from must not be after to, and a range covers at most {MAX_DAYS} days"
        )));
    }
    let report = analytics::report(&**db, &scope, from, to).await?;
    Ok(Json(report))
}

fn bad_date(field: &str) -> ApiError {
    ApiError::bad_request(format!("{field} must be a date as YYYY-MM-DD"))
}
