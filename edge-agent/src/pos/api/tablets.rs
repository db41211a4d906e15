//! The tablets' routes: pairing, who is present, the live stream (opened with a single-use
//! ticket, a bounded number per tablet), acknowledgements, orders and feedback, and rotating
//! a tablet's token.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState, ErrorBody, PairedDevice, StreamDevice, begin, with_store};
use crate::clock::steady_ms;
use crate::now_ms;
use crate::pos::auth;
use crate::store::{ActionOutcome, Alert, Device, DeviceKind, PosEvent, StaffAction};

#[derive(Deserialize, ToSchema)]
pub(super) struct PairRequest {
    /// The 8-digit code from the owner page or `tastesync-edge pair` (spaces ignored).
    code: String,
    /// A name for the tablet, 1 to 40 characters.
    name: String,
    /// `tablet` (the default) or `scanner` (a scanner box: it may only send sightings).
    #[serde(default)]
    kind: DeviceKind,
}

#[derive(Serialize, ToSchema)]
pub(super) struct PairResponse {
    /// The tablet's token: send it as `Authorization: Bearer ...`. Shown once.
    token: String,
    device: Device,
}

#[utoipa::path(post, path = "/api/pair", request_body = PairRequest, responses(
    (status = 201, body = PairResponse),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody, description = "wrong or expired code"),
    (status = 429, body = ErrorBody, description = "too many wrong codes, from this address or in all; see Retry-After")))]
pub(super) async fn pair(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Json<PairRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<PairResponse>), ApiError> {
    let Json(request) = body?;
    let name = request.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 40 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must be 1 to 40 printable characters, e.g. \"Counter tablet\"",
        ));
    }
    let code: String = request
        .code
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if code.len() != 8 || !code.chars().all(|c| c.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "the pairing code is 8 digits, shown on the owner page",
        ));
    }
    // Charged before it is checked: codes in flight all count.
    let attempt = begin(&state.pairing_attempts, addr)?;
    let token = auth::new_token();
    let token_hash = auth::hash(&token);
    let code_hash = auth::hash(&code);
    let device = with_store(&state, move |s| {
        let now = now_ms();
        if !s.take_pairing_code(&code_hash, now)? {
            return Ok(None);
        }
        s.add_device(&name, request.kind, &token_hash, now)
            .map(Some)
    })
    .await?;
    match device {
        Some(device) => {
            attempt.succeeded();
            tracing::info!(device = device.id, kind = ?device.kind, "device paired");
            Ok((StatusCode::CREATED, Json(PairResponse { token, device })))
        }
        None => {
            // The attempt stays charged: a wrong code.
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong or expired pairing code; ask the owner for a new one",
            ))
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct PresentResponse {
    /// Open the stream with `since` = this to receive everything after this state.
    last_event_id: i64,
    present: Vec<Alert>,
}

#[utoipa::path(get, path = "/api/present", security(("device_token" = [])), responses(
    (status = 200, body = PresentResponse),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody)))]
pub(super) async fn present(
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
#[allow(dead_code)] // `ticket` is read by the authentication extractor
pub(super) struct StreamQuery {
    /// Resume after this event id (the `Last-Event-ID` header takes precedence).
    since: Option<i64>,
    /// A single-use ticket from `POST /api/stream-tickets`, for clients that cannot set
    /// headers (EventSource). Device tokens never go in a URL.
    ticket: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct StreamTicket {
    /// Open `/api/stream?ticket=...` with it within `expires_in_s`; it works once.
    ticket: String,
    expires_in_s: u64,
}

#[utoipa::path(post, path = "/api/stream-tickets", security(("device_token" = [])), responses(
    (status = 201, body = StreamTicket),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody)))]
pub(super) async fn stream_ticket(
    State(state): State<AppState>,
    PairedDevice(device): PairedDevice,
) -> (StatusCode, Json<StreamTicket>) {
    let ticket = state.tickets.issue(device.id, steady_ms());
    (
        StatusCode::CREATED,
        Json(StreamTicket {
            ticket,
            expires_in_s: auth::STREAM_TICKET_TTL_MS / 1000,
        }),
    )
}

#[derive(Serialize, ToSchema)]
pub(super) struct RotatedToken {
    /// The tablet's new token; the old one no longer works. Shown once.
    token: String,
}

/// A new token for this tablet, keeping its pairing (tablets rotate theirs monthly).
#[utoipa::path(post, path = "/api/devices/rotate", security(("device_token" = [])), responses(
    (status = 201, body = RotatedToken),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody)))]
pub(super) async fn rotate_token(
    State(state): State<AppState>,
    PairedDevice(device): PairedDevice,
) -> Result<(StatusCode, Json<RotatedToken>), ApiError> {
    let token = auth::new_token();
    let hash = auth::hash(&token);
    let rotated = with_store(&state, move |s| {
        s.rotate_device_token(device.id, &hash, now_ms())
    })
    .await?;
    if !rotated {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this tablet was unpaired by the owner; pair it again",
        ));
    }
    Ok((StatusCode::CREATED, Json(RotatedToken { token })))
}

/// Live events as SSE. Resumes after `Last-Event-ID` (sent by browsers on reconnect) or
/// `?since=`; without either, starts from now. When the tablet was away longer than the log
/// keeps, a `reset` event tells it to reload `/api/present`.
#[utoipa::path(get, path = "/api/stream", params(StreamQuery), security(("device_token" = [])), responses(
    (status = 200, content_type = "text/event-stream", body = String,
     description = "events `arrival` (an Alert), `departure`, `ack` and `reset`, each with an id"),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody),
    (status = 429, body = ErrorBody, description = "too many live streams for this tablet, or in all")))]
pub(super) async fn stream(
    State(state): State<AppState>,
    StreamDevice(device): StreamDevice,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query?;
    let slot = state.streams.open(device.id).map_err(|limit| ApiError {
        retry_after_s: Some(5),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, limit)
    })?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.since);
    let live = state.hub.subscribe(); // before reading the log: nothing falls in between
    let (oldest, newest) = with_store(&state, |s| s.pos_event_bounds()).await?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        forward(state.clone(), device.id, resume, (oldest, newest), live, tx).await;
        drop(slot); // the stream ended: its place is free
    });
    let events =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Times an alert that left for a tablet as it happened (not one caught up from the log).
fn delivered_live(event: &PosEvent) {
    if event.kind == "arrival" {
        let took_ms = crate::now_ms().saturating_sub(event.at_ms);
        crate::metrics::COUNTERS
            .alert_delivery
            .observe(took_ms as f64 / 1000.0);
    }
}

fn sse(event: &PosEvent) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.as_str())
        .data(event.body.as_str())
}

/// Feeds one tablet: the missed events from the log, then live ones, each id once, in order.
pub(super) async fn forward(
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
                    delivered_live(&event);
                }
                Ok(event) if event.id > last => {
                    if tx.send(sse(&event)).await.is_err() {
                        return;
                    }
                    delivered_live(&event);
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
pub(super) struct AckResponse {
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
pub(super) async fn acknowledge(
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
pub(super) struct Recorded {
    recorded: bool,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct OrderRequest {
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
pub(super) async fn order(
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
pub(super) async fn record_staff_action(
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
pub(super) struct FeedbackRequest {
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
pub(super) async fn feedback(
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
