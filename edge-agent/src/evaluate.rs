//! Presence judged against ground truth: a street café modelled from radio and pedestrian
//! physics, run through the real [`Pipeline`] on default settings and scored as staff
//! would score it (was a regular announced soon after coming in, once, and never for
//! walking past the window?). Separate from the demo's simulator (`simulate.rs`), which
//! only needs plausible traffic; this one needs a plausible radio.
//!
//! The model, with the published figures it rests on:
//! - **Path loss**: log-distance, `P(d) = P(1 m) − 10·n·log10(d)`, with `P(1 m)` = −59 dBm
//!   (the iBeacon calibration of a 0 dBm-class tag or phone) and `n` = 2.2, within the
//!   2.0–3.0 measured for BLE in furnished rooms; each advertiser is off its calibration by
//!   a few dB (σ = 2 dB).
//! - **Fading**: each advertising event is heard on one of the three advertising channels
//!   with its own small-scale fading: Rician with K = 3 dB (a line-of-sight room with many
//!   reflectors), so consecutive packets of a standing device differ by several dB.
//! - **Body shadowing**: the wearer's body between device and box costs 10–20 dB at
//!   2.4 GHz (a phone in a back pocket or a backpack while walking towards the box, in a
//!   front pocket while walking away); each other person between (a queue) about 4 dB.
//! - **Glazing**: the shop front's double glazing, 6 dB (coated low-e glass measures much
//!   more; plain glass less), between the box and everyone outside.
//! - **Loss**: 10 % of packets lost to collisions and Wi-Fi; nothing below −96 dBm.
//! - **Pedestrians**: 1.2 m/s inside, 1.3 m/s passing by; queues of up to three; 45 %
//!   take away, the others sit at a table 3 to 8 m from the box for 8 to 40 minutes (and
//!   two in five bring their cup back to the counter on the way out);
//!   passers-by behind the glass 1.5 to 3 m outside the front; bus waiters standing there
//!   for 4 to 15 minutes. Every one of them is an enrolled customer (the worst case for
//!   false alerts), with a tag (1 or 2 Hz) or a phone app (1 Hz, its address rotating every
//!   15 minutes), some with both.

use std::fmt;

use tastesync_shared::TagId;

use crate::Millis;
use crate::events::PresenceEvent;
use crate::pipeline::{Advertisement, Pipeline, Scanner};
use crate::presence::{PresenceConfig, ScannerRole};
use crate::resolve::{CustomerId, IndexSnapshot};
use crate::simulate::{Rng, ibeacon_advertisement};

const UUID: [u8; 16] = [
    0x5a, 0x1e, 0x0e, 0x7a, 0x11, 0xca, 0x4f, 0xe0, 0x9b, 0x2e, 0x3d, 0x6c, 0x7f, 0x40, 0x81, 0x92,
];
/// The box stands by the till, at the origin; the shop front (glass) is the line x = 7.5 m,
/// the door at (7.5, 3).
const FRONT_X: f64 = 7.5;
const DOOR: (f64, f64) = (7.5, 3.0);
const TILL: (f64, f64) = (0.8, 0.0);
const TABLES: [(f64, f64); 6] = [
    (2.5, 2.5),
    (3.5, -2.5),
    (4.5, 3.0),
    (5.5, -3.0),
    (6.5, 2.0),
    (7.0, -1.5),
];

/// One evaluation run's settings.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    /// Simulated opening time during which people come.
    pub minutes: u64,
    pub customers_per_hour: f64,
    pub walk_bys_per_hour: f64,
    pub waiters_per_hour: f64,
    pub radio: Radio,
    pub layout: Layout,
}

/// The radio model's published-range parameters, to check a result holds across them.
#[derive(Debug, Clone, Copy)]
pub struct Radio {
    /// Log-distance path-loss exponent: 2.0 (open room) to 3.0 (crowded, furnished).
    pub path_loss_exponent: f64,
    /// The shop front's loss, dB: plain glass 2-3, double glazing about 6, coated more.
    pub glazing_db: f64,
}

