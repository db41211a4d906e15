//! The owner's routes: first-time setup (with the box's setup code), login, changing the
//! PIN, the overview, pairing codes and unpairing tablets, and claiming the box for its shop.
//! Every guess at a secret is charged to a failure budget before it is checked; PINs are
//! hashed off the store's lock.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState, ErrorBody, Owner, begin, with_store};
use crate::clock::steady_ms;
use crate::identity::Standing;
use crate::pos::{Health, PosState, auth};
use crate::provisioning::ClaimError;
use crate::store::{Alert, Device, OwnerSummary};
use crate::{Millis, now_ms};

#[derive(Serialize, ToSchema)]
pub(super) struct OwnerStatus {
    pin_set: bool,
    /// Setting the PIN needs the box's setup code (not from the box itself).
    setup_code_required: bool,
    #[serde(rename = "box")]
    box_info: BoxInfo,
}

/// The box itself: its id, and whether it belongs to a shop.
#[derive(Serialize, ToSchema)]
pub(super) struct BoxInfo {
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
pub(super) async fn owner_status(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<OwnerStatus>, ApiError> {
    let pin_set = with_store(&state, |s| Ok(s.owner_pin()?.is_some())).await?;
    Ok(Json(OwnerStatus {
        pin_set,
        setup_code_required: !pin_set && !peer.ip().is_loopback(),
        box_info: box_info(&state),
    }))
}

#[derive(Deserialize, ToSchema)]
pub(super) struct SetupRequest {
    /// The PIN or passphrase to set: 6 to 128 characters, not a run or repeat of digits.
    pin: String,
    /// The box's one-time setup code (on its label, or `tastesync-edge setup-code`); not
    /// needed from the box itself.
    #[serde(default)]
    setup_code: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct PinRequest {
    /// The owner's PIN or passphrase.
    pin: String,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct PinChange {
    current_pin: String,
    /// 6 to 128 characters, not a run or repeat of digits.
    new_pin: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct TokenResponse {
    /// An owner session, valid 12 hours: `Authorization: Bearer ...`.
    token: String,
}

/// First-time setup: only with the box's setup code (or from the box itself), so a customer
/// on the shop's Wi-Fi cannot make themselves the owner of a box freshly plugged in.
#[utoipa::path(post, path = "/api/owner/setup", request_body = SetupRequest, responses(
    (status = 201, body = TokenResponse, description = "PIN set"),
    (status = 400, body = ErrorBody, description = "a weak PIN, with the reason"),
    (status = 401, body = ErrorBody, description = "no or wrong setup code"),
    (status = 409, body = ErrorBody, description = "a PIN is already set"),
    (status = 429, body = ErrorBody, description = "too many wrong setup codes; see Retry-After")))]
pub(super) async fn owner_setup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<SetupRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let Json(request) = body?;
    // At once, before anything costly: a flood of setups on a set-up box hashes nothing.
    let (pin_set, setup_code) =
        with_store(&state, |s| Ok((s.owner_pin()?.is_some(), s.setup_code()?))).await?;
    if pin_set {
        return Err(already_set());
    }
    let mut attempt = None;
    if !peer.ip().is_loopback() {
        let typed = request.setup_code.as_deref().unwrap_or_default();
        if typed.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "setting the owner's PIN needs the box's setup code: it is on the box's label, \
                 or run `tastesync-edge setup-code` on the box",
            ));
        }
        let charged = begin(&state.setup_attempts, peer)?;
        let expected = setup_code.as_deref().and_then(auth::normalize_setup_code);
        let typed = auth::normalize_setup_code(typed);
        let right = matches!((&typed, &expected),
            (Some(typed), Some(expected)) if auth::constant_time_eq(typed.as_bytes(), expected.as_bytes()));
        if !right {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong setup code: it is on the box's label, or run `tastesync-edge setup-code` on the box",
            ));
        }
        attempt = Some(charged);
    }
    if let Some(reason) = auth::pin_weakness(&request.pin) {
        if let Some(attempt) = attempt {
            attempt.succeeded(); // the code was right
        }
        return Err(ApiError::bad_request(reason));
    }
    if let Some(attempt) = attempt {
        attempt.succeeded();
    }
    let phc = hash_off_the_lock(&state, request.pin).await?;
    let fingerprint = auth::StoredPin::Phc(phc.clone()).fingerprint();
    if !with_store(&state, move |s| s.set_owner_pin(&phc)).await? {
        return Err(already_set());
    }
    tracing::info!("the owner's PIN was set");
    let token = state.owner.open(steady_ms(), fingerprint);
    Ok((StatusCode::CREATED, Json(TokenResponse { token })))
}

