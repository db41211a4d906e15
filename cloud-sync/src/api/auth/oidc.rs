//! Tokens from an external OpenID Connect provider (`[console.oidc]`): verified against the
//! provider's published keys (fetched from its JWKS URL, cached, fetched again for a key id
//! not seen yet), its issuer, the console's audience and the expiry. Only asymmetric
//! algorithms are accepted: a provider's JWKS never holds a shared secret.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Mutex;

use crate::config::OidcConfig;

/// Fetch the keys again at most this often for an unknown key id, and anyway this often.
const REFETCH_ON_MISS_EVERY: Duration = Duration::from_secs(10);
const REFETCH_EVERY: Duration = Duration::from_secs(3600);

const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The external provider.
pub struct ExternalIssuer {
    config: OidcConfig,
    http: reqwest::Client,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    fetched_at: Option<Instant>,
}

/// Why an external token was refused (said to the caller as is).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the token's signing key is not among the provider's keys")]
    UnknownKey,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token carries no usable {0:?} claim")]
    NoEmail(String),
    #[error("the provider's keys cannot be fetched; try again shortly")]
    Unavailable,
}

impl ExternalIssuer {
    pub fn new(config: OidcConfig) -> anyhow::Result<ExternalIssuer> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("cannot build the HTTP client for the OpenID provider")?;
        Ok(ExternalIssuer {
            config,
            http,
            keys: Mutex::new(Keys::default()),
        })
    }

    /// Whether `iss` is this provider's.
    pub fn issues(&self, iss: &str) -> bool {
        iss == self.config.issuer
    }

    /// Verifies a token and returns the user's email (lower-cased).
    pub async fn verify(&self, token: &str) -> Result<String, Refused> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| Refused::Invalid(e.to_string()))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(Refused::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header.kid.unwrap_or_default();
        let (key, key_alg) = self.key(&kid).await?;
        if key_alg.is_some_and(|alg| alg != header.alg) {
            return Err(Refused::Invalid(
                "the token's algorithm is not its key's".into(),
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 30;
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| Refused::Invalid(e.to_string()))?
            .claims;
        if claims.get("email_verified") == Some(&serde_json::Value::Bool(false)) {
            return Err(Refused::NoEmail(self.config.email_claim.clone()));
        }
        claims
            .get(&self.config.email_claim)
            .and_then(serde_json::Value::as_str)
            .map(str::to_lowercase)
            .ok_or_else(|| Refused::NoEmail(self.config.email_claim.clone()))
    }

    async fn key(&self, kid: &str) -> Result<(DecodingKey, Option<Algorithm>), Refused> {
        let mut keys = self.keys.lock().await;
        let age = keys.fetched_at.map(|at| at.elapsed());
        let known = keys.by_kid.get(kid).cloned();
        let refetch = match (&known, age) {
            (_, None) => true,
            (Some(_), Some(age)) => age >= REFETCH_EVERY,
            (None, Some(age)) => age >= REFETCH_ON_MISS_EVERY,
        };
        if refetch {
            match self.fetch().await {
                Ok(fresh) => {
                    keys.by_kid = fresh;
                    keys.fetched_at = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!("cannot fetch the OpenID provider's keys: {e:#}");
                    // Keep what we have; try again no sooner than the miss interval.
                    keys.fetched_at = Some(Instant::now());
                    if known.is_none() && keys.by_kid.is_empty() {
                        return Err(Refused::Unavailable);
                    }
                }
            }
        }
        keys.by_kid.get(kid).cloned().ok_or(Refused::UnknownKey)
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, (DecodingKey, Option<Algorithm>)>> {
        let set: JwkSet = self
            .http
            .get(&self.config.jwks_url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .context("the JWKS is not a JSON key set")?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) else {
                continue; // no id, or a kind of key we cannot use
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            keys.insert(kid.clone(), (key, alg));
        }
        Ok(keys)
    }
}
