//! Who may do what, in one place. Every console route takes a [`Caller`]: the user a valid
//! bearer token names (one this service signed, RS256, or one from the external OpenID
//! provider), with their role and shops. Handlers ask the caller, never the token:
//! [`Caller::require_admin`], [`Caller::require_people`] (names, notes, comments: admins and
//! managers), [`Caller::check_shop`] (a manager's own shops), [`Caller::shop_scope`].
//!
//! No token, a bad one or an expired one: 401 with `WWW-Authenticate: Bearer`; a valid token
//! whose user may not do this: 403. Both with a JSON reason.

pub mod keys;
pub mod oidc;
pub mod passwords;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::storage::audit::Actor;
use crate::storage::users::{self, Role};

/// The audience of the console's access tokens.
pub const AUDIENCE: &str = "tastesync-console";

/// An access token's claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user's id.
    pub sub: String,
    pub email: String,
    pub role: Role,
    /// A manager's shops.
    pub shops: Vec<String>,
    pub iat: u64,
    pub exp: u64,
}

/// The signed-in user making a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: i64,
    pub email: String,
    pub role: Role,
    pub shops: Vec<String>,
    /// The client's address, for the audit log.
    pub client: String,
}

impl Caller {
    /// Who the audit log names.
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.email.clone(),
            client: self.client.clone(),
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(forbidden(format!(
                "only an admin may do this (you are {})",
                self.role.as_str()
            )))
        }
    }

    /// Customers, names, notes and comments: admins and managers (within their shops).
    pub fn require_people(&self) -> Result<(), ApiError> {
        if self.role == Role::Analyst {
            Err(forbidden(
                "an analyst sees chain analytics only, never customers or comments",
            ))
        } else {
            Ok(())
        }
    }

    /// `None`: every shop; else the shops this caller may see.
    pub fn shop_scope(&self) -> Option<&[String]> {
        match self.role {
            Role::Manager => Some(&self.shops),
            Role::Admin | Role::Analyst => None,
        }
    }

    pub fn may_see_shop(&self, shop_id: &str) -> bool {
        self.shop_scope()
            .is_none_or(|shops| shops.iter().any(|s| s == shop_id))
    }

    pub fn check_shop(&self, shop_id: &str) -> Result<(), ApiError> {
        if self.may_see_shop(shop_id) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "shop {shop_id:?} is not one of your shops"
            )))
        }
    }
}

pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

/// A 401 that tells the client to (re)authenticate with a bearer token.
pub fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message).with_bearer_challenge()
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip().to_string())
            .unwrap_or_default();
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                unauthorized("sign in first: send the access token as `Authorization: Bearer ...`")
            })?;
        let issuer = jsonwebtoken::dangerous::insecure_decode_claims::<Issuer>(token)
            .map_err(|_| unauthorized("the access token is not a JWT"))?
            .iss;
        if let Some(external) = &state.oidc
            && external.issues(&issuer)
        {
            let email = external
                .verify(token)
                .await
                .map_err(|refused| unauthorized(refused.to_string()))?;
            return external_caller(state, &email, client).await;
        }
        let claims = verify_own(state, token).await?;
        Ok(Caller {
            user_id: claims
                .sub
                .parse()
                .map_err(|_| unauthorized("the access token names no user"))?,
            email: claims.email,
            role: claims.role,
            shops: claims.shops,
            client,
        })
    }
}

#[derive(Deserialize)]
struct Issuer {
    #[serde(default)]
    iss: String,
}

/// Verifies a token this service signed.
async fn verify_own(state: &AppState, token: &str) -> Result<AccessClaims, ApiError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| unauthorized("the access token is not a JWT"))?;
    let kid = header
        .kid
        .ok_or_else(|| unauthorized("the access token has no key id"))?;
    let key = state
        .keys
        .verifying_key(&kid)
        .await
        .ok_or_else(|| unauthorized("the access token was signed by an unknown key"))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&state.config.console.issuer]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 5;
    jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                unauthorized("the access token has expired; refresh it or sign in again")
            }
            _ => unauthorized(format!("the access token is not valid: {e}")),
        })
}

/// The console user an external provider's token names.
async fn external_caller(
    state: &AppState,
    email: &str,
    client: String,
) -> Result<Caller, ApiError> {
    let db = state.db.get().await?;
    let user = users::by_email(&**db, email)
        .await?
        .map(|(user, _)| user)
        .filter(|user| !user.disabled)
        .ok_or_else(|| {
            forbidden("signed in with the provider, but not a console user; ask an admin")
        })?;
    Ok(Caller {
        user_id: user.user_id,
        email: user.email,
        role: user.role,
        shops: user.shops,
        client,
    })
}
