//! Routes and handlers of the POS API. Errors are JSON `{"error": "..."}` with a status that
//! says who must act: 400 bad request, 401 no or unknown token, 403 revoked token,
//! 404 unknown visit, 409 conflicting retry, 429 too many wrong codes. The OpenAPI document
//! (`/api/openapi.json`) is generated from the annotations on these handlers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::{Health, PosState, auth};
use crate::identity::Standing;
use crate::now_ms;
use crate::pipeline::PipelineStats;
use crate::provisioning::ClaimError;
use crate::store::{
    ActionOutcome, Alert, Device, DeviceAuth, OwnerSummary, PosEvent, StaffAction, Store,
};

type AppState = Arc<PosState>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/pos") }))
        .route(
            "/pos",
            get(|| async { Html(include_str!("assets/pos.html")) }),
        )
        .route(
            "/owner",
            get(|| async { Html(include_str!("assets/owner.html")) }),
        )
        .route("/assets/{file}", get(asset))
        .route("/api/health", get(health))
        .route(
            "/api/openapi.json",
            get(|| async { Json(ApiDoc::openapi()) }),
        )
        .route("/api/pair", post(pair))
        .route("/api/present", get(present))
        .route("/api/stream", get(stream))
        .route("/api/visits/{visit_id}/ack", post(acknowledge))
        .route("/api/visits/{visit_id}/orders", post(order))
        .route("/api/visits/{visit_id}/feedback", post(feedback))
        .route("/api/owner/status", get(owner_status))
        .route("/api/owner/setup", post(owner_setup))
        .route("/api/owner/login", post(owner_login))
        .route("/api/owner/overview", get(owner_overview))
        .route("/api/owner/pairing-codes", post(pairing_code))
        .route("/api/owner/devices/{id}", delete(revoke))
        .route("/api/owner/claim", post(claim))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page or API route") })
        .with_state(state)
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "app.css" => (include_str!("assets/app.css"), "text/css; charset=utf-8"),
        "pos.js" => (
            include_str!("assets/pos.js"),
            "text/javascript; charset=utf-8",
        ),
        "owner.js" => (
            include_str!("assets/owner.js"),
            "text/javascript; charset=utf-8",
        ),
        "i18n.js" => (
            include_str!("assets/i18n.js"),
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
        tracing::error!("POS request failed: {e:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the box's log",
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
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

/// The token of a request: `Authorization: Bearer ...`, or `?token=` (EventSource cannot set
/// headers).
fn bearer(parts: &Parts) -> Option<String> {
    if let Some(value) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    parts.uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .map(str::to_string)
    })
}

/// A request from a paired, non-revoked tablet.
pub struct PairedDevice(pub Device);

impl FromRequestParts<AppState> for PairedDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "pair this tablet first: no device token",
            )
        })?;
        let hash = auth::hash(&token);
        match with_store(state, move |s| s.device_by_token(&hash)).await? {
            DeviceAuth::Valid(device) => Ok(PairedDevice(device)),
            DeviceAuth::Revoked => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this tablet was unpaired by the owner; pair it again",
            )),
            DeviceAuth::Unknown => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unknown device token; pair this tablet again",
            )),
        }
    }
}

/// A request from the owner (a session opened with the PIN).
pub struct Owner;

impl FromRequestParts<AppState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer(parts) {
            Some(token) if state.owner.is_valid(&token, now_ms()) => Ok(Owner),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "log in on the owner page with the owner's PIN",
            )),
        }
    }
}

fn limited(state: &AppState, addr: SocketAddr) -> Result<(), ApiError> {
    state
        .limiter
        .check(addr.ip(), now_ms())
        .map_err(|wait_ms| ApiError {
            retry_after_s: Some(wait_ms.div_ceil(1000)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many wrong codes; wait a minute",
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

#[derive(Deserialize, ToSchema)]
struct PairRequest {
    /// The 6-digit code from the owner page or `tastesync-edge pair`.
    code: String,
    /// A name for the tablet, 1 to 40 characters.
    name: String,
}

#[derive(Serialize, ToSchema)]
struct PairResponse {
    /// The tablet's token: send it as `Authorization: Bearer ...`. Shown once.
    token: String,
    device: Device,
}

#[utoipa::path(post, path = "/api/pair", request_body = PairRequest, responses(
    (status = 201, body = PairResponse),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody, description = "wrong or expired code"),
    (status = 429, body = ErrorBody, description = "too many wrong codes from this address")))]
