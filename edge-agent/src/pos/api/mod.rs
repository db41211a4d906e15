//! Routes and handlers of the POS API, on the shop's LAN, which customers share: `tablets`
//! (pairing, the live stream, staff actions), `owner` (setup, login, the owner's page, claiming
//! the box) and `guard` (what every request must pass first: a Host and Origin naming this
//! box, a bounded body). Errors are JSON `{"error": "..."}` with a status that says who must
//! act: 400 bad request, 401 no, unknown or expired token, 403 revoked token or foreign
//! origin, 404 unknown visit, 409 conflicting retry, 413 body too large, 429 too many guesses
//! or streams (with `Retry-After`), 503 the store busy, 507 the store full. The OpenAPI document
//! (`/api/openapi.json`) is generated from the annotations on the handlers.

mod floor;
mod guard;
mod owner;
mod scanners;
mod tablets;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Serialize;
use tastesync_shared::access::{MetricsRefusal, metrics_access};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{Health, PosState, auth};
use crate::clock::steady_ms;
use crate::now_ms;
use crate::pipeline::PipelineStats;
use crate::store::{Alert, Device, DeviceAuth, DeviceKind, Failure, OwnerSummary, Store};

/// Largest request body: the largest valid one (an order, feedback) is a few kB.
const MAX_BODY_BYTES: usize = 64 << 10;

type AppState = Arc<PosState>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/pos") }))
        .route(
            "/pos",
            get(|| async { Html(include_str!("../assets/pos.html")) }),
        )
        .route(
            "/owner",
            get(|| async { Html(include_str!("../assets/owner.html")) }),
        )
        .route("/assets/{file}", get(asset))
        .route("/api/health", get(health))
        .route("/metrics", get(metrics))
        .route(
            "/api/openapi.json",
            get(|| async { Json(ApiDoc::openapi()) }),
        )
        .route("/api/pair", post(tablets::pair))
        .route("/api/present", get(tablets::present))
        .route("/api/stream-tickets", post(tablets::stream_ticket))
        .route("/api/stream", get(tablets::stream))
        .route("/api/devices/rotate", post(tablets::rotate_token))
        .route("/api/visits/{visit_id}/ack", post(tablets::acknowledge))
        .route("/api/visits/{visit_id}/orders", post(tablets::order))
        .route("/api/visits/{visit_id}/feedback", post(tablets::feedback))
        .route("/api/scanners/sightings", post(scanners::sightings))
        .route("/api/owner/status", get(owner::owner_status))
        .route("/api/owner/setup", post(owner::owner_setup))
        .route("/api/owner/login", post(owner::owner_login))
        .route("/api/owner/pin", post(owner::change_pin))
        .route("/api/owner/overview", get(owner::owner_overview))
        .route("/api/owner/pairing-codes", post(owner::pairing_code))
        .route("/api/owner/devices/{id}", delete(owner::revoke))
        .route("/api/owner/claim", post(owner::claim))
        .route("/api/owner/floor", get(floor::floor))
        .route(
            "/api/owner/floor/plan",
            get(floor::plan)
                .put(floor::save_plan)
                .delete(floor::delete_plan)
                // The only route taking more than a few kB: an image.
                .layer(DefaultBodyLimit::max(floor::MAX_PLAN_BYTES)),
        )
        .route(
            "/api/owner/floor/marks/{kind}/{name}",
            put(floor::place_mark).delete(floor::remove_mark),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page or API route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::same_box_only,
        ))
        .with_state(state)
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "app.css" => (include_str!("../assets/app.css"), "text/css; charset=utf-8"),
        "pos.js" => (
            include_str!("../assets/pos.js"),
            "text/javascript; charset=utf-8",
        ),
        "owner.js" => (
            include_str!("../assets/owner.js"),
            "text/javascript; charset=utf-8",
        ),
        "i18n.js" => (
            include_str!("../assets/i18n.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return ApiError::new(StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after_s: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        let failure = Failure::of(&e);
        tracing::error!("POS request failed: {e:#}; {}", failure.explain());
        match failure {
            Failure::Busy => ApiError {
                retry_after_s: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the box is busy; try again in a moment",
                )
            },
            Failure::Full => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "the box's storage is full: nothing could be recorded (the owner page says what to do)",
            ),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the box's log",
            ),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request is larger than {MAX_BODY_BYTES} bytes"),
            );
        }
        ApiError::bad_request(format!("invalid JSON body: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                seconds.to_string().parse().expect("digits"),
            );
        }
        response
    }
}

/// Runs `f` on the handlers' store connection, off the async threads.
async fn with_store<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut Store) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(&mut store.lock().expect("store lock")))
        .await
        .map_err(|e| anyhow::anyhow!("store task: {e}"))?
        .map_err(ApiError::from)
}

/// The token of a request: `Authorization: Bearer ...` (never a URL: proxies log them,
/// browsers keep them in history).
fn bearer(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
}

/// A request from a paired tablet: not revoked, not idle past `pos.device_idle_days`.
pub struct PairedDevice(pub Device);

impl FromRequestParts<AppState> for PairedDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        paired(parts, state, DeviceKind::Tablet)
            .await
            .map(PairedDevice)
    }
}

/// A request from a paired scanner box, which may only send what it hears.
pub struct PairedScanner(pub Device);

impl FromRequestParts<AppState> for PairedScanner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        paired(parts, state, DeviceKind::Scanner)
            .await
            .map(PairedScanner)
    }
}

