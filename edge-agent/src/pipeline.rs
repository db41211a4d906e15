//! The identification pipeline: decode → resolve → presence, for one advertisement at a time.
//!
//! Synchronous and allocation-free on the common path (a stranger's or a known customer's
//! repeat sighting). Time comes from the advertisements themselves, so a replay at any speed
//! behaves as the original did; the daemon also ticks it with the wall clock so departures
//! happen when the shop is quiet.

use std::sync::Arc;

use serde::Serialize;
use tastesync_shared::{BeaconIdentity, decode_advertisement};

use crate::Millis;
use crate::events::PresenceEvent;
use crate::presence::{
    DeviceKey, PresenceConfig, PresenceTracker, ScannerKey, ScannerRole, Sighting,
};
use crate::resolve::{CustomerIndex, IndexSnapshot};

/// One advertisement as heard by a scanner. Raw advertisements never reach the disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Advertisement {
    pub at_ms: Millis,
    pub address: [u8; 6],
    pub rssi: i16,
    /// Advertising data: AD structures as broadcast.
    pub data: Vec<u8>,
    /// The scanner that heard it.
    pub scanner: Arc<Scanner>,
}

/// A scanner (the box's own radio, a scanner box, an ESPresense node) and the zone of the
/// shop it covers; every advertisement it hears shares it.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanner {
    /// `local` for the box's own radio; `box:<id>` for a scanner box, `espresense:<room>`.
    pub name: String,
    pub zone: String,
    pub role: ScannerRole,
    key: ScannerKey,
}

impl Scanner {
    pub fn new(name: &str, zone: &str, role: ScannerRole) -> Arc<Scanner> {
        use std::hash::BuildHasher;
        Arc::new(Scanner {
            name: name.to_string(),
            zone: zone.to_string(),
            role,
            key: ScannerKey(rustc_hash::FxBuildHasher.hash_one(name)),
        })
    }

    /// The box's own radio, covering `zone`.
    pub fn local(zone: &str) -> Arc<Scanner> {
        Scanner::new(LOCAL_SCANNER, zone, ScannerRole::Room)
    }
}

/// The name of the box's own radio among the shop's scanners.
pub const LOCAL_SCANNER: &str = "local";

/// Counters for health and metrics.
#[derive(Debug, Default, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct PipelineStats {
    pub advertisements: u64,
    pub malformed: u64,
    pub beacons: u64,
    pub recognised: u64,
    pub last_advertisement_ms: Option<Millis>,
}

/// A scanner the pipeline has heard from, for the owner page and `doctor`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScannerSeen {
    pub name: String,
    pub zone: String,
    pub role: ScannerRole,
    /// When it last heard anything (wall time, ms).
    pub last_heard_ms: Millis,
}

/// Most scanners remembered (a shop has a handful; the least recently heard goes first).
const MAX_SCANNERS: usize = 32;

/// How often presence is re-evaluated and the EID table rolled, in pipeline time.
const TICK_MS: Millis = 1_000;

pub struct Pipeline {
    index: CustomerIndex,
    tracker: PresenceTracker,
    stats: PipelineStats,
    next_tick: Millis,
    /// Wall time minus pipeline time, for the EID windows (see `crate::clock`).
    wall_offset_ms: i64,
    /// Every scanner heard, with when it last heard anything (pipeline time).
    scanners: Vec<(Arc<Scanner>, Millis)>,
}

impl Pipeline {
    pub fn new(
        snapshot: IndexSnapshot,
        presence: PresenceConfig,
        eid_tolerance_windows: u32,
        now_ms: Millis,
    ) -> Self {
        Pipeline {
            index: CustomerIndex::new(snapshot, eid_tolerance_windows, eid_clock(now_ms)),
            tracker: PresenceTracker::new(presence),
            stats: PipelineStats::default(),
            next_tick: now_ms + TICK_MS,
            wall_offset_ms: 0,
            scanners: Vec::new(),
        }
    }

