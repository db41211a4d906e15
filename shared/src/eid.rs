//! Eddystone-EID: rotating ephemeral identifiers (Google's Eddystone-EID specification).
//!
//! A tag holds a 16-byte identity key (IK). For each 2^16-second epoch of its clock it derives
//! a temporary key `TK = AES-128(IK, 00×11 ‖ FF ‖ 00 00 ‖ t[31..16])`, and for each 2^K-second
//! window it broadcasts `EID = AES-128(TK, 00×11 ‖ K ‖ t with its low K bits cleared)[..8]`.
//!
//! The cloud keeps identity keys and derives temporary keys ([`temporary_key`]); a shop box
//! only ever receives temporary keys for the coming epochs and computes EIDs from those
//! ([`eid_from_temporary_key`]), so a stolen box cannot follow anyone past that horizon.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};

/// The largest rotation exponent the specification allows (windows of 2^15 s ≈ 9 h).
pub const MAX_EXPONENT: u8 = 15;
/// A temporary key is valid for one epoch of 2^16 seconds of the tag's clock.
pub const EPOCH_BITS: u32 = 16;

/// The epoch (upper 16 bits of the tag's 32-bit clock) that `time` falls in.
pub fn epoch_of(time: u32) -> u16 {
    (time >> EPOCH_BITS) as u16
}

/// First second of a rotation window of 2^`exponent` seconds containing `time`.
pub fn window_start(time: u32, exponent: u8) -> u32 {
    debug_assert!(exponent <= MAX_EXPONENT);
    time & !((1u32 << exponent) - 1)
}

/// Derives the temporary key for `epoch` from an identity key (cloud side only).
pub fn temporary_key(identity_key: &[u8; 16], epoch: u16) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[11] = 0xff;
    block[14..16].copy_from_slice(&epoch.to_be_bytes());
    aes_block(identity_key, block)
}

/// Computes the EID a tag broadcasts at `time`, from the temporary key of that time's epoch.
pub fn eid_from_temporary_key(temporary_key: &[u8; 16], exponent: u8, time: u32) -> [u8; 8] {
    let mut block = [0u8; 16];
    block[11] = exponent;
    block[12..16].copy_from_slice(&window_start(time, exponent).to_be_bytes());
    let out = aes_block(temporary_key, block);
    out[..8].try_into().expect("8 of 16 bytes")
}

/// Computes the EID a tag broadcasts at `time`, from its identity key.
pub fn eid(identity_key: &[u8; 16], exponent: u8, time: u32) -> [u8; 8] {
    eid_from_temporary_key(&temporary_key(identity_key, epoch_of(time)), exponent, time)
}

fn aes_block(key: &[u8; 16], block: [u8; 16]) -> [u8; 16] {
    let cipher = Aes128::new(GenericArray::from_slice(key));
    let mut block = GenericArray::from(block);
    cipher.encrypt_block(&mut block);
    block.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hexfmt::{hex, parse_fixed};

    const IK: &str = "00112233445566778899aabbccddeeff";

    // Vectors computed independently with `openssl enc -aes-128-ecb -nopad` on the blocks the
    // specification defines.
    #[test]
    fn matches_independent_vectors() {
        let ik = parse_fixed(IK).unwrap();
        assert_eq!(
            hex(&temporary_key(&ik, epoch_of(0x1234_5678))),
            "fb5af60447cf771b43d96f530c9fe1ee"
        );
        assert_eq!(hex(&eid(&ik, 10, 0x1234_5678)), "5fc145abb9b102a7");
        assert_eq!(hex(&eid(&ik, 0, 0)), "fda1cb98857e79ae");
        assert_eq!(hex(&eid(&ik, 15, 1_700_000_000)), "1c534463a0945540");
    }

    #[test]
    fn constant_within_a_window_and_changes_across() {
        let ik = parse_fixed(IK).unwrap();
        let start = window_start(1_700_000_000, 10);
        assert_eq!(eid(&ik, 10, start), eid(&ik, 10, start + 1023));
        assert_ne!(eid(&ik, 10, start), eid(&ik, 10, start + 1024));
    }
}