/// The device whose token the request bears, if it is of `kind`.
async fn paired(parts: &Parts, state: &AppState, kind: DeviceKind) -> Result<Device, ApiError> {
    let token = bearer(parts).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            match kind {
                DeviceKind::Tablet => "pair this tablet first: no device token",
                DeviceKind::Scanner => {
                    "pair this scanner box first (tastesync-edge pair-scanner): no device token"
                }
            },
        )
    })?;
    let device = device_of(state, auth::hash(&token)).await?;
    match (device.kind, kind) {
        (found, wanted) if found == wanted => Ok(device),
        (DeviceKind::Scanner, _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this is a scanner box's token: it may only send sightings",
        )),
        (DeviceKind::Tablet, _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this is a tablet's token: only a scanner box paired as one sends sightings",
        )),
    }
}

async fn device_of(state: &AppState, hash: [u8; 32]) -> Result<Device, ApiError> {
    let idle_ms = state.config.pos.device_idle_days * 86_400_000;
    match with_store(state, move |s| s.device_by_token(&hash, now_ms(), idle_ms)).await? {
        DeviceAuth::Valid(device) => Ok(device),
        DeviceAuth::Revoked => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this tablet was unpaired by the owner; pair it again",
        )),
        DeviceAuth::Expired => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this tablet was not used for a long time and must be paired again",
        )),
        DeviceAuth::Unknown => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unknown device token; pair this tablet again",
        )),
    }
}

/// The tablet opening a live stream: by a single-use ticket (`?ticket=`, for EventSource,
/// which cannot set headers) or its token in the `Authorization` header.
pub struct StreamDevice(pub Device);

impl FromRequestParts<AppState> for StreamDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ticket = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("ticket="))
                .map(str::to_string)
        });
        let Some(ticket) = ticket else {
            return PairedDevice::from_request_parts(parts, state)
                .await
                .map(|PairedDevice(device)| StreamDevice(device));
        };
        let Some(device_id) = state.tickets.redeem(&ticket, steady_ms()) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unknown, used or expired stream ticket; ask for a new one",
            ));
        };
        // Still paired at the moment the stream opens.
        let device = with_store(state, move |s| {
            Ok(s.devices()?
                .into_iter()
                .find(|d| d.id == device_id && d.revoked_at_ms.is_none()))
        })
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "this tablet was unpaired by the owner; pair it again",
            )
        })?;
        Ok(StreamDevice(device))
    }
}

/// A request from the owner: a session opened with the PIN that is still the PIN.
pub struct Owner;

impl FromRequestParts<AppState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let refused = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "log in on the owner page with the owner's PIN",
            )
        };
        let token = bearer(parts).ok_or_else(refused)?;
        let pin = with_store(state, |s| Ok(s.owner_pin()?.map(|p| p.fingerprint()))).await?;
        if state.owner.is_valid(&token, steady_ms(), pin) {
            Ok(Owner)
        } else {
            Err(refused())
        }
    }
}

/// Charges a guess at a secret to `limiter` before it is checked, or answers 429 with
/// `Retry-After`.
fn begin(limiter: &auth::FailureLimiter, peer: SocketAddr) -> Result<auth::Attempt<'_>, ApiError> {
    limiter
        .begin(peer.ip(), steady_ms())
        .map_err(|wait_ms| ApiError {
            retry_after_s: Some(wait_ms.div_ceil(1000)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many wrong attempts; try again in {} s",
                    wait_ms.div_ceil(1000)
                ),
            )
        })
}

/// What every error response carries: what was wrong and what to do.
#[derive(Serialize, ToSchema)]
struct ErrorBody {
    error: String,
}

#[derive(Serialize, ToSchema)]
struct Status {
    status: String,
}

#[utoipa::path(get, path = "/api/health", responses((status = 200, body = Status)))]
async fn health() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

/// Prometheus' page (`crate::metrics`): for loopback clients, or whoever presents
/// `pos.metrics_token`.
async fn metrics(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = state.config.pos.metrics_token.as_deref();
    metrics_access("pos.metrics_token", token, authorization, peer.ip()).map_err(|refusal| {
        match refusal {
            MetricsRefusal::NoToken(why) => ApiError::new(StatusCode::UNAUTHORIZED, why),
            MetricsRefusal::NotLocal(why) => ApiError::new(StatusCode::FORBIDDEN, why),
        }
    })?;
    let (outbox_pending, outbox_oldest_at_ms) = with_store(&state, |s| {
        Ok((s.outbox_pending()?, s.outbox_oldest_at_ms()?))
    })
    .await?;
    let health = state.health.borrow().clone();
    let page = crate::metrics::render(&crate::metrics::Now {
        health: &health,
        tablets_connected: state.hub.subscribers(),
        outbox_pending,
        outbox_oldest_at_ms,
        now_ms: now_ms(),
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        page,
    )
        .into_response())
}

/// The OpenAPI document of this API, served at `/api/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "TasteSync Edge POS API",
        description = "The box's API for paired tablets and the owner's page, on the shop's LAN."
    ),
    paths(
        health, tablets::pair, tablets::present, tablets::stream_ticket, tablets::stream,
        tablets::rotate_token, tablets::acknowledge, tablets::order, tablets::feedback,
        scanners::sightings,
        owner::owner_status, owner::owner_setup, owner::owner_login, owner::change_pin,
        owner::owner_overview, owner::pairing_code, owner::revoke, owner::claim,
        floor::save_plan, floor::plan, floor::delete_plan, floor::floor, floor::place_mark,
        floor::remove_mark
    ),
    components(schemas(Alert, Device, OwnerSummary, Health, PipelineStats)),
    modifiers(&BearerSchemes)
)]
pub struct ApiDoc;

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            ("device_token", "a paired tablet's token"),
            ("owner_session", "the owner's session token"),
        ] {
            let scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(what))
                .build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}
