//! Access to the POS: device tokens for paired tablets, stream tickets, the owner's PIN and
//! sessions, the setup and pairing codes, and the failure budgets that make guessing them
//! hopeless.
//!
//! Tokens are 32 random bytes shown once; the box keeps only their SHA-256. Pairing codes are
//! 8 digits, single use, valid 10 minutes. The owner's PIN is stored as an Argon2id PHC string
//! (parameters included), hashed off the store's lock. Wrong codes and PINs are counted
//! before they are checked, per client and for the whole box, with lockouts that double.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sha2::{Digest, Sha256};
use tastesync_shared::typed_code;

use crate::Millis;

/// How long a pairing code stays valid.
pub const PAIRING_CODE_TTL_MS: Millis = 10 * 60_000;
/// How long an owner session lasts.
pub const OWNER_SESSION_TTL_MS: Millis = 12 * 3_600_000;
/// How long a stream ticket may wait to be used.
pub const STREAM_TICKET_TTL_MS: Millis = 30_000;
/// Shortest owner PIN or passphrase.
pub const MIN_PIN_LEN: usize = 6;
/// Setup codes: 8 symbols of Crockford's base32 (40 bits), printed on the box's label.
const SETUP_CODE_LEN: usize = 8;

/// A new random token (64 hex digits).
pub fn new_token() -> String {
    tastesync_shared::hexfmt::hex(&random::<32>())
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random number generator");
    bytes
}

/// A new 8-digit pairing code. With the box-wide failure budget (about 40 wrong codes in a
/// code's 10 minutes at most), a guess succeeds with odds under 1 in 2 million.
pub fn new_pairing_code() -> String {
    format!("{:08}", u64::from_le_bytes(random::<8>()) % 100_000_000)
}

/// A new setup code, `XXXX-XXXX`.
pub fn new_setup_code() -> String {
    let symbols = typed_code::from_random(&random::<SETUP_CODE_LEN>());
    format!("{}-{}", &symbols[..4], &symbols[4..])
}

/// A setup code as typed (see `typed_code::normalize`); `None` if it cannot be one.
pub fn normalize_setup_code(typed: &str) -> Option<String> {
    typed_code::normalize(typed, SETUP_CODE_LEN)
}

/// SHA-256 of a token or code: what the store keeps.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.trim().as_bytes()).into()
}

pub use tastesync_shared::access::constant_time_eq;

/// Why a PIN is refused, or `None` if it will do.
pub fn pin_weakness(pin: &str) -> Option<String> {
    let chars: Vec<char> = pin.chars().collect();
    if chars.len() < MIN_PIN_LEN || pin.len() > 128 {
        return Some(format!(
            "the PIN or passphrase must be {MIN_PIN_LEN} to 128 characters"
        ));
    }
    if chars.iter().any(|c| c.is_control()) {
        return Some("the PIN must not contain control characters".into());
    }
    if chars.iter().all(|c| *c == chars[0]) {
        return Some("the PIN repeats one character; choose one that is hard to guess".into());
    }
    if chars.iter().all(char::is_ascii_digit) {
        let digits: Vec<i32> = chars
            .iter()
            .map(|c| c.to_digit(10).unwrap() as i32)
            .collect();
        let steps: Vec<i32> = digits
            .windows(2)
            .map(|w| (w[1] - w[0]).rem_euclid(10))
            .collect();
        if steps.iter().all(|s| *s == 1) || steps.iter().all(|s| *s == 9) {
            return Some(
                "the PIN is a run of digits (like 123456); choose one that is hard to guess".into(),
            );
        }
        if digits.iter().enumerate().all(|(i, d)| *d == digits[i % 2]) {
            return Some(
                "the PIN repeats a pair of digits; choose one that is hard to guess".into(),
            );
        }
        if digits.len().is_multiple_of(3)
            && digits.iter().enumerate().all(|(i, d)| *d == digits[i % 3])
        {
            return Some("the PIN repeats three digits; choose one that is hard to guess".into());
        }
    }
    None
}

