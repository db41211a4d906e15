//! Presence: turns a stream of (customer, RSSI) sightings into visits.
//!
//! Smoothing: the median of the sightings of the last `smoothing_window_ms` (at most
//! [`MAX_SAMPLES`]). Phones produce isolated outliers in both directions (a body in the way
//! drops RSSI by 10-20 dB; a reflection briefly lifts it); a short median ignores any minority
//! of them, where a mean or a one-euro filter (ESPresense) would be dragged along, and unlike
//! keeping the strongest reading (Bermuda) a single lucky spike cannot trigger an alert.
//! See ARCHITECTURE.md for the comparison.
//!
//! Rules:
//! - arrival: at least `min_sightings` sightings in the window and a median at or above
//!   `arrive_rssi`; one arrival per visit however fast the device advertises;
//! - a visit continues while sightings keep a median at or above `leave_rssi` (hysteresis:
//!   below `arrive_rssi` is fine once arrived), whatever id the device rotates through;
//! - departure: no such sighting for `absence_ms`; `left_at` is the last near sighting, so
//!   dwell does not include the absence timeout;
//! - re-arrival after a departure needs the full arrival evidence again (a new visit).

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::Deserialize;
use uuid::Uuid;

use crate::Millis;
use crate::events::{CustomerArrived, CustomerLeft, PresenceEvent};
use crate::resolve::CustomerId;

/// Most sightings kept per customer; a phone advertising at 10 Hz fills it in 1.6 s.
pub const MAX_SAMPLES: usize = 16;

/// Presence rules (config section `[presence]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Median RSSI (dBm) at or above which a customer counts as arrived.
    pub arrive_rssi: i16,
    /// Median RSSI (dBm) below which a present customer stops counting as near.
    pub leave_rssi: i16,
    /// Sightings needed within the smoothing window before an arrival.
    pub min_sightings: usize,
    /// How far back sightings count for the median, in ms.
    pub smoothing_window_ms: Millis,
    /// How long a present customer may go unseen (not near) before the visit ends, in ms.
    pub absence_ms: Millis,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            arrive_rssi: -75,
            leave_rssi: -88,
            min_sightings: 3,
            smoothing_window_ms: 5_000,
            absence_ms: 60_000,
        }
    }
}

