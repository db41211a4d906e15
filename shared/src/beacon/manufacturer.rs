//! Manufacturer-specific data frames: Apple iBeacon and AltBeacon.
//!
//! Input is the AD record's data: the company id (little-endian) and then the payload.

use super::{APPLE_COMPANY_ID, Beacon};

/// iBeacon payload after the company id: type 0x02, length 0x15, then 21 bytes.
const IBEACON_PREFIX: [u8; 2] = [0x02, 0x15];
const IBEACON_LEN: usize = 2 + 2 + 21;
/// AltBeacon payload after the manufacturer id: beacon code 0xBEAC, then 22 bytes.
const ALTBEACON_CODE: [u8; 2] = [0xbe, 0xac];
const ALTBEACON_LEN: usize = 2 + 2 + 20 + 1 + 1;

pub(super) fn decode(data: &[u8]) -> Option<Beacon> {
    let company = u16::from_le_bytes([*data.first()?, *data.get(1)?]);
    if company == APPLE_COMPANY_ID && data.len() == IBEACON_LEN && data[2..4] == IBEACON_PREFIX {
        return Some(Beacon::IBeacon {
            uuid: data[4..20].try_into().ok()?,
            major: u16::from_be_bytes([data[20], data[21]]),
            minor: u16::from_be_bytes([data[22], data[23]]),
            tx_power: data[24] as i8,
        });
    }
    if data.len() == ALTBEACON_LEN && data[2..4] == ALTBEACON_CODE {
        return Some(Beacon::AltBeacon {
            manufacturer_id: company,
            beacon_id: data[4..24].try_into().ok()?,
            tx_power: data[24] as i8,
            mfg_reserved: data[25],
        });
    }
    None
}