/// The owner's PIN as stored: an Argon2id PHC string, or, from the first release, a raw
/// Argon2id hash with its salt (verified with the parameters of that time, then upgraded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredPin {
    Phc(String),
    Legacy { salt: Vec<u8>, hash: Vec<u8> },
}

impl StoredPin {
    /// A short fingerprint: owner sessions end when it changes (a new or reset PIN).
    pub fn fingerprint(&self) -> [u8; 8] {
        let digest = match self {
            StoredPin::Phc(phc) => Sha256::digest(phc.as_bytes()),
            StoredPin::Legacy { hash, .. } => Sha256::digest(hash),
        };
        digest[..8].try_into().expect("8 of 32 bytes")
    }
}

/// Argon2id of a PIN as a PHC string (algorithm, parameters, salt and hash). Slow on
/// purpose: call it off the store's lock, behind the hashing semaphore.
pub fn hash_pin(pin: &str) -> String {
    let salt = SaltString::encode_b64(&random::<16>()).expect("16 bytes make a salt");
    argon2::Argon2::default()
        .hash_password(pin.as_bytes(), &salt)
        .expect("valid Argon2 parameters")
        .to_string()
}

/// Whether `pin` is the stored one. Slow on purpose, like [`hash_pin`].
pub fn verify_pin(pin: &str, stored: &StoredPin) -> bool {
    match stored {
        StoredPin::Phc(phc) => PasswordHash::new(phc).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(pin.as_bytes(), &parsed)
                .is_ok()
        }),
        StoredPin::Legacy { salt, hash } => {
            // The first release: argon2 0.5's defaults (Argon2id, m=19456, t=2, p=1), 32 bytes.
            let params = argon2::Params::new(19_456, 2, 1, Some(32)).expect("valid parameters");
            let argon =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut out = [0u8; 32];
            argon
                .hash_password_into(pin.as_bytes(), salt, &mut out)
                .is_ok()
                && constant_time_eq(&out, hash)
        }
    }
}

/// A failure budget: so many failures per client, and for the whole box, within a window;
/// past it, a lockout that doubles with each one (from `base_lockout_ms` up to the window).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub per_client: u32,
    pub global: u32,
    pub window_ms: Millis,
    pub base_lockout_ms: Millis,
}

impl Budget {
    /// Pairing codes: 5 wrong a client, 10 box-wide, per 10 minutes.
    pub const PAIRING: Budget = Budget {
        per_client: 5,
        global: 10,
        window_ms: 600_000,
        base_lockout_ms: 60_000,
    };
    /// The owner's PIN: 5 wrong a client, 20 box-wide, per 10 minutes.
    pub const PIN: Budget = Budget {
        per_client: 5,
        global: 20,
        window_ms: 600_000,
        base_lockout_ms: 60_000,
    };
    /// The setup code: 5 wrong a client, 10 box-wide, per 10 minutes.
    pub const SETUP: Budget = Budget {
        per_client: 5,
        global: 10,
        window_ms: 600_000,
        base_lockout_ms: 60_000,
    };
}

/// Failures of one client, or of everyone.
#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    failures: u32,
    window_start: Millis,
    locked_until: Millis,
    lockouts: u32,
}

impl Counter {
    /// Counts one more attempt as failed; returns the wait if it is over the budget.
    fn charge(&mut self, limit: u32, budget: &Budget, now: Millis) -> Result<(), Millis> {
        if now < self.locked_until {
            return Err(self.locked_until - now);
        }
        if now >= self.window_start + budget.window_ms {
            // A quiet window forgives earlier lockouts too.
            if self.failures == 0 {
                self.lockouts = 0;
            }
            self.failures = 0;
            self.window_start = now;
        }
        if self.failures >= limit {
            let lockout = (budget.base_lockout_ms << self.lockouts.min(16)).min(budget.window_ms);
            self.lockouts += 1;
            self.failures = 0;
            self.window_start = now + lockout;
            self.locked_until = now + lockout;
            return Err(lockout);
        }
        self.failures += 1;
        Ok(())
    }

