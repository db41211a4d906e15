//! Beacon frames as broadcast: iBeacon, AltBeacon and the Eddystone family.
//!
//! The input is either the advertising data as it goes over the air (a sequence of AD
//! structures, possibly zero-padded to 31 bytes) or, for the command line, the manufacturer or
//! service data alone. Decoding never allocates except for Eddystone-URL text, and never panics
//! on any input: the scanner feeds it whatever the radio hears.

mod ad;
mod eddystone;
mod manufacturer;
mod tag;

use serde::ser::{Serialize, SerializeMap, Serializer};

pub use ad::{AdError, AdStructures};
pub use tag::{BeaconIdentity, TagId, TagIdError};

use crate::hexfmt::{hex, uuid};

/// Company identifier of Apple, the only one under which iBeacon frames are valid.
pub const APPLE_COMPANY_ID: u16 = 0x004c;
/// 16-bit service UUID of Eddystone (0xFEAA).
pub const EDDYSTONE_SERVICE_UUID: u16 = 0xfeaa;

/// A recognised beacon frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Beacon {
    /// Apple iBeacon: a UUID plus major and minor numbers.
    IBeacon {
        uuid: [u8; 16],
        major: u16,
        minor: u16,
        /// Calibrated RSSI at 1 m, dBm.
        tx_power: i8,
    },
    /// AltBeacon (open specification), under any manufacturer id.
    AltBeacon {
        manufacturer_id: u16,
        beacon_id: [u8; 20],
        /// Reference RSSI at 1 m, dBm.
        tx_power: i8,
        mfg_reserved: u8,
    },
    /// Eddystone-UID: a 10-byte namespace and a 6-byte instance.
    EddystoneUid {
        /// Calibrated TX power at 0 m, dBm.
        tx_power: i8,
        namespace: [u8; 10],
        instance: [u8; 6],
    },
    /// Eddystone-URL, already expanded to the full text.
    EddystoneUrl { tx_power: i8, url: String },
    /// Eddystone-TLM telemetry, plain or encrypted.
    EddystoneTlm(Tlm),
    /// Eddystone-EID: an 8-byte ephemeral identifier that rotates every 2^K seconds.
    EddystoneEid { tx_power: i8, eid: [u8; 8] },
}

/// Eddystone-TLM telemetry.
#[derive(Debug, Clone, PartialEq)]
pub enum Tlm {
    /// Version 0x00, unencrypted.
    Plain {
        /// Battery voltage in mV; `None` when the beacon reports 0 (not supported).
        battery_mv: Option<u16>,
        /// Temperature in °C from the 8.8 fixed-point field; `None` for 0x8000 (not supported).
        temperature_c: Option<f64>,
        /// Advertising PDUs sent since power-up or reboot.
        adv_count: u32,
        /// Time since power-up or reboot, in seconds (the field counts 0.1 s).
        uptime_s: f64,
    },
    /// Version 0x01: encrypted TLM, only the owner of the identity key can read it.
    Encrypted {
        etlm: [u8; 12],
        salt: [u8; 2],
        mic: [u8; 2],
    },
}

