//! The downlink: HQ's customer changes for one shop, as an ordered, versioned log.
//!
//! Every change HQ makes for a shop takes the shop's next version. The cloud keeps, per shop,
//! only the latest change of each customer (a compacted log: a customer's newer change replaces
//! the older one, a deletion stays as a tombstone). A [`ChangeBatch`] from `from_version` to
//! `to_version` carries the latest change of every customer changed in that range, each with
//! the customer's whole record, so:
//!
//! - a box that has applied exactly up to some version in `from_version..to_version` applies
//!   the batch and is then at `to_version`;
//! - a box already at or past `to_version` ignores it;
//! - a box behind `from_version` has missed changes: it asks for a resync ([`ResyncRequest`])
//!   from the version it has, and the cloud answers with batches from there.
//!
//! A record is the customer's whole state as this shop should hold it, so applying one twice,
//! or a newer one over an older one, is harmless.

use serde::{Deserialize, Serialize};

use crate::TagId;
use crate::eid::MAX_EXPONENT;
use crate::hexfmt::parse_fixed;
use crate::wire::{LEGACY_VERSION, MAX_PAYLOAD, VERSION};

/// The version of [`ChangeBatch`]: still 1, since every box of a shop hears the same batch
/// and boxes of the first release accept no other. Resync requests come in either version.
pub const CHANGES_VERSION: u32 = LEGACY_VERSION;

/// Limits a record must respect (the box's import has the same).
pub const MAX_REF_LEN: usize = 64;
pub const MAX_TEXT_LEN: usize = 1000;
pub const MAX_TAGS: usize = 16;
/// Temporary keys per EID tag: 60 days of epochs, plus margin.
pub const MAX_EID_KEYS: usize = 96;

/// Customer changes for one shop (cloud → box, topic `.../changes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBatch {
    pub v: u32,
    pub shop_id: String,
    pub from_version: i64,
    pub to_version: i64,
    /// In increasing `version` order, the last one at `to_version`.
    pub changes: Vec<CustomerChange>,
}

/// The latest change of one customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerChange {
    pub version: i64,
    pub customer_ref: String,
    /// The customer as the shop should hold them; `null` is a tombstone: the shop deletes the
    /// customer and everything it holds about them.
    pub customer: Option<CustomerRecord>,
}

/// A customer's record as a shop holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerRecord {
    pub display_name: String,
    #[serde(default)]
    pub tier: String,
    /// Things staff must know, such as allergies.
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub preferences: String,
    /// Static beacon ids in the text form of [`TagId`].
    #[serde(default)]
    pub tag_ids: Vec<String>,
    /// The customer's rotating EID tag, if any: only temporary keys, never the identity key.
    #[serde(default)]
    pub eid: Option<EidKeys>,
}

/// An EID tag's rotation exponent and its temporary keys for the coming days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EidKeys {
    pub exponent: u8,
    pub keys: Vec<EpochKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochKey {
    /// Unix seconds >> 16.
    pub epoch: u16,
    /// 32 hex digits.
    pub temporary_key: String,
}

/// A box's request for every change after the version it has applied (box → cloud, topic
/// `.../resync`). Sent on every connection and whenever the box sees a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncRequest {
    pub v: u32,
    pub from_version: i64,
}

/// What a box reports after applying changes, and on connecting (box → cloud, topic
/// `.../boxes/{box}/applied`, protocol 2): the shop version it has applied. HQ reads from it
/// when every box holds a change, such as a customer's erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownlinkApplied {
    pub v: u32,
    pub version: i64,
}

/// Why a downlink message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("not a valid change batch: {0}")]
    Malformed(String),
    #[error("protocol version {0} is not supported")]
    WrongVersion(u32),
    #[error("the batch is for shop {payload:?}, not {topic:?}")]
    ShopMismatch { topic: String, payload: String },
    #[error(
        "versions must increase from from_version to to_version, the last change at to_version"
    )]
    BadVersions,
    #[error("change {version}: {reason}")]
    BadRecord { version: i64, reason: String },
}

impl ChangeError {
    /// The error without anything quoted from the payload, which may hold a customer's name
    /// or notes: what a log may show.
    pub fn without_payload(&self) -> String {
        match self {
            ChangeError::Malformed(_) => "not a valid change batch".into(),
            ChangeError::BadRecord { version, .. } => format!("change {version} is invalid"),
            other => other.to_string(),
        }
    }
}