async fn pair(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Json<PairRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<PairResponse>), ApiError> {
    limited(&state, addr)?;
    let Json(request) = body?;
    let name = request.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 40 {
        return Err(ApiError::bad_request(
            "name must be 1 to 40 characters, e.g. \"Counter tablet\"",
        ));
    }
    let code = request.code.trim().to_string();
    if code.len() != 6 || !code.chars().all(|c| c.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "the pairing code is 6 digits, shown on the owner page",
        ));
    }
    let token = auth::new_token();
    let token_hash = auth::hash(&token);
    let code_hash = auth::hash(&code);
    let device = with_store(&state, move |s| {
        let now = now_ms();
        if !s.take_pairing_code(&code_hash, now)? {
            return Ok(None);
        }
        s.add_device(&name, &token_hash, now).map(Some)
    })
    .await?;
    match device {
        Some(device) => {
            tracing::info!(device = device.id, "tablet paired");
            Ok((StatusCode::CREATED, Json(PairResponse { token, device })))
        }
        None => {
            state.limiter.failed(addr.ip(), now_ms());
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong or expired pairing code; ask the owner for a new one",
            ))
        }
    }
}

#[derive(Serialize, ToSchema)]
struct PresentResponse {
    /// Open the stream with `since` = this to receive everything after this state.
    last_event_id: i64,
    present: Vec<Alert>,
}

#[utoipa::path(get, path = "/api/present", security(("device_token" = [])), responses(
    (status = 200, body = PresentResponse),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody)))]
async fn present(
    State(state): State<AppState>,
    _device: PairedDevice,
) -> Result<Json<PresentResponse>, ApiError> {
    let (present, (_, last_event_id)) = with_store(&state, |s| {
        Ok((s.present(now_ms())?, s.pos_event_bounds()?))
    })
    .await?;
    Ok(Json(PresentResponse {
        last_event_id,
        present,
    }))
}

#[derive(Deserialize, IntoParams)]
#[allow(dead_code)] // `token` is read by the authentication extractor
struct StreamQuery {
    /// Resume after this event id (the `Last-Event-ID` header takes precedence).
    since: Option<i64>,
    /// The device token, for clients that cannot set headers (EventSource).
    token: Option<String>,
}

/// Live events as SSE. Resumes after `Last-Event-ID` (sent by browsers on reconnect) or
/// `?since=`; without either, starts from now. When the tablet was away longer than the log
/// keeps, a `reset` event tells it to reload `/api/present`.
#[utoipa::path(get, path = "/api/stream", params(StreamQuery), security(("device_token" = [])), responses(
    (status = 200, content_type = "text/event-stream", body = String,
     description = "events `arrival` (an Alert), `departure`, `ack` and `reset`, each with an id"),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    PairedDevice(device): PairedDevice,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.since);
    let live = state.hub.subscribe(); // before reading the log: nothing falls in between
    let (oldest, newest) = with_store(&state, |s| s.pos_event_bounds()).await?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(forward(
        state.clone(),
        device.id,
        resume,
        (oldest, newest),
        live,
        tx,
    ));
    let events =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse(event: &PosEvent) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.as_str())
        .data(event.body.as_str())
}

