//! The EID table: every EID an enrolled customer may broadcast in the current rotation window
//! and its neighbours (tags' clocks drift), so an observed EID resolves with one hash lookup.
//!
//! The table is kept per (exponent, window): when the clock crosses a window boundary only
//! the windows that fell out are dropped and the new one computed, one AES block per customer
//! with that exponent. A customer change recomputes that customer's entries only.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use tastesync_shared::eid::{EPOCH_BITS, eid_from_temporary_key};

use super::CustomerId;

/// A customer's rotating-id tag as the box knows it: the exponent K and the temporary keys
/// the cloud sent for the coming epochs. Never the identity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EidTag {
    pub exponent: u8,
    /// (epoch, temporary key), sorted by epoch.
    pub temporary_keys: Vec<(u16, [u8; 16])>,
}

impl EidTag {
    fn key_for(&self, epoch: u16) -> Option<&[u8; 16]> {
        self.temporary_keys
            .binary_search_by_key(&epoch, |(e, _)| *e)
            .ok()
            .map(|i| &self.temporary_keys[i].1)
    }

    /// The EID this tag broadcasts in the window with index `window` (of 2^exponent s), if the
    /// box holds the temporary key of that window's epoch.
    fn eid_in_window(&self, window: u32) -> Option<u64> {
        let start = window.checked_shl(u32::from(self.exponent))?;
        let key = self.key_for((start >> EPOCH_BITS) as u16)?;
        Some(u64::from_be_bytes(eid_from_temporary_key(
            key,
            self.exponent,
            start,
        )))
    }
}

/// Resolves observed EIDs to customers.
pub struct EidResolver {
    tolerance: u32,
    tags: FxHashMap<CustomerId, EidTag>,
    table: FxHashMap<u64, CustomerId>,
    /// Entries per (exponent, window index), to drop a window in one go.
    windows: BTreeMap<(u8, u32), Vec<(u64, CustomerId)>>,
    now_s: u32,
    missing_keys: u64,
}

impl EidResolver {
    pub fn new(tolerance_windows: u32) -> Self {
        EidResolver {
            tolerance: tolerance_windows,
            tags: FxHashMap::default(),
            table: FxHashMap::default(),
            windows: BTreeMap::new(),
            now_s: 0,
            missing_keys: 0,
        }
    }

    pub fn resolve(&self, eid: &[u8; 8]) -> Option<CustomerId> {
        self.table.get(&u64::from_be_bytes(*eid)).copied()
    }

    pub fn tag_count(&self) -> usize {
        self.tags.len()
    }

    /// EIDs currently in the table.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// How many (customer, window) pairs could not be computed because the box holds no
    /// temporary key for that epoch: the cloud has not sent keys far enough ahead.
    pub fn missing_keys(&self) -> u64 {
        self.missing_keys
    }

    fn wanted_windows(&self, exponent: u8, now_s: u32) -> std::ops::RangeInclusive<u32> {
        let current = now_s >> exponent;
        current.saturating_sub(self.tolerance)..=current.saturating_add(self.tolerance)
    }

    /// Brings the tag set in line with `tags`; only changed customers are recomputed.
    pub fn sync(&mut self, tags: Vec<(CustomerId, EidTag)>, now_s: u32) {
        self.now_s = now_s;
        let mut incoming: FxHashMap<CustomerId, EidTag> = tags.into_iter().collect();
        let gone: Vec<CustomerId> = self
            .tags
            .keys()
            .filter(|c| !incoming.contains_key(c))
            .copied()
            .collect();
        for customer in gone {
            self.remove(customer);
        }
        for (customer, tag) in incoming.drain() {
            if self.tags.get(&customer) != Some(&tag) {
                self.upsert(customer, tag);
            }
        }
        self.advance_to(now_s);
    }

    /// Adds or replaces one customer's tag and computes its EIDs for the current windows.
    pub fn upsert(&mut self, customer: CustomerId, tag: EidTag) {
        self.remove(customer);
        for window in self.wanted_windows(tag.exponent, self.now_s) {
            self.insert_window_entry(customer, &tag, window);
        }
        self.tags.insert(customer, tag);
    }

    /// Forgets a customer: its EIDs stop resolving at once.
    pub fn remove(&mut self, customer: CustomerId) {
        let Some(tag) = self.tags.remove(&customer) else {
            return;
        };
        for window in self.wanted_windows(tag.exponent, self.now_s) {
            if let Some(eid) = tag.eid_in_window(window)
                && self.table.get(&eid) == Some(&customer)
            {
                self.table.remove(&eid);
            }
        }
        // Stale (eid, customer) pairs left in `windows` are harmless: dropping a window only
        // removes a table entry that still points at the same customer.
    }

    fn insert_window_entry(&mut self, customer: CustomerId, tag: &EidTag, window: u32) {
        match tag.eid_in_window(window) {
            Some(eid) => {
                self.table.insert(eid, customer);
                self.windows
                    .entry((tag.exponent, window))
                    .or_default()
                    .push((eid, customer));
            }
            None => self.missing_keys += 1,
        }
    }