    fn refund(&mut self) {
        self.failures = self.failures.saturating_sub(1);
    }
}

/// Failed attempts at one kind of secret (pairing codes, the PIN, the setup code). Every
/// attempt is charged before it is checked, under one lock, so requests in flight cannot
/// overrun the budget; a right answer is refunded.
#[derive(Debug)]
pub struct FailureLimiter {
    budget: Budget,
    state: Mutex<(HashMap<IpAddr, Counter>, Counter)>,
}

/// An attempt charged to the budget. Dropped, it stays a failure; [`succeeded`] refunds it.
///
/// [`succeeded`]: Attempt::succeeded
#[derive(Debug)]
pub struct Attempt<'a> {
    limiter: &'a FailureLimiter,
    client: IpAddr,
}

impl FailureLimiter {
    pub fn new(budget: Budget) -> FailureLimiter {
        FailureLimiter {
            budget,
            state: Mutex::new((HashMap::new(), Counter::default())),
        }
    }

    /// Charges an attempt by `client`, or says how many ms to wait.
    pub fn begin(&self, client: IpAddr, now: Millis) -> Result<Attempt<'_>, Millis> {
        let mut state = self.state.lock().expect("limiter lock");
        let (clients, global) = &mut *state;
        if clients.len() > 10_000 {
            // Bounded memory whatever the number of addresses: forget the quiet ones.
            clients.retain(|_, c| {
                now < c.locked_until || now < c.window_start + self.budget.window_ms
            });
        }
        let counter = clients.entry(client).or_default();
        counter.charge(self.budget.per_client, &self.budget, now)?;
        if let Err(wait) = global.charge(self.budget.global, &self.budget, now) {
            counter.refund(); // the box is locked, not this client's fault alone
            return Err(wait);
        }
        Ok(Attempt {
            limiter: self,
            client,
        })
    }
}

impl Attempt<'_> {
    /// The answer was right: the attempt does not count.
    pub fn succeeded(self) {
        let mut state = self.limiter.state.lock().expect("limiter lock");
        let (clients, global) = &mut *state;
        if let Some(counter) = clients.get_mut(&self.client) {
            counter.refund();
        }
        global.refund();
    }
}

/// Owner sessions (in memory: a restart asks for the PIN again). A session belongs to the PIN
/// it was opened with: a changed or reset PIN ends it.
#[derive(Default)]
pub struct OwnerSessions {
    /// Token hash -> (expiry, fingerprint of the PIN it was opened with).
    sessions: Mutex<HashMap<[u8; 32], OwnerSession>>,
}

type OwnerSession = (Millis, [u8; 8]);

impl OwnerSessions {
    /// Opens a session under the PIN with this fingerprint; returns its token.
    pub fn open(&self, now: Millis, pin: [u8; 8]) -> String {
        let token = new_token();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        sessions.retain(|_, (expires, _)| *expires > now);
        sessions.insert(hash(&token), (now + OWNER_SESSION_TTL_MS, pin));
        token
    }

    pub fn is_valid(&self, token: &str, now: Millis, pin: Option<[u8; 8]>) -> bool {
        let sessions = self.sessions.lock().expect("sessions lock");
        sessions
            .get(&hash(token))
            .is_some_and(|(expires, opened_with)| *expires > now && Some(*opened_with) == pin)
    }
}

/// Single-use tickets for the live stream, so a device token never rides in a URL.
#[derive(Default)]
pub struct StreamTickets {
    tickets: Mutex<HashMap<[u8; 32], (Millis, i64)>>,
}

impl StreamTickets {
    /// A ticket for `device`, valid [`STREAM_TICKET_TTL_MS`].
    pub fn issue(&self, device: i64, now: Millis) -> String {
        let ticket = new_token();
        let mut tickets = self.tickets.lock().expect("tickets lock");
        tickets.retain(|_, (expires, _)| *expires > now);
        tickets.insert(hash(&ticket), (now + STREAM_TICKET_TTL_MS, device));
        ticket
    }

