//! Provisioning: a blank box claims itself for its shop with a code HQ gave the owner
//! (`tastesync-cloud shops claim-code`), and receives its shop id, the broker's address and
//! broker credentials of its own. A box whose broker refuses it asks for its standing here,
//! authenticated by those credentials, to tell "revoked" from a passing failure.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};
use tastesync_shared::provisioning::{BoxStanding, ClaimRequest, ClaimResponse, ErrorBody};
use tastesync_shared::wire::is_valid_id;
use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{ApiError, AppState};
use crate::config::Credentials;
use crate::storage::budgets;
use crate::storage::shops::{self, ClaimRefused};

#[utoipa::path(post, path = "/api/v1/claims", request_body = ClaimRequest, responses(
    (status = 201, body = ClaimResponse, description = "claimed: the box's shop and credentials"),
    (status = 400, body = ErrorBody, description = "not a claim code, or not a box id"),
    (status = 404, body = ErrorBody, description = "no such claim code"),
    (status = 409, body = ErrorBody, description = "the code was used by another box"),
    (status = 410, body = ErrorBody, description = "the code expired"),
    (status = 429, body = ErrorBody, description = "too many wrong codes from this address; see Retry-After"),
    (status = 503, body = ErrorBody, description = "the broker or database cannot be reached")))]
pub async fn claim(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<ClaimRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ClaimResponse>), ApiError> {
    let Json(request) = body?;
    if !is_valid_id(&request.box_id) {
        return Err(ApiError::bad_request(
            "box_id must be 1 to 64 letters, digits, - and _",
        ));
    }
    if request
        .software
        .as_ref()
        .is_some_and(|s| s.len() > 64 || s.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "software must be at most 64 printable bytes",
        ));
    }
    let Some(code) = shops::normalize_code(&request.code) else {
        return Err(ApiError::bad_request(
            "a claim code has 12 letters and digits, like 7KQM-X3PA-9RTD",
        ));
    };
    let password = new_password();
    let mut db = state.db.get().await?;
    let client = client_key(peer);
    if let Err(retry_after_s) = budgets::charge(&**db, &budgets::CLAIMS, &client).await? {
        return Err(refusal(ClaimRefused::RateLimited { retry_after_s }));
    }
    let tx = db.transaction().await?;
    let claimed =
        shops::redeem_claim_code(&tx, &code, &request.box_id, &credential_hash(&password)).await?;
    let claimed = match claimed {
        Ok(claimed) => claimed,
        Err(refused) => {
            tracing::info!(box_id = request.box_id, "claim refused: {refused}");
            return Err(refusal(refused));
        }
    };
    if request.software.is_some() {
        tx.execute(
            "UPDATE boxes SET software = $2 WHERE box_id = $1",
            &[&request.box_id, &request.software],
        )
        .await?;
    }
    let provisioning = &state.config.provisioning;
    let credentials = match (&state.broker_admin, provisioning.credentials) {
        (Some(admin), Credentials::Dynsec) => {
            // Before the commit: without its broker user the box must be able to claim again.
            admin
                .provision_box(&claimed.shop_id, &request.box_id, &password)
                .await
                .map_err(|e| {
                    tracing::error!("cannot create box {}'s broker user: {e:#}", request.box_id);
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the broker cannot be reached to create this box's credentials; try again shortly",
                    )
                })?;
            Some((request.box_id.clone(), password))
        }
        _ => None,
    };
    tx.commit().await?;
    budgets::refund(&**db, &budgets::CLAIMS, &client).await?;
    tracing::info!(
        box_id = request.box_id,
        shop = claimed.shop_id,
        "box claimed"
    );
    let (username, password) = credentials.unzip();
    Ok((
        StatusCode::CREATED,
        Json(ClaimResponse {
            shop_id: claimed.shop_id,
            box_id: request.box_id,
            broker: state.config.box_broker().to_string(),
            broker_tls: provisioning.box_broker_tls,
            broker_ca_pem: state.box_broker_ca_pem.clone(),
            username,
            password,
        }),
    ))
}

fn refusal(refused: ClaimRefused) -> ApiError {
    let status = match refused {
        ClaimRefused::Unknown => StatusCode::NOT_FOUND,
        ClaimRefused::Expired => StatusCode::GONE,
        ClaimRefused::Used => StatusCode::CONFLICT,
        ClaimRefused::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
    };
    let error = ApiError::new(status, refused.to_string());
    match refused {
        ClaimRefused::RateLimited { retry_after_s } => error.with_retry_after(retry_after_s),
        _ => error,
    }
}

#[utoipa::path(get, path = "/api/v1/boxes/{box_id}/standing", params(("box_id" = String, Path)),
    security(("box_credentials" = [])), responses(
    (status = 200, body = BoxStanding, description = "`active`, or `revoked` by HQ"),
    (status = 401, body = ErrorBody, description = "unknown box or wrong credentials")))]
pub async fn standing(
    State(state): State<AppState>,
    Path(box_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<BoxStanding>, ApiError> {
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unknown box or wrong credentials: give the box's broker username and password \
             (HTTP Basic)",
        )
    };
    let (username, password) = basic_credentials(&headers).ok_or_else(refused)?;
    if username != box_id {
        return Err(refused());
    }
    let db = state.db.get().await?;
    shops::box_standing(&**db, &box_id, &credential_hash(&password))
        .await?
        .map(Json)
        .ok_or_else(refused)
}

/// `Authorization: Basic ...` as (username, password).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Who failed attempts are counted against: the client's address (an IPv6 client's /64,
/// which one host can fill).
pub fn client_key(peer: SocketAddr) -> String {
    match peer.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => {
            let s = ip.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// 256 random bits as hex: a broker password nobody guesses, so a fast hash is enough.
fn new_password() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator");
    hex::encode(bytes)
}

fn credential_hash(password: &str) -> Vec<u8> {
    Sha256::digest(password.as_bytes()).to_vec()
}

/// The boxes' credentials scheme in the OpenAPI document.
pub struct BoxCredentialsScheme;

impl Modify for BoxCredentialsScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Basic)
            .description(Some("the box's broker username (its box id) and password"))
            .build();
        components.add_security_scheme("box_credentials", SecurityScheme::Http(scheme));
    }
}