impl PresenceConfig {
    /// Checks the rules make sense together; returns what is wrong otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.leave_rssi > self.arrive_rssi {
            return Err(format!(
                "presence.leave_rssi ({}) must not be above presence.arrive_rssi ({})",
                self.leave_rssi, self.arrive_rssi
            ));
        }
        if !(1..=MAX_SAMPLES).contains(&self.min_sightings) {
            return Err(format!(
                "presence.min_sightings must be between 1 and {MAX_SAMPLES}"
            ));
        }
        if self.smoothing_window_ms == 0 || self.absence_ms == 0 {
            return Err(
                "presence.smoothing_window_ms and presence.absence_ms must be positive".into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Visit {
    id: Uuid,
    arrived_at: Millis,
    last_near: Millis,
    zone: String,
}

#[derive(Debug, Default)]
struct Track {
    samples: VecDeque<(Millis, i16)>,
    visit: Option<Visit>,
}

impl Track {
    fn push(&mut self, at: Millis, rssi: i16, window: Millis) {
        while let Some(&(t, _)) = self.samples.front() {
            if t + window <= at || self.samples.len() >= MAX_SAMPLES {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        self.samples.push_back((at, rssi));
    }

    fn median(&self) -> i16 {
        let mut values = [0i16; MAX_SAMPLES];
        let n = self.samples.len();
        for (slot, (_, rssi)) in values.iter_mut().zip(&self.samples) {
            *slot = *rssi;
        }
        let values = &mut values[..n];
        values.sort_unstable();
        // Lower median for even counts: the conservative choice for arrivals.
        values[(n - 1) / 2]
    }
}

/// Tracks every enrolled customer currently heard; strangers never get here.
pub struct PresenceTracker {
    config: PresenceConfig,
    tracks: FxHashMap<CustomerId, Track>,
}

impl PresenceTracker {
    pub fn new(config: PresenceConfig) -> Self {
        PresenceTracker {
            config,
            tracks: FxHashMap::default(),
        }
    }

    /// Feeds one sighting of `customer`; returns an arrival when this sighting completes the
    /// evidence for one.
    pub fn observe(
        &mut self,
        customer: CustomerId,
        zone: &str,
        rssi: i16,
        at: Millis,
    ) -> Option<PresenceEvent> {
        let config = &self.config;
        let track = self.tracks.entry(customer).or_default();
        track.push(at, rssi, config.smoothing_window_ms);
        let median = track.median();
        match &mut track.visit {
            Some(visit) => {
                if median >= config.leave_rssi && at >= visit.last_near {
                    visit.last_near = at;
                    if visit.zone != zone {
                        visit.zone = zone.to_string();
                    }
                }
                None
            }
            None if track.samples.len() >= config.min_sightings && median >= config.arrive_rssi => {
                let visit = Visit {
                    id: new_visit_id(at),
                    arrived_at: at,
                    last_near: at,
                    zone: zone.to_string(),
                };
                let event = CustomerArrived {
                    visit_id: visit.id,
                    customer,
                    zone: visit.zone.clone(),
                    arrived_at_ms: at,
                };
                track.visit = Some(visit);
                Some(PresenceEvent::CustomerArrived(event))
            }
            None => None,
        }
    }

    /// Ends visits whose customer has been away for the absence timeout, and forgets tracks
    /// with nothing recent. Call about once a second.
    pub fn tick(&mut self, now: Millis) -> Vec<PresenceEvent> {
        let config = &self.config;
        let mut events = Vec::new();
        self.tracks.retain(|&customer, track| match &track.visit {
            Some(visit) if now >= visit.last_near + config.absence_ms => {
                events.push(PresenceEvent::CustomerLeft(CustomerLeft {
                    visit_id: visit.id,
                    customer,
                    zone: visit.zone.clone(),
                    arrived_at_ms: visit.arrived_at,
                    left_at_ms: visit.last_near,
                    dwell_s: (visit.last_near - visit.arrived_at) / 1000,
                }));
                false
            }
            Some(_) => true,
            None => track
                .samples
                .back()
                .is_some_and(|&(t, _)| t + config.smoothing_window_ms > now),
        });
        events.sort_by_key(|e| match e {
            PresenceEvent::CustomerLeft(left) => (left.left_at_ms, left.customer),
            PresenceEvent::CustomerArrived(a) => (a.arrived_at_ms, a.customer),
        });
        events
    }

    /// Takes up a visit left open by a clean stop at `stopped_at`: it goes on, without a new
    /// arrival, if the customer is heard near before the absence timeout runs out from then,
    /// and ends at `stopped_at` otherwise.
    pub fn resume(
        &mut self,
        customer: CustomerId,
        visit_id: Uuid,
        zone: &str,
        arrived_at: Millis,
        stopped_at: Millis,
    ) {
        self.tracks.insert(
            customer,
            Track {
                samples: VecDeque::new(),
                visit: Some(Visit {
                    id: visit_id,
                    arrived_at,
                    last_near: stopped_at.max(arrived_at),
                    zone: zone.to_string(),
                }),
            },
        );
    }

    /// Customers with an open visit.
    pub fn present(&self) -> usize {
        self.tracks.values().filter(|t| t.visit.is_some()).count()
    }

    /// Customers tracked at all (present or gathering evidence): the tracker's memory.
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }
}

fn new_visit_id(at: Millis) -> Uuid {
    let ts =
        uuid::Timestamp::from_unix(uuid::NoContext, at / 1000, ((at % 1000) * 1_000_000) as u32);
    Uuid::new_v7(ts)
}

#[cfg(test)]
mod tests;
