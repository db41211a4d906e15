//! Signing in and staying signed in: `POST /api/v1/auth/login` (email and password; a
//! failure budget per address and per account), `/auth/refresh` (spends the refresh token
//! and returns the next one with a new access token), `/auth/logout`, `GET /auth/me`, and
//! the public keys at `/.well-known/jwks.json`.
//!
//! The console page asks for its refresh token as an HttpOnly, SameSite=Strict cookie scoped
//! to `/api/v1/auth` (script on the page never sees it); other clients get it in the body.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tastesync_shared::provisioning::ErrorBody;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{self, AccessClaims, Caller, passwords, unauthorized};
use super::provisioning::client_key;
use super::{ApiError, AppState};
use crate::storage::audit::{self, Actor};
use crate::storage::budgets::{self, Budget};
use crate::storage::sessions::{self, Spent};
use crate::storage::users::{self, User};

const COOKIE: &str = "tastesync_refresh";
const COOKIE_PATH: &str = "/api/v1/auth";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// Put the refresh token in an HttpOnly cookie instead of the body (the console page).
    #[serde(default)]
    pub cookie: bool,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token; without it, the cookie's.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// An RS256 JWT for `Authorization: Bearer ...`.
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds the access token is valid.
    pub expires_in: u64,
    /// Spend it at `/api/v1/auth/refresh` for the next pair (absent when set as a cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub user: User,
}

#[utoipa::path(post, path = "/api/v1/auth/login", request_body = LoginRequest, responses(
    (status = 200, body = TokenResponse, description = "signed in"),
    (status = 400, body = ErrorBody, description = "not a login request"),
    (status = 401, body = ErrorBody, description = "wrong email or password"),
    (status = 403, body = ErrorBody, description = "the account is disabled"),
    (status = 429, body = ErrorBody, description = "too many failures; see Retry-After")))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let db = state.db.get().await?;
    let address = client_key(peer);
    let account = users::normalize_email(&request.email).unwrap_or_default();
    charge(&db, &budgets::SIGN_IN_ADDRESS, &address).await?;
    if let Err(e) = charge(&db, &budgets::SIGN_IN_ACCOUNT, &account).await {
        budgets::refund(&**db, &budgets::SIGN_IN_ADDRESS, &address).await?;
        return Err(e);
    }
    let found = users::by_email(&**db, &request.email).await?;
    let phc = found.as_ref().and_then(|(_, phc)| phc.clone());
    let permit = state.hashing.acquire().await.expect("never closed");
    let password = request.password;
    let matches = tokio::task::spawn_blocking(move || passwords::verify(&password, phc.as_deref()))
        .await
        .map_err(anyhow::Error::from)?;
    drop(permit);
    let actor = Actor {
        name: found
            .as_ref()
            .map_or_else(|| "unknown account".into(), |(u, _)| u.email.clone()),
        client: peer.ip().to_string(),
    };
    let user = match found {
        Some((user, _)) if matches => user,
        _ => {
            // An unknown email is not recorded as typed: it may be a password typed there.
            audit::record(&**db, &actor, "sign_in_refused", "", serde_json::json!({})).await?;
            return Err(unauthorized("wrong email or password"));
        }
    };
    budgets::refund(&**db, &budgets::SIGN_IN_ADDRESS, &address).await?;
    budgets::refund(&**db, &budgets::SIGN_IN_ACCOUNT, &account).await?;
    if user.disabled {
        return Err(auth::forbidden("this account is disabled; ask an admin"));
    }
    audit::record(&**db, &actor, "sign_in", &user.email, serde_json::json!({})).await?;
    issue(&state, &db, user, Uuid::now_v7(), request.cookie).await
}

async fn charge(
    db: &deadpool_postgres::Object,
    budget: &Budget,
    client: &str,
) -> Result<(), ApiError> {
    match budgets::charge(&***db, budget, client).await? {
        Ok(()) => Ok(()),
        Err(retry_after_s) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed sign-ins; try again in {retry_after_s} s"),
        )
        .with_retry_after(retry_after_s)),
    }
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", request_body = RefreshRequest, responses(
    (status = 200, body = TokenResponse, description = "the next access and refresh tokens"),
    (status = 400, body = ErrorBody, description = "not a refresh request"),
    (status = 401, body = ErrorBody, description = "unknown, expired, revoked or reused refresh token")))]