    /// Processes one advertisement, appending any resulting events to `out`.
    pub fn process(&mut self, ad: &Advertisement, out: &mut Vec<PresenceEvent>) {
        // Tick on the advertisements' own clock; a jump back (a replay of an older
        // recording) re-rolls the EID table too.
        if ad.at_ms >= self.next_tick || ad.at_ms + 2 * TICK_MS < self.next_tick {
            self.tick(ad.at_ms, out);
        }
        self.stats.advertisements += 1;
        self.stats.last_advertisement_ms = Some(ad.at_ms);
        if ad.scanner.role == ScannerRole::Door {
            self.tracker.door_heard(ad.at_ms);
        }
        self.note_scanner(&ad.scanner, ad.at_ms);
        let beacon = match decode_advertisement(&ad.data) {
            Ok(Some(beacon)) => beacon,
            Ok(None) => return,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        self.stats.beacons += 1;
        let Some(identity) = beacon.identity() else {
            return;
        };
        let Some(customer) = self.index.resolve(&identity) else {
            return;
        };
        self.stats.recognised += 1;
        out.extend(self.tracker.observe(&Sighting {
            customer,
            device: device_key(&identity),
            scanner: ad.scanner.key,
            role: ad.scanner.role,
            zone: &ad.scanner.zone,
            rssi: ad.rssi,
            calibrated_1m: beacon.calibrated_rssi_1m(),
            at: ad.at_ms,
        }));
    }

    /// Ends visits of absent customers and rolls the EID table to `now_ms`.
    pub fn tick(&mut self, now_ms: Millis, out: &mut Vec<PresenceEvent>) {
        self.next_tick = now_ms + TICK_MS;
        self.index
            .advance_to(eid_clock(now_ms.saturating_add_signed(self.wall_offset_ms)));
        out.extend(self.tracker.tick(now_ms));
    }

    /// Swaps in a new view of the enrolled customers (after an import or a sync).
    pub fn apply_snapshot(&mut self, snapshot: IndexSnapshot, now_ms: Millis) {
        let wall = now_ms.saturating_add_signed(self.wall_offset_ms);
        self.index.apply(snapshot, eid_clock(wall));
    }

    /// Sets wall time minus pipeline time: a live box's pipeline runs on steady time, while
    /// tags' EIDs follow the wall clock.
    pub fn set_wall_offset(&mut self, offset_ms: i64) {
        self.wall_offset_ms = offset_ms;
    }

    /// The counters, the last advertisement's time in wall time.
    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            last_advertisement_ms: self
                .stats
                .last_advertisement_ms
                .map(|at| at.saturating_add_signed(self.wall_offset_ms)),
            ..self.stats
        }
    }

    fn note_scanner(&mut self, scanner: &Arc<Scanner>, at: Millis) {
        // Most advertisements come from the scanner of the one before.
        if let Some((last, t)) = self.scanners.last_mut()
            && Arc::ptr_eq(last, scanner)
        {
            *t = (*t).max(at);
            return;
        }
        let found = self.scanners.iter().position(|(s, _)| s == scanner);
        let i = match found {
            Some(i) => i,
            None => {
                if self.scanners.len() >= MAX_SCANNERS {
                    let quietest = (0..self.scanners.len())
                        .min_by_key(|&i| self.scanners[i].1)
                        .expect("not empty");
                    self.scanners.swap_remove(quietest);
                }
                self.scanners.push((scanner.clone(), at));
                self.scanners.len() - 1
            }
        };
        let mut seen = self.scanners.swap_remove(i);
        seen.0 = scanner.clone();
        seen.1 = seen.1.max(at);
        self.scanners.push(seen);
    }

    /// The scanners heard so far, the most recently heard first.
    pub fn scanners(&self) -> Vec<ScannerSeen> {
        let mut seen: Vec<ScannerSeen> = self
            .scanners
            .iter()
            .map(|(s, at)| ScannerSeen {
                name: s.name.clone(),
                zone: s.zone.clone(),
                role: s.role,
                last_heard_ms: at.saturating_add_signed(self.wall_offset_ms),
            })
            .collect();
        seen.sort_by_key(|s| std::cmp::Reverse(s.last_heard_ms));
        seen
    }

    pub fn index(&self) -> &CustomerIndex {
        &self.index
    }

    /// Takes up the visits a clean stop at `stopped_at` left open (see
    /// [`PresenceTracker::resume`]); a visit id that is not a UUID is left alone.
    pub fn resume(&mut self, visits: &[crate::store::OpenVisit], stopped_at: Millis) {
        for visit in visits {
            if let Ok(id) = visit.visit_id.parse() {
                self.tracker.resume(
                    visit.customer,
                    id,
                    &visit.zone,
                    visit.arrived_at_ms,
                    stopped_at,
                );
            }
        }
    }

    pub fn tracker(&self) -> &PresenceTracker {
        &self.tracker
    }
}