impl Beacon {
    /// The value of the `format` field in JSON output.
    pub fn format(&self) -> &'static str {
        match self {
            Beacon::IBeacon { .. } => "ibeacon",
            Beacon::AltBeacon { .. } => "altbeacon",
            Beacon::EddystoneUid { .. } => "eddystone-uid",
            Beacon::EddystoneUrl { .. } => "eddystone-url",
            Beacon::EddystoneTlm(_) => "eddystone-tlm",
            Beacon::EddystoneEid { .. } => "eddystone-eid",
        }
    }

    /// The RSSI this advertiser says it is heard at from 1 m, in dBm: iBeacon's measured
    /// power and AltBeacon's reference RSSI as they are, Eddystone's ranging data (stated
    /// at 0 m) less the 41 dB it loses over the first metre. `None` for frames without one
    /// and for iBeacon's 0, "not calibrated".
    pub fn calibrated_rssi_1m(&self) -> Option<i16> {
        match *self {
            Beacon::IBeacon { tx_power: 0, .. } => None,
            Beacon::IBeacon { tx_power, .. } | Beacon::AltBeacon { tx_power, .. } => {
                Some(i16::from(tx_power))
            }
            Beacon::EddystoneUid { tx_power, .. } | Beacon::EddystoneEid { tx_power, .. } => {
                Some(i16::from(tx_power) - 41)
            }
            Beacon::EddystoneUrl { .. } | Beacon::EddystoneTlm(_) => None,
        }
    }

    /// What identifies the device carrying this beacon, if the frame carries an identity at
    /// all (URL and TLM frames do not).
    pub fn identity(&self) -> Option<BeaconIdentity> {
        match *self {
            Beacon::IBeacon {
                uuid, major, minor, ..
            } => Some(BeaconIdentity::Static(TagId::IBeacon {
                uuid,
                major,
                minor,
            })),
            Beacon::AltBeacon { beacon_id, .. } => {
                Some(BeaconIdentity::Static(TagId::AltBeacon(beacon_id)))
            }
            Beacon::EddystoneUid {
                namespace,
                instance,
                ..
            } => Some(BeaconIdentity::Static(TagId::EddystoneUid {
                namespace,
                instance,
            })),
            Beacon::EddystoneEid { eid, .. } => Some(BeaconIdentity::Ephemeral(eid)),
            Beacon::EddystoneUrl { .. } | Beacon::EddystoneTlm(_) => None,
        }
    }
}

/// Decodes over-the-air advertising data (AD structures). `Ok(None)` means well-formed data
/// that carries no beacon frame this crate knows.
pub fn decode_advertisement(data: &[u8]) -> Result<Option<Beacon>, AdError> {
    let mut found = None;
    for structure in AdStructures::new(data) {
        let structure = structure?;
        if found.is_none() {
            found = decode_structure(structure.ad_type, structure.data);
        }
    }
    Ok(found)
}

fn decode_structure(ad_type: u8, data: &[u8]) -> Option<Beacon> {
    match ad_type {
        ad::MANUFACTURER_SPECIFIC => manufacturer::decode(data),
        ad::SERVICE_DATA_16 => decode_service_data(data),
        _ => None,
    }
}

/// Decodes service data for a 16-bit UUID (the UUID first, little-endian, then the payload).
fn decode_service_data(data: &[u8]) -> Option<Beacon> {
    let (uuid, payload) = split_u16_le(data)?;
    (uuid == EDDYSTONE_SERVICE_UUID)
        .then(|| eddystone::decode(payload))
        .flatten()
}

fn split_u16_le(data: &[u8]) -> Option<(u16, &[u8])> {
    match data {
        [lo, hi, rest @ ..] => Some((u16::from_le_bytes([*lo, *hi]), rest)),
        _ => None,
    }
}

/// What `decode_any` made of its input, for the command line and field debugging.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub beacon: Option<Beacon>,
    /// How the bytes were read: `"advertisement"`, `"manufacturer-data"` or `"service-data"`.
    pub read_as: &'static str,
    /// Why nothing was recognised, when nothing was.
    pub reason: Option<String>,
}

/// Decodes bytes that are either full advertising data, or manufacturer-specific data alone
/// (company id first, little-endian), or 16-bit-UUID service data alone (UUID first). The first
/// reading that yields a known beacon wins; full advertising data is tried first.
pub fn decode_any(bytes: &[u8]) -> Decoded {
    let as_advertisement = decode_advertisement(bytes);
    if let Ok(Some(beacon)) = as_advertisement {
        return recognised(beacon, "advertisement");
    }
    if let Some(beacon) = manufacturer::decode(bytes) {
        return recognised(beacon, "manufacturer-data");
    }
    if let Some(beacon) = decode_service_data(bytes) {
        return recognised(beacon, "service-data");
    }
    let reason = match as_advertisement {
        Ok(_) => "well-formed advertising data, but no iBeacon, AltBeacon or Eddystone frame in it"
            .to_string(),
        Err(e) => format!(
            "not advertising data ({e}), nor iBeacon/AltBeacon manufacturer data, nor Eddystone service data"
        ),
    };
    Decoded {
        beacon: None,
        read_as: "advertisement",
        reason: Some(reason),
    }
}

