//! What goes on Kafka: each shop event and each customer change as a CloudEvents 1.0 record
//! in the Kafka protocol binding's binary mode. The attributes travel as `ce_` headers
//! (`ce_id` is the event id consumers drop duplicates by), the data (JSON) as the value, and
//! the key keeps what must stay in order on one partition: a shop's events, a customer's
//! changes. `docs/asyncapi.yaml` describes both topics; the tests hold records to it.

use crate::storage::days::format_instant;
use crate::storage::kafka::{CustomerState, PendingCustomer, PendingEvent};

/// One record, ready for a producer.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: String,
    /// JSON; `None` is a tombstone (the compacted topic forgets the key).
    pub value: Option<String>,
    pub headers: Vec<(&'static str, String)>,
}

/// The CloudEvents type of each event kind the boxes send (the seed's `CustomerIdentified`
/// is an arrival). Kinds added later travel as `com.tastesync.shop.<kind>`.
const EVENT_TYPES: [(&str, &str); 7] = [
    ("customer_arrived", "com.tastesync.customer.identified"),
    ("customer_left", "com.tastesync.customer.left"),
    ("zone_changed", "com.tastesync.customer.zone-changed"),
    ("alert_acknowledged", "com.tastesync.alert.acknowledged"),
    ("order_recorded", "com.tastesync.order.recorded"),
    ("feedback_recorded", "com.tastesync.feedback.recorded"),
    ("box_health", "com.tastesync.box.health"),
];

/// The CloudEvents type of a box's event kind.
pub fn event_type(kind: &str) -> String {
    EVENT_TYPES.iter().find(|(k, _)| *k == kind).map_or_else(
        || format!("com.tastesync.shop.{kind}"),
        |(_, t)| t.to_string(),
    )
}

/// A shop event: key the shop id; source the box (the shop, for a first-release box); the
/// stream and seq as extension attributes, so a consumer can check a stream's order.
pub fn shop_event(e: &PendingEvent) -> Record {
    let source = match &e.box_id {
        Some(box_id) => format!("/shops/{}/boxes/{box_id}", e.shop_id),
        None => format!("/shops/{}", e.shop_id),
    };
    let mut headers = vec![
        ("ce_specversion", "1.0".to_string()),
        ("ce_id", e.event_id.clone()),
        ("ce_source", source),
        ("ce_type", event_type(&e.kind)),
        ("ce_time", format_instant(e.at_ms)),
        ("content-type", "application/json".to_string()),
        ("ce_shop", e.shop_id.clone()),
        ("ce_stream", e.stream_id.clone()),
        ("ce_streamseq", e.seq.to_string()),
    ];
    if let Some(box_id) = &e.box_id {
        headers.push(("ce_box", box_id.clone()));
    }
    Record {
        key: e.shop_id.clone(),
        value: Some(e.body.clone()),
        headers,
    }
}

/// A customer as HQ holds them now: their record, or a tombstone when they were deleted or
/// erased (the type says which).
pub fn customer(c: &PendingCustomer) -> Record {
    let (kind, value) = match &c.state {
        CustomerState::Current(record) => ("updated", Some(record.to_string())),
        CustomerState::Deleted => ("deleted", None),
        CustomerState::Erased => ("erased", None),
    };
    let mut headers = vec![
        ("ce_specversion", "1.0".to_string()),
        ("ce_id", c.event_id.clone()),
        ("ce_source", "/hq/customers".to_string()),
        ("ce_type", format!("com.tastesync.customer.{kind}")),
        ("ce_time", format_instant(c.changed_at_ms)),
        ("ce_subject", c.customer_ref.clone()),
    ];
    if value.is_some() {
        headers.push(("content-type", "application/json".to_string()));
    }
    Record {
        key: c.customer_ref.clone(),
        value,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
        record
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn an_arrival_is_a_customer_identified_cloud_event_keyed_by_shop() {
        let event = PendingEvent {
            stream_id: "0190e6b2-0000-7000-8000-000000000001".into(),
            shop_id: "seoul-1".into(),
            box_id: Some("tsb-abc".into()),
            seq: 42,
            event_id: "0190e6b2-1111-7000-8000-000000000002".into(),
            kind: "customer_arrived".into(),
            at_ms: 1_796_288_707_042,
            body: r#"{"customer_ref":"C1"}"#.into(),
        };
        let record = shop_event(&event);
        assert_eq!(record.key, "seoul-1");
        assert_eq!(record.value.as_deref(), Some(r#"{"customer_ref":"C1"}"#));
        assert_eq!(header(&record, "ce_specversion"), Some("1.0"));
        assert_eq!(header(&record, "ce_id"), Some(event.event_id.as_str()));
        assert_eq!(
            header(&record, "ce_type"),
            Some("com.tastesync.customer.identified")
        );
        assert_eq!(
            header(&record, "ce_source"),
            Some("/shops/seoul-1/boxes/tsb-abc")
        );
        assert_eq!(header(&record, "ce_time"), Some("2026-12-03T09:05:07.042Z"));
        assert_eq!(header(&record, "ce_streamseq"), Some("42"));
        let legacy = shop_event(&PendingEvent {
            box_id: None,
            kind: "something_new".into(),
            ..event
        });
        assert_eq!(header(&legacy, "ce_source"), Some("/shops/seoul-1"));
        assert_eq!(header(&legacy, "ce_box"), None);
        assert_eq!(
            header(&legacy, "ce_type"),
            Some("com.tastesync.shop.something_new")
        );
    }

    #[test]
    fn a_deleted_or_erased_customer_is_a_tombstone() {
        let change = |state| PendingCustomer {
            ids: vec![1, 2],
            customer_ref: "C9".into(),
            event_id: "0190e6b2-2222-7000-8000-000000000003".into(),
            changed_at_ms: 0,
            state,
        };
        let updated = customer(&change(CustomerState::Current(
            serde_json::json!({"display_name": "Minji"}),
        )));
        assert_eq!(updated.key, "C9");
        assert!(updated.value.unwrap().contains("Minji"));
        for (state, kind) in [
            (CustomerState::Deleted, "com.tastesync.customer.deleted"),
            (CustomerState::Erased, "com.tastesync.customer.erased"),
        ] {
            let record = customer(&change(state));
            assert_eq!(record.value, None);
            assert_eq!(header(&record, "ce_type"), Some(kind));
            assert_eq!(header(&record, "content-type"), None);
        }
    }
}