/// Feeds one tablet: the missed events from the log, then live ones, each id once, in order.
async fn forward(
    state: AppState,
    device_id: i64,
    resume: Option<i64>,
    (oldest, newest): (i64, i64),
    mut live: broadcast::Receiver<PosEvent>,
    tx: mpsc::Sender<Event>,
) {
    let mut last = match resume {
        Some(since) if since + 1 >= oldest && since <= newest => since,
        Some(_) => {
            let reset = Event::default()
                .id(newest.to_string())
                .event("reset")
                .data("{}");
            if tx.send(reset).await.is_err() {
                return;
            }
            newest
        }
        None => newest,
    };
    let mut recheck = tokio::time::interval(Duration::from_secs(15));
    let mut shutdown = state.shutdown.clone();
    if *shutdown.borrow() {
        return;
    }
    let mut catch_up = true;
    loop {
        if catch_up {
            loop {
                let since = last;
                let Ok(batch) = with_store(&state, move |s| s.pos_events_after(since, 500)).await
                else {
                    return;
                };
                if batch.is_empty() {
                    break;
                }
                for event in &batch {
                    if tx.send(sse(event)).await.is_err() {
                        return;
                    }
                    last = event.id;
                }
            }
            catch_up = false;
        }
        tokio::select! {
            received = live.recv() => match received {
                Ok(event) if event.id == 0 => {
                    // Live only (the log could not be written): no id, nothing to resume.
                    let frame = Event::default().event(event.kind.as_str()).data(event.body.as_str());
                    if tx.send(frame).await.is_err() {
                        return;
                    }
                }
                Ok(event) if event.id > last => {
                    if tx.send(sse(&event)).await.is_err() {
                        return;
                    }
                    last = event.id;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => catch_up = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = recheck.tick() => {
                // A revoked tablet loses its stream too.
                let still_paired = with_store(&state, move |s| {
                    Ok(s.devices()?.iter().any(|d| d.id == device_id && d.revoked_at_ms.is_none()))
                })
                .await;
                if !matches!(still_paired, Ok(true)) {
                    return;
                }
            }
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
        }
    }
}

fn parse_visit_id(text: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(text)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "no such visit"))
}

fn parse_action_id(text: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(text)
        .map(|u| u.to_string())
        .map_err(|_| {
            ApiError::bad_request("action_id must be a UUID the tablet generates once per action")
        })
}

fn outcome(outcome: ActionOutcome) -> Result<StatusCode, ApiError> {
    match outcome {
        ActionOutcome::Recorded => Ok(StatusCode::CREATED),
        ActionOutcome::Duplicate => Ok(StatusCode::OK),
        ActionOutcome::Conflict => Err(ApiError::new(
            StatusCode::CONFLICT,
            "this action_id was already used for a different action; use a new action_id",
        )),
        ActionOutcome::UnknownVisit => Err(ApiError::new(StatusCode::NOT_FOUND, "no such visit")),
    }
}

#[derive(Serialize, ToSchema)]
struct AckResponse {
    /// The tablet that handled the alert first.
    acknowledged_by: Option<String>,
}

