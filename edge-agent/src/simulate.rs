//! A simulated shop: the radio traffic of customers arriving, lingering and leaving, of
//! strangers' phones and beacons passing by, and of noise, for the demo, the benchmarks and
//! replay files for tests. Deterministic for a given seed.

use std::sync::Arc;

use tastesync_shared::eid::eid;

use crate::Millis;
use crate::pipeline::{Advertisement, Scanner};

/// A small, fast, seedable generator (xorshift64*); the simulation needs no crypto quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo + 1) as u64)) as i64
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.next_u64() as u8;
        }
        out
    }
}

/// What a simulated device broadcasts.
#[derive(Debug, Clone)]
pub enum Broadcast {
    /// Fixed advertising data (a loyalty tag, or a stranger's beacon or phone).
    Fixed(Vec<u8>),
    /// An Eddystone-EID phone app: the EID rotates with the clock.
    Eid {
        identity_key: [u8; 16],
        exponent: u8,
    },
}

impl Broadcast {
    fn data_at(&self, at_ms: Millis) -> Vec<u8> {
        match self {
            Broadcast::Fixed(data) => data.clone(),
            Broadcast::Eid {
                identity_key,
                exponent,
            } => eid_advertisement(&eid(identity_key, *exponent, (at_ms / 1000) as u32)),
        }
    }
}

/// Advertising data of an iBeacon.
pub fn ibeacon_advertisement(uuid: &[u8; 16], major: u16, minor: u16) -> Vec<u8> {
    let mut data = vec![0x02, 0x01, 0x06, 0x1a, 0xff, 0x4c, 0x00, 0x02, 0x15];
    data.extend_from_slice(uuid);
    data.extend_from_slice(&major.to_be_bytes());
    data.extend_from_slice(&minor.to_be_bytes());
    data.push(0xc5);
    data
}

/// Advertising data of an Eddystone-EID frame.
pub fn eid_advertisement(eid: &[u8; 8]) -> Vec<u8> {
    let mut data = vec![
        0x02, 0x01, 0x06, 0x03, 0x03, 0xaa, 0xfe, 0x0d, 0x16, 0xaa, 0xfe, 0x30, 0xf6,
    ];
    data.extend_from_slice(eid);
    data
}

/// Advertising data of an Eddystone-UID frame.
pub fn eddystone_uid_advertisement(namespace: &[u8; 10], instance: &[u8; 6]) -> Vec<u8> {
    let mut data = vec![
        0x02, 0x01, 0x06, 0x03, 0x03, 0xaa, 0xfe, 0x17, 0x16, 0xaa, 0xfe, 0x00, 0xe7,
    ];
    data.extend_from_slice(namespace);
    data.extend_from_slice(instance);
    data.extend_from_slice(&[0, 0]);
    data
}

/// A device in or around the shop.
#[derive(Debug, Clone)]
pub struct SimDevice {
    pub broadcast: Broadcast,
    /// Advertising interval in ms (phones ~100-300, tags ~1000).
    pub period_ms: Millis,
    /// Typical RSSI when inside the shop near the scanner.
    pub near_rssi: i16,
    /// For customers: visits come and go; strangers are always around, far away.
    pub visits: bool,
    address: [u8; 6],
    next_tx: Millis,
    visit: Option<(Millis, Millis)>,
    next_visit_at: Millis,
}

/// How customers come and go.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// A visit lasts between these (ms).
    pub stay_ms: (Millis, Millis),
    /// Between visits (ms).
    pub gap_ms: (Millis, Millis),
}

/// The simulated shop.
pub struct Simulation {
    devices: Vec<SimDevice>,
    rng: Rng,
    scanner: Arc<Scanner>,
    schedule: Schedule,
}

impl Simulation {
    pub fn new(seed: u64, zone: &str, schedule: Schedule) -> Simulation {
        Simulation {
            devices: Vec::new(),
            rng: Rng::new(seed),
            scanner: Scanner::local(zone),
            schedule,
        }
    }

    /// A customer who visits now and then, first arriving `first_visit_in_ms` from `start`.
    pub fn add_customer(
        &mut self,
        broadcast: Broadcast,
        period_ms: Millis,
        start: Millis,
        first_visit_in_ms: Millis,
    ) {
        let near_rssi = self.rng.range(-68, -58) as i16;
        self.push(
            broadcast,
            period_ms,
            near_rssi,
            true,
            start + first_visit_in_ms,
        );
    }

