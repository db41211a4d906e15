//! The boxes' side of cloud-sync, over MQTT: `ingest` (events in, acknowledgements out),
//! `downlink` (HQ's customer changes out, resync requests in) and `dynsec` (each box's own
//! broker user, through Mosquitto's dynamic-security plugin).

pub mod downlink;
pub mod dynsec;
pub mod ingest;
