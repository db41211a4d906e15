//! Presence: turns a stream of sightings of enrolled customers' devices into visits.
//!
//! Decided per device and scanner (a *link*), then per customer: a customer is present
//! while any one link says so, so a weak tag in a backpack never outvotes a strong phone in
//! a hand (a pooled median would), and a far scanner never outvotes a near one. Each
//! device's RSSI is first normalised by its calibrated power (the iBeacon measured power,
//! Eddystone's ranging data), so a quiet tag and a loud phone at the same distance read the
//! same.
//!
//! Evidence for an arrival, either of:
//! - **near**: `min_sightings` in the last `smoothing_window_ms` with a median at or above
//!   `arrive_rssi` (someone at the counter);
//! - **staying**: `settle_sightings` over the last `settle_window_ms` with a median at or
//!   above `settle_rssi`, the later half not weaker than the earlier half by more than
//!   `settle_recede_db` (someone queueing with their phone in a backpack, not someone
//!   walking away past the window).
//!
//! - **at the door**: a scanner in the door role (it also hears the street) decides only on
//!   someone passing it closely: `door_sightings` within `door_window_ms` at or above
//!   `door_rssi`. While a door scanner is heard at all, the staying rule is off: the door
//!   tells who came in, and staying cannot tell a queue from a bus stop behind the glass.
//!   A door scanner that goes silent for `door_watch_ms` brings the staying rule back.
//!
//! The median ignores any minority of outliers in either direction: a body in the way drops
//! RSSI by 10-20 dB, a reflection briefly lifts it. See ARCHITECTURE.md for the comparison
//! with ESPresense and Bermuda and the figures.
//!
//! A visit continues while any device's short median stays at or above `leave_rssi`,
//! whatever address or EID it rotates through. It ends after `absence_ms` without that, or
//! `seated_absence_ms` once the visit has lasted `seated_after_ms` (a customer at a far
//! table is heard rarely; ending their visit would announce them again as they leave).
//! `left_at` is the last near sighting, so dwell does not include the wait. Re-arrival
//! after a departure needs the full evidence again (a new visit).
//!
//! Zones (several scanners in one shop): one visit per customer whichever scanners hear
//! them. The visit's zone is that of the link with the loudest short median; it moves to
//! another zone only once that zone has led the current one by `zone_margin_db` for
//! `zone_dwell_ms` (hysteresis, so a customer between two scanners does not flap), or the
//! current zone no longer hears them at all, and each move is a `ZoneChanged` event.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::Deserialize;
use uuid::Uuid;

use crate::Millis;
use crate::events::{CustomerArrived, CustomerLeft, PresenceEvent, ZoneChanged};
use crate::resolve::CustomerId;

/// Most sightings kept per device: 32 s of a 2 Hz tag.
pub const MAX_SAMPLES: usize = 64;
/// Most links (device × scanner) tracked per customer; a further one replaces the least
/// recently heard.
pub const MAX_LINKS: usize = 8;
/// The calibration levels are stated for: RSSI at 1 m of a typical 0 dBm advertiser.
pub const REFERENCE_1M_DBM: i16 = -59;
/// Calibration further from the reference than this is taken as a wrong setting, not as a
/// transmitter that weak or strong.
const MAX_CALIBRATION_SHIFT_DB: i16 = 15;
/// A device first heard this close to `leave_rssi` (the edge of what the box hears) came from
/// out of range: the staying rule counts that as its approach.
const EDGE_OF_RANGE_DB: i16 = 8;

