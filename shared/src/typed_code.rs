//! Codes people type (claim codes from HQ, a box's setup code): Crockford's base32, which has
//! no I, L, O or U, so that what people confuse reads as what they meant.

/// The 32 symbols, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// `len` symbols from random bytes (one symbol a byte: 256 is a multiple of 32, no bias).
pub fn from_random(random: &[u8]) -> String {
    random
        .iter()
        .map(|b| ALPHABET[usize::from(b % 32)] as char)
        .collect()
}

/// A code as typed, as it was meant: spaces and dashes dropped, upper case, O read as 0 and
/// I or L as 1. `None` if it is not `len` symbols of the alphabet.
pub fn normalize(typed: &str, len: usize) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect();
    (code.len() == len && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_codes_read_as_meant() {
        assert_eq!(
            normalize("7kqm-x3pa 9rtd", 12).as_deref(),
            Some("7KQMX3PA9RTD")
        );
        assert_eq!(normalize("o1il", 4).as_deref(), Some("0111"));
        assert_eq!(normalize("7KQM", 12), None, "too short");
        assert_eq!(normalize("UUUU", 4), None, "not in the alphabet");
        assert_eq!(from_random(&[0, 31, 32, 255]), "0Z0Z");
    }

    proptest::proptest! {
        #[test]
        fn anything_typed_is_normalised_or_refused(text in "\\PC{0,40}") {
            if let Some(code) = normalize(&text, 8) {
                proptest::prop_assert_eq!(normalize(&code, 8), Some(code));
            }
        }
    }
}
