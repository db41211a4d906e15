//! Resolve: which enrolled customer is broadcasting this beacon?
//!
//! Answers from memory only: a hash map of static tag ids, and the [`EidResolver`]'s table of
//! the EIDs every enrolled phone or tag may be broadcasting around now. SQLite is read only to
//! (re)build these, never per advertisement.

mod eid;

use rustc_hash::FxHashMap;
use serde::Serialize;
use tastesync_shared::{BeaconIdentity, TagId};

pub use eid::{EidResolver, EidTag};

/// A customer's row id in the box's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CustomerId(pub i64);

/// Everything the index needs, as loaded from the store.
#[derive(Debug, Default, Clone)]
pub struct IndexSnapshot {
    pub tags: Vec<(TagId, CustomerId)>,
    pub eid_tags: Vec<(CustomerId, EidTag)>,
}

/// The in-memory customer index.
pub struct CustomerIndex {
    tags: FxHashMap<TagId, CustomerId>,
    eids: EidResolver,
}

impl CustomerIndex {
    /// An index answering for `now_s` (the EID clock, Unix seconds) ± `tolerance_windows`.
    pub fn new(snapshot: IndexSnapshot, tolerance_windows: u32, now_s: u32) -> Self {
        let mut index = CustomerIndex {
            tags: FxHashMap::default(),
            eids: EidResolver::new(tolerance_windows),
        };
        index.apply(snapshot, now_s);
        index
    }

    /// Replaces the static tags and brings the EID table in line with `snapshot`, recomputing
    /// only the customers whose EID tag changed.
    pub fn apply(&mut self, snapshot: IndexSnapshot, now_s: u32) {
        self.tags = snapshot.tags.into_iter().collect();
        self.eids.sync(snapshot.eid_tags, now_s);
    }

    pub fn resolve(&self, identity: &BeaconIdentity) -> Option<CustomerId> {
        match identity {
            BeaconIdentity::Static(tag) => self.tags.get(tag).copied(),
            BeaconIdentity::Ephemeral(eid) => self.eids.resolve(eid),
        }
    }

    /// Rolls the EID table forward to `now_s` (cheap when no window boundary was crossed).
    pub fn advance_to(&mut self, now_s: u32) {
        self.eids.advance_to(now_s);
    }

    pub fn eids(&self) -> &EidResolver {
        &self.eids
    }

    /// Enrolled static tags and EID tags.
    pub fn counts(&self) -> (usize, usize) {
        (self.tags.len(), self.eids.tag_count())
    }
}
