//! Eddystone frames (the service data of UUID 0xFEAA), per Google's published specification:
//! UID (0x00), URL (0x10), TLM (0x20, plain v0 and encrypted v1) and EID (0x30).
//! All multi-byte fields are big-endian.

use super::{Beacon, Tlm};

const FRAME_UID: u8 = 0x00;
const FRAME_URL: u8 = 0x10;
const FRAME_TLM: u8 = 0x20;
const FRAME_EID: u8 = 0x30;

/// URL scheme prefixes, indexed by the scheme byte.
const URL_SCHEMES: [&str; 4] = ["http://www.", "https://www.", "http://", "https://"];
/// Text expansions for encoded bytes 0x00..=0x0d.
const URL_EXPANSIONS: [&str; 14] = [
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/", ".com", ".org", ".edu", ".net",
    ".info", ".biz", ".gov",
];
/// The encoded URL (after the scheme byte) is at most 17 bytes.
const URL_MAX_ENCODED: usize = 17;

/// Decodes one Eddystone frame (the service data after the 0xFEAA UUID).
pub(super) fn decode(frame: &[u8]) -> Option<Beacon> {
    let (&frame_type, body) = frame.split_first()?;
    match frame_type {
        FRAME_UID => uid(body),
        FRAME_URL => url(body),
        FRAME_TLM => tlm(body),
        FRAME_EID => eid(body),
        _ => None,
    }
}

fn uid(body: &[u8]) -> Option<Beacon> {
    // TX power, 10-byte namespace, 6-byte instance, then two RFU bytes that some beacons omit.
    if !(17..=19).contains(&body.len()) {
        return None;
    }
    Some(Beacon::EddystoneUid {
        tx_power: body[0] as i8,
        namespace: body[1..11].try_into().ok()?,
        instance: body[11..17].try_into().ok()?,
    })
}

fn url(body: &[u8]) -> Option<Beacon> {
    let [tx_power, scheme, encoded @ ..] = body else {
        return None;
    };
    if encoded.len() > URL_MAX_ENCODED {
        return None;
    }
    let mut url = String::from(*URL_SCHEMES.get(usize::from(*scheme))?);
    for &byte in encoded {
        match byte {
            0x00..=0x0d => url.push_str(URL_EXPANSIONS[usize::from(byte)]),
            // 0x0e..=0x20 and 0x7f..=0xff are reserved: not a valid URL frame.
            0x21..=0x7e => url.push(char::from(byte)),
            _ => return None,
        }
    }
    Some(Beacon::EddystoneUrl {
        tx_power: *tx_power as i8,
        url,
    })
}

fn tlm(body: &[u8]) -> Option<Beacon> {
    let (&version, fields) = body.split_first()?;
    let tlm = match (version, fields.len()) {
        (0x00, 12) => {
            let battery = u16::from_be_bytes([fields[0], fields[1]]);
            let temperature = i16::from_be_bytes([fields[2], fields[3]]);
            Tlm::Plain {
                battery_mv: (battery != 0).then_some(battery),
                // 0x8000 (-128.0) is the specification's "not supported" marker.
                temperature_c: (temperature != i16::MIN).then(|| f64::from(temperature) / 256.0),
                adv_count: u32::from_be_bytes(fields[4..8].try_into().ok()?),
                uptime_s: f64::from(u32::from_be_bytes(fields[8..12].try_into().ok()?)) / 10.0,
            }
        }
        (0x01, 16) => Tlm::Encrypted {
            etlm: fields[0..12].try_into().ok()?,
            salt: fields[12..14].try_into().ok()?,
            mic: fields[14..16].try_into().ok()?,
        },
        _ => return None,
    };
    Some(Beacon::EddystoneTlm(tlm))
}

fn eid(body: &[u8]) -> Option<Beacon> {
    let [tx_power, eid @ ..] = body else {
        return None;
    };
    Some(Beacon::EddystoneEid {
        tx_power: *tx_power as i8,
        eid: (*eid).try_into().ok()?,
    })
}