#[utoipa::path(post, path = "/api/visits/{visit_id}/ack", params(("visit_id" = String, Path)),
    security(("device_token" = [])), responses(
    (status = 201, body = AckResponse, description = "this tablet handled it first"),
    (status = 200, body = AckResponse, description = "already handled"),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
async fn acknowledge(
    State(state): State<AppState>,
    PairedDevice(device): PairedDevice,
    Path(visit_id): Path<String>,
) -> Result<(StatusCode, Json<AckResponse>), ApiError> {
    let visit_id = parse_visit_id(&visit_id)?;
    let hub = state.hub.clone();
    let name = device.name.clone();
    let (result, acknowledged_by) = with_store(&state, move |s| {
        let now = now_ms();
        let result = s.acknowledge(&visit_id, device.id, now)?;
        if result == ActionOutcome::Recorded {
            let body = json!({"visit_id": visit_id, "acknowledged_by": name, "at_ms": now});
            hub.publish(s, "ack", None, &body, now)?;
        }
        let by = s.alert(&visit_id)?.and_then(|a| a.acknowledged_by);
        Ok((result, by))
    })
    .await?;
    Ok((outcome(result)?, Json(AckResponse { acknowledged_by })))
}

#[derive(Serialize, ToSchema)]
struct Recorded {
    recorded: bool,
}

#[derive(Deserialize, ToSchema)]
struct OrderRequest {
    /// A UUID the tablet makes once per action; retries reuse it.
    action_id: String,
    /// 1 to 20 items, each 1 to 60 characters.
    items: Vec<String>,
}

#[utoipa::path(post, path = "/api/visits/{visit_id}/orders", params(("visit_id" = String, Path)),
    request_body = OrderRequest, security(("device_token" = [])), responses(
    (status = 201, body = Recorded),
    (status = 200, body = Recorded, description = "a retry of a recorded action"),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
async fn order(
    State(state): State<AppState>,
    PairedDevice(device): PairedDevice,
    Path(visit_id): Path<String>,
    body: Result<Json<OrderRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Recorded>), ApiError> {
    let visit_id = parse_visit_id(&visit_id)?;
    let Json(request) = body?;
    let items: Vec<String> = request.items.iter().map(|i| i.trim().to_string()).collect();
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(ApiError::bad_request(format!(
            "items must list 1 to {MAX_ITEMS} items"
        )));
    }
    for item in &items {
        if item.is_empty() || item.len() > MAX_ITEM_BYTES {
            return Err(ApiError::bad_request(format!(
                "each item must be 1 to {MAX_ITEM_BYTES} bytes (about 60 letters, or 40 in Korean)"
            )));
        }
        printable(item, "an item", false)?;
    }
    let action = StaffAction::Order { items };
    record_staff_action(&state, device.id, visit_id, &request.action_id, action).await
}

/// Limits on what staff type, in bytes (UTF-8) since an event's size is what must stay bounded:
/// with these, an order or feedback event is at most a few kilobytes.
const MAX_ITEMS: usize = 20;
const MAX_ITEM_BYTES: usize = 120;
const MAX_COMMENT_BYTES: usize = 1500;

/// Refuses control characters (a comment may have line breaks): they serve nobody, and each
/// takes six bytes in JSON.
fn printable(text: &str, what: &str, line_breaks: bool) -> Result<(), ApiError> {
    if text
        .chars()
        .any(|c| c.is_control() && !(line_breaks && c == '\n'))
    {
        return Err(ApiError::bad_request(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// Records a validated staff action once per `action_id`: 201 the first time, 200 for a retry.
async fn record_staff_action(
    state: &AppState,
    device: i64,
    visit_id: String,
    action_id: &str,
    action: StaffAction,
) -> Result<(StatusCode, Json<Recorded>), ApiError> {
    let action_id = parse_action_id(action_id)?;
    let result = with_store(state, move |s| {
        s.record_action(&action_id, &visit_id, device, &action, now_ms())
    })
    .await?;
    Ok((outcome(result)?, Json(Recorded { recorded: true })))
}

#[derive(Deserialize, ToSchema)]
struct FeedbackRequest {
    /// A UUID the tablet makes once per action; retries reuse it.
    action_id: String,
    /// Satisfaction, 1 to 5.
    score: i64,
    /// Private to the owner, at most 1,500 bytes (UTF-8), no control characters but line breaks.
    #[serde(default)]
    comment: String,
}

#[utoipa::path(post, path = "/api/visits/{visit_id}/feedback", params(("visit_id" = String, Path)),
    request_body = FeedbackRequest, security(("device_token" = [])), responses(
    (status = 201, body = Recorded),
    (status = 200, body = Recorded, description = "a retry of a recorded action"),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
async fn feedback(
    State(state): State<AppState>,
    PairedDevice(device): PairedDevice,
    Path(visit_id): Path<String>,
    body: Result<Json<FeedbackRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Recorded>), ApiError> {
    let visit_id = parse_visit_id(&visit_id)?;
    let Json(request) = body?;
    let score = u8::try_from(request.score)
        .ok()
        .filter(|s| (1..=5).contains(s))
        .ok_or_else(|| ApiError::bad_request("score must be a whole number from 1 to 5"))?;
    let comment = request.comment.trim().to_string();
    if comment.len() > MAX_COMMENT_BYTES {
        return Err(ApiError::bad_request(format!(
            "the comment must be at most {MAX_COMMENT_BYTES} bytes (about 500 letters, or 330 in Korean)"
        )));
    }
    printable(&comment, "the comment", true)?;
    let action = StaffAction::Feedback { score, comment };
    record_staff_action(&state, device.id, visit_id, &request.action_id, action).await
}

#[derive(Serialize, ToSchema)]
struct OwnerStatus {
    pin_set: bool,
    #[serde(rename = "box")]
    box_info: BoxInfo,
}

/// The box itself: its id, and whether it belongs to a shop.
#[derive(Serialize, ToSchema)]
struct BoxInfo {
    box_id: String,
    standing: Standing,
    shop_id: Option<String>,
}

fn box_info(state: &PosState) -> BoxInfo {
    let identity = state.identity.get();
    BoxInfo {
        standing: identity.standing(&state.config.shop_id),
        shop_id: identity.shop_id(&state.config.shop_id).map(String::from),
        box_id: identity.box_id,
    }
}

#[utoipa::path(get, path = "/api/owner/status", responses((status = 200, body = OwnerStatus)))]
async fn owner_status(State(state): State<AppState>) -> Result<Json<OwnerStatus>, ApiError> {
    let pin_set = with_store(&state, |s| Ok(s.owner_pin()?.is_some())).await?;
    Ok(Json(OwnerStatus {
        pin_set,
        box_info: box_info(&state),
    }))
}

#[derive(Deserialize, ToSchema)]
struct PinRequest {
    /// The owner's PIN or passphrase, 6 to 128 characters.
    pin: String,
}

#[derive(Serialize, ToSchema)]
struct TokenResponse {
    /// An owner session, valid 12 hours: `Authorization: Bearer ...`.
    token: String,
}

#[utoipa::path(post, path = "/api/owner/setup", request_body = PinRequest, responses(
    (status = 201, body = TokenResponse, description = "PIN set"),
    (status = 400, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "a PIN is already set")))]
async fn owner_setup(
    State(state): State<AppState>,
    body: Result<Json<PinRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let Json(request) = body?;
    if request.pin.chars().count() < auth::MIN_PIN_LEN || request.pin.len() > 128 {
        return Err(ApiError::bad_request(format!(
            "the PIN or passphrase must be {} to 128 characters",
            auth::MIN_PIN_LEN
        )));
    }
    let set = with_store(&state, move |s| {
        let (salt, hash) = auth::hash_pin(&request.pin);
        s.set_owner_pin(&salt, &hash)
    })
    .await?;
    if !set {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the owner's PIN is already set; log in",
        ));
    }
    let token = state.owner.open(now_ms());
    Ok((StatusCode::CREATED, Json(TokenResponse { token })))
}

#[utoipa::path(post, path = "/api/owner/login", request_body = PinRequest, responses(
    (status = 200, body = TokenResponse),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "no PIN set yet"),
    (status = 429, body = ErrorBody)))]