/// Presence rules (config section `[presence]`). Levels are RSSI in dBm for an advertiser
/// calibrated at [`REFERENCE_1M_DBM`] at 1 m; others are shifted by their calibration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Median level at or above which a device counts as near: an arrival at once.
    pub arrive_rssi: i16,
    /// Sightings needed within the smoothing window for a near arrival.
    pub min_sightings: usize,
    /// How far back sightings count for the near median, in ms.
    pub smoothing_window_ms: Millis,
    /// Median level over the settle window at or above which a device that stays counts.
    pub settle_rssi: i16,
    /// How long a device must be heard at `settle_rssi` to count, in ms.
    pub settle_window_ms: Millis,
    /// Sightings needed within the settle window.
    pub settle_sightings: usize,
    /// How much weaker the settle window's later half may be than its earlier half (more
    /// means the device is moving away: a passer-by).
    pub settle_recede_db: i16,
    /// How much louder the settle window must be than the device was before it, within
    /// `approach_window_ms`: someone who came in, not someone standing outside.
    pub approach_rise_db: i16,
    pub approach_window_ms: Millis,
    /// Short median below which a present customer's device stops counting as near.
    pub leave_rssi: i16,
    /// How long a present customer may go without a near sighting before the visit ends.
    pub absence_ms: Millis,
    /// The same for a visit that has lasted `seated_after_ms`: someone at a table (never
    /// shorter than `absence_ms`).
    pub seated_absence_ms: Millis,
    pub seated_after_ms: Millis,
    /// How much louder (dB) another zone's scanners must hear a present customer than the
    /// current zone's, for `zone_dwell_ms`, before the customer moves there.
    pub zone_margin_db: i16,
    pub zone_dwell_ms: Millis,
    /// A door scanner's arrival: this many sightings within `door_window_ms`, their (lower)
    /// median at or above `door_rssi`.
    pub door_rssi: i16,
    pub door_sightings: usize,
    pub door_window_ms: Millis,
    /// A door scanner unheard this long counts as gone (the staying rule comes back).
    pub door_watch_ms: Millis,
    /// While a door scanner works, the staying rule counts only for a customer it heard at
    /// or above this within `approach_window_ms`: someone who came past the door.
    pub door_pass_rssi: i16,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            arrive_rssi: -75,
            min_sightings: 3,
            smoothing_window_ms: 5_000,
            settle_rssi: -82,
            settle_window_ms: 4_500,
            settle_sightings: 3,
            settle_recede_db: 3,
            approach_rise_db: 10,
            approach_window_ms: 30_000,
            leave_rssi: -96,
            absence_ms: 60_000,
            seated_absence_ms: 300_000,
            seated_after_ms: 60_000,
            zone_margin_db: 4,
            zone_dwell_ms: 4_000,
            door_rssi: -64,
            door_sightings: 2,
            door_window_ms: 3_000,
            door_watch_ms: 60_000,
            door_pass_rssi: -70,
        }
    }
}

impl PresenceConfig {
    /// Checks the rules make sense together; returns what is wrong otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.leave_rssi > self.settle_rssi.min(self.arrive_rssi) {
            return Err(format!(
                "presence.leave_rssi ({}) must not be above presence.arrive_rssi ({}) or \
                 presence.settle_rssi ({})",
                self.leave_rssi, self.arrive_rssi, self.settle_rssi
            ));
        }
        for (name, n) in [
            ("min_sightings", self.min_sightings),
            ("settle_sightings", self.settle_sightings),
            ("door_sightings", self.door_sightings),
        ] {
            if !(1..=MAX_SAMPLES).contains(&n) {
                return Err(format!(
                    "presence.{name} must be between 1 and {MAX_SAMPLES}"
                ));
            }
        }
        if [
            self.smoothing_window_ms,
            self.settle_window_ms,
            self.absence_ms,
            self.seated_absence_ms,
            self.zone_dwell_ms,
            self.door_window_ms,
        ]
        .contains(&0)
        {
            return Err("presence's windows and absences must be positive".into());
        }
        Ok(())
    }

    fn keep_ms(&self) -> Millis {
        self.smoothing_window_ms
            .max(self.settle_window_ms)
            .max(self.approach_window_ms)
            .max(self.door_window_ms)
    }
}

/// Which of a customer's devices a sighting is of: the same for every advertisement of one
/// device, whatever address or EID it rotates through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceKey(pub u64);

/// Which scanner heard a sighting: the box's own radio, a scanner box, an ESPresense node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScannerKey(pub u64);

/// What a scanner's sightings may decide.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ScannerRole {
    /// Inside the shop: the near and staying rules.
    #[default]
    Room,
    /// By the door, hearing the street too: arrivals only from someone passing it closely.
    Door,
}

/// One advertisement of an enrolled customer's device, as presence needs it.
#[derive(Debug, Clone, Copy)]
pub struct Sighting<'a> {
    pub customer: CustomerId,
    pub device: DeviceKey,
    pub scanner: ScannerKey,
    pub role: ScannerRole,
    /// The zone of the scanner that heard it.
    pub zone: &'a str,
    pub rssi: i16,
    /// The advertiser's own calibrated RSSI at 1 m, if it states one.
    pub calibrated_1m: Option<i16>,
    pub at: Millis,
}

