//! Lower-case hex and UUID text, the only textual forms of binary ids this project prints.

use std::fmt::Write;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A 16-byte UUID in the 8-4-4-4-12 form, lower case.
pub fn uuid(bytes: &[u8; 16]) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        hex(&bytes[0..4]),
        hex(&bytes[4..6]),
        hex(&bytes[6..8]),
        hex(&bytes[8..10]),
        hex(&bytes[10..16])
    )
}

/// Parses hex text (either case, no separators) into exactly `N` bytes.
pub fn parse_fixed<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = parse(text)?;
    bytes.try_into().ok()
}

/// Parses hex text (either case, no separators).
pub fn parse(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

/// Parses a UUID in the 8-4-4-4-12 form (or 32 hex digits without dashes).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let plain: String = text.chars().filter(|c| *c != '-').collect();
    let dashes = text.len() - plain.len();
    if dashes != 0 && !(dashes == 4 && is_canonical_uuid_layout(text)) {
        return None;
    }
    parse_fixed(&plain)
}

fn is_canonical_uuid_layout(text: &str) -> bool {
    let lengths: Vec<usize> = text.split('-').map(str::len).collect();
    lengths == [8, 4, 4, 4, 12]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = [
            0xf7, 0x82, 0x6d, 0xa6, 0x4f, 0xa2, 0x4e, 0x98, 0x80, 0x24, 0xbc, 0x5b, 0x71, 0xe0,
            0x89, 0x3e,
        ];
        let text = uuid(&id);
        assert_eq!(text, "f7826da6-4fa2-4e98-8024-bc5b71e0893e");
        assert_eq!(parse_uuid(&text), Some(id));
        assert_eq!(parse_uuid(&text.to_uppercase()), Some(id));
        assert_eq!(parse_uuid("f7826da64fa24e988024bc5b71e0893e"), Some(id));
        assert_eq!(parse_uuid("f7826da6-4fa24e98-8024-bc5b71e0-893e"), None);
        assert_eq!(parse("0g"), None);
        assert_eq!(parse("abc"), None);
    }
}
