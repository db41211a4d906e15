//! What travels between a shop's boxes and the cloud over MQTT.
//!
//! Every box has its own subtree under its shop's, so a broker can confine each box to its
//! own topics (the cloud gives every claimed box credentials that may touch only these):
//!
//! - `tastesync/v1/shops/{shop}/boxes/{box}/events` (box → cloud, QoS 1): an [`EventBatch`] of
//!   one stream, events in `seq` order.
//! - `.../boxes/{box}/ack` (cloud → box, QoS 1): an [`Ack`], sent after the events are
//!   committed in PostgreSQL: everything of the stream up to `up_to_seq` is safe.
//! - `.../boxes/{box}/status` (box → cloud, retained): a [`BoxStatus`]; `offline` is the box's
//!   last will.
//! - `.../boxes/{box}/resync` (box → cloud, QoS 1): a
//!   [`ResyncRequest`](crate::downlink::ResyncRequest).
//! - `.../boxes/{box}/applied` (box → cloud, QoS 1): a
//!   [`DownlinkApplied`](crate::downlink::DownlinkApplied), the shop version the box holds.
//! - `tastesync/v1/shops/{shop}/changes` (cloud → every box of the shop, QoS 1): a
//!   [`ChangeBatch`](crate::downlink::ChangeBatch) of HQ's customer changes.
//!
//! Protocol 1 (boxes of the first release, still in the field) has no box level: events,
//! acks, status and resync requests sit directly under the shop (`tastesync/v1/shops/{shop}/events`
//! ...), a batch carries no box or stream, and the status is the bare text `online` or
//! `offline`. The cloud speaks both; a v1 box's events form its shop's *legacy stream*
//! ([`legacy_stream_id`]), which a box upgraded in place continues.
//!
//! A *stream* is one box's store: its events are numbered 1, 2, 3... without gaps. A new
//! store (a replaced box, a wiped card) is a new stream, so its numbers can never be taken
//! for another's.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hexfmt::{parse_uuid, uuid};

/// The protocol version of this code: what a box puts in every message it sends.
pub const VERSION: u32 = 2;
/// The first release's protocol, still spoken by the cloud for the boxes running it.
pub const LEGACY_VERSION: u32 = 1;
/// Largest payload either side sends or accepts, bytes. The broker's `message_size_limit`
/// must be at least this.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Largest serialised event, bytes: a batch always has room for one, whatever staff type.
pub const MAX_EVENT_BYTES: usize = 64 << 10;
const ROOT: &str = "tastesync/v1/shops";

/// Shop and box ids: 1 to 64 letters, digits, `-` or `_` (no MQTT wildcards or separators).
/// The one rule both sides check.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// See [`is_valid_id`].
pub fn is_valid_shop_id(shop_id: &str) -> bool {
    is_valid_id(shop_id)
}

/// The topics one box uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxTopics {
    pub events: String,
    pub ack: String,
    pub status: String,
    pub resync: String,
    pub applied: String,
    /// The shop's downlink, shared by all its boxes.
    pub changes: String,
}

impl BoxTopics {
    pub fn new(shop_id: &str, box_id: &str) -> BoxTopics {
        let base = format!("{ROOT}/{shop_id}/boxes/{box_id}");
        BoxTopics {
            events: format!("{base}/events"),
            ack: format!("{base}/ack"),
            status: format!("{base}/status"),
            resync: format!("{base}/resync"),
            applied: format!("{base}/applied"),
            changes: changes_topic(shop_id),
        }
    }
}

/// A topic under the shops' root: whose it is and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    pub shop_id: &'a str,
    /// `None` for the shop's own topics (`changes`) and protocol 1's.
    pub box_id: Option<&'a str>,
    /// `events`, `ack`, `status`, `resync`, `changes`...
    pub leaf: &'a str,
}

