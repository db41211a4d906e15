//! What the shop box and the cloud must agree on, with no I/O: how beacons look on the air
//! ([`beacon`]) and how rotating Eddystone-EID identifiers are derived ([`eid`]).
//!
//! Everything here is plain synchronous Rust so it can be tested, fuzzed and benchmarked
//! without a runtime, and reused by the cloud side to derive the keys it sends to shops.

pub mod access;
pub mod beacon;
pub mod days;
pub mod downlink;
pub mod eid;
pub mod hexfmt;
pub mod provisioning;
pub mod typed_code;
pub mod wire;

pub use beacon::{Beacon, BeaconIdentity, Decoded, TagId, Tlm, decode_advertisement, decode_any};
