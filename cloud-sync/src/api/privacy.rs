//! A customer's rights, for admins: export everything held about them as one JSON file, and
//! erase them everywhere (confirmed by typing their ref), shown done once every box has
//! applied it. Both audited.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tastesync_shared::provisioning::ErrorBody;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::storage::audit;
use crate::storage::privacy::{self, Erasure};

#[utoipa::path(get, path = "/api/v1/customers/{customer_ref}/export",
    params(("customer_ref" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, description = "everything held about the customer, as a JSON file",
     content_type = "application/json"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "nothing is held about them")))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer_ref): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let db = state.db.get().await?;
    let Some(mut document) = privacy::export(&**db, &customer_ref).await? else {
        return Err(ApiError::not_found(format!(
            "nothing is held about customer {customer_ref:?}"
        )));
    };
    document["exported_by"] = caller.email.clone().into();
    audit::record(
        &**db,
        &caller.actor(),
        "customer_exported",
        &customer_ref,
        serde_json::json!({}),
    )
    .await?;
    let file: String = customer_ref
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut response = Json(document).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"customer-{file}.json\""))
            .expect("a sanitised file name"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// The customer's ref, typed again: erasure cannot be undone.
    pub confirm: String,
}

#[utoipa::path(post, path = "/api/v1/customers/{customer_ref}/erasure",
    params(("customer_ref" = String, Path)), request_body = EraseRequest,
    security(("bearer" = [])), responses(
    (status = 202, body = Erasure, description = "erased at HQ; the boxes are told"),
    (status = 400, body = ErrorBody, description = "not confirmed"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "nothing is held about them")))]
pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer_ref): Path<String>,
    body: Result<Json<EraseRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Erasure>), ApiError> {
    caller.require_admin()?;
    let Json(request) = body?;
    if request.confirm != customer_ref {
        return Err(ApiError::bad_request(
            "type the customer's ref in `confirm` to erase them: it cannot be undone",
        ));
    }
    let mut db = state.db.get().await?;
    let erasure = privacy::erase(&mut db, &customer_ref, &caller.actor())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("nothing is held about customer {customer_ref:?}"))
        })?;
    Ok((StatusCode::ACCEPTED, Json(erasure)))
}

#[utoipa::path(get, path = "/api/v1/customers/{customer_ref}/erasure",
    params(("customer_ref" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = Erasure, description = "the erasure and each box's progress"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "not erased")))]
pub async fn erasure(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer_ref): Path<String>,
) -> Result<Json<Erasure>, ApiError> {
    caller.require_admin()?;
    let db = state.db.get().await?;
    privacy::status(&**db, &customer_ref)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("customer {customer_ref:?} was not erased")))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ErasuresParams {
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/erasures", params(ErasuresParams), security(("bearer" = [])),
    responses(
    (status = 200, body = Vec<Erasure>, description = "the latest erasures, newest first"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn erasures(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ErasuresParams>, QueryRejection>,
) -> Result<Json<Vec<Erasure>>, ApiError> {
    caller.require_admin()?;
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 200"));
    }
    let db = state.db.get().await?;
    Ok(Json(privacy::list(&**db, None, limit).await?))
}
