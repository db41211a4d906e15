//! Any payload a broker may deliver: the MQTT message parsers must never panic, and what they
//! accept must survive a round trip through JSON unchanged. Both protocols' event batches are
//! tried, on a box's topic and on a protocol-1 shop's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tastesync_shared::downlink::{ChangeBatch, DownlinkApplied, ResyncRequest};
use tastesync_shared::wire::{Ack, BoxStatus, BoxTopics, EventBatch, Topic, legacy};

fuzz_target!(|data: &[u8]| {
    let box_topic = BoxTopics::new("s1", "box-1").events;
    let shop_topic = legacy::events_topic("s1");
    for topic in [&box_topic, &shop_topic] {
        let topic = Topic::parse(topic).expect("a valid topic");
        if let Ok(batch) = EventBatch::parse(data, &topic) {
            let again = serde_json::to_vec(&batch).expect("a batch serialises");
            assert_eq!(EventBatch::parse(&again, &topic), Ok(batch));
        }
    }
    if let Ok(batch) = ChangeBatch::parse(data, "s1") {
        let again = serde_json::to_vec(&batch).expect("a batch serialises");
        assert_eq!(ChangeBatch::parse(&again, "s1"), Ok(batch));
    }
    let _ = ResyncRequest::parse(data);
    let _ = DownlinkApplied::parse(data);
    let _ = BoxStatus::parse(data);
    let _ = serde_json::from_slice::<Ack>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Topic::parse(text);
    }
});
