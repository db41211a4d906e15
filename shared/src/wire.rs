//! What travels between a shop's box and the cloud over MQTT. Topics live under
//! `tastesync/v1/shops/{shop_id}/`, so a broker ACL can confine each shop to its own subtree
//! (Mosquitto: `pattern readwrite tastesync/v1/shops/%u/#`).
//!
//! - `.../events` (box → cloud, QoS 1): an [`EventBatch`], events in `seq` order.
//! - `.../ack` (cloud → box, QoS 1): an [`Ack`], sent after the events are committed in
//!   PostgreSQL: everything up to `up_to_seq` is safe and may leave the box's outbox.
//! - `.../status` (box → cloud, retained): `online`, or `offline` as the box's last will.
//! - `.../changes` (cloud → box, QoS 1): a [`ChangeBatch`](crate::downlink::ChangeBatch) of
//!   HQ's customer changes for the shop.
//! - `.../resync` (box → cloud, QoS 1): a [`ResyncRequest`](crate::downlink::ResyncRequest)
//!   for the changes after the version the box has applied.

use serde::{Deserialize, Serialize};

/// The protocol version carried by every message.
pub const VERSION: u32 = 1;
/// Largest accepted payload, bytes.
pub const MAX_PAYLOAD: usize = 1 << 20;
const ROOT: &str = "tastesync/v1/shops";

pub fn events_topic(shop_id: &str) -> String {
    format!("{ROOT}/{shop_id}/events")
}

pub fn ack_topic(shop_id: &str) -> String {
    format!("{ROOT}/{shop_id}/ack")
}

pub fn status_topic(shop_id: &str) -> String {
    format!("{ROOT}/{shop_id}/status")
}

pub fn changes_topic(shop_id: &str) -> String {
    format!("{ROOT}/{shop_id}/changes")
}

pub fn resync_topic(shop_id: &str) -> String {
    format!("{ROOT}/{shop_id}/resync")
}

/// The shared subscription a cloud-sync instance takes so that several split the shops' load.
pub fn shared_subscription(group: &str, leaf: &str) -> String {
    format!("$share/{group}/{ROOT}/+/{leaf}")
}

/// The shop id and leaf (`events`, `status`...) of a topic under the shops' root.
pub fn parse_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let (shop, leaf) = rest.split_once('/')?;
    (is_valid_shop_id(shop) && !leaf.contains('/')).then_some((shop, leaf))
}

/// A broker address `host:port`, as both sides' configurations give it.
pub fn parse_broker(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host, port.parse().ok()?)).filter(|(host, _)| !host.is_empty())
}

/// Shop ids: 1 to 64 letters, digits, `-` or `_` (no MQTT wildcards or separators).
pub fn is_valid_shop_id(shop_id: &str) -> bool {
    (1..=64).contains(&shop_id.len())
        && shop_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A batch of events from one shop's outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub v: u32,
    pub shop_id: String,
    pub events: Vec<WireEvent>,
}

/// One domain event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    /// Per shop, gap-free, increasing.
    pub seq: i64,
    /// UUIDv7.
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub at_ms: u64,
    pub body: serde_json::Value,
}

/// The cloud's acknowledgement: every event up to `up_to_seq` is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub v: u32,
    pub up_to_seq: i64,
}

/// Why a batch was refused (it goes to the dead-letter table with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("not a valid event batch: {0}")]
    Malformed(String),
    #[error("protocol version {0} is not supported (expected {VERSION})")]
    WrongVersion(u32),
    #[error("shop id {payload:?} in the payload does not match the topic's {topic:?}")]
    ShopMismatch { topic: String, payload: String },
    #[error("events are not in increasing seq order, or a seq is not positive")]
    BadOrder,
    #[error("empty batch")]
    Empty,
}

impl EventBatch {
    /// Parses and validates a payload received on `topic_shop`'s events topic.
    pub fn parse(payload: &[u8], topic_shop: &str) -> Result<EventBatch, BatchError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(BatchError::TooLarge(payload.len()));
        }
        // Check the version first, so an old or future box gets a precise reason.
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| BatchError::Malformed(e.to_string()))?;
        match value.get("v").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => return Err(BatchError::WrongVersion(v as u32)),
            None => return Err(BatchError::Malformed("missing field `v`".into())),
        }
        let batch: EventBatch =
            serde_json::from_value(value).map_err(|e| BatchError::Malformed(e.to_string()))?;
        if batch.shop_id != topic_shop {
            return Err(BatchError::ShopMismatch {
                topic: topic_shop.to_string(),
                payload: batch.shop_id,
            });
        }
        if batch.events.is_empty() {
            return Err(BatchError::Empty);
        }
        if batch.events[0].seq < 1 || batch.events.windows(2).any(|w| w[0].seq >= w[1].seq) {
            return Err(BatchError::BadOrder);
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(shop: &str, seqs: &[i64]) -> Vec<u8> {
        let events: Vec<WireEvent> = seqs
            .iter()
            .map(|&seq| WireEvent {
                seq,
                event_id: format!("e{seq}"),
                kind: "customer_arrived".into(),
                at_ms: 1,
                body: serde_json::json!({}),
            })
            .collect();
        serde_json::to_vec(&EventBatch {
            v: VERSION,
            shop_id: shop.into(),
            events,
        })
        .unwrap()
    }

    #[test]
    fn topics_round_trip_and_refuse_wildcards() {
        assert_eq!(
            parse_topic(&events_topic("seoul-1")),
            Some(("seoul-1", "events"))
        );
        assert_eq!(parse_topic("tastesync/v1/shops/+/events"), None);
        assert_eq!(parse_topic("tastesync/v1/shops/a/b/c"), None);
        assert_eq!(
            shared_subscription("cloud-sync", "events"),
            "$share/cloud-sync/tastesync/v1/shops/+/events"
        );
    }

    #[test]
    fn batches_are_validated_with_reasons() {
        assert!(EventBatch::parse(&batch("s1", &[1, 2, 3]), "s1").is_ok());
        assert!(matches!(
            EventBatch::parse(&batch("s2", &[1]), "s1"),
            Err(BatchError::ShopMismatch { .. })
        ));
        assert_eq!(
            EventBatch::parse(&batch("s1", &[2, 2]), "s1"),
            Err(BatchError::BadOrder)
        );
        assert_eq!(
            EventBatch::parse(&batch("s1", &[0]), "s1"),
            Err(BatchError::BadOrder)
        );
        assert_eq!(
            EventBatch::parse(&batch("s1", &[]), "s1"),
            Err(BatchError::Empty)
        );
        assert!(matches!(
            EventBatch::parse(b"garbage", "s1"),
            Err(BatchError::Malformed(_))
        ));
        assert_eq!(
            EventBatch::parse(br#"{"v":2}"#, "s1"),
            Err(BatchError::WrongVersion(2))
        );
        assert_eq!(
            EventBatch::parse(&vec![b' '; MAX_PAYLOAD + 1], "s1"),
            Err(BatchError::TooLarge(MAX_PAYLOAD + 1))
        );
    }
}