    /// Rolls every exponent's windows forward (or back, if the clock was corrected) to `now_s`.
    pub fn advance_to(&mut self, now_s: u32) {
        self.now_s = now_s;
        let exponents: Vec<u8> = {
            let mut e: Vec<u8> = self.tags.values().map(|t| t.exponent).collect();
            e.sort_unstable();
            e.dedup();
            e
        };
        // Drop windows that fell out of range.
        let stale: Vec<(u8, u32)> = self
            .windows
            .keys()
            .filter(|(k, w)| !self.wanted_windows(*k, now_s).contains(w))
            .copied()
            .collect();
        for key in stale {
            for (eid, customer) in self.windows.remove(&key).unwrap_or_default() {
                if self.table.get(&eid) == Some(&customer) {
                    self.table.remove(&eid);
                }
            }
        }
        // Compute windows that came into range.
        for exponent in exponents {
            for window in self.wanted_windows(exponent, now_s) {
                if self.windows.contains_key(&(exponent, window)) {
                    continue;
                }
                let mut entries = Vec::new();
                let mut missing = 0;
                for (customer, tag) in self.tags.iter().filter(|(_, t)| t.exponent == exponent) {
                    match tag.eid_in_window(window) {
                        Some(eid) => entries.push((eid, *customer)),
                        None => missing += 1,
                    }
                }
                self.table.reserve(entries.len());
                for &(eid, customer) in &entries {
                    self.table.insert(eid, customer);
                }
                self.missing_keys += missing;
                self.windows.insert((exponent, window), entries);
            }
        }
    }

    /// Drops and recomputes the whole table (what a window roll would cost without the
    /// incremental bookkeeping; used by the benchmark and after a large clock jump).
    pub fn rebuild(&mut self, now_s: u32) {
        self.table.clear();
        self.windows.clear();
        self.advance_to(now_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tastesync_shared::eid::{eid, epoch_of, temporary_key};

    const IK: [u8; 16] = [7; 16];

    fn tag_for(ik: &[u8; 16], exponent: u8, from_s: u32, epochs: u16) -> EidTag {
        let first = epoch_of(from_s);
        EidTag {
            exponent,
            temporary_keys: (first..first + epochs)
                .map(|e| (e, temporary_key(ik, e)))
                .collect(),
        }
    }

    #[test]
    fn resolves_current_and_neighbouring_windows_only() {
        let now = 1_700_000_000;
        let mut r = EidResolver::new(1);
        r.sync(vec![(CustomerId(1), tag_for(&IK, 10, now, 3))], now);
        assert_eq!(r.resolve(&eid(&IK, 10, now)), Some(CustomerId(1)));
        assert_eq!(r.resolve(&eid(&IK, 10, now - 1024)), Some(CustomerId(1)));
        assert_eq!(r.resolve(&eid(&IK, 10, now + 1024)), Some(CustomerId(1)));
        assert_eq!(r.resolve(&eid(&IK, 10, now + 2 * 1024)), None);
        assert_eq!(r.table_len(), 3);
    }

    #[test]
    fn rolls_windows_forward_incrementally() {
        let now = 1_700_000_000;
        let mut r = EidResolver::new(1);
        r.sync(vec![(CustomerId(1), tag_for(&IK, 10, now, 3))], now);
        let later = now + 5 * 1024;
        r.advance_to(later);
        assert_eq!(r.resolve(&eid(&IK, 10, later)), Some(CustomerId(1)));
        assert_eq!(r.resolve(&eid(&IK, 10, now)), None);
        assert_eq!(r.table_len(), 3);
    }

    #[test]
    fn crossing_an_epoch_uses_the_next_temporary_key() {
        let epoch_end = (epoch_of(1_700_000_000) as u32 + 1) << 16;
        let mut r = EidResolver::new(1);
        r.sync(
            vec![(CustomerId(3), tag_for(&IK, 12, 1_700_000_000, 2))],
            epoch_end - 10,
        );
        assert_eq!(r.resolve(&eid(&IK, 12, epoch_end + 5)), Some(CustomerId(3)));
    }

    #[test]
    fn missing_temporary_keys_are_counted_not_guessed() {
        let now = 1_700_000_000;
        let mut r = EidResolver::new(0);
        r.sync(
            vec![(CustomerId(1), tag_for(&IK, 10, now, 1))],
            now + 3 * 65536,
        );
        assert_eq!(r.table_len(), 0);
        assert!(r.missing_keys() > 0);
    }

    #[test]
    fn removal_and_key_change_take_effect_at_once() {
        let now = 1_700_000_000;
        let other = [9u8; 16];
        let mut r = EidResolver::new(1);
        r.sync(
            vec![
                (CustomerId(1), tag_for(&IK, 10, now, 2)),
                (CustomerId(2), tag_for(&other, 8, now, 2)),
            ],
            now,
        );
        r.sync(vec![(CustomerId(2), tag_for(&other, 8, now, 2))], now);
        assert_eq!(r.resolve(&eid(&IK, 10, now)), None);
        assert_eq!(r.resolve(&eid(&other, 8, now)), Some(CustomerId(2)));
        // Customer 2 re-keyed (new identity on the cloud side): old EIDs stop resolving.
        r.sync(vec![(CustomerId(2), tag_for(&IK, 8, now, 2))], now);
        assert_eq!(r.resolve(&eid(&other, 8, now)), None);
        assert_eq!(r.resolve(&eid(&IK, 8, now)), Some(CustomerId(2)));
        // Rolling forward after removals keeps the table exact.
        r.advance_to(now + 10 * 256);
        assert_eq!(r.table_len(), 3);
    }
}
