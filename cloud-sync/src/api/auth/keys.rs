//! The RSA-2048 keys that sign console access tokens (RS256), held in memory and reloaded
//! from PostgreSQL: every instance signs with the newest key and verifies with all keys not
//! yet forgotten, so a rotation (`tastesync-cloud keys rotate`, possibly on another machine)
//! reaches every instance without a restart and signs nobody out. Their public halves are
//! served at `/.well-known/jwks.json`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::storage::sessions;

/// How often keys are reloaded anyway, and at most how often a token with an unknown key id
/// triggers a reload.
const RELOAD_EVERY: Duration = Duration::from_secs(30);
const RELOAD_ON_MISS_EVERY: Duration = Duration::from_secs(2);

/// The keys, as this instance last loaded them.
pub struct SigningKeys {
    db: deadpool_postgres::Pool,
    state: RwLock<KeySet>,
}

struct KeySet {
    /// The newest unretired key: (kid, key).
    signing: Option<(String, EncodingKey)>,
    verifying: HashMap<String, DecodingKey>,
    jwks: JwkSet,
    loaded_at: Instant,
}

impl SigningKeys {
    /// Loads the keys, creating the first one if there is none.
    pub async fn load(db: deadpool_postgres::Pool) -> anyhow::Result<SigningKeys> {
        {
            let mut client = db.get().await?;
            if sessions::signing_keys(&**client).await?.is_empty() {
                let (kid, pem) = generate()?;
                sessions::add_signing_key(&mut client, &kid, &pem, false).await?;
            }
        }
        let keys = SigningKeys {
            db,
            state: RwLock::new(KeySet {
                signing: None,
                verifying: HashMap::new(),
                jwks: JwkSet::default(),
                loaded_at: Instant::now(),
            }),
        };
        keys.reload().await?;
        Ok(keys)
    }

    /// Reads the keys again.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let stored = sessions::signing_keys(&**self.db.get().await?).await?;
        let mut set = KeySet {
            signing: None,
            verifying: HashMap::new(),
            jwks: JwkSet::default(),
            loaded_at: Instant::now(),
        };
        for key in stored {
            let encoding = EncodingKey::from_rsa_pem(key.private_key_pem.as_bytes())
                .with_context(|| format!("signing key {} is not an RSA key", key.kid))?;
            let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)?;
            jwk.common.key_id = Some(key.kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
            set.verifying
                .insert(key.kid.clone(), DecodingKey::from_jwk(&jwk)?);
            set.jwks.keys.push(jwk);
            if !key.retired && set.signing.is_none() {
                set.signing = Some((key.kid, encoding));
            }
        }
        *self.state.write().expect("keys lock") = set;
        Ok(())
    }

    /// Reloads if the keys are older than [`RELOAD_EVERY`]; a failure keeps the old ones.
    pub async fn refresh_if_stale(&self) {
        let stale = self.state.read().expect("keys lock").loaded_at.elapsed() >= RELOAD_EVERY;
        if stale && let Err(e) = self.reload().await {
            tracing::warn!("cannot reload the signing keys: {e:#}");
        }
    }

    /// Signs `claims` with the newest key.
    pub fn sign(&self, claims: &impl serde::Serialize) -> anyhow::Result<String> {
        let state = self.state.read().expect("keys lock");
        let (kid, key) = state
            .signing
            .as_ref()
            .context("no signing key: run `tastesync-cloud keys rotate`")?;
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some(kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, key)?)
    }

    /// The key that verifies tokens with key id `kid`, reloading once if it is unknown (a
    /// rotation on another instance).
    pub async fn verifying_key(&self, kid: &str) -> Option<DecodingKey> {
        let (known, loaded_at) = {
            let state = self.state.read().expect("keys lock");
            (state.verifying.get(kid).cloned(), state.loaded_at)
        };
        if known.is_some() || loaded_at.elapsed() < RELOAD_ON_MISS_EVERY {
            return known;
        }
        if let Err(e) = self.reload().await {
            tracing::warn!("cannot reload the signing keys: {e:#}");
        }
        self.state
            .read()
            .expect("keys lock")
            .verifying
            .get(kid)
            .cloned()
    }

    /// The public keys, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        self.state.read().expect("keys lock").jwks.clone()
    }
}

/// A new RSA-2048 key: its id (the date and 32 random bits) and its PKCS#8 PEM.
pub fn generate() -> anyhow::Result<(String, String)> {
    let pair = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("cannot generate an RSA key"))?;
    let der = pair
        .as_der()
        .map_err(|_| anyhow::anyhow!("cannot encode the RSA key"))?;
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).expect("the OS random number generator");
    let date = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    Ok((format!("k{date}-{}", hex::encode(random)), pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_and_its_jwk_verifies() {
        let (kid, pem) = generate().unwrap();
        assert!(kid.starts_with('k'));
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
        let header = jsonwebtoken::Header::new(Algorithm::RS256);
        let claims = serde_json::json!({"sub": "1", "exp": 4_000_000_000u64});
        let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &jsonwebtoken::Validation::new(Algorithm::RS256),
        )
        .unwrap();
        assert_eq!(decoded.claims["sub"], "1");
        // Another key does not verify it.
        let (_, other) = generate().unwrap();
        let other = EncodingKey::from_rsa_pem(other.as_bytes()).unwrap();
        let other_jwk = Jwk::from_encoding_key(&other, Algorithm::RS256).unwrap();
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                &token,
                &DecodingKey::from_jwk(&other_jwk).unwrap(),
                &jsonwebtoken::Validation::new(Algorithm::RS256),
            )
            .is_err()
        );
    }
}
