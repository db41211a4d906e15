//! Any bytes the radio may deliver: the decoders must never panic, and whatever they
//! recognise must serialise and carry an identity only where the format has one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tastesync_shared::{decode_advertisement, decode_any};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(beacon)) = decode_advertisement(data) {
        let _ = beacon.identity();
    }
    let decoded = decode_any(data);
    let json = serde_json::to_string(&decoded).expect("decoded frames always serialise");
    assert!(json.starts_with("{\"format\":"));
});
