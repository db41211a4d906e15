//! What keeps console users signed in: the RSA keys that sign their access tokens, and their
//! refresh tokens.
//!
//! Signing keys: the newest unretired key signs; a rotated-out key is retired, not deleted,
//! and still verifies the tokens it signed until they expire, so rotating never signs anyone
//! out. Refresh tokens are stored as SHA-256 hashes (256 random bits: a fast hash is enough),
//! each in a *family* started by a sign-in. A refresh spends the token and issues the next
//! of its family; spending a spent token again means it was copied, and revokes the family.

use std::time::Duration;

use tokio_postgres::GenericClient;
use uuid::Uuid;

/// A signing key as stored: PKCS#8 PEM.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    pub private_key_pem: String,
    pub retired: bool,
}

/// The keys that sign or still verify tokens, the signing one (newest unretired) first.
pub async fn signing_keys(db: &impl GenericClient) -> anyhow::Result<Vec<StoredKey>> {
    let rows = db
        .query(
            "SELECT kid, private_key_pem, retired_at IS NOT NULL FROM signing_keys
             ORDER BY retired_at IS NOT NULL, created_at DESC, kid",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StoredKey {
            kid: r.get(0),
            private_key_pem: r.get(1),
            retired: r.get(2),
        })
        .collect())
}

/// Adds a key; with `retire_others`, it replaces the signing key (a rotation), else it is
/// added only if there is none yet (the first start; several instances may race).
pub async fn add_signing_key(
    db: &mut tokio_postgres::Client,
    kid: &str,
    private_key_pem: &str,
    retire_others: bool,
) -> anyhow::Result<bool> {
    let tx = db.transaction().await?;
    tx.execute("LOCK TABLE signing_keys IN EXCLUSIVE MODE", &[])
        .await?;
    if retire_others {
        tx.execute(
            "UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL",
            &[],
        )
        .await?;
    } else if tx
        .query_opt("SELECT 1 FROM signing_keys WHERE retired_at IS NULL", &[])
        .await?
        .is_some()
    {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO signing_keys (kid, private_key_pem) VALUES ($1, $2)",
        &[&kid, &private_key_pem],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Deletes keys retired longer ago than `verify_for` (no unexpired token is signed by them).
pub async fn forget_retired_keys(
    db: &impl GenericClient,
    verify_for: Duration,
) -> anyhow::Result<u64> {
    Ok(db
        .execute(
            "DELETE FROM signing_keys
             WHERE retired_at < now() - make_interval(secs => $1)",
            &[&verify_for.as_secs_f64()],
        )
        .await?)
}

/// Stores a new refresh token of `family` for `user_id`.
pub async fn issue_refresh_token(
    db: &impl GenericClient,
    user_id: i64,
    family: Uuid,
    token_hash: &[u8],
    valid_for: Duration,
) -> anyhow::Result<()> {
    db.execute(
        "INSERT INTO refresh_tokens (token_hash, family, user_id, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        &[&token_hash, &family, &user_id, &valid_for.as_secs_f64()],
    )
    .await?;
    Ok(())
}

/// What presenting a refresh token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spent {
    /// Valid: it is now spent; issue the next of its family.
    Valid { user_id: i64, family: Uuid },
    /// Spent before: a copy. Its family is revoked now.
    Reused { user_id: i64, family: Uuid },
    /// Unknown, expired or revoked (signed out).
    Invalid,
}

/// Spends a refresh token (atomically: of two requests with the same token, one wins and the
/// other is a reuse).
pub async fn spend_refresh_token(
    db: &impl GenericClient,
    token_hash: &[u8],
) -> anyhow::Result<Spent> {
    let spent = db
        .query_opt(
            "UPDATE refresh_tokens SET used_at = now()
             WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL
                AND expires_at > now()
             RETURNING user_id, family",
            &[&token_hash],
        )
        .await?;
    if let Some(row) = spent {
        return Ok(Spent::Valid {
            user_id: row.get(0),
            family: row.get(1),
        });
    }
    let known = db
        .query_opt(
            "SELECT user_id, family, used_at IS NOT NULL FROM refresh_tokens
             WHERE token_hash = $1",
            &[&token_hash],
        )
        .await?;
    match known {
        Some(row) if row.get::<_, bool>(2) => {
            let (user_id, family) = (row.get(0), row.get(1));
            revoke_family(db, family).await?;
            Ok(Spent::Reused { user_id, family })
        }
        _ => Ok(Spent::Invalid),
    }
}

/// Revokes every token of a family (a sign-out, a detected copy).
pub async fn revoke_family(db: &impl GenericClient, family: Uuid) -> anyhow::Result<()> {
    db.execute(
        "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE family = $1",
        &[&family],
    )
    .await?;
    Ok(())
}

/// Revokes every refresh token of a user (disabled).
pub async fn revoke_user(db: &impl GenericClient, user_id: i64) -> anyhow::Result<()> {
    db.execute(
        "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE user_id = $1",
        &[&user_id],
    )
    .await?;
    Ok(())
}

/// The family of a token, if it is known (for signing out with it).
pub async fn family_of(db: &impl GenericClient, token_hash: &[u8]) -> anyhow::Result<Option<Uuid>> {
    Ok(db
        .query_opt(
            "SELECT family FROM refresh_tokens WHERE token_hash = $1",
            &[&token_hash],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Deletes tokens expired a day ago or more (run now and then).
pub async fn forget_expired_tokens(db: &impl GenericClient) -> anyhow::Result<u64> {
    Ok(db
        .execute(
            "DELETE FROM refresh_tokens WHERE expires_at < now() - interval '1 day'",
            &[],
        )
        .await?)
}
