//! Any payload a broker may deliver: the MQTT message parsers must never panic, and what they
//! accept must survive a round trip through JSON unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tastesync_shared::downlink::{ChangeBatch, ResyncRequest};
use tastesync_shared::wire::EventBatch;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = EventBatch::parse(data, "s1") {
        let again = serde_json::to_vec(&batch).expect("a batch serialises");
        assert_eq!(EventBatch::parse(&again, "s1"), Ok(batch));
    }
    if let Ok(batch) = ChangeBatch::parse(data, "s1") {
        let again = serde_json::to_vec(&batch).expect("a batch serialises");
        assert_eq!(ChangeBatch::parse(&again, "s1"), Ok(batch));
    }
    let _ = ResyncRequest::parse(data);
});
