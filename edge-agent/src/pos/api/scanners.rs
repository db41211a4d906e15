//! The scanner boxes' route: a paired scanner box posts what it heard, and the sightings
//! join the box's own in the pipeline (see `crate::scan::remote`).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, ErrorBody, PairedScanner};
use crate::clock::steady_ms;
use crate::scan::remote::{SightingBatch, scanner_name};

#[derive(Serialize, ToSchema)]
pub(super) struct SightingsTaken {
    /// Sightings taken into the pipeline.
    taken: usize,
}

#[utoipa::path(post, path = "/api/scanners/sightings", request_body = SightingBatch,
    security(("device_token" = [])), responses(
    (status = 202, body = SightingsTaken),
    (status = 400, body = ErrorBody, description = "a bad batch: nothing of it is taken"),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody, description = "not a scanner box's token, or unpaired"),
    (status = 503, body = ErrorBody, description = "this box takes no sightings now (a replay), or is overloaded")))]
pub(super) async fn sightings(
    State(state): State<AppState>,
    PairedScanner(device): PairedScanner,
    body: Result<Json<SightingBatch>, JsonRejection>,
) -> Result<(StatusCode, Json<SightingsTaken>), ApiError> {
    let Json(batch) = body?;
    let Some(pipeline) = &state.sightings else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this box takes no scanner sightings now (it plays a recording)",
        ));
    };
    let ads = batch
        .into_advertisements(&scanner_name(device.id), steady_ms())
        .map_err(ApiError::bad_request)?;
    let mut taken = 0;
    for ad in ads {
        // A pipeline that cannot keep up drops the surplus rather than stalling the LAN.
        if pipeline.try_send(ad).is_err() {
            break;
        }
        taken += 1;
    }
    Ok((StatusCode::ACCEPTED, Json(SightingsTaken { taken })))
}