pub async fn refresh(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let (token, from_cookie) = match request.refresh_token {
        Some(token) => (token, false),
        None => (
            cookie(&headers).ok_or_else(|| unauthorized("no refresh token; sign in"))?,
            true,
        ),
    };
    let db = state.db.get().await?;
    let signed_out = || unauthorized("this session has ended; sign in again");
    match sessions::spend_refresh_token(&**db, &token_hash(&token)).await? {
        Spent::Valid { user_id, family } => {
            let user = users::by_id(&**db, user_id)
                .await?
                .filter(|u| !u.disabled)
                .ok_or_else(signed_out)?;
            issue(&state, &db, user, family, from_cookie).await
        }
        Spent::Reused { user_id, family } => {
            let email = users::by_id(&**db, user_id)
                .await?
                .map_or_else(String::new, |u| u.email);
            let actor = Actor {
                name: email.clone(),
                client: peer.ip().to_string(),
            };
            audit::record(
                &**db,
                &actor,
                "refresh_token_reused",
                &email,
                serde_json::json!({ "family": family.to_string() }),
            )
            .await?;
            tracing::warn!(
                user_id,
                "a spent refresh token was used again; its session is revoked"
            );
            Err(unauthorized(
                "this refresh token was already used, so it may have been copied: the session \
                 is ended everywhere; sign in again",
            ))
        }
        Spent::Invalid => Err(signed_out()),
    }
}

#[utoipa::path(post, path = "/api/v1/auth/logout", request_body = RefreshRequest, responses(
    (status = 204, description = "signed out: the refresh token's session is revoked"),
    (status = 400, body = ErrorBody, description = "not a logout request")))]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if let Some(token) = request.refresh_token.or_else(|| cookie(&headers)) {
        let db = state.db.get().await?;
        if let Some(family) = sessions::family_of(&**db, &token_hash(&token)).await? {
            sessions::revoke_family(&**db, family).await?;
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state, "", Duration::ZERO));
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/auth/me", security(("bearer" = [])), responses(
    (status = 200, body = User, description = "the signed-in user"),
    (status = 401, body = ErrorBody, description = "not signed in")))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<User>, ApiError> {
    let db = state.db.get().await?;
    users::by_id(&**db, caller.user_id)
        .await?
        .filter(|user| !user.disabled)
        .map(Json)
        .ok_or_else(|| unauthorized("this account no longer exists or is disabled"))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", responses(
    (status = 200, description = "the public keys that verify console access tokens (RFC 7517)",
     content_type = "application/json")))]
pub async fn jwks(State(state): State<AppState>) -> Json<JwkSet> {
    state.keys.refresh_if_stale().await;
    Json(state.keys.jwks())
}

/// Signs an access token for `user` and issues the next refresh token of `family`.
async fn issue(
    state: &AppState,
    db: &deadpool_postgres::Object,
    user: User,
    family: Uuid,
    as_cookie: bool,
) -> Result<Response, ApiError> {
    let console = &state.config.console;
    let lifetime = console.access_token_minutes * 60;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    state.keys.refresh_if_stale().await;
    let access_token = state.keys.sign(&AccessClaims {
        iss: console.issuer.clone(),
        aud: auth::AUDIENCE.into(),
        sub: user.user_id.to_string(),
        email: user.email.clone(),
        role: user.role,
        shops: user.shops.clone(),
        iat: now,
        exp: now + lifetime,
    })?;
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).expect("the OS random number generator");
    let refresh_token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
    let refresh_lifetime = Duration::from_secs(console.refresh_token_days * 86_400);
    sessions::issue_refresh_token(
        &***db,
        user.user_id,
        family,
        &token_hash(&refresh_token),
        refresh_lifetime,
    )
    .await?;
    let body = TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: lifetime,
        refresh_token: (!as_cookie).then(|| refresh_token.clone()),
        user,
    };
    let mut response = Json(body).into_response();
    if as_cookie {
        response.headers_mut().insert(
            header::SET_COOKIE,
            set_cookie(state, &refresh_token, refresh_lifetime),
        );
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The refresh cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}

fn set_cookie(state: &AppState, value: &str, max_age: Duration) -> HeaderValue {
    // Secure whenever the API speaks HTTPS; plain HTTP is loopback only (development).
    let secure = if state.config.http.tls_cert_file.is_some() {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        max_age.as_secs()
    )
    .parse()
    .expect("a cookie of base64url characters")
}