impl<'a> Topic<'a> {
    pub fn parse(topic: &'a str) -> Option<Topic<'a>> {
        let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (shop_id, box_id, leaf) = match parts[..] {
            [shop, leaf] => (shop, None, leaf),
            [shop, "boxes", box_id, leaf] if is_valid_id(box_id) => (shop, Some(box_id), leaf),
            _ => return None,
        };
        (is_valid_id(shop_id) && !leaf.is_empty()).then_some(Topic {
            shop_id,
            box_id,
            leaf,
        })
    }

    /// The topic the answer to this box's (or this v1 shop's) events goes to.
    pub fn ack_topic(&self) -> String {
        match self.box_id {
            Some(box_id) => BoxTopics::new(self.shop_id, box_id).ack,
            None => format!("{ROOT}/{}/ack", self.shop_id),
        }
    }
}

/// The shop's downlink topic: HQ's customer changes for every box of the shop.
pub fn changes_topic(shop_id: &str) -> String {
    format!("{ROOT}/{shop_id}/changes")
}

/// Protocol 1's topics, which sat directly under the shop.
pub mod legacy {
    use super::ROOT;

    pub fn events_topic(shop_id: &str) -> String {
        format!("{ROOT}/{shop_id}/events")
    }

    pub fn ack_topic(shop_id: &str) -> String {
        format!("{ROOT}/{shop_id}/ack")
    }

    pub fn status_topic(shop_id: &str) -> String {
        format!("{ROOT}/{shop_id}/status")
    }

    pub fn resync_topic(shop_id: &str) -> String {
        format!("{ROOT}/{shop_id}/resync")
    }
}

/// The shared subscriptions a cloud-sync instance takes for `leaf` (both protocols), so that
/// several instances split the boxes' load.
pub fn shared_subscriptions(group: &str, leaf: &str) -> [String; 2] {
    [
        format!("$share/{group}/{ROOT}/+/{leaf}"),
        format!("$share/{group}/{ROOT}/+/boxes/+/{leaf}"),
    ]
}

/// A broker address `host:port`, as both sides' configurations give it.
pub fn parse_broker(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host, port.parse().ok()?)).filter(|(host, _)| !host.is_empty())
}

/// The stream of a shop's protocol-1 box: its events before the box spoke protocol 2 and,
/// after an upgrade in place, the box's events from then on (so nothing is sent twice). The
/// first 16 bytes of SHA-256 of `tastesync legacy stream {shop_id}`, as a UUID; PostgreSQL's
/// migration derives the same with `sha256()`.
pub fn legacy_stream_id(shop_id: &str) -> String {
    let digest = Sha256::digest(format!("tastesync legacy stream {shop_id}").as_bytes());
    let bytes: [u8; 16] = digest[..16].try_into().expect("16 of 32 bytes");
    uuid(&bytes)
}

/// Whether `text` is a stream id: a UUID in the lower-case 8-4-4-4-12 form.
pub fn is_valid_stream_id(text: &str) -> bool {
    text.len() == 36 && parse_uuid(text).is_some_and(|bytes| uuid(&bytes) == text)
}

/// A batch of events from one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub v: u32,
    pub shop_id: String,
    /// Protocol 2: the box that sent it (the topic's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_id: Option<String>,
    /// Protocol 2: the box's store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// Protocol 2: everything of the stream up to here was acknowledged and has left the
    /// box, so a cloud behind it (restored from a backup) must move on rather than wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_water: Option<i64>,
    pub events: Vec<WireEvent>,
}

/// One domain event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    /// Per stream, gap-free, increasing from 1.
    pub seq: i64,
    /// UUIDv7.
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub at_ms: u64,
    pub body: serde_json::Value,
}

/// The cloud's acknowledgement: every event of the stream up to `up_to_seq` is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub v: u32,
    /// Protocol 2: the stream acknowledged (a box ignores acks for another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    pub up_to_seq: i64,
    /// Protocol 2: the cloud already holds a *different* event at this seq of the stream (the
    /// box's store was restored from a backup, or copied to another box). The box starts a
    /// new stream for its events from this seq on; `up_to_seq` is then just below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_conflict_at: Option<i64>,
}

/// A box's retained status (protocol 2; protocol 1 sends the bare text `online`/`offline`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxStatus {
    pub v: u32,
    pub online: bool,
    /// The box's software version, e.g. `0.2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
}

