//! Access to the POS: device tokens for paired tablets, the owner's PIN and sessions, pairing
//! codes, and the pairing rate limit.
//!
//! Tokens are 32 random bytes shown once; the box keeps only their SHA-256. Pairing codes are
//! 6 digits, single use, valid 10 minutes; after 5 wrong codes from one address within a
//! minute that address must wait. The owner's PIN is stored as an Argon2id hash.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::Millis;

/// How long a pairing code stays valid.
pub const PAIRING_CODE_TTL_MS: Millis = 10 * 60_000;
/// How long an owner session lasts.
pub const OWNER_SESSION_TTL_MS: Millis = 12 * 3_600_000;
/// Wrong pairing codes or PINs allowed per address per window.
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW_MS: Millis = 60_000;
/// Shortest owner PIN or passphrase.
pub const MIN_PIN_LEN: usize = 6;

/// A new random token (64 hex digits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator");
    tastesync_shared::hexfmt::hex(&bytes)
}

/// A new 6-digit pairing code.
pub fn new_pairing_code() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random number generator");
    format!("{:06}", u64::from_le_bytes(bytes) % 1_000_000)
}

/// SHA-256 of a token or code: what the store keeps.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.trim().as_bytes()).into()
}

/// Argon2id of the owner's PIN with a fresh salt: (salt, hash).
pub fn hash_pin(pin: &str) -> (Vec<u8>, Vec<u8>) {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random number generator");
    (salt.to_vec(), pin_hash_with(pin, &salt))
}

fn pin_hash_with(pin: &str, salt: &[u8]) -> Vec<u8> {
    let mut out = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(pin.as_bytes(), salt, &mut out)
        .expect("valid Argon2 parameters");
    out.to_vec()
}

pub fn verify_pin(pin: &str, salt: &[u8], expected: &[u8]) -> bool {
    let got = pin_hash_with(pin, salt);
    // Constant time: compare every byte.
    got.len() == expected.len()
        && got
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Failed attempts per client address (pairing codes and owner PINs).
#[derive(Default)]
pub struct FailureLimiter {
    failures: Mutex<HashMap<IpAddr, (Millis, u32)>>,
}

impl FailureLimiter {
    /// Whether `addr` may try now; if not, how many ms to wait.
    pub fn check(&self, addr: IpAddr, now: Millis) -> Result<(), Millis> {
        let failures = self.failures.lock().expect("limiter lock");
        match failures.get(&addr) {
            Some(&(since, count)) if count >= MAX_FAILURES && now < since + FAILURE_WINDOW_MS => {
                Err(since + FAILURE_WINDOW_MS - now)
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, addr: IpAddr, now: Millis) {
        let mut failures = self.failures.lock().expect("limiter lock");
        failures.retain(|_, (since, _)| now < *since + FAILURE_WINDOW_MS);
        let entry = failures.entry(addr).or_insert((now, 0));
        entry.1 += 1;
    }
}

/// Owner sessions (in memory: a restart asks for the PIN again).
#[derive(Default)]
pub struct OwnerSessions {
    sessions: Mutex<HashMap<[u8; 32], Millis>>,
}

impl OwnerSessions {
    /// Opens a session; returns its token.
    pub fn open(&self, now: Millis) -> String {
        let token = new_token();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        sessions.retain(|_, expires| *expires > now);
        sessions.insert(hash(&token), now + OWNER_SESSION_TTL_MS);
        token
    }

    pub fn is_valid(&self, token: &str, now: Millis) -> bool {
        let sessions = self.sessions.lock().expect("sessions lock");
        sessions
            .get(&hash(token))
            .is_some_and(|expires| *expires > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_verify_and_codes_look_right() {
        let (salt, stored) = hash_pin("482915");
        assert!(verify_pin("482915", &salt, &stored));
        assert!(!verify_pin("482916", &salt, &stored));
        let code = new_pairing_code();
        assert_eq!(code.len(), 6);
        assert!(code.chars().all(|c| c.is_ascii_digit()));
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn the_limiter_blocks_after_five_failures_for_a_minute() {
        let limiter = FailureLimiter::default();
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(limiter.check(addr, 1000).is_ok());
            limiter.failed(addr, 1000);
        }
        assert_eq!(limiter.check(addr, 1000), Err(60_000));
        assert!(
            limiter.check("192.0.2.8".parse().unwrap(), 1000).is_ok(),
            "per address"
        );
        assert!(limiter.check(addr, 61_000).is_ok());
    }
}
