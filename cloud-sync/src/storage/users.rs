//! HQ's console users: an email, an Argon2id password (none for users who sign in through
//! the external OpenID Connect provider only), a role and, for managers, their shops.

use serde::{Deserialize, Serialize};
use tastesync_shared::wire::is_valid_id;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Their shops' customers, feedback and analytics.
    Manager,
    /// Chain analytics only: never a name, a note or a comment.
    Analyst,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Analyst => "analyst",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "manager" => Some(Role::Manager),
            "analyst" => Some(Role::Analyst),
            _ => None,
        }
    }
}

/// A console user as the console and `users list` show them (never the password hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub user_id: i64,
    pub email: String,
    pub role: Role,
    /// A manager's shops (empty for the other roles).
    pub shops: Vec<String>,
    /// Whether they can sign in with a password (else only through the external provider).
    pub has_password: bool,
    pub disabled: bool,
}

/// Passwords: at least this many characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// And at most this many bytes (Argon2 takes any length; a megabyte is an attack).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Lower-cases and checks an email address; `None` if it cannot be one.
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let ok = email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.contains(char::is_whitespace)
        && !email.chars().any(char::is_control)
        && email.matches('@').count() == 1;
    ok.then_some(email)
}

/// Why a user could not be added.
#[derive(Debug, thiserror::Error)]
pub enum UserRefused {
    #[error("{0:?} is not an email address")]
    BadEmail(String),
    #[error("a user with this email already exists")]
    Exists,
    #[error("a manager needs at least one shop; the other roles take none")]
    ShopsForRole,
    #[error("no shop {0:?}")]
    UnknownShop(String),
}

/// Adds a user; `password_phc` is the Argon2id hash in PHC form, or `None` for a user who
/// signs in through the external provider only.
pub async fn add(
    db: &impl GenericClient,
    email: &str,
    role: Role,
    shops: &[String],
    password_phc: Option<&str>,
) -> anyhow::Result<Result<User, UserRefused>> {
    let Some(email) = normalize_email(email) else {
        return Ok(Err(UserRefused::BadEmail(email.to_string())));
    };
    if (role == Role::Manager) == shops.is_empty() {
        return Ok(Err(UserRefused::ShopsForRole));
    }
    for shop in shops {
        let known = is_valid_id(shop)
            && db
                .query_opt("SELECT 1 FROM shops WHERE shop_id = $1", &[shop])
                .await?
                .is_some();
        if !known {
            return Ok(Err(UserRefused::UnknownShop(shop.clone())));
        }
    }
    let row = db
        .query_opt(
            "INSERT INTO hq_users (email, password_phc, role, shops) VALUES ($1, $2, $3, $4)
             ON CONFLICT (email) DO NOTHING RETURNING user_id",
            &[&email, &password_phc, &role.as_str(), &shops],
        )
        .await?;
    Ok(match row {
        None => Err(UserRefused::Exists),
        Some(row) => Ok(User {
            user_id: row.get(0),
            email,
            role,
            shops: shops.to_vec(),
            has_password: password_phc.is_some(),
            disabled: false,
        }),
    })
}

const COLUMNS: &str =
    "user_id, email, role, shops, password_phc IS NOT NULL, disabled_at IS NOT NULL";

fn user_of(row: &tokio_postgres::Row) -> User {
    User {
        user_id: row.get(0),
        email: row.get(1),
        role: Role::parse(row.get(2)).unwrap_or(Role::Analyst),
        shops: row.get(3),
        has_password: row.get(4),
        disabled: row.get(5),
    }
}

/// A user and their password hash, by email (any case).
pub async fn by_email(
    db: &impl GenericClient,
    email: &str,
) -> anyhow::Result<Option<(User, Option<String>)>> {
    let Some(email) = normalize_email(email) else {
        return Ok(None);
    };
    let row = db
        .query_opt(
            &format!("SELECT {COLUMNS}, password_phc FROM hq_users WHERE email = $1"),
            &[&email],
        )
        .await?;
    Ok(row.map(|r| (user_of(&r), r.get(6))))
}

pub async fn by_id(db: &impl GenericClient, user_id: i64) -> anyhow::Result<Option<User>> {
    let row = db
        .query_opt(
            &format!("SELECT {COLUMNS} FROM hq_users WHERE user_id = $1"),
            &[&user_id],
        )
        .await?;
    Ok(row.as_ref().map(user_of))
}

pub async fn list(db: &impl GenericClient) -> anyhow::Result<Vec<User>> {
    let rows = db
        .query(
            &format!("SELECT {COLUMNS} FROM hq_users ORDER BY email"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(user_of).collect())
}

/// Replaces a user's password; false if there is no such user.
pub async fn set_password(
    db: &impl GenericClient,
    email: &str,
    password_phc: &str,
) -> anyhow::Result<bool> {
    let email = normalize_email(email).unwrap_or_default();
    Ok(db
        .execute(
            "UPDATE hq_users SET password_phc = $2 WHERE email = $1",
            &[&email, &password_phc],
        )
        .await?
        == 1)
}

/// Disables a user and revokes their refresh tokens (their access token lapses within its
/// lifetime); false if there is no such user.
pub async fn disable(db: &impl GenericClient, email: &str) -> anyhow::Result<bool> {
    let email = normalize_email(email).unwrap_or_default();
    let Some(row) = db
        .query_opt(
            "UPDATE hq_users SET disabled_at = coalesce(disabled_at, now()) WHERE email = $1
             RETURNING user_id",
            &[&email],
        )
        .await?
    else {
        return Ok(false);
    };
    let user_id: i64 = row.get(0);
    super::sessions::revoke_user(db, user_id).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            normalize_email(" Minji@Example.COM ").as_deref(),
            Some("minji@example.com")
        );
        for bad in [
            "",
            "minji",
            "@example.com",
            "minji@example",
            "a b@example.com",
            "a@@b.com",
            "a@.com",
            "a@b.com.",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_an_email_or_refused_without_panicking(text in "\\PC{0,40}") {
            if let Some(email) = normalize_email(&text) {
                proptest::prop_assert_eq!(normalize_email(&email), Some(email.clone()));
            }
        }
    }
}
