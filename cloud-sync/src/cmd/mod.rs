//! One file per command of `tastesync-cloud` (the command line itself is in `main.rs`).

pub mod analytics;
pub mod customers;
pub mod eid_keys;
pub mod kafka;
pub mod keys;
pub mod serve;
pub mod shops;
pub mod users;