impl ChangeBatch {
    /// Parses and validates a payload received on `topic_shop`'s changes topic.
    pub fn parse(payload: &[u8], topic_shop: &str) -> Result<ChangeBatch, ChangeError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(ChangeError::TooLarge(payload.len()));
        }
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| ChangeError::Malformed(e.to_string()))?;
        match value.get("v").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(CHANGES_VERSION) => {}
            Some(v) => return Err(ChangeError::WrongVersion(v as u32)),
            None => return Err(ChangeError::Malformed("missing field `v`".into())),
        }
        let batch: ChangeBatch =
            serde_json::from_value(value).map_err(|e| ChangeError::Malformed(e.to_string()))?;
        if batch.shop_id != topic_shop {
            return Err(ChangeError::ShopMismatch {
                topic: topic_shop.to_string(),
                payload: batch.shop_id,
            });
        }
        let versions_ok = batch.from_version >= 0
            && batch.changes.last().map(|c| c.version) == Some(batch.to_version)
            && batch.changes[0].version > batch.from_version
            && batch
                .changes
                .windows(2)
                .all(|w| w[0].version < w[1].version);
        if !versions_ok {
            return Err(ChangeError::BadVersions);
        }
        for change in &batch.changes {
            change.validate().map_err(|reason| ChangeError::BadRecord {
                version: change.version,
                reason,
            })?;
        }
        Ok(batch)
    }
}

impl CustomerChange {
    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_REF_LEN).contains(&self.customer_ref.len()) {
            return Err(format!(
                "customer_ref must be 1 to {MAX_REF_LEN} characters"
            ));
        }
        match &self.customer {
            Some(record) => record.validate(),
            None => Ok(()),
        }
    }
}

impl CustomerRecord {
    /// Checks the limits, the tag ids and the EID keys; the message names the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.display_name.trim().is_empty() {
            return Err("display_name is empty".into());
        }
        for (field, text) in [
            ("display_name", &self.display_name),
            ("tier", &self.tier),
            ("notes", &self.notes),
            ("preferences", &self.preferences),
        ] {
            if text.chars().count() > MAX_TEXT_LEN {
                return Err(format!("{field} is longer than {MAX_TEXT_LEN} characters"));
            }
        }
        if self.tag_ids.len() > MAX_TAGS {
            return Err(format!("more than {MAX_TAGS} tags"));
        }
        for tag in &self.tag_ids {
            tag.parse::<TagId>().map_err(|e| e.to_string())?;
        }
        if let Some(eid) = &self.eid {
            if eid.exponent > MAX_EXPONENT {
                return Err(format!("EID exponent must be 0 to {MAX_EXPONENT}"));
            }
            if eid.keys.len() > MAX_EID_KEYS {
                return Err(format!("more than {MAX_EID_KEYS} EID keys"));
            }
            for key in &eid.keys {
                key.key().ok_or_else(|| {
                    format!("EID key of epoch {} is not 32 hex digits", key.epoch)
                })?;
            }
        }
        Ok(())
    }

    /// The static tags, parsed (call after [`validate`](Self::validate)).
    pub fn tags(&self) -> Vec<TagId> {
        self.tag_ids.iter().filter_map(|t| t.parse().ok()).collect()
    }
}

impl EpochKey {
    pub fn key(&self) -> Option<[u8; 16]> {
        parse_fixed(&self.temporary_key)
    }
}

impl ResyncRequest {
    pub fn parse(payload: &[u8]) -> Result<ResyncRequest, ChangeError> {
        if payload.len() > 1024 {
            return Err(ChangeError::TooLarge(payload.len()));
        }
        let request: ResyncRequest =
            serde_json::from_slice(payload).map_err(|e| ChangeError::Malformed(e.to_string()))?;
        if request.v != LEGACY_VERSION && request.v != VERSION {
            return Err(ChangeError::WrongVersion(request.v));
        }
        if request.from_version < 0 {
            return Err(ChangeError::BadVersions);
        }
        Ok(request)
    }
}