impl BoxStatus {
    /// Parses either protocol's status payload.
    pub fn parse(payload: &[u8]) -> Result<BoxStatus, String> {
        match payload {
            b"online" | b"offline" => Ok(BoxStatus {
                v: LEGACY_VERSION,
                online: payload == b"online",
                software: None,
            }),
            _ if payload.len() > 1024 => Err("status message too large".into()),
            _ => serde_json::from_slice::<BoxStatus>(payload)
                .map_err(|e| format!("not a valid status: {e}"))
                .and_then(|s| {
                    let software_ok = s
                        .software
                        .as_ref()
                        .is_none_or(|v| v.len() <= 64 && !v.chars().any(char::is_control));
                    if s.v != VERSION || !software_ok {
                        Err("not a valid status".into())
                    } else {
                        Ok(s)
                    }
                }),
        }
    }
}

/// Why a batch was refused (it goes to the dead-letter table with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("not a valid event batch: {0}")]
    Malformed(String),
    #[error("protocol version {0} is not supported (expected {LEGACY_VERSION} or {VERSION})")]
    WrongVersion(u32),
    #[error("shop id {payload:?} in the payload does not match the topic's {topic:?}")]
    ShopMismatch { topic: String, payload: String },
    #[error("the batch's box, stream or low-water mark does not fit its topic and version")]
    BadIdentity,
    #[error(
        "events are not in increasing seq order above the low-water mark, or a seq is not positive"
    )]
    BadOrder,
    #[error("empty batch")]
    Empty,
}

impl EventBatch {
    /// Parses and validates a payload received on `topic` (an events topic).
    pub fn parse(payload: &[u8], topic: &Topic) -> Result<EventBatch, BatchError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(BatchError::TooLarge(payload.len()));
        }
        // Check the version first, so an old or future box gets a precise reason.
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| BatchError::Malformed(e.to_string()))?;
        let v = match value.get("v").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VERSION) || v == u64::from(LEGACY_VERSION) => v as u32,
            Some(v) => return Err(BatchError::WrongVersion(v.min(u64::from(u32::MAX)) as u32)),
            None => return Err(BatchError::Malformed("missing field `v`".into())),
        };
        let batch: EventBatch =
            serde_json::from_value(value).map_err(|e| BatchError::Malformed(e.to_string()))?;
        if batch.shop_id != topic.shop_id {
            return Err(BatchError::ShopMismatch {
                topic: topic.shop_id.to_string(),
                payload: batch.shop_id,
            });
        }
        let identity_ok = if v == LEGACY_VERSION {
            topic.box_id.is_none()
                && batch.box_id.is_none()
                && batch.stream_id.is_none()
                && batch.low_water.is_none()
        } else {
            topic.box_id.is_some()
                && batch.box_id.as_deref() == topic.box_id
                && batch.stream_id.as_deref().is_some_and(is_valid_stream_id)
                && batch.low_water.is_some_and(|l| l >= 0)
        };
        if !identity_ok {
            return Err(BatchError::BadIdentity);
        }
        let Some(first) = batch.events.first() else {
            return Err(BatchError::Empty);
        };
        if first.seq < 1
            || first.seq <= batch.low_water.unwrap_or(0)
            || batch.events.windows(2).any(|w| w[0].seq >= w[1].seq)
        {
            return Err(BatchError::BadOrder);
        }
        Ok(batch)
    }

    /// The stream the events belong to: the box's, or the shop's legacy stream for protocol 1.
    pub fn stream(&self) -> String {
        self.stream_id
            .clone()
            .unwrap_or_else(|| legacy_stream_id(&self.shop_id))
    }
}

/// Builds the payloads of a box's batches, cutting them by serialised size so that none
/// exceeds `limit` bytes (at most [`MAX_PAYLOAD`]). Each event is serialised once.
pub struct BatchWriter {
    head: Vec<u8>,
    limit: usize,
    payload: Vec<u8>,
    events: usize,
    last_seq: i64,
}