impl Sighting<'_> {
    /// RSSI as an advertiser calibrated at the reference would have been heard.
    pub fn level(&self) -> i16 {
        let shift = self.calibrated_1m.map_or(0, |c| c - REFERENCE_1M_DBM);
        if shift.abs() > MAX_CALIBRATION_SHIFT_DB {
            self.rssi
        } else {
            self.rssi - shift
        }
    }
}

#[derive(Debug)]
struct Visit {
    id: Uuid,
    arrived_at: Millis,
    last_near: Millis,
    zone: String,
    /// Another zone leading the current one, since when.
    next_zone: Option<(String, Millis)>,
}

/// One device as one scanner hears it: recent sightings as (time, normalised level).
#[derive(Debug)]
struct Link {
    device: DeviceKey,
    scanner: ScannerKey,
    zone: String,
    samples: VecDeque<(Millis, i16)>,
    /// When this scanner first heard the device (after at least `keep_ms` of silence).
    heard_since: Millis,
}

impl Link {
    fn push(&mut self, at: Millis, level: i16, keep: Millis) {
        while let Some(&(t, _)) = self.samples.front() {
            if t + keep <= at || self.samples.len() >= MAX_SAMPLES {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        self.samples.push_back((at, level));
    }

    fn last_heard(&self) -> Millis {
        self.samples.back().map_or(0, |&(t, _)| t)
    }

    /// Count and (lower) median of the levels heard in `from..=to`, or `None` if none.
    fn median(&self, from: Millis, to: Millis) -> Option<(usize, i16)> {
        median_of(
            self.samples
                .iter()
                .filter(|&&(t, _)| t >= from && t <= to)
                .map(|&(_, level)| level),
        )
    }

    /// The levels heard in the window `from..=now` that ends with the newest sighting,
    /// newest first: it reads only that window (samples are kept in time order).
    fn recent(&self, from: Millis, now: Millis) -> impl Iterator<Item = i16> + '_ {
        self.samples
            .iter()
            .rev()
            .take_while(move |&&(t, _)| t >= from)
            .filter(move |&&(t, _)| t <= now)
            .map(|&(_, level)| level)
    }

    /// How many sightings `from..=now` holds, and whether their (lower) median is at least
    /// `level`, without sorting: that median is at least `level` when no more than
    /// `(n - 1) / 2` of them are below it. This runs for every sighting of a customer.
    fn median_at_least(&self, from: Millis, now: Millis, level: i16) -> (usize, bool) {
        let (mut n, mut below) = (0, 0);
        for heard in self.recent(from, now) {
            n += 1;
            below += usize::from(heard < level);
        }
        (n, n > 0 && below <= (n - 1) / 2)
    }

    /// Someone passing the door scanner closely: its loudest sighting of the door window
    /// (the nearest reading: the street, behind the glass, never gets that loud), with
    /// `door_sightings` in the window.
    fn at_door(&self, config: &PresenceConfig, now: Millis) -> bool {
        let from = now.saturating_sub(config.door_window_ms - 1);
        let (mut n, mut loudest) = (0, i16::MIN);
        for level in self.recent(from, now) {
            n += 1;
            loudest = loudest.max(level);
        }
        n >= config.door_sightings && loudest >= config.door_rssi
    }

    fn near(&self, config: &PresenceConfig, now: Millis) -> bool {
        let from = now.saturating_sub(config.smoothing_window_ms - 1);
        let (n, loud) = self.median_at_least(from, now, config.arrive_rssi);
        n >= config.min_sightings && loud
    }

    fn staying(&self, config: &PresenceConfig, now: Millis) -> bool {
        let from = now.saturating_sub(config.settle_window_ms - 1);
        let half = from + config.settle_window_ms / 2;
        // The cheap test first: most sightings stop here.
        let (n, loud) = self.median_at_least(from, now, config.settle_rssi);
        if n < config.settle_sightings || !loud {
            return false;
        }
        let Some((_, median)) = self.median(from, now) else {
            return false;
        };
        // Heard across the whole window, not in one burst, and not moving away.
        let (Some((_, early)), Some((_, late))) =
            (self.median(from, half - 1), self.median(half, now))
        else {
            return false;
        };
        if late < early - config.settle_recede_db {
            return false;
        }
        // Louder than before: than the quietest settle-window stretch heard before this
        // window, and, for a device first heard less than a window before it, than the level
        // it approached from.
        let step = config.settle_window_ms;
        let mut before = early;
        if self.heard_since + step > from
            && let Some(first) = self.approached_from(config)
        {
            before = before.min(first);
        }
        let mut t = from.saturating_sub(config.approach_window_ms);
        while t + step <= from {
            if let Some((n, m)) = self.median(t, t + step - 1)
                && n >= 2
            {
                before = before.min(m);
            }
            t += step;
        }
        median >= before + config.approach_rise_db
    }

    /// The level a newly heard device approached from: its first two sightings' (lower)
    /// median, or `leave_rssi` if that lies within [`EDGE_OF_RANGE_DB`] of it: first heard
    /// at the edge of range, it came from out of range. (Someone who appears loud, a phone
    /// just switched on or a passer-by first heard near the glass, proves no approach.)
    fn approached_from(&self, config: &PresenceConfig) -> Option<i16> {
        let (_, first) = median_of(self.samples.iter().take(2).map(|&(_, level)| level))?;
        Some(if first <= config.leave_rssi + EDGE_OF_RANGE_DB {
            config.leave_rssi
        } else {
            first
        })
    }

    fn still_near(&self, config: &PresenceConfig, now: Millis) -> bool {
        let from = now.saturating_sub(config.smoothing_window_ms - 1);
        self.median_at_least(from, now, config.leave_rssi).1
    }

    fn short_median(&self, config: &PresenceConfig, now: Millis) -> Option<i16> {
        let from = now.saturating_sub(config.smoothing_window_ms - 1);
        median_of(self.recent(from, now)).map(|(_, m)| m)
    }
}

/// Count and (lower) median of at most [`MAX_SAMPLES`] levels, or `None` if none. The lower
/// median for even counts: the conservative choice for arrivals.
fn median_of(levels: impl Iterator<Item = i16>) -> Option<(usize, i16)> {
    let mut values = [0i16; MAX_SAMPLES];
    let mut n = 0;
    for (slot, level) in values.iter_mut().zip(levels) {
        *slot = level;
        n += 1;
    }
    let values = &mut values[..n];
    values.sort_unstable();
    (n > 0).then(|| (n, values[(n - 1) / 2]))
}

#[derive(Debug, Default)]
struct Track {
    links: Vec<Link>,
    visit: Option<Visit>,
    /// When a door scanner last heard one of the customer's devices pass close.
    passed_door_at: Option<Millis>,
}

/// The link of this sighting among a customer's, added if new.
fn link<'t>(links: &'t mut Vec<Link>, sighting: &Sighting) -> &'t mut Link {
    let i = match links
        .iter()
        .position(|l| l.device == sighting.device && l.scanner == sighting.scanner)
    {
        Some(i) => i,
        None if links.len() < MAX_LINKS => {
            links.push(Link {
                device: sighting.device,
                scanner: sighting.scanner,
                zone: String::new(),
                samples: VecDeque::new(),
                heard_since: sighting.at,
            });
            links.len() - 1
        }
        None => {
            let (i, quietest) = links
                .iter_mut()
                .enumerate()
                .min_by_key(|(_, l)| l.last_heard())
                .expect("MAX_LINKS > 0");
            quietest.device = sighting.device;
            quietest.scanner = sighting.scanner;
            quietest.samples.clear();
            quietest.heard_since = sighting.at;
            i
        }
    };
    let link = &mut links[i];
    if link.zone != sighting.zone {
        link.zone = sighting.zone.to_string();
    }
    link
}