async fn owner_login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Json<PinRequest>, JsonRejection>,
) -> Result<Json<TokenResponse>, ApiError> {
    limited(&state, addr)?;
    let Json(request) = body?;
    let ok = with_store(&state, move |s| {
        Ok(s.owner_pin()?
            .map(|(salt, hash)| auth::verify_pin(&request.pin, &salt, &hash)))
    })
    .await?;
    match ok {
        Some(true) => Ok(Json(TokenResponse {
            token: state.owner.open(now_ms()),
        })),
        Some(false) => {
            state.limiter.failed(addr.ip(), now_ms());
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong PIN"))
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no PIN is set yet; set one first",
        )),
    }
}

#[derive(Deserialize, IntoParams)]
struct OverviewQuery {
    /// Start of the owner's day (local midnight), Unix ms.
    since_ms: Option<u64>,
    /// The browser's offset from UTC in minutes (east positive).
    tz_offset_min: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct Overview {
    summary: OwnerSummary,
    present: Vec<Alert>,
    devices: Vec<Device>,
    health: Health,
    /// Tablets with a live stream open now.
    connected_tablets: usize,
    #[serde(rename = "box")]
    box_info: BoxInfo,
}

#[utoipa::path(get, path = "/api/owner/overview", params(OverviewQuery), security(("owner_session" = [])),
    responses(
    (status = 200, body = Overview),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody)))]