fn already_set() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "the owner's PIN is already set; log in (a forgotten PIN: `tastesync-edge owner reset-pin` on the box)",
    )
}

#[utoipa::path(post, path = "/api/owner/login", request_body = PinRequest, responses(
    (status = 200, body = TokenResponse),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "no PIN set yet"),
    (status = 429, body = ErrorBody, description = "too many wrong PINs; see Retry-After")))]
pub(super) async fn owner_login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<PinRequest>, JsonRejection>,
) -> Result<Json<TokenResponse>, ApiError> {
    let Json(request) = body?;
    let Some(stored) = with_store(&state, |s| s.owner_pin()).await? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no PIN is set yet; set one first",
        ));
    };
    let attempt = begin(&state.pin_attempts, peer)?;
    if !verify_off_the_lock(&state, request.pin.clone(), stored.clone()).await? {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong PIN"));
    }
    attempt.succeeded();
    let mut fingerprint = stored.fingerprint();
    if matches!(stored, auth::StoredPin::Legacy { .. }) {
        // A hash of the first release: stored again with its parameters.
        let phc = hash_off_the_lock(&state, request.pin).await?;
        let upgraded = auth::StoredPin::Phc(phc.clone());
        if with_store(&state, move |s| s.replace_owner_pin(&stored, &phc)).await? {
            fingerprint = upgraded.fingerprint();
        }
    }
    Ok(Json(TokenResponse {
        token: state.owner.open(steady_ms(), fingerprint),
    }))
}

/// Changes the PIN, with the current one; other owner sessions end.
#[utoipa::path(post, path = "/api/owner/pin", request_body = PinChange,
    security(("owner_session" = [])), responses(
    (status = 200, body = TokenResponse, description = "changed: a new session"),
    (status = 400, body = ErrorBody, description = "a weak new PIN, with the reason"),
    (status = 401, body = ErrorBody, description = "no session"),
    (status = 403, body = ErrorBody, description = "the current PIN is wrong"),
    (status = 409, body = ErrorBody, description = "the PIN changed meanwhile"),
    (status = 429, body = ErrorBody, description = "too many wrong PINs; see Retry-After")))]
pub(super) async fn change_pin(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    _owner: Owner,
    body: Result<Json<PinChange>, JsonRejection>,
) -> Result<Json<TokenResponse>, ApiError> {
    let Json(request) = body?;
    if let Some(reason) = auth::pin_weakness(&request.new_pin) {
        return Err(ApiError::bad_request(reason));
    }
    let Some(stored) = with_store(&state, |s| s.owner_pin()).await? else {
        return Err(ApiError::new(StatusCode::CONFLICT, "no PIN is set"));
    };
    let attempt = begin(&state.pin_attempts, peer)?;
    if !verify_off_the_lock(&state, request.current_pin, stored.clone()).await? {
        // Not 401: the session is fine, only this PIN is not.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the current PIN is wrong",
        ));
    }
    attempt.succeeded();
    let phc = hash_off_the_lock(&state, request.new_pin).await?;
    let fingerprint = auth::StoredPin::Phc(phc.clone()).fingerprint();
    if !with_store(&state, move |s| s.replace_owner_pin(&stored, &phc)).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the PIN was changed meanwhile; log in again",
        ));
    }
    tracing::info!("the owner's PIN was changed");
    Ok(Json(TokenResponse {
        token: state.owner.open(steady_ms(), fingerprint),
    }))
}

/// Argon2id of a PIN, off the store's lock and behind the hashing semaphore (a few at a
/// time), so hashing never stalls the tablets.
pub(super) async fn hash_off_the_lock(state: &AppState, pin: String) -> Result<String, ApiError> {
    let _permit = state.hashing.acquire().await.map_err(anyhow::Error::from)?;
    Ok(tokio::task::spawn_blocking(move || auth::hash_pin(&pin))
        .await
        .map_err(anyhow::Error::from)?)
}

