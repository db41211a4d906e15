//! `tastesync-cloud eid-keys`: a customer's EID temporary keys for the coming days, as the CSV
//! `tastesync-edge eid-keys` imports (the cloud's job: identity keys never reach a shop).

use tastesync_shared::eid::{MAX_EXPONENT, epoch_of, temporary_key};
use tastesync_shared::hexfmt::{hex, parse_fixed};

use crate::mqtt::downlink;

/// Prints the CSV; an error names the argument that is wrong.
pub fn run(
    customer_ref: &str,
    identity_key: &str,
    exponent: u8,
    from: Option<u32>,
    days: u32,
) -> Result<(), String> {
    let key: [u8; 16] = parse_fixed(identity_key.trim())
        .ok_or("--identity-key must be 32 hex digits (16 bytes)")?;
    if exponent > MAX_EXPONENT {
        return Err(format!("--exponent must be 0 to {MAX_EXPONENT}"));
    }
    if customer_ref.is_empty() || customer_ref.contains([',', '"', '\n']) {
        return Err("--customer-ref must be non-empty, without commas or quotes".into());
    }
    if !(1..=60).contains(&days) {
        return Err("--days must be 1 to 60".into());
    }
    let from = from.unwrap_or_else(downlink::now_s);
    let until = from.saturating_add(days * 86_400);
    println!("customer_ref,exponent,epoch,temporary_key");
    // One epoch back too: a tag whose clock runs late is still in the previous one.
    for epoch in epoch_of(from).saturating_sub(1)..=epoch_of(until) {
        println!(
            "{customer_ref},{exponent},{epoch},{}",
            hex(&temporary_key(&key, epoch))
        );
    }
    Ok(())
}