async fn owner_overview(
    State(state): State<AppState>,
    _owner: Owner,
    query: Result<Query<OverviewQuery>, QueryRejection>,
) -> Result<Json<Overview>, ApiError> {
    let Query(query) = query?;
    let now = now_ms();
    let since = query.since_ms.unwrap_or(now - now % 86_400_000).min(now);
    let offset = query.tz_offset_min.unwrap_or(0).clamp(-14 * 60, 14 * 60);
    let (summary, devices, present) = with_store(&state, move |s| {
        Ok((
            s.owner_summary(since, offset, now)?,
            s.devices()?,
            s.present(now)?,
        ))
    })
    .await?;
    let health = state.health.borrow().clone();
    Ok(Json(Overview {
        summary,
        present,
        devices,
        health,
        connected_tablets: state.hub.subscribers(),
        box_info: box_info(&state),
    }))
}

#[derive(Serialize, ToSchema)]
struct PairingCode {
    /// 6 digits, single use.
    code: String,
    expires_at_ms: u64,
}

#[utoipa::path(post, path = "/api/owner/pairing-codes", security(("owner_session" = [])),
    responses((status = 201, body = PairingCode), (status = 401, body = ErrorBody)))]
async fn pairing_code(
    State(state): State<AppState>,
    _owner: Owner,
) -> Result<(StatusCode, Json<PairingCode>), ApiError> {
    let code = auth::new_pairing_code();
    let hash = auth::hash(&code);
    let expires_at_ms = now_ms() + auth::PAIRING_CODE_TTL_MS;
    with_store(&state, move |s| s.add_pairing_code(&hash, expires_at_ms)).await?;
    Ok((
        StatusCode::CREATED,
        Json(PairingCode {
            code,
            expires_at_ms,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/owner/devices/{id}", params(("id" = String, Path)),
    security(("owner_session" = [])), responses(
    (status = 204, description = "unpaired"),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
async fn revoke(
    State(state): State<AppState>,
    _owner: Owner,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such paired tablet");
    let id: i64 = id.parse().map_err(|_| not_found())?;
    if with_store(&state, move |s| s.revoke_device(id, now_ms())).await? {
        tracing::info!(device = id, "tablet unpaired");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

#[derive(Deserialize, ToSchema)]
struct ClaimRequest {
    /// The claim code HQ gave the owner, e.g. `7KQM-X3PA-9RTD`.
    code: String,
}

#[derive(Serialize, ToSchema)]
struct Claimed {
    shop_id: String,
}

#[utoipa::path(post, path = "/api/owner/claim", request_body = ClaimRequest,
    security(("owner_session" = [])), responses(
    (status = 201, body = Claimed, description = "claimed: the box connects to the cloud"),
    (status = 400, body = ErrorBody, description = "not a claim code"),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "no such claim code"),
    (status = 409, body = ErrorBody, description = "the box cannot be claimed as it is set up, or the code was used"),
    (status = 410, body = ErrorBody, description = "the code expired"),
    (status = 429, body = ErrorBody, description = "too many wrong codes"),
    (status = 502, body = ErrorBody, description = "the cloud cannot be reached")))]
async fn claim(
    State(state): State<AppState>,
    _owner: Owner,
    body: Result<Json<ClaimRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Claimed>), ApiError> {
    let Json(request) = body?;
    match crate::provisioning::claim(&state.config, &state.identity, &request.code).await {
        Ok(claim) => Ok((
            StatusCode::CREATED,
            Json(Claimed {
                shop_id: claim.shop_id,
            }),
        )),
        Err(ClaimError::NotPossible(message)) => Err(ApiError::new(StatusCode::CONFLICT, message)),
        Err(ClaimError::Refused {
            status,
            message,
            retry_after_s,
        }) => {
            // The cloud's own refusals pass through (a wrong code is 404 there and here); a
            // failure of the cloud itself is a bad gateway for the owner's page.
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(StatusCode::is_client_error)
                .unwrap_or(StatusCode::BAD_GATEWAY);
            Err(ApiError {
                retry_after_s,
                ..ApiError::new(status, message)
            })
        }
        Err(e @ ClaimError::Unreachable { .. }) => {
            Err(ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))
        }
    }
}

/// The OpenAPI document of this API, served at `/api/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "TasteSync Edge POS API",
        description = "The box's API for paired tablets and the owner's page, on the shop's LAN."
    ),
    paths(
        health, pair, present, stream, acknowledge, order, feedback, owner_status, owner_setup,
        owner_login, owner_overview, pairing_code, revoke, claim
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
