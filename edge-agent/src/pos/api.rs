//! Routes and handlers of the POS API. Errors are JSON `{"error": "..."}` with a status that
//! says who must act: 400 bad request, 401 no or unknown token, 403 revoked token,
//! 404 unknown visit, 409 conflicting retry, 429 too many wrong codes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
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

use super::{PosState, auth};
use crate::now_ms;
use crate::store::{ActionOutcome, Device, DeviceAuth, PosEvent, StaffAction, Store};

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
        .route(
            "/api/health",
            get(|| async { Json(json!({"status": "ok"})) }),
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({"error": self.message}))).into_response();
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

#[derive(Deserialize)]
struct PairRequest {
    code: String,
    name: String,
}

#[derive(Serialize)]
struct PairResponse {
    token: String,
    device: Device,
}

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

async fn present(
    State(state): State<AppState>,
    _device: PairedDevice,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (present, (_, last_event_id)) = with_store(&state, |s| {
        Ok((s.present(now_ms())?, s.pos_event_bounds()?))
    })
    .await?;
    Ok(Json(
        json!({"last_event_id": last_event_id, "present": present}),
    ))
}

#[derive(Deserialize)]
struct StreamQuery {
    since: Option<i64>,
}

/// Live events as SSE. Resumes after `Last-Event-ID` (sent by browsers on reconnect) or
/// `?since=`; without either, starts from now. When the tablet was away longer than the log
/// keeps, a `reset` event tells it to reload `/api/present`.
async fn stream(
    State(state): State<AppState>,
    PairedDevice(device): PairedDevice,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
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

async fn acknowledge(
    State(state): State<AppState>,
    PairedDevice(device): PairedDevice,
    Path(visit_id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let visit_id = parse_visit_id(&visit_id)?;
    let hub = state.hub.clone();
    let name = device.name.clone();
    let result = with_store(&state, move |s| {
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
    let status = outcome(result.0)?;
    Ok((status, Json(json!({"acknowledged_by": result.1}))))
}

#[derive(Deserialize)]
struct OrderRequest {
    action_id: String,
    items: Vec<String>,
}

async fn order(
    State(state): State<AppState>,
    PairedDevice(device): PairedDevice,
    Path(visit_id): Path<String>,
    body: Result<Json<OrderRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let visit_id = parse_visit_id(&visit_id)?;
    let Json(request) = body?;
    let action_id = parse_action_id(&request.action_id)?;
    let items: Vec<String> = request.items.iter().map(|i| i.trim().to_string()).collect();
    if items.is_empty() || items.len() > 20 {
        return Err(ApiError::bad_request("items must list 1 to 20 items"));
    }
    if items.iter().any(|i| i.is_empty() || i.chars().count() > 60) {
        return Err(ApiError::bad_request(
            "each item must be 1 to 60 characters",
        ));
    }
    let result = with_store(&state, move |s| {
        s.record_action(
            &action_id,
            &visit_id,
            device.id,
            StaffAction::Order { items: &items },
            now_ms(),
        )
    })
    .await?;
    Ok((outcome(result)?, Json(json!({"recorded": true}))))
}

#[derive(Deserialize)]
struct FeedbackRequest {
    action_id: String,
    score: i64,
    #[serde(default)]
    comment: String,
}

async fn feedback(
    State(state): State<AppState>,
    PairedDevice(device): PairedDevice,
    Path(visit_id): Path<String>,
    body: Result<Json<FeedbackRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let visit_id = parse_visit_id(&visit_id)?;
    let Json(request) = body?;
    let action_id = parse_action_id(&request.action_id)?;
    let score = u8::try_from(request.score)
        .ok()
        .filter(|s| (1..=5).contains(s))
        .ok_or_else(|| ApiError::bad_request("score must be a whole number from 1 to 5"))?;
    let comment = request.comment.trim().to_string();
    if comment.chars().count() > 500 {
        return Err(ApiError::bad_request(
            "comment must be at most 500 characters",
        ));
    }
    let result = with_store(&state, move |s| {
        s.record_action(
            &action_id,
            &visit_id,
            device.id,
            StaffAction::Feedback {
                score,
                comment: &comment,
            },
            now_ms(),
        )
    })
    .await?;
    Ok((outcome(result)?, Json(json!({"recorded": true}))))
}

fn parse_action_id(text: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(text)
        .map(|u| u.to_string())
        .map_err(|_| {
            ApiError::bad_request("action_id must be a UUID the tablet generates once per action")
        })
}

async fn owner_status(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let pin_set = with_store(&state, |s| Ok(s.owner_pin()?.is_some())).await?;
    Ok(Json(json!({"pin_set": pin_set})))
}

#[derive(Deserialize)]
struct PinRequest {
    pin: String,
}

async fn owner_setup(
    State(state): State<AppState>,
    body: Result<Json<PinRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
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
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": state.owner.open(now_ms())})),
    ))
}

async fn owner_login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Json<PinRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    limited(&state, addr)?;
    let Json(request) = body?;
    let ok = with_store(&state, move |s| {
        Ok(match s.owner_pin()? {
            Some((salt, hash)) => Some(auth::verify_pin(&request.pin, &salt, &hash)),
            None => None,
        })
    })
    .await?;
    match ok {
        Some(true) => Ok(Json(json!({"token": state.owner.open(now_ms())}))),
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

#[derive(Deserialize)]
struct OverviewQuery {
    /// Start of the owner's day (local midnight), Unix ms.
    since_ms: Option<u64>,
    /// The browser's offset from UTC in minutes (east positive).
    tz_offset_min: Option<i64>,
}

async fn owner_overview(
    State(state): State<AppState>,
    _owner: Owner,
    Query(query): Query<OverviewQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = now_ms();
    let since = query.since_ms.unwrap_or(now - now % 86_400_000);
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
    Ok(Json(json!({
        "summary": summary,
        "present": present,
        "devices": devices,
        "health": health,
        "connected_tablets": state.hub.subscribers(),
    })))
}

async fn pairing_code(
    State(state): State<AppState>,
    _owner: Owner,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let code = auth::new_pairing_code();
    let hash = auth::hash(&code);
    let expires = now_ms() + auth::PAIRING_CODE_TTL_MS;
    with_store(&state, move |s| s.add_pairing_code(&hash, expires)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"code": code, "expires_at_ms": expires})),
    ))
}

async fn revoke(
    State(state): State<AppState>,
    _owner: Owner,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if with_store(&state, move |s| s.revoke_device(id, now_ms())).await? {
        tracing::info!(device = id, "tablet unpaired");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such paired tablet",
        ))
    }
}
