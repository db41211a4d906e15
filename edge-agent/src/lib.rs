//! The shop box. Data flows one way, and the modules are named after the stages:
//!
//! `scan` (BLE radio or replay file) → `pipeline` (decode → `resolve` → `presence`) →
//! `events` → `store` (visits in SQLite) → `pos` (live alerts to tablets, the owner's page),
//! and `store` → `uplink` (the outbox to the cloud, HQ's customers back). `identity` is the
//! box's id and claim, `provisioning` the cloud API that claims it.
//!
//! `resolve`, `presence` and `pipeline` are the synchronous domain core: no I/O, no async,
//! tested and benchmarked without a runtime. `scan`, `store` and `daemon` are the adapters.

pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod doctor;
pub mod evaluate;
pub mod events;
pub mod identity;
pub mod metrics;
pub mod pipeline;
pub mod pos;
pub mod presence;
pub mod provisioning;
pub mod resolve;
pub mod scan;
pub mod simulate;
pub mod store;
pub mod uplink;

/// An HTTP client (the cloud's API, the main box of a scanner box, the box's own POS). reqwest
/// is built without a TLS crypto provider of its own: the process's one is aws-lc-rs, as for
/// the MQTT connection (installing it twice is harmless; the first stays).
pub fn http_client(timeout: std::time::Duration) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder().use_rustls_tls().timeout(timeout)
}

/// Milliseconds since the Unix epoch: the one clock unit of the pipeline.
pub type Millis = u64;

/// Wall time for durable stamps, in [`Millis`]: the system clock once it is synchronised,
/// a provisional time until then (see [`clock`]). Durations use [`clock::steady_ms`].
pub fn now_ms() -> Millis {
    clock::now_ms()
}