pub(super) async fn verify_off_the_lock(
    state: &AppState,
    pin: String,
    stored: auth::StoredPin,
) -> Result<bool, ApiError> {
    let _permit = state.hashing.acquire().await.map_err(anyhow::Error::from)?;
    Ok(
        tokio::task::spawn_blocking(move || auth::verify_pin(&pin, &stored))
            .await
            .map_err(anyhow::Error::from)?,
    )
}

/// The owner's day, as the owner page gives it: the overview's and the floor map's "today".
#[derive(Deserialize, IntoParams)]
pub(super) struct DayQuery {
    /// Start of the owner's day (local midnight), Unix ms.
    since_ms: Option<u64>,
    /// The browser's offset from UTC in minutes (east positive); without `since_ms`, the day
    /// starts at midnight at this offset.
    tz_offset_min: Option<i64>,
}

impl DayQuery {
    /// The offset from UTC in minutes, within what time zones use.
    pub(super) fn offset_min(&self) -> i64 {
        self.tz_offset_min.unwrap_or(0).clamp(-14 * 60, 14 * 60)
    }

    /// When the owner's day began: `since_ms`, else midnight at the offset; never after `now`.
    pub(super) fn since(&self, now: Millis) -> Millis {
        let offset_ms = self.offset_min() * 60_000;
        let local_now = now as i64 + offset_ms;
        let midnight = (local_now - local_now.rem_euclid(86_400_000) - offset_ms).max(0) as u64;
        self.since_ms.unwrap_or(midnight).min(now)
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct Overview {
    summary: OwnerSummary,
    present: Vec<Alert>,
    devices: Vec<Device>,
    health: Health,
    /// Tablets with a live stream open now.
    connected_tablets: usize,
    #[serde(rename = "box")]
    box_info: BoxInfo,
}

#[utoipa::path(get, path = "/api/owner/overview", params(DayQuery), security(("owner_session" = [])),
    responses(
    (status = 200, body = Overview),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody)))]
pub(super) async fn owner_overview(
    State(state): State<AppState>,
    _owner: Owner,
    query: Result<Query<DayQuery>, QueryRejection>,
) -> Result<Json<Overview>, ApiError> {
    let Query(query) = query?;
    let now = now_ms();
    let (since, offset) = (query.since(now), query.offset_min());
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
pub(super) struct PairingCode {
    /// 6 digits, single use.
    code: String,
    expires_at_ms: u64,
}

#[utoipa::path(post, path = "/api/owner/pairing-codes", security(("owner_session" = [])),
    responses((status = 201, body = PairingCode), (status = 401, body = ErrorBody)))]
pub(super) async fn pairing_code(
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
pub(super) async fn revoke(
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
pub(super) struct ClaimRequest {
    /// The claim code HQ gave the owner, e.g. `7KQM-X3PA-9RTD`.
    code: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Claimed {
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
pub(super) async fn claim(
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

#[cfg(test)]
mod tests {
    use super::DayQuery;

    #[test]
    fn the_owners_day_starts_at_their_midnight() {
        // 2026-12-07 20:00 UTC is 2026-12-08 05:00 in Seoul (UTC+9).
        let now = 1_796_673_600_000;
        let day = |since_ms, tz_offset_min| DayQuery {
            since_ms,
            tz_offset_min,
        };
        // Midnight UTC, without an offset.
        assert_eq!(day(None, None).since(now), 1_796_601_600_000);
        // Seoul's midnight: 2026-12-07 15:00 UTC.
        assert_eq!(day(None, Some(540)).since(now), 1_796_655_600_000);
        // New York (UTC-5): 2026-12-07 05:00 UTC.
        assert_eq!(day(None, Some(-300)).since(now), 1_796_619_600_000);
        // An offset no time zone has is held to ±14 h.
        assert_eq!(day(None, Some(100_000)).offset_min(), 840);
        // The page's own midnight wins, but never after now.
        assert_eq!(day(Some(5), Some(540)).since(now), 5);
        assert_eq!(day(Some(now + 1), None).since(now), now);
    }
}
