//! Console passwords: Argon2id PHC strings (argon2's defaults: m=19456 KiB, t=2, p=1). Slow
//! on purpose; the API hashes behind a semaphore, off the async workers.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::storage::users::{MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS};

/// Checks a new password; the reason if it is refused.
pub fn check_new(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "a password needs at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("a password has at most {MAX_PASSWORD_BYTES} bytes"));
    }
    Ok(())
}

/// The PHC string of `password`.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random number generator");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("valid Argon2 parameters")
        .to_string()
}

/// Whether `password` matches `phc`. With `None` (no such user, or no password) a dummy hash
/// is checked, so that the answer takes as long as for a real user.
pub fn verify(password: &str, phc: Option<&str>) -> bool {
    static DUMMY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash("not anybody's password"));
    let (phc, real) = match phc {
        Some(phc) => (phc, true),
        None => (DUMMY.as_str(), false),
    };
    let matches = password.len() <= MAX_PASSWORD_BYTES
        && PasswordHash::new(phc).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
    matches && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_a_missing_user_never_does() {
        let phc = hash("correct horse battery");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse battery", Some(&phc)));
        assert!(!verify("correct horse batterY", Some(&phc)));
        assert!(!verify("not anybody's password", None));
        assert!(!verify("x", Some("not a phc string")));
        assert!(check_new("short").is_err());
        assert!(check_new(&"x".repeat(2000)).is_err());
        assert!(check_new("long enough pass").is_ok());
    }
}
