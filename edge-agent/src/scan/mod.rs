//! Scanner sources: where advertisements come from. Each source runs as a task that sends
//! [`Advertisement`]s into the pipeline's channel until it ends or shutdown is signalled.
//!
//! - [`ble`]: the radio, through BlueZ over D-Bus (btleplug), with a watchdog.
//! - [`replay`]: a JSON-lines recording, at recorded or accelerated speed.
//! - [`remote`]: the shop's scanner boxes, whose sightings reach the main box over the LAN
//!   (and, on a scanner box, the loop that sends them).
//! - [`espresense`]: ESPresense nodes, through the MQTT broker they publish to.

pub mod ble;
pub mod espresense;
pub mod remote;
pub mod replay;

pub use crate::pipeline::{Advertisement, Scanner};

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_address(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Formats an address as `aa:bb:cc:dd:ee:ff`.
pub fn format_address(address: &[u8; 6]) -> String {
    address
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_reject_garbage() {
        let a = parse_address("C0:FF:ee:00:00:01").unwrap();
        assert_eq!(format_address(&a), "c0:ff:ee:00:00:01");
        for bad in [
            "",
            "c0:ff:ee:00:00",
            "c0:ff:ee:00:00:01:02",
            "c0ff:ee:00:00:01:0",
            "zz:ff:ee:00:00:01",
        ] {
            assert_eq!(parse_address(bad), None, "{bad}");
        }
    }
}