impl Radio {
    pub const TYPICAL: Radio = Radio {
        path_loss_exponent: 2.2,
        glazing_db: 6.0,
    };
}

impl Scenario {
    /// The suite's: an hour of a busy café.
    pub fn small(seed: u64) -> Scenario {
        Scenario {
            seed,
            minutes: 60,
            customers_per_hour: 40.0,
            walk_bys_per_hour: 120.0,
            waiters_per_hour: 6.0,
            radio: Radio::TYPICAL,
            layout: Layout::TILL,
        }
    }

    /// The benchmark's: a day of a busy café.
    pub fn day(seed: u64) -> Scenario {
        Scenario {
            minutes: 10 * 60,
            ..Scenario::small(seed)
        }
    }
}

/// What a person is doing at the café, with the ground truth.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// Comes in at `entered` (crossing the door) and leaves at `exited`.
    Visit { entered: Millis, exited: Millis },
    /// Never comes in: walks past, or waits for the bus, behind the glass.
    Outside,
}

/// Where a device is carried, which decides how much of the wearer's body is between it
/// and the box: `(facing the box, back to it)` in dB.
#[derive(Debug, Clone, Copy)]
enum Carried {
    Hand,
    FrontPocket,
    Backpack,
}

impl Carried {
    fn body_loss_db(self, facing_scanner: bool) -> f64 {
        match (self, facing_scanner) {
            (Carried::Hand, _) => 1.0,
            (Carried::FrontPocket, true) => 3.0,
            (Carried::FrontPocket, false) => 14.0,
            (Carried::Backpack, true) => 16.0,
            (Carried::Backpack, false) => 4.0,
        }
    }
}

#[derive(Debug, Clone)]
struct Device {
    tag: TagId,
    interval_ms: Millis,
    carried: Carried,
    /// Off its calibration by this much.
    offset_db: f64,
}

/// A stretch of a person's path: from `from` at `t0` to `to` at `t1` (standing still if
/// equal), with this many other people between them and the box.
#[derive(Debug, Clone, Copy)]
struct Leg {
    t0: Millis,
    t1: Millis,
    from: (f64, f64),
    to: (f64, f64),
    people_between: u8,
    /// For a stop: whether the person faces the box.
    facing_box: bool,
}

#[derive(Debug, Clone)]
struct Person {
    customer: CustomerId,
    role: Role,
    legs: Vec<Leg>,
    devices: Vec<Device>,
}

impl Person {
    /// Position, the direction faced and people between them and the till at `t`, or `None`
    /// outside the person's time.
    fn at(&self, t: Millis) -> Option<Whereabouts> {
        let leg = self.legs.iter().find(|l| l.t0 <= t && t < l.t1)?;
        let f = (t - leg.t0) as f64 / (leg.t1 - leg.t0).max(1) as f64;
        let pos = (
            leg.from.0 + (leg.to.0 - leg.from.0) * f,
            leg.from.1 + (leg.to.1 - leg.from.1) * f,
        );
        let moving = (leg.to.0 - leg.from.0, leg.to.1 - leg.from.1);
        let heading = if moving.0.abs() + moving.1.abs() < 1e-9 {
            // Standing: towards the box by the till, or away from it.
            let sign = if leg.facing_box { 1.0 } else { -1.0 };
            (-sign * pos.0, -sign * pos.1)
        } else {
            moving
        };
        Some((pos, heading, leg.people_between))
    }

    fn outside(&self, t: Millis) -> bool {
        match self.role {
            Role::Visit { entered, exited } => t < entered || t >= exited,
            Role::Outside => true,
        }
    }
}

/// Where someone is: position, the direction they face, people between them and the till.
type Whereabouts = ((f64, f64), (f64, f64), u8);

/// Builds paths leg by leg at walking speed.
struct Walk {
    t: Millis,
    at: (f64, f64),
    legs: Vec<Leg>,
}

impl Walk {
    fn new(t: Millis, at: (f64, f64)) -> Walk {
        Walk {
            t,
            at,
            legs: Vec::new(),
        }
    }