fn recognised(beacon: Beacon, read_as: &'static str) -> Decoded {
    Decoded {
        beacon: Some(beacon),
        read_as,
        reason: None,
    }
}

impl Serialize for Decoded {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.beacon {
            Some(beacon) => beacon.serialize(serializer),
            None => {
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("format", "unknown")?;
                map.serialize_entry("reason", &self.reason)?;
                map.end()
            }
        }
    }
}

/// The JSON shape of `tastesync-edge decode`: `format` plus that format's fields, hex in
/// lower case, UUIDs in the 8-4-4-4-12 form, and `tag_id` where the frame identifies a tag.
impl Serialize for Beacon {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("format", self.format())?;
        match self {
            Beacon::IBeacon {
                uuid: id,
                major,
                minor,
                tx_power,
            } => {
                map.serialize_entry("manufacturer_id", &APPLE_COMPANY_ID)?;
                map.serialize_entry("uuid", &uuid(id))?;
                map.serialize_entry("major", major)?;
                map.serialize_entry("minor", minor)?;
                map.serialize_entry("tx_power", tx_power)?;
            }
            Beacon::AltBeacon {
                manufacturer_id,
                beacon_id,
                tx_power,
                mfg_reserved,
            } => {
                let (id1, rest) = beacon_id.split_at(16);
                map.serialize_entry("manufacturer_id", manufacturer_id)?;
                map.serialize_entry("beacon_id", &hex(beacon_id))?;
                map.serialize_entry("uuid", &uuid(id1.try_into().expect("16 bytes")))?;
                map.serialize_entry("major", &u16::from_be_bytes([rest[0], rest[1]]))?;
                map.serialize_entry("minor", &u16::from_be_bytes([rest[2], rest[3]]))?;
                map.serialize_entry("tx_power", tx_power)?;
                map.serialize_entry("mfg_reserved", mfg_reserved)?;
            }
            Beacon::EddystoneUid {
                tx_power,
                namespace,
                instance,
            } => {
                map.serialize_entry("namespace", &hex(namespace))?;
                map.serialize_entry("instance", &hex(instance))?;
                map.serialize_entry("tx_power", tx_power)?;
            }
            Beacon::EddystoneUrl { tx_power, url } => {
                map.serialize_entry("url", url)?;
                map.serialize_entry("tx_power", tx_power)?;
            }
            Beacon::EddystoneTlm(Tlm::Plain {
                battery_mv,
                temperature_c,
                adv_count,
                uptime_s,
            }) => {
                map.serialize_entry("version", &0)?;
                map.serialize_entry("encrypted", &false)?;
                map.serialize_entry("battery_mv", battery_mv)?;
                map.serialize_entry("temperature_c", temperature_c)?;
                map.serialize_entry("adv_count", adv_count)?;
                map.serialize_entry("uptime_s", uptime_s)?;
            }
            Beacon::EddystoneTlm(Tlm::Encrypted { etlm, salt, mic }) => {
                map.serialize_entry("version", &1)?;
                map.serialize_entry("encrypted", &true)?;
                map.serialize_entry("etlm", &hex(etlm))?;
                map.serialize_entry("salt", &hex(salt))?;
                map.serialize_entry("mic", &hex(mic))?;
            }
            Beacon::EddystoneEid { tx_power, eid } => {
                map.serialize_entry("eid", &hex(eid))?;
                map.serialize_entry("tx_power", tx_power)?;
            }
        }
        if let Some(BeaconIdentity::Static(tag)) = self.identity() {
            map.serialize_entry("tag_id", &tag.to_string())?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests;