    /// Uses a ticket up; returns its device if it was valid.
    pub fn redeem(&self, ticket: &str, now: Millis) -> Option<i64> {
        let mut tickets = self.tickets.lock().expect("tickets lock");
        tickets
            .remove(&hash(ticket))
            .filter(|(expires, _)| *expires > now)
            .map(|(_, device)| device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_verify_new_and_legacy_hashes_and_codes_look_right() {
        let stored = StoredPin::Phc(hash_pin("482915"));
        let StoredPin::Phc(phc) = &stored else {
            unreachable!()
        };
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_pin("482915", &stored));
        assert!(!verify_pin("482916", &stored));
        // As the first release stored it.
        let salt = [7u8; 16];
        let mut hash = [0u8; 32];
        argon2::Argon2::default()
            .hash_password_into(b"482915", &salt, &mut hash)
            .unwrap();
        let legacy = StoredPin::Legacy {
            salt: salt.to_vec(),
            hash: hash.to_vec(),
        };
        assert!(verify_pin("482915", &legacy));
        assert!(!verify_pin("482916", &legacy));
        assert_ne!(legacy.fingerprint(), stored.fingerprint());

        let code = new_pairing_code();
        assert_eq!(code.len(), 8);
        assert!(code.chars().all(|c| c.is_ascii_digit()));
        let setup = new_setup_code();
        assert_eq!(setup.len(), 9);
        assert_eq!(
            normalize_setup_code(&setup.to_lowercase()),
            Some(setup.replace('-', ""))
        );
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn weak_pins_are_refused_with_a_reason() {
        for weak in [
            "12345", "111111", "123456", "654321", "890123", "121212", "123123", "aaaaaaa",
        ] {
            assert!(pin_weakness(weak).is_some(), "{weak}");
        }
        for fine in ["482915", "270193", "correct horse", "9q8w7e"] {
            assert_eq!(pin_weakness(fine), None, "{fine}");
        }
    }

    #[test]
    fn budgets_count_before_checking_lock_out_longer_each_time_and_refund_successes() {
        let budget = Budget {
            per_client: 5,
            global: 8,
            window_ms: 600_000,
            base_lockout_ms: 60_000,
        };
        let limiter = FailureLimiter::new(budget);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        // Attempts in flight all count.
        let _in_flight: Vec<_> = (0..5).map(|_| limiter.begin(a, 1000).unwrap()).collect();
        assert_eq!(limiter.begin(a, 1000).err(), Some(60_000));
        // Another client still may, until the box-wide budget is spent.
        for _ in 0..3 {
            limiter.begin(b, 1000).unwrap();
        }
        assert_eq!(limiter.begin(b, 1000).err(), Some(60_000), "the whole box");
        // A right answer is refunded.
        let limiter = FailureLimiter::new(budget);
        for _ in 0..20 {
            limiter.begin(a, 1000).unwrap().succeeded();
        }
        // Lockouts double.
        let limiter = FailureLimiter::new(Budget {
            global: 1000,
            ..budget
        });
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..3 {
            while limiter.begin(a, now).is_ok() {}
            let wait = limiter.begin(a, now).unwrap_err();
            waits.push(wait);
            now += wait;
        }
        assert_eq!(waits, [60_000, 120_000, 240_000]);
    }

    #[test]
    fn tickets_are_single_use_and_expire() {
        let tickets = StreamTickets::default();
        let t = tickets.issue(7, 1000);
        assert_eq!(tickets.redeem(&t, 1001), Some(7));
        assert_eq!(tickets.redeem(&t, 1002), None, "single use");
        let late = tickets.issue(7, 1000);
        assert_eq!(tickets.redeem(&late, 1000 + STREAM_TICKET_TTL_MS + 1), None);
    }

    proptest::proptest! {
        #[test]
        fn any_typed_pin_or_code_is_judged_without_panicking(text in "\\PC{0,200}") {
            let _ = pin_weakness(&text);
            let _ = normalize_setup_code(&text);
            let stored = StoredPin::Legacy { salt: vec![1; 16], hash: vec![2; 32] };
            let _ = stored.fingerprint();
        }
    }
}