/// The zone a present customer should be in now: the current one, unless another zone's
/// loudest link has led it by the margin (or the current zone hears nothing) for the dwell.
/// Returns the zone to move to.
fn zone_move(
    links: &[Link],
    visit: &mut Visit,
    config: &PresenceConfig,
    now: Millis,
) -> Option<String> {
    // One scanner (or all in one zone): nothing to decide.
    if links.iter().all(|l| l.zone == visit.zone) {
        visit.next_zone = None;
        return None;
    }
    let mut current: Option<i16> = None;
    let mut best: Option<(&str, i16)> = None;
    for link in links {
        let Some(level) = link.short_median(config, now) else {
            continue;
        };
        if link.zone == visit.zone {
            current = Some(current.map_or(level, |c| c.max(level)));
        } else if best.is_none_or(|(_, b)| level > b) {
            best = Some((&link.zone, level));
        }
    }
    let leader = best.filter(|&(_, level)| {
        current.is_none_or(|c| level >= c.saturating_add(config.zone_margin_db))
    });
    match (leader, &visit.next_zone) {
        (None, _) => {
            visit.next_zone = None;
            None
        }
        (Some((zone, _)), Some((next, since))) if next == zone => {
            (now >= since + config.zone_dwell_ms).then(|| zone.to_string())
        }
        (Some((zone, _)), _) => {
            visit.next_zone = Some((zone.to_string(), now));
            None
        }
    }
}