    fn to(&mut self, to: (f64, f64), speed: f64) -> Millis {
        let d = ((to.0 - self.at.0).powi(2) + (to.1 - self.at.1).powi(2)).sqrt();
        let t1 = self.t + ((d / speed) * 1000.0) as Millis + 1;
        self.legs.push(Leg {
            t0: self.t,
            t1,
            from: self.at,
            to,
            people_between: 0,
            facing_box: true,
        });
        (self.t, self.at) = (t1, to);
        t1
    }

    fn stay(&mut self, ms: Millis, people_between: u8, facing_box: bool) {
        self.legs.push(Leg {
            t0: self.t,
            t1: self.t + ms,
            from: self.at,
            to: self.at,
            people_between,
            facing_box,
        });
        self.t += ms;
    }
}

fn uniform(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn gaussian(rng: &mut Rng) -> f64 {
    let u = uniform(rng).max(1e-12);
    let v = uniform(rng);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn between(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * uniform(rng)
}

/// Exponential gaps of a Poisson process with `per_hour`, in ms.
fn arrivals(rng: &mut Rng, per_hour: f64, until: Millis) -> Vec<Millis> {
    let mut out = Vec::new();
    let mut t = 0.0;
    loop {
        t += -uniform(rng).max(1e-12).ln() * 3_600_000.0 / per_hour;
        if t as Millis >= until {
            return out;
        }
        out.push(t as Millis);
    }
}

fn devices(rng: &mut Rng, first_minor: u16) -> Vec<Device> {
    let tag = |minor: u16| TagId::IBeacon {
        uuid: UUID,
        major: 7,
        minor,
    };
    let carried = |rng: &mut Rng, hand: u64, pocket: u64| match rng.range(0, 99) as u64 {
        p if p < hand => Carried::Hand,
        p if p < hand + pocket => Carried::FrontPocket,
        _ => Carried::Backpack,
    };
    let mut out = Vec::new();
    let kind = rng.range(0, 99);
    if kind < 80 {
        // A loyalty tag on the keys: 1 Hz, a fifth of them 2 Hz.
        out.push(Device {
            tag: tag(first_minor),
            interval_ms: if rng.chance(20) { 500 } else { 1000 },
            carried: carried(rng, 15, 45),
            offset_db: 2.0 * gaussian(rng),
        });
    }
    if kind >= 60 {
        // The app on a phone.
        out.push(Device {
            tag: tag(first_minor + 1),
            interval_ms: 1000,
            carried: carried(rng, 25, 55),
            offset_db: 2.0 * gaussian(rng),
        });
    }
    out
}

fn people(scenario: &Scenario) -> Vec<Person> {
    let mut rng = Rng::new(scenario.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let until = scenario.minutes * 60_000;
    let mut people = Vec::new();
    let mut next_minor = 1u16;
    let mut customer = |people: &mut Vec<Person>, rng: &mut Rng, role, walk: Walk| {
        let devices = devices(rng, next_minor);
        next_minor += 2;
        people.push(Person {
            customer: CustomerId(people.len() as i64 + 1),
            role,
            legs: walk.legs,
            devices,
        });
    };
    // Queue: when the till is next free.
    let mut till_free_at: Millis = 0;
    for t0 in arrivals(&mut rng, scenario.customers_per_hour, until) {
        let side = if rng.chance(50) { 1.0 } else { -1.0 };
        let mut walk = Walk::new(t0, (FRONT_X + 2.0, DOOR.1 + side * 6.0));
        let entered = walk.to(DOOR, 1.3);
        let ahead = ((till_free_at.saturating_sub(entered)) / 45_000).min(3) as u8;
        let queue_spot = (TILL.0 + 0.8 * (f64::from(ahead) + 1.0), 0.3);
        walk.to(queue_spot, 1.2);
        let wait = till_free_at.saturating_sub(walk.t);
        walk.stay(wait, ahead.saturating_sub(1), true);
        walk.to(TILL, 1.0);
        let ordering = rng.range(25_000, 60_000) as Millis;
        walk.stay(ordering, 0, true);
        till_free_at = walk.t;
        if rng.chance(55) {
            let table = TABLES[rng.range(0, TABLES.len() as i64 - 1) as usize];
            walk.to(table, 1.0);
            let clutter = rng.range(0, 2) as u8;
            let facing = rng.chance(50);
            walk.stay(
                rng.range(8 * 60_000, 40 * 60_000) as Millis,
                clutter,
                facing,
            );
            if rng.chance(40) {
                // Brings the cup back to the counter on the way out.
                walk.to((TILL.0 + 0.7, 1.2), 1.0);
                walk.stay(rng.range(3_000, 8_000) as Millis, 0, true);
            }
        }
        let exited = walk.to(DOOR, 1.2);
        walk.to((FRONT_X + 2.0, DOOR.1 - side * 6.0), 1.3);
        customer(&mut people, &mut rng, Role::Visit { entered, exited }, walk);
    }
    for t0 in arrivals(&mut rng, scenario.walk_bys_per_hour, until) {
        let x = FRONT_X + between(&mut rng, 1.5, 3.0);
        let side = if rng.chance(50) { 1.0 } else { -1.0 };
        let mut walk = Walk::new(t0, (x, -15.0 * side));
        walk.to((x, 15.0 * side), between(&mut rng, 1.1, 1.5));
        customer(&mut people, &mut rng, Role::Outside, walk);
    }
    for t0 in arrivals(&mut rng, scenario.waiters_per_hour, until) {
        let spot = (
            FRONT_X + between(&mut rng, 1.5, 2.5),
            between(&mut rng, -4.0, 4.0),
        );
        let mut walk = Walk::new(t0, (spot.0, spot.1 - 12.0));
        walk.to(spot, 1.3);
        let facing = rng.chance(50);
        walk.stay(rng.range(4 * 60_000, 15 * 60_000) as Millis, 0, facing);
        walk.to((spot.0, spot.1 + 12.0), 1.3);
        customer(&mut people, &mut rng, Role::Outside, walk);
    }
    people
}

/// Where the shop's scanners stand: the box by the till, and perhaps more.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Each scanner's name, zone and position (the first is the box by the till).
    pub scanners: &'static [(&'static str, &'static str, ScannerRole, (f64, f64))],
}

impl Layout {
    /// One box, by the till.
    pub const TILL: Layout = Layout {
        scanners: &[("local", "counter", ScannerRole::Room, (0.0, 0.0))],
    };
    /// The box by the till and a scanner just inside the door, on the way in.
    pub const TILL_AND_DOOR: Layout = Layout {
        scanners: &[
            ("local", "counter", ScannerRole::Room, (0.0, 0.0)),
            ("box:door", "door", ScannerRole::Door, DOOR_SCANNER),
        ],
    };
}

/// Just inside the door, by the path to the counter.
const DOOR_SCANNER: (f64, f64) = (6.6, 2.6);

/// Every packet the shop's scanners hear, in time order: each scanner hears each packet
/// with its own fading and loss.
fn radio(people: &[Person], seed: u64, model: Radio, layout: Layout) -> Vec<Advertisement> {
    const K: f64 = 1.995; // Rician K-factor 3 dB
    let los = (K / (K + 1.0)).sqrt();
    let scatter = (1.0 / (2.0 * (K + 1.0))).sqrt();
    let mut rng = Rng::new(seed ^ 0x005e_ed0f_ad10);
    let scanners: Vec<_> = layout
        .scanners
        .iter()
        .map(|&(name, zone, role, at)| (Scanner::new(name, zone, role), at))
        .collect();
    let mut heard = Vec::new();
    for person in people {
        let (start, end) = (
            person.legs.first().map_or(0, |l| l.t0),
            person.legs.last().map_or(0, |l| l.t1),
        );
        for (n, device) in person.devices.iter().enumerate() {
            let TagId::IBeacon { uuid, major, minor } = device.tag else {
                continue;
            };
            let data = ibeacon_advertisement(&uuid, major, minor);
            let address = |t: Millis| {
                // Phones rotate their private address every 15 minutes; tags keep theirs.
                let epoch = if n == 1 { (t / 900_000) as u8 } else { 0 };
                let id = person.customer.0 as u16;
                [
                    0xc0 | (n as u8),
                    epoch,
                    (id >> 8) as u8,
                    id as u8,
                    0x5a,
                    0x01,
                ]
            };
            let mut t = start + rng.range(0, device.interval_ms as i64) as Millis;
            while t < end {
                // advDelay: 0 to 10 ms added to every interval.
                t += device.interval_ms + rng.range(0, 10) as Millis;
                let Some((pos, heading, people_between)) = person.at(t) else {
                    continue;
                };
                for (i, (scanner, at)) in scanners.iter().enumerate() {
                    if rng.chance(10) {
                        continue;
                    }
                    let (dx, dy) = (at.0 - pos.0, at.1 - pos.1);
                    let d = (dx * dx + dy * dy).sqrt().max(0.3);
                    let facing = heading.0 * dx + heading.1 * dy > 0.0;
                    let (x, y) = (
                        los + scatter * gaussian(&mut rng),
                        scatter * gaussian(&mut rng),
                    );
                    let fading_db = 10.0 * (x * x + y * y).max(1e-6).log10();
                    let glass_db = if person.outside(t) && pos.0 > FRONT_X {
                        model.glazing_db
                    } else {
                        0.0
                    };
                    // The queue stands between its people and the till only.
                    let queue_db = if i == 0 {
                        4.0 * f64::from(people_between)
                    } else {
                        0.0
                    };
                    let rssi = -59.0 - 10.0 * model.path_loss_exponent * d.log10()
                        + device.offset_db
                        + fading_db
                        - device.carried.body_loss_db(facing)
                        - queue_db
                        - glass_db;
                    if rssi < -96.0 {
                        continue;
                    }
                    heard.push(Advertisement {
                        at_ms: t,
                        address: address(t),
                        rssi: rssi.round() as i16,
                        data: data.clone(),
                        scanner: scanner.clone(),
                    });
                }
            }
        }
    }
    heard.sort_by_key(|ad| ad.at_ms);
    heard
}

/// The figures the independent evaluation reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    pub visits: usize,
    pub outsiders: usize,
    /// Share of visits announced within 30 s of coming in.
    pub recall_30s: f64,
    /// Per 100 visits: announced 30 to 180 s after coming in.
    pub late_per_100: f64,
    /// Per 100 visits: not announced within 180 s (or never).
    pub missed_per_100: f64,
    /// Per 100 visits: a second "is here" during one visit.
    pub split_per_100: f64,
    /// Per 100 visits: announcements of people who never came in.
    pub false_per_100: f64,
    pub alert_p50_s: f64,
    pub alert_p90_s: f64,
    /// Median |recorded departure − real one|, seconds.
    pub departure_error_p50_s: f64,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} visits, {} passers-by and waiters: recall within 30 s {:.1} %, late {:.1}, \
             missed {:.1}, split {:.1}, false {:.1} per 100 visits; alert p50 {:.1} s, p90 {:.1} s; \
             departure error p50 {:.0} s",
            self.visits,
            self.outsiders,
            self.recall_30s * 100.0,
            self.late_per_100,
            self.missed_per_100,
            self.split_per_100,
            self.false_per_100,
            self.alert_p50_s,
            self.alert_p90_s,
            self.departure_error_p50_s
        )
    }
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// Runs `scenario` through a pipeline with `presence` settings and scores it.
pub fn evaluate(scenario: &Scenario, presence: &PresenceConfig) -> Figures {
    let people = people(scenario);
    let mut snapshot = IndexSnapshot::default();
    for person in &people {
        for device in &person.devices {
            snapshot.tags.push((device.tag, person.customer));
        }
    }
    let absence = presence.absence_ms;
    let mut pipeline = Pipeline::new(snapshot, presence.clone(), 1, 0);
    let mut events = Vec::new();
    let mut next_tick = 1_000;
    for ad in radio(&people, scenario.seed, scenario.radio, scenario.layout) {
        while next_tick <= ad.at_ms {
            pipeline.tick(next_tick, &mut events);
            next_tick += 1_000;
        }
        pipeline.process(&ad, &mut events);
    }
    let end = people
        .iter()
        .filter_map(|p| p.legs.last().map(|l| l.t1))
        .max()
        .unwrap_or(0);
    let longest = presence.seated_absence_ms.max(absence);
    while next_tick <= end + 2 * longest {
        pipeline.tick(next_tick, &mut events);
        next_tick += 1_000;
    }
    score(&people, &events, absence)
}