    /// `count` strangers' devices in range: phones with random addresses, other people's
    /// beacons, Apple continuity frames, and malformed data.
    pub fn add_strangers(&mut self, count: usize) {
        for i in 0..count {
            let data = match i % 5 {
                0 => ibeacon_advertisement(&self.rng.bytes(), self.rng.range(0, 65535) as u16, 1),
                1 => {
                    let mut d = vec![0x02, 0x01, 0x1a, 0x0a, 0xff, 0x4c, 0x00, 0x10, 0x05];
                    d.extend_from_slice(&self.rng.bytes::<4>()); // Apple "nearby" continuity
                    d
                }
                2 => eid_advertisement(&self.rng.bytes()),
                3 => eddystone_uid_advertisement(&self.rng.bytes(), &self.rng.bytes()),
                _ => {
                    let mut d = vec![0x1e, 0xff]; // declares more than it carries
                    d.extend_from_slice(&self.rng.bytes::<6>());
                    d
                }
            };
            let rssi = self.rng.range(-98, -80) as i16;
            let period = self.rng.range(100, 1000) as Millis;
            self.push(Broadcast::Fixed(data), period, rssi, false, 0);
        }
    }

    fn push(
        &mut self,
        broadcast: Broadcast,
        period_ms: Millis,
        near_rssi: i16,
        visits: bool,
        next_visit_at: Millis,
    ) {
        let mut address = self.rng.bytes::<6>();
        address[0] |= 0xc0; // random static address
        self.devices.push(SimDevice {
            broadcast,
            period_ms,
            near_rssi,
            visits,
            address,
            next_tx: self.rng.range(0, period_ms as i64) as Millis,
            visit: None,
            next_visit_at,
        });
    }

    /// Every advertisement heard with a time in `[from, to)`, in time order.
    pub fn advertisements_between(&mut self, from: Millis, to: Millis) -> Vec<Advertisement> {
        let mut out = Vec::new();
        for device in &mut self.devices {
            if device.next_tx < from {
                device.next_tx = from + self.rng.range(0, device.period_ms as i64) as Millis;
            }
            while device.next_tx < to {
                let at = device.next_tx;
                // Advertising intervals carry up to 10 ms of random delay (Core spec).
                device.next_tx += device.period_ms + self.rng.range(0, 10) as Millis;
                if let Some(rssi) = heard_rssi(device, at, &mut self.rng, self.schedule) {
                    out.push(Advertisement {
                        at_ms: at,
                        address: device.address,
                        rssi,
                        data: device.broadcast.data_at(at),
                        scanner: self.scanner.clone(),
                    });
                }
            }
        }
        out.sort_by_key(|ad| ad.at_ms);
        out
    }
}

/// The RSSI the scanner hears from `device` at `at`, or `None` if it is out of range.
fn heard_rssi(
    device: &mut SimDevice,
    at: Millis,
    rng: &mut Rng,
    schedule: Schedule,
) -> Option<i16> {
    if !device.visits {
        return Some(device.near_rssi + rng.range(-4, 4) as i16);
    }
    if device.visit.is_none() && at >= device.next_visit_at {
        let stay = rng.range(schedule.stay_ms.0 as i64, schedule.stay_ms.1 as i64) as Millis;
        device.visit = Some((at, at + stay));
    }
    match device.visit {
        Some((_, leave)) if at >= leave => {
            let gap = rng.range(schedule.gap_ms.0 as i64, schedule.gap_ms.1 as i64) as Millis;
            device.visit = None;
            device.next_visit_at = at + gap;
            None
        }
        Some(_) if rng.chance(15) => Some(-97), // a body between phone and scanner
        Some(_) => Some(device.near_rssi + rng.range(-6, 6) as i16),
        // Walking past outside: faint, and mostly not heard at all.
        None if rng.chance(10) => Some(-96 + rng.range(-2, 2) as i16),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_come_and_go_and_strangers_stay_far() {
        let schedule = Schedule {
            stay_ms: (20_000, 30_000),
            gap_ms: (40_000, 50_000),
        };
        let mut sim = Simulation::new(1, "main", schedule);
        sim.add_customer(
            Broadcast::Fixed(ibeacon_advertisement(&[0xab; 16], 1, 1)),
            1000,
            0,
            5_000,
        );
        sim.add_strangers(10);
        let ads = sim.advertisements_between(0, 120_000);
        assert!(ads.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        let is_customer = |a: &&Advertisement| a.data.get(9..25) == Some(&[0xab; 16][..]);
        assert!(
            ads.iter().filter(is_customer).any(|a| a.rssi > -75),
            "the customer comes near"
        );
        assert!(
            ads.iter()
                .filter(|a| !is_customer(a))
                .all(|a| a.rssi <= -76)
        );
    }
}
