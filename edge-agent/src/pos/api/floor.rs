//! The owner's floor map: the shop's plan (an image the owner uploads), zones and scanners
//! marked on it, and per zone who is there now and today's visits and time spent there.
//! Owner only. The image is checked by its first bytes as well as its declared type, since
//! the page shows it back.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::owner::DayQuery;
use super::{ApiError, AppState, ErrorBody, Owner, with_store};
use crate::now_ms;
use crate::scan::remote::is_valid_zone;
use crate::store::floor::{FloorMark, FloorPlan, MarkKind};

/// Largest plan image: a phone photo of a floor plan, scaled down, fits well within it.
pub(super) const MAX_PLAN_BYTES: usize = 2 << 20;

/// The image types a plan may be, with the bytes each starts with.
const IMAGE_TYPES: [(&str, &[u8]); 3] = [
    ("image/png", b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", b"\xff\xd8\xff"),
    ("image/webp", b"RIFF"),
];

/// Whether `image` starts as a `content_type` image does (WebP: `RIFF....WEBP`).
fn looks_like(content_type: &str, image: &[u8]) -> bool {
    IMAGE_TYPES
        .iter()
        .any(|(name, magic)| *name == content_type && image.starts_with(magic))
        && (content_type != "image/webp" || image.get(8..12) == Some(b"WEBP"))
}

#[utoipa::path(put, path = "/api/owner/floor/plan", security(("owner_session" = [])),
    request_body(description = "the plan's image, at most 2 MB", content(
        (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/webp"))),
    responses(
    (status = 204, description = "saved"),
    (status = 400, body = ErrorBody, description = "not an image of the type it says"),
    (status = 401, body = ErrorBody),
    (status = 413, body = ErrorBody, description = "larger than 2 MB"),
    (status = 415, body = ErrorBody, description = "not a PNG, JPEG or WebP")))]
pub(super) async fn save_plan(
    State(state): State<AppState>,
    _owner: Owner,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !IMAGE_TYPES.iter().any(|(name, _)| *name == content_type) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the plan must be a PNG, JPEG or WebP image (Content-Type image/png, image/jpeg \
             or image/webp); save it as one of those and upload it again",
        ));
    }
    let image = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the plan image is larger than 2 MB; scale it down (a width of 2000 pixels is \
                 plenty) and upload it again",
            )
        } else {
            ApiError::bad_request(format!(
                "the image could not be read: {}",
                rejection.body_text()
            ))
        }
    })?;
    if !looks_like(&content_type, &image) {
        return Err(ApiError::bad_request(format!(
            "this file is not a {content_type} image (its first bytes say otherwise); \
             choose the plan's image file again"
        )));
    }
    let plan = FloorPlan {
        content_type,
        image: image.to_vec(),
        updated_at_ms: now_ms(),
    };
    with_store(&state, move |s| s.save_floor_plan(&plan)).await?;
    tracing::info!("the owner uploaded a floor plan");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/owner/floor/plan", security(("owner_session" = [])),
    responses(
    (status = 200, description = "the plan's image", content(
        (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/webp"))),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "no plan uploaded")))]
pub(super) async fn plan(
    State(state): State<AppState>,
    _owner: Owner,
) -> Result<Response, ApiError> {
    let plan = with_store(&state, |s| s.floor_plan())
        .await?
        .ok_or_else(no_plan)?;
    Ok((
        [
            (header::CONTENT_TYPE, plan.content_type),
            // Shown as what it is, never sniffed into something else.
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        plan.image,
    )
        .into_response())
}

fn no_plan() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no floor plan yet; upload an image of the shop's plan on the owner page",
    )
}

#[utoipa::path(delete, path = "/api/owner/floor/plan", security(("owner_session" = [])),
    responses(
    (status = 204, description = "removed (the marks stay)"),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "no plan uploaded")))]
pub(super) async fn delete_plan(
    State(state): State<AppState>,
    _owner: Owner,
) -> Result<StatusCode, ApiError> {
    if with_store(&state, |s| s.delete_floor_plan()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_plan())
    }
}

/// A customer in a zone now.
#[derive(Serialize, ToSchema)]
pub(super) struct InZone {
    visit_id: String,
    display_name: String,
}

/// A zone: who is there now, today's visits there and their average time there.
#[derive(Serialize, ToSchema)]
pub(super) struct ZoneNow {
    zone: String,
    /// Visits with time in the zone today.
    visits_today: u64,
    /// A visit's time in the zone today, on average (a stay still open counts up to now).
    average_dwell_s: Option<f64>,
    present: Vec<InZone>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Floor {
    has_plan: bool,
    marks: Vec<FloorMark>,
    /// The zones marked, those visited today and those where customers are now, by name.
    zones: Vec<ZoneNow>,
}

#[utoipa::path(get, path = "/api/owner/floor", params(DayQuery), security(("owner_session" = [])),
    responses(
    (status = 200, body = Floor),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody)))]