fn score(people: &[Person], events: &[PresenceEvent], absence: Millis) -> Figures {
    let mut arrivals: std::collections::HashMap<CustomerId, Vec<Millis>> = Default::default();
    let mut departures: std::collections::HashMap<CustomerId, Vec<Millis>> = Default::default();
    for event in events {
        match event {
            PresenceEvent::CustomerArrived(a) => arrivals
                .entry(a.customer)
                .or_default()
                .push(a.arrived_at_ms),
            PresenceEvent::CustomerLeft(l) => {
                departures.entry(l.customer).or_default().push(l.left_at_ms)
            }
            PresenceEvent::ZoneChanged(_) => {}
        }
    }
    let (mut visits, mut outsiders, mut on_time, mut late, mut missed) = (0, 0, 0, 0, 0);
    let (mut splits, mut false_alerts) = (0, 0);
    let (mut delays, mut departure_errors) = (Vec::new(), Vec::new());
    for person in people {
        let mine = arrivals.get(&person.customer).cloned().unwrap_or_default();
        match person.role {
            Role::Outside => {
                outsiders += 1;
                false_alerts += mine.len();
            }
            Role::Visit { entered, exited } => {
                visits += 1;
                let during: Vec<Millis> = mine
                    .iter()
                    .copied()
                    .filter(|&t| t + 60_000 >= entered && t <= exited + absence)
                    .collect();
                splits += during.len().saturating_sub(1);
                // Announced while still walking up to the door counts as at once.
                match during.first().map(|&t| t.saturating_sub(entered)) {
                    Some(delay) if delay <= 30_000 => {
                        on_time += 1;
                        delays.push(delay as f64 / 1000.0);
                    }
                    Some(delay) if delay <= 180_000 => {
                        late += 1;
                        delays.push(delay as f64 / 1000.0);
                    }
                    _ => missed += 1,
                }
                if let Some(left) = departures
                    .get(&person.customer)
                    .and_then(|d| d.iter().copied().rfind(|&t| t + 60_000 >= entered))
                {
                    departure_errors.push(left.abs_diff(exited) as f64 / 1000.0);
                }
            }
        }
    }
    let per_100 = |n: usize| 100.0 * n as f64 / visits.max(1) as f64;
    Figures {
        visits,
        outsiders,
        recall_30s: on_time as f64 / visits.max(1) as f64,
        late_per_100: per_100(late),
        missed_per_100: per_100(missed),
        split_per_100: per_100(splits),
        false_per_100: per_100(false_alerts),
        alert_p50_s: percentile(delays.clone(), 0.5),
        alert_p90_s: percentile(delays, 0.9),
        departure_error_p50_s: percentile(departure_errors, 0.5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenario_holds_visits_queues_seated_customers_and_passers_by() {
        let scenario = Scenario::small(1);
        let people = people(&scenario);
        let visits: Vec<_> = people
            .iter()
            .filter(|p| matches!(p.role, Role::Visit { .. }))
            .collect();
        assert!((25..=60).contains(&visits.len()), "{}", visits.len());
        let seated = visits
            .iter()
            .filter(|p| p.legs.iter().any(|l| l.t1 - l.t0 > 8 * 60_000))
            .count();
        assert!(seated * 3 > visits.len(), "about half sit: {seated}");
        let queued = visits
            .iter()
            .filter(|p| p.legs.iter().any(|l| l.people_between > 0))
            .count();
        assert!(queued > 0, "some queue behind others");
        assert!(people.len() > visits.len() + 50, "passers-by and waiters");
        assert!(
            people.iter().any(|p| p.devices.len() == 2),
            "some carry a tag and a phone"
        );
    }

    #[test]
    fn the_radio_is_strong_at_the_till_and_weak_behind_the_glass() {
        let people = people(&Scenario::small(2));
        let heard = radio(&people, 2, Radio::TYPICAL, Layout::TILL);
        let mut till = Vec::new();
        let mut outside = Vec::new();
        for ad in &heard {
            let minor = u16::from_be_bytes([ad.data[27], ad.data[28]]);
            let person = people
                .iter()
                .find(|p| {
                    p.devices
                        .iter()
                        .any(|d| matches!(d.tag, TagId::IBeacon { minor: m, .. } if m == minor))
                })
                .unwrap();
            let Some((pos, _, _)) = person.at(ad.at_ms) else {
                continue;
            };
            let d = (pos.0 * pos.0 + pos.1 * pos.1).sqrt();
            if d < 1.2 {
                till.push(f64::from(ad.rssi));
            } else if pos.0 > FRONT_X + 1.0 {
                outside.push(f64::from(ad.rssi));
            }
        }
        let (till, outside) = (percentile(till, 0.5), percentile(outside, 0.5));
        assert!((-72.0..=-55.0).contains(&till), "median at the till {till}");
        assert!(
            (-100.0..=-80.0).contains(&outside),
            "median outside {outside}"
        );
    }

    /// The default rules on four busy hours. Before per-device presence (issue 13) the same
    /// hours gave recall 83-87 %, p90 38-53 s and 4-7 splits per 100 visits, as the
    /// independent evaluation saw (83 %, 19.7 s, 4.4); the targets are recall >= 95 %,
    /// split + false <= 2 per 100 and p90 <= 10 s on the day-long benchmark; a single hour
    /// with a rush at the till (seed 4: a queue of three with phones in backpacks) misses
    /// more, hence the slack on recall here. These hours give p90 7.4-9.2 s (before the
    /// staying rule heard an approach from out of range, seed 4 gave 22 s).
    #[test]
    fn presence_announces_visits_soon_once_and_never_for_people_outside() {
        let mut all = Vec::new();
        for seed in 1..=4 {
            all.push(evaluate(&Scenario::small(seed), &PresenceConfig::default()));
        }
        let mean = |f: fn(&Figures) -> f64| all.iter().map(f).sum::<f64>() / all.len() as f64;
        let shown: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert!(
            mean(|f| f.recall_30s) >= 0.90,
            "recall within 30 s: {shown:#?}"
        );
        assert!(
            mean(|f| f.split_per_100 + f.false_per_100) <= 4.0,
            "splits and false alerts: {shown:#?}"
        );
        assert!(mean(|f| f.alert_p90_s) <= 10.0, "alert p90: {shown:#?}");
        assert!(
            mean(|f| f.departure_error_p50_s) <= 10.0,
            "departure time: {shown:#?}"
        );
    }

    /// A scanner by the door on the same four hours. The targets (recall >= 99 %, alert p90
    /// <= 3 s) are the day-long benchmark's; an hour of 30-40 visits varies more, hence the
    /// slack (one box alone gives p90 7-9 s here).
    #[test]
    fn a_scanner_by_the_door_announces_nearly_everyone_at_once() {
        let all: Vec<Figures> = (1..=4)
            .map(|seed| {
                let scenario = Scenario {
                    layout: Layout::TILL_AND_DOOR,
                    ..Scenario::small(seed)
                };
                evaluate(&scenario, &PresenceConfig::default())
            })
            .collect();
        let mean = |f: fn(&Figures) -> f64| all.iter().map(f).sum::<f64>() / all.len() as f64;
        let shown: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert!(mean(|f| f.recall_30s) >= 0.97, "recall: {shown:#?}");
        assert!(mean(|f| f.alert_p90_s) <= 6.0, "alert p90: {shown:#?}");
        assert!(
            mean(|f| f.split_per_100 + f.false_per_100) <= 3.0,
            "splits and false alerts: {shown:#?}"
        );
    }
}