impl BatchWriter {
    /// A batch of `stream_id`'s events whose low-water mark is `low_water`.
    pub fn new(
        shop_id: &str,
        box_id: &str,
        stream_id: &str,
        low_water: i64,
        limit: usize,
    ) -> BatchWriter {
        let head = serde_json::json!({
            "v": VERSION, "shop_id": shop_id, "box_id": box_id,
            "stream_id": stream_id, "low_water": low_water,
        });
        let mut head = serde_json::to_vec(&head).expect("a JSON object serialises");
        head.pop(); // the closing brace; `,"events":[...]}` follows
        head.extend_from_slice(br#","events":["#);
        BatchWriter {
            payload: head.clone(),
            head,
            limit: limit.min(MAX_PAYLOAD),
            events: 0,
            last_seq: low_water,
        }
    }

    /// Adds an event if it fits; returns false (adding nothing) if the batch is full. The
    /// first event always fits: events are at most [`MAX_EVENT_BYTES`].
    pub fn push(&mut self, event: &WireEvent) -> bool {
        let mut bytes = serde_json::to_vec(event).expect("an event serialises");
        if self.events > 0 {
            bytes.insert(0, b',');
        }
        if self.events > 0 && self.payload.len() + bytes.len() + 2 > self.limit {
            return false;
        }
        self.payload.extend_from_slice(&bytes);
        self.events += 1;
        self.last_seq = event.seq;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The seq of the last event added.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// The payload, and a new empty batch continuing the same stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut payload = std::mem::replace(&mut self.payload, self.head.clone());
        payload.extend_from_slice(b"]}");
        self.events = 0;
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "0190e6b2-1111-7000-8000-000000000001";

    fn event(seq: i64) -> WireEvent {
        WireEvent {
            seq,
            event_id: format!("e{seq}"),
            kind: "customer_arrived".into(),
            at_ms: 1,
            body: serde_json::json!({}),
        }
    }

    fn v2(shop: &str, seqs: &[i64], low_water: i64) -> Vec<u8> {
        let mut writer = BatchWriter::new(shop, "box-1", STREAM, low_water, MAX_PAYLOAD);
        for &seq in seqs {
            assert!(writer.push(&event(seq)));
        }
        writer.finish()
    }

    fn v1(shop: &str, seqs: &[i64]) -> Vec<u8> {
        serde_json::to_vec(&EventBatch {
            v: LEGACY_VERSION,
            shop_id: shop.into(),
            box_id: None,
            stream_id: None,
            low_water: None,
            events: seqs.iter().map(|&s| event(s)).collect(),
        })
        .unwrap()
    }

    fn topic(text: &str) -> Topic<'_> {
        Topic::parse(text).unwrap()
    }

    #[test]
    fn topics_round_trip_and_refuse_wildcards() {
        let topics = BoxTopics::new("seoul-1", "box-1");
        assert_eq!(
            Topic::parse(&topics.events),
            Some(Topic {
                shop_id: "seoul-1",
                box_id: Some("box-1"),
                leaf: "events"
            })
        );
        assert_eq!(topic(&topics.events).ack_topic(), topics.ack);
        let legacy_events = legacy::events_topic("seoul-1");
        assert_eq!(topic(&legacy_events).box_id, None);
        assert_eq!(
            topic(&legacy_events).ack_topic(),
            legacy::ack_topic("seoul-1")
        );
        assert_eq!(topic(&topics.changes).leaf, "changes");
        assert_eq!(Topic::parse("tastesync/v1/shops/+/events"), None);
        assert_eq!(Topic::parse("tastesync/v1/shops/a/b/c"), None);
        assert_eq!(Topic::parse("tastesync/v1/shops/a/boxes/#/events"), None);
        assert_eq!(
            shared_subscriptions("cloud-sync", "events"),
            [
                "$share/cloud-sync/tastesync/v1/shops/+/events",
                "$share/cloud-sync/tastesync/v1/shops/+/boxes/+/events"
            ]
        );
    }

    #[test]
    fn ids_follow_one_rule() {
        assert!(is_valid_id("seoul-1_b"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("a+"));
        assert!(is_valid_stream_id(STREAM));
        assert!(!is_valid_stream_id(&STREAM.to_uppercase()));
        assert!(!is_valid_stream_id("0190e6b211117000800000000000000001"));
        // Pinned: PostgreSQL's migration computes the same.
        assert_eq!(
            legacy_stream_id("seoul-1"),
            "63dc2f9d-b262-8f4b-99fc-7e710a80bf49"
        );
    }

    #[test]
    fn both_protocols_parse_and_a_v1_batch_is_its_shops_legacy_stream() {
        let box_topic = BoxTopics::new("s1", "box-1").events;
        let batch = EventBatch::parse(&v2("s1", &[3, 4], 2), &topic(&box_topic)).unwrap();
        assert_eq!(batch.stream(), STREAM);
        assert_eq!(batch.low_water, Some(2));
        let legacy_topic = legacy::events_topic("s1");
        let batch = EventBatch::parse(&v1("s1", &[1, 2, 3]), &topic(&legacy_topic)).unwrap();
        assert_eq!(batch.stream(), legacy_stream_id("s1"));
        // A protocol's batch on the other protocol's topic.
        assert_eq!(
            EventBatch::parse(&v1("s1", &[1]), &topic(&box_topic)),
            Err(BatchError::BadIdentity)
        );
        assert_eq!(
            EventBatch::parse(&v2("s1", &[1], 0), &topic(&legacy_topic)),
            Err(BatchError::BadIdentity)
        );
        // Another box's topic.
        let other = BoxTopics::new("s1", "box-2").events;
        assert_eq!(
            EventBatch::parse(&v2("s1", &[1], 0), &topic(&other)),
            Err(BatchError::BadIdentity)
        );
    }

    #[test]
    fn batches_are_validated_with_reasons() {
        let t = BoxTopics::new("s1", "box-1").events;
        let t = topic(&t);
        assert!(matches!(
            EventBatch::parse(&v2("s2", &[1], 0), &t),
            Err(BatchError::ShopMismatch { .. })
        ));
        assert_eq!(
            EventBatch::parse(&v2("s1", &[2, 2], 0), &t),
            Err(BatchError::BadOrder)
        );
        assert_eq!(
            EventBatch::parse(&v2("s1", &[0], 0), &t),
            Err(BatchError::BadOrder)
        );
        assert_eq!(
            EventBatch::parse(&v2("s1", &[5], 5), &t),
            Err(BatchError::BadOrder),
            "an event at or below the low-water mark"
        );
        assert_eq!(
            EventBatch::parse(&v2("s1", &[], 0), &t),
            Err(BatchError::Empty)
        );
        assert!(matches!(
            EventBatch::parse(b"garbage", &t),
            Err(BatchError::Malformed(_))
        ));
        assert_eq!(
            EventBatch::parse(br#"{"v":3}"#, &t),
            Err(BatchError::WrongVersion(3))
        );
        assert_eq!(
            EventBatch::parse(&vec![b' '; MAX_PAYLOAD + 1], &t),
            Err(BatchError::TooLarge(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn the_writer_cuts_batches_by_size_and_each_parses() {
        let big = |seq| WireEvent {
            body: serde_json::json!({ "comment": "\u{1}".repeat(10_000) }),
            ..event(seq)
        };
        let limit = 200_000;
        let mut writer = BatchWriter::new("s1", "box-1", STREAM, 0, limit);
        let topic_text = BoxTopics::new("s1", "box-1").events;
        let mut next = 1;
        let mut batches = Vec::new();
        while next <= 100 {
            if !writer.push(&big(next)) {
                batches.push(writer.finish());
                continue;
            }
            next += 1;
        }
        batches.push(writer.finish());
        assert!(batches.len() > 1);
        let mut seqs = Vec::new();
        for payload in &batches {
            assert!(payload.len() <= limit, "{} bytes", payload.len());
            let batch = EventBatch::parse(payload, &topic(&topic_text)).unwrap();
            seqs.extend(batch.events.iter().map(|e| e.seq));
        }
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    }

    #[test]
    fn status_messages_of_both_protocols() {
        assert!(BoxStatus::parse(b"online").unwrap().online);
        assert!(!BoxStatus::parse(b"offline").unwrap().online);
        let v2 = serde_json::to_vec(&BoxStatus {
            v: VERSION,
            online: true,
            software: Some("0.2.0".into()),
        })
        .unwrap();
        assert_eq!(
            BoxStatus::parse(&v2).unwrap().software.as_deref(),
            Some("0.2.0")
        );
        assert!(BoxStatus::parse(b"maybe").is_err());
        assert!(BoxStatus::parse(br#"{"v":2,"online":true,"software":"\u0007"}"#).is_err());
    }
}