impl DownlinkApplied {
    pub fn parse(payload: &[u8]) -> Result<DownlinkApplied, ChangeError> {
        if payload.len() > 1024 {
            return Err(ChangeError::TooLarge(payload.len()));
        }
        let report: DownlinkApplied =
            serde_json::from_slice(payload).map_err(|e| ChangeError::Malformed(e.to_string()))?;
        if report.v != VERSION {
            return Err(ChangeError::WrongVersion(report.v));
        }
        if report.version < 0 {
            return Err(ChangeError::BadVersions);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> CustomerRecord {
        CustomerRecord {
            display_name: name.into(),
            tier: "gold".into(),
            notes: "allergic to peanuts".into(),
            preferences: "oat latte".into(),
            tag_ids: vec!["ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:7".into()],
            eid: Some(EidKeys {
                exponent: 10,
                keys: vec![EpochKey {
                    epoch: 27_000,
                    temporary_key: "00112233445566778899aabbccddeeff".into(),
                }],
            }),
        }
    }

    fn batch(from: i64, versions: &[i64]) -> ChangeBatch {
        ChangeBatch {
            v: CHANGES_VERSION,
            shop_id: "s1".into(),
            from_version: from,
            to_version: versions.last().copied().unwrap_or(from),
            changes: versions
                .iter()
                .map(|&version| CustomerChange {
                    version,
                    customer_ref: format!("C{version}"),
                    customer: (version % 2 == 0).then(|| record("Minji Kim")),
                })
                .collect(),
        }
    }

    fn parse(batch: &ChangeBatch) -> Result<ChangeBatch, ChangeError> {
        ChangeBatch::parse(&serde_json::to_vec(batch).unwrap(), "s1")
    }

    #[test]
    fn valid_batches_round_trip() {
        let b = batch(3, &[4, 6, 9]);
        assert_eq!(parse(&b), Ok(b));
    }

    #[test]
    fn versions_must_fit_the_range() {
        assert_eq!(parse(&batch(3, &[])), Err(ChangeError::BadVersions));
        assert_eq!(parse(&batch(3, &[3, 4])), Err(ChangeError::BadVersions));
        assert_eq!(parse(&batch(3, &[5, 4])), Err(ChangeError::BadVersions));
        let mut b = batch(3, &[4, 5]);
        b.to_version = 9;
        assert_eq!(parse(&b), Err(ChangeError::BadVersions));
    }

    #[test]
    fn records_are_checked() {
        let mut b = batch(0, &[2]);
        b.changes[0].customer.as_mut().unwrap().tag_ids = vec!["ibeacon:nope".into()];
        assert!(matches!(
            parse(&b),
            Err(ChangeError::BadRecord { version: 2, .. })
        ));
        let mut b = batch(0, &[2]);
        b.changes[0]
            .customer
            .as_mut()
            .unwrap()
            .eid
            .as_mut()
            .unwrap()
            .keys[0]
            .temporary_key = "zz".into();
        assert!(matches!(parse(&b), Err(ChangeError::BadRecord { .. })));
        let mut b = batch(0, &[2]);
        b.changes[0].customer.as_mut().unwrap().display_name = " ".into();
        assert!(matches!(parse(&b), Err(ChangeError::BadRecord { .. })));
        let mut b = batch(0, &[1]);
        b.changes[0].customer_ref = String::new();
        assert!(matches!(parse(&b), Err(ChangeError::BadRecord { .. })));
    }

    #[test]
    fn foreign_and_malformed_payloads_are_refused() {
        assert!(matches!(
            ChangeBatch::parse(&serde_json::to_vec(&batch(0, &[1])).unwrap(), "s2"),
            Err(ChangeError::ShopMismatch { .. })
        ));
        assert!(matches!(
            ChangeBatch::parse(b"{", "s1"),
            Err(ChangeError::Malformed(_))
        ));
        assert_eq!(
            ChangeBatch::parse(br#"{"v":7}"#, "s1"),
            Err(ChangeError::WrongVersion(7))
        );
        assert_eq!(
            ResyncRequest::parse(br#"{"v":1,"from_version":-1}"#),
            Err(ChangeError::BadVersions)
        );
        assert_eq!(
            ResyncRequest::parse(br#"{"v":1,"from_version":12}"#),
            Ok(ResyncRequest {
                v: 1,
                from_version: 12
            })
        );
    }
}