pub(super) async fn floor(
    State(state): State<AppState>,
    _owner: Owner,
    query: Result<Query<DayQuery>, QueryRejection>,
) -> Result<Json<Floor>, ApiError> {
    let Query(query) = query?;
    let now = now_ms();
    let since = query.since(now);
    let (has_plan, marks, figures, present) = with_store(&state, move |s| {
        Ok((
            s.has_floor_plan()?,
            s.floor_marks()?,
            s.zone_figures(since, now)?,
            s.present(now)?,
        ))
    })
    .await?;
    let mut zones: Vec<ZoneNow> = figures
        .into_iter()
        .map(|f| ZoneNow {
            zone: f.zone,
            visits_today: f.visits,
            average_dwell_s: f.average_dwell_s,
            present: Vec::new(),
        })
        .collect();
    let marked = marks.iter().filter(|m| m.kind == MarkKind::Zone);
    let named = marked
        .map(|m| &m.name)
        .chain(present.iter().map(|p| &p.zone));
    for name in named {
        if !zones.iter().any(|z| &z.zone == name) {
            zones.push(ZoneNow {
                zone: name.clone(),
                visits_today: 0,
                average_dwell_s: None,
                present: Vec::new(),
            });
        }
    }
    for customer in present {
        if let Some(zone) = zones.iter_mut().find(|z| z.zone == customer.zone) {
            zone.present.push(InZone {
                visit_id: customer.visit_id,
                display_name: customer.display_name,
            });
        }
    }
    zones.sort_by(|a, b| a.zone.cmp(&b.zone));
    Ok(Json(Floor {
        has_plan,
        marks,
        zones,
    }))
}

/// Where a mark goes on the plan.
#[derive(Deserialize, ToSchema)]
pub(super) struct MarkPosition {
    /// From the plan's left edge, as a fraction of its width (0 to 1).
    #[schema(minimum = 0, maximum = 1)]
    x: f64,
    /// From the plan's top edge, as a fraction of its height (0 to 1).
    #[schema(minimum = 0, maximum = 1)]
    y: f64,
}

/// The mark a path names, or why it names none.
fn mark_of(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(MarkKind, String), ApiError> {
    let Path((kind, name)) = path.map_err(|rejection| {
        ApiError::bad_request(format!("a bad mark in the path: {}", rejection.body_text()))
    })?;
    let kind = MarkKind::parse(&kind)
        .ok_or_else(|| ApiError::bad_request("a mark is a \"zone\" or a \"scanner\""))?;
    if !is_valid_zone(&name) {
        return Err(ApiError::bad_request(
            "a mark's name is 1 to 40 printable characters (the zone's or scanner's name)",
        ));
    }
    Ok((kind, name))
}

#[utoipa::path(put, path = "/api/owner/floor/marks/{kind}/{name}", request_body = MarkPosition,
    params(("kind" = MarkKind, Path),
        ("name" = String, Path, description = "the zone's or scanner's name: 1 to 40 printable characters")),
    security(("owner_session" = [])), responses(
    (status = 204, description = "placed (or moved)"),
    (status = 400, body = ErrorBody, description = "a bad kind, name or position"),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "no kind or name in the path")))]
pub(super) async fn place_mark(
    State(state): State<AppState>,
    _owner: Owner,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<MarkPosition>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let (kind, name) = mark_of(path)?;
    let Json(at) = body?;
    let fraction = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
    if !fraction(at.x) || !fraction(at.y) {
        return Err(ApiError::bad_request(
            "x and y are fractions of the plan's width and height, from 0 to 1",
        ));
    }
    let mark = FloorMark {
        kind,
        name,
        x: at.x,
        y: at.y,
    };
    with_store(&state, move |s| s.set_floor_mark(&mark)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/owner/floor/marks/{kind}/{name}",
    params(("kind" = MarkKind, Path),
        ("name" = String, Path, description = "the zone's or scanner's name: 1 to 40 printable characters")),
    security(("owner_session" = [])), responses(
    (status = 204, description = "removed"),
    (status = 400, body = ErrorBody, description = "a bad kind or name"),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "no such mark (or no kind or name in the path)")))]
pub(super) async fn remove_mark(
    State(state): State<AppState>,
    _owner: Owner,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (kind, name) = mark_of(path)?;
    if with_store(&state, move |s| s.delete_floor_mark(kind, &name)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such mark on the plan",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like;

    #[test]
    fn an_image_is_what_its_first_bytes_say() {
        assert!(looks_like("image/png", b"\x89PNG\r\n\x1a\n...."));
        assert!(looks_like("image/jpeg", b"\xff\xd8\xff\xe0...."));
        assert!(looks_like("image/webp", b"RIFF\x10\0\0\0WEBPVP8 "));
        assert!(!looks_like("image/webp", b"RIFF\x10\0\0\0WAVEfmt "));
        assert!(!looks_like("image/png", b"\xff\xd8\xff\xe0"));
        assert!(!looks_like("image/gif", b"GIF89a"));
        assert!(!looks_like("image/png", b""));
    }
}