/// Tells a customer's devices apart: a static tag by its id, whatever address it uses; their
/// EID (one per customer) as one device, whichever EID it broadcasts now.
fn device_key(identity: &BeaconIdentity) -> DeviceKey {
    use std::hash::BuildHasher;
    match identity {
        BeaconIdentity::Static(tag) => DeviceKey(rustc_hash::FxBuildHasher.hash_one(tag) | 1),
        BeaconIdentity::Ephemeral(_) => DeviceKey(0),
    }
}

/// The EID clock of TasteSync tags: Unix time in seconds, modulo 2^32.
pub fn eid_clock(ms: Millis) -> u32 {
    (ms / 1000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::{CustomerId, EidTag};
    use tastesync_shared::eid::{eid, epoch_of, temporary_key};

    const IK: [u8; 16] = [0x42; 16];

    fn eid_frame(eid: [u8; 8]) -> Vec<u8> {
        let mut data = vec![
            0x02, 0x01, 0x06, 0x03, 0x03, 0xaa, 0xfe, 0x0d, 0x16, 0xaa, 0xfe, 0x30, 0xf6,
        ];
        data.extend_from_slice(&eid);
        data
    }

    #[test]
    fn eid_rollover_across_a_window_boundary_keeps_the_visit() {
        let exponent = 6; // 64 s windows, so the test crosses several
        let start_s: u32 = 1_700_000_000 - 30;
        let first = epoch_of(start_s);
        let snapshot = IndexSnapshot {
            tags: vec![],
            eid_tags: vec![(
                CustomerId(5),
                EidTag {
                    exponent,
                    temporary_keys: (first..first + 2)
                        .map(|e| (e, temporary_key(&IK, e)))
                        .collect(),
                },
            )],
        };
        let start_ms = Millis::from(start_s) * 1000;
        let mut pipeline = Pipeline::new(snapshot, PresenceConfig::default(), 1, start_ms);
        let mut events = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..3000 {
            let at_ms = start_ms + i * 100; // 300 s at 10 Hz
            let broadcast = eid(&IK, exponent, eid_clock(at_ms));
            seen.insert(broadcast);
            let ad = Advertisement {
                at_ms,
                address: [0x40, 0, 0, 0, 0, (i / 150) as u8], // private address rotates too
                rssi: -62,
                data: eid_frame(broadcast),
                scanner: Scanner::local("entrance"),
            };
            pipeline.process(&ad, &mut events);
        }
        assert!(seen.len() >= 5, "crossed {} windows", seen.len());
        assert_eq!(
            events.len(),
            1,
            "one visit across EID rotations: {events:?}"
        );
        assert_eq!(pipeline.stats().recognised, 3000);
        assert_eq!(events[0].customer(), CustomerId(5));
    }

    #[test]
    fn the_scanners_heard_are_listed_most_recent_first() {
        let mut pipeline = Pipeline::new(IndexSnapshot::default(), PresenceConfig::default(), 1, 0);
        let (counter, door) = (
            Scanner::local("counter"),
            Scanner::new("box:3", "door", ScannerRole::Door),
        );
        let mut events = Vec::new();
        for (at_ms, scanner) in [(1_000, &counter), (2_000, &door), (3_000, &counter)] {
            let ad = Advertisement {
                at_ms,
                address: [0; 6],
                rssi: -70,
                data: vec![2, 1, 6],
                scanner: scanner.clone(),
            };
            pipeline.process(&ad, &mut events);
        }
        // A scanner box's next batch comes with a new handle on the same scanner.
        let again = Scanner::new("box:3", "door", ScannerRole::Door);
        pipeline.process(
            &Advertisement {
                at_ms: 4_000,
                address: [0; 6],
                rssi: -70,
                data: vec![2, 1, 6],
                scanner: again,
            },
            &mut events,
        );
        let seen: Vec<_> = pipeline
            .scanners()
            .into_iter()
            .map(|s| (s.name, s.zone, s.last_heard_ms))
            .collect();
        assert_eq!(
            seen,
            [
                ("box:3".into(), "door".into(), 4_000),
                ("local".into(), "counter".into(), 3_000)
            ]
        );
    }
}
