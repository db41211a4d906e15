//! Tag ids: the stable text form of a static beacon identity, as the owner writes it in the
//! customer CSV and as `tastesync-edge decode` prints it in `tag_id`.
//!
//! - `ibeacon:<uuid>:<major>:<minor>`, e.g. `ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:7`
//! - `altbeacon:<40 hex digits>` (the 20-byte beacon id)
//! - `eddystone-uid:<20 hex digits namespace>:<12 hex digits instance>`

use std::fmt;
use std::str::FromStr;

use crate::hexfmt::{hex, parse_fixed, parse_uuid, uuid};

/// A static (non-rotating) beacon identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TagId {
    IBeacon {
        uuid: [u8; 16],
        major: u16,
        minor: u16,
    },
    AltBeacon([u8; 20]),
    EddystoneUid {
        namespace: [u8; 10],
        instance: [u8; 6],
    },
}

/// What a frame says about who is broadcasting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BeaconIdentity {
    /// A fixed id, bound to a customer once.
    Static(TagId),
    /// An Eddystone-EID, resolvable only with the customer's temporary keys.
    Ephemeral([u8; 8]),
}

impl fmt::Display for TagId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagId::IBeacon {
                uuid: id,
                major,
                minor,
            } => write!(f, "ibeacon:{}:{major}:{minor}", uuid(id)),
            TagId::AltBeacon(id) => write!(f, "altbeacon:{}", hex(id)),
            TagId::EddystoneUid {
                namespace,
                instance,
            } => write!(f, "eddystone-uid:{}:{}", hex(namespace), hex(instance)),
        }
    }
}

/// Why a tag id text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid tag id {text:?}: {why}; expected ibeacon:<uuid>:<major>:<minor>, \
     altbeacon:<40 hex digits> or eddystone-uid:<20 hex digits>:<12 hex digits> \
     (`tastesync-edge decode` prints a tag's id)"
)]
pub struct TagIdError {
    pub text: String,
    pub why: &'static str,
}

impl FromStr for TagId {
    type Err = TagIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |why| TagIdError {
            text: text.to_string(),
            why,
        };
        let parts: Vec<&str> = text.trim().split(':').collect();
        match parts.as_slice() {
            ["ibeacon", id, major, minor] => Ok(TagId::IBeacon {
                uuid: parse_uuid(id).ok_or_else(|| fail("the UUID is not 32 hex digits"))?,
                major: major
                    .parse()
                    .map_err(|_| fail("major must be a number 0-65535"))?,
                minor: minor
                    .parse()
                    .map_err(|_| fail("minor must be a number 0-65535"))?,
            }),
            ["altbeacon", id] => {
                Ok(TagId::AltBeacon(parse_fixed(id).ok_or_else(|| {
                    fail("the beacon id is not 40 hex digits")
                })?))
            }
            ["eddystone-uid", namespace, instance] => Ok(TagId::EddystoneUid {
                namespace: parse_fixed(namespace)
                    .ok_or_else(|| fail("the namespace is not 20 hex digits"))?,
                instance: parse_fixed(instance)
                    .ok_or_else(|| fail("the instance is not 12 hex digits"))?,
            }),
            _ => Err(fail("unknown kind or wrong number of parts")),
        }
    }
}