/// Tracks every enrolled customer currently heard; strangers never get here.
pub struct PresenceTracker {
    config: PresenceConfig,
    tracks: FxHashMap<CustomerId, Track>,
    /// When a door scanner was last heard (anything, not only customers).
    door_heard_at: Option<Millis>,
}

impl PresenceTracker {
    pub fn new(config: PresenceConfig) -> Self {
        PresenceTracker {
            config,
            tracks: FxHashMap::default(),
            door_heard_at: None,
        }
    }

    /// Notes that a door scanner heard something at `at`: it is there and working.
    pub fn door_heard(&mut self, at: Millis) {
        self.door_heard_at = Some(at);
    }

    fn door_watched(&self, now: Millis) -> bool {
        self.door_heard_at
            .is_some_and(|t| now < t.saturating_add(self.config.door_watch_ms))
    }

    /// Feeds one sighting; returns an arrival when it completes the evidence for one, or a
    /// zone change when it completes the evidence for that.
    pub fn observe(&mut self, sighting: &Sighting) -> Option<PresenceEvent> {
        let at = sighting.at;
        let door_watched = self.door_watched(at);
        let config = &self.config;
        let track = self.tracks.entry(sighting.customer).or_default();
        let link = link(&mut track.links, sighting);
        let level = sighting.level();
        link.push(at, level, config.keep_ms());
        if sighting.role == ScannerRole::Door && level >= config.door_pass_rssi {
            track.passed_door_at = Some(at);
        }
        let may_stay = !door_watched
            || track
                .passed_door_at
                .is_some_and(|t| at <= t + config.approach_window_ms);
        match &mut track.visit {
            Some(visit) => {
                if at >= visit.last_near && link.still_near(config, at) {
                    visit.last_near = at;
                }
                let zone = zone_move(&track.links, visit, config, at)?;
                let from_zone = std::mem::replace(&mut visit.zone, zone);
                visit.next_zone = None;
                Some(PresenceEvent::ZoneChanged(ZoneChanged {
                    visit_id: visit.id,
                    customer: sighting.customer,
                    from_zone,
                    zone: visit.zone.clone(),
                    at_ms: at,
                }))
            }
            None if match sighting.role {
                ScannerRole::Door => link.at_door(config, at),
                ScannerRole::Room => {
                    link.near(config, at) || (may_stay && link.staying(config, at))
                }
            } =>
            {
                let visit = Visit {
                    id: new_visit_id(at),
                    arrived_at: at,
                    last_near: at,
                    zone: sighting.zone.to_string(),
                    next_zone: None,
                };
                let event = CustomerArrived {
                    visit_id: visit.id,
                    customer: sighting.customer,
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
        let keep = config.keep_ms();
        let mut events = Vec::new();
        self.tracks.retain(|&customer, track| {
            track.links.retain(|l| l.last_heard() + keep > now);
            match &track.visit {
                Some(visit) => {
                    let absence = if visit.last_near - visit.arrived_at >= config.seated_after_ms {
                        config.seated_absence_ms.max(config.absence_ms)
                    } else {
                        config.absence_ms
                    };
                    if now < visit.last_near + absence {
                        return true;
                    }
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
                None => !track.links.is_empty(),
            }
        });
        events.sort_by_key(|e| match e {
            PresenceEvent::CustomerLeft(left) => (left.left_at_ms, left.customer),
            PresenceEvent::CustomerArrived(a) => (a.arrived_at_ms, a.customer),
            PresenceEvent::ZoneChanged(z) => (z.at_ms, z.customer),
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
                links: Vec::new(),
                visit: Some(Visit {
                    id: visit_id,
                    arrived_at,
                    last_near: stopped_at.max(arrived_at),
                    zone: zone.to_string(),
                    next_zone: None,
                }),
                passed_door_at: None,
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
