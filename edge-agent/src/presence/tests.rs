use super::*;

const ZONE: &str = "counter";

/// Deterministic noise for repeatable tests.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in -spread..=spread.
    fn jitter(&mut self, spread: i16) -> i16 {
        (self.next() % (2 * spread as u64 + 1)) as i16 - spread
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A sighting of customer `customer`'s device `device`, calibrated at the reference.
fn sighting(customer: i64, device: u64, rssi: i16, at: Millis) -> Sighting<'static> {
    Sighting {
        customer: CustomerId(customer),
        device: DeviceKey(device),
        scanner: ScannerKey(0),
        role: ScannerRole::Room,
        zone: ZONE,
        rssi,
        calibrated_1m: None,
        at,
    }
}

impl<'a> Sighting<'a> {
    fn at_ms(self, at: Millis) -> Sighting<'a> {
        Sighting { at, ..self }
    }
}

fn arrivals(events: &[PresenceEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, PresenceEvent::CustomerArrived(_)))
        .count()
}

/// Feeds sightings every `period` ms from `from` to `to` and ticks every second.
fn feed(
    tracker: &mut PresenceTracker,
    from: Millis,
    to: Millis,
    period: Millis,
    mut rssi: impl FnMut() -> i16,
) -> Vec<PresenceEvent> {
    let mut events = Vec::new();
    let mut t = from;
    while t < to {
        events.extend(tracker.observe(&sighting(1, 1, rssi(), t)));
        if t % 1000 < period {
            events.extend(tracker.tick(t));
        }
        t += period;
    }
    events
}

#[test]
fn one_arrival_per_visit_from_a_chatty_phone() {
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let events = feed(&mut tracker, 0, 120_000, 100, || -60);
    assert_eq!(arrivals(&events), 1, "{events:?}");
    match &events[0] {
        PresenceEvent::CustomerArrived(a) => {
            assert_eq!(
                a.arrived_at_ms, 200,
                "third sighting completes the evidence"
            );
            assert_eq!(a.zone, ZONE);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(tracker.present(), 1);
}

#[test]
fn jittery_rssi_with_dropouts_does_not_flap() {
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let mut noise = Noise(42);
    // Around -70 dBm, ±8 dB jitter, and a fifth of the readings knocked down to -98 dBm by
    // bodies in the way, for five minutes at 10 Hz.
    let events = feed(&mut tracker, 0, 300_000, 100, || {
        if noise.chance(20) {
            -98
        } else {
            -70 + noise.jitter(8)
        }
    });
    assert_eq!(arrivals(&events), 1, "{events:?}");
    assert_eq!(
        events.len(),
        1,
        "no departure while the phone is near: {events:?}"
    );
}

#[test]
fn a_far_device_with_lucky_spikes_never_arrives() {
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let mut noise = Noise(7);
    // Someone across the street at -88 dBm; one reading in ten reflects up to -55 dBm.
    let events = feed(&mut tracker, 0, 300_000, 100, || {
        if noise.chance(10) {
            -55
        } else {
            -88 + noise.jitter(3)
        }
    });
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn departure_after_the_absence_and_dwell_excludes_it() {
    let config = PresenceConfig::default();
    let absence = config.absence_ms;
    let mut tracker = PresenceTracker::new(config);
    let events = feed(&mut tracker, 10_000, 70_000, 1000, || -65);
    assert_eq!(arrivals(&events), 1);
    let last_near = 69_000;
    assert!(tracker.tick(last_near + absence - 1).is_empty(), "not yet");
    let left = tracker.tick(last_near + absence);
    match left.as_slice() {
        [PresenceEvent::CustomerLeft(l)] => {
            assert_eq!(l.arrived_at_ms, 12_000);
            assert_eq!(l.left_at_ms, last_near);
            assert_eq!(l.dwell_s, 57);
        }
        other => panic!("expected one departure, got {other:?}"),
    }
    assert_eq!(tracker.tracked(), 0, "a departed customer's state is freed");
}

#[test]
fn short_gaps_keep_the_visit_and_re_arrival_starts_a_new_one() {
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let mut events = feed(&mut tracker, 0, 30_000, 1000, || -65);
    // Stepped out for 50 s (shorter than the 60 s absence): same visit.
    events.extend(feed(&mut tracker, 80_000, 100_000, 1000, || -65));
    assert_eq!(arrivals(&events), 1, "{events:?}");
    // Gone for good: departure (the visit had lasted long enough to count as seated), then
    // back later: a new visit.
    events.extend(tracker.tick(99_000 + PresenceConfig::default().seated_absence_ms));
    events.extend(feed(&mut tracker, 400_000, 401_000, 500, || -65));
    assert_eq!(
        arrivals(&events),
        1,
        "two sightings are not enough evidence"
    );
    events.extend(feed(&mut tracker, 401_000, 402_000, 500, || -65));
    assert_eq!(arrivals(&events), 2, "{events:?}");
    let ids: Vec<Uuid> = events
        .iter()
        .filter_map(|e| match e {
            PresenceEvent::CustomerArrived(a) => Some(a.visit_id),
            _ => None,
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn strangers_leave_no_state_behind() {
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    for i in 0..1000 {
        tracker.observe(&sighting(i, 1, -95, 1000));
    }
    // Forgotten once out of the longest window (the approach window).
    tracker.tick(1000 + PresenceConfig::default().approach_window_ms);
    assert_eq!(tracker.tracked(), 0);
}

#[test]
fn invalid_rules_are_explained() {
    let config = PresenceConfig {
        leave_rssi: -60,
        ..PresenceConfig::default()
    };
    assert!(config.validate().unwrap_err().contains("leave_rssi"));
    assert!(PresenceConfig::default().validate().is_ok());
}

#[test]
fn a_visit_resumed_after_a_clean_stop_goes_on_without_a_second_arrival() {
    let customer = CustomerId(1); // the one `feed` sights
    let visit = Uuid::now_v7();
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    // Arrived at 0, the box stopped cleanly at 20 s and is back at 25 s: heard near again.
    tracker.resume(customer, visit, ZONE, 0, 20_000);
    let events = feed(&mut tracker, 25_000, 40_000, 1_000, || -70);
    assert_eq!(arrivals(&events), 0, "{events:?}");
    assert_eq!(tracker.present(), 1);
    // Then gone: the visit ends, with the same id, its dwell counted from the arrival.
    let events = feed(&mut tracker, 40_000, 120_000, 1_000, || -100);
    let [PresenceEvent::CustomerLeft(left)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(left.visit_id, visit);
    // The median lets go a couple of seconds after the last near sighting at 39 s.
    assert!((39..=42).contains(&left.dwell_s), "{left:?}");
}

#[test]
fn a_resumed_visit_never_heard_again_ends_at_the_stop() {
    let customer = CustomerId(1);
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    tracker.resume(customer, Uuid::now_v7(), ZONE, 5_000, 20_000);
    let events = tracker.tick(20_000 + PresenceConfig::default().absence_ms);
    let [PresenceEvent::CustomerLeft(left)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!((left.left_at_ms, left.dwell_s), (20_000, 15));
}

/// A device of customer 1: its key, advertising period in ms, and level at a time.
type Advertiser<'a> = (u64, Millis, &'a mut dyn FnMut(Millis) -> i16);

/// Feeds several devices of customer 1, each `(device, period ms, level at t)`, ticking
/// every second; levels below -96 are not heard.
fn feed_devices(
    tracker: &mut PresenceTracker,
    from: Millis,
    to: Millis,
    devices: &mut [Advertiser],
) -> Vec<PresenceEvent> {
    let mut events = Vec::new();
    for t in (from..to).step_by(100) {
        for (device, period, level) in devices.iter_mut() {
            if t % *period == 0 {
                let rssi = level(t);
                if rssi >= -96 {
                    events.extend(tracker.observe(&sighting(1, *device, rssi, t)));
                }
            }
        }
        if t % 1000 == 0 {
            events.extend(tracker.tick(t));
        }
    }
    events
}

#[test]
fn a_weak_tag_does_not_outvote_a_strong_phone() {
    // The independent evaluation's case: a 2 Hz tag in a backpack at -93, a 1 Hz phone in
    // the hand at -70; pooled, the tag's readings made the median -93 and ended the visit.
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let mut noise = Noise(3);
    let mut tag = |_| -93 + noise.jitter(2);
    let mut phone = |_| -70;
    let events = feed_devices(
        &mut tracker,
        0,
        600_000,
        &mut [(1, 500, &mut tag), (2, 1000, &mut phone)],
    );
    assert_eq!(arrivals(&events), 1, "{events:?}");
    assert_eq!(
        events.len(),
        1,
        "no departure while the phone is near: {events:?}"
    );
    assert_eq!(tracker.present(), 1);
}

#[test]
fn a_customer_seated_at_the_far_table_keeps_one_visit() {
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let mut noise = Noise(11);
    // Orders at the till for 40 s, sits 30 minutes at the far table (around -92, most
    // packets lost, unheard for four minutes at a time while a group sits in between),
    // then brings the cup back past the till and leaves.
    let mut phone = |t: Millis| match t {
        0..40_000 => -62 + noise.jitter(3),
        40_000..1_840_000 if (t / 60_000) % 6 < 2 && noise.chance(40) => -92 + noise.jitter(4),
        40_000..1_840_000 => -120,
        1_840_000..1_850_000 => -68 + noise.jitter(3),
        _ => -120,
    };
    let events = feed_devices(&mut tracker, 0, 2_300_000, &mut [(1, 1000, &mut phone)]);
    assert_eq!(arrivals(&events), 1, "one visit, not two: {events:?}");
    let [_, PresenceEvent::CustomerLeft(left)] = events.as_slice() else {
        panic!("an arrival and a departure: {events:?}");
    };
    assert!(
        (1_845_000..=1_850_000).contains(&left.left_at_ms),
        "left when last heard: {left:?}"
    );
}

#[test]
fn a_passer_by_and_a_bus_waiter_behind_the_glass_are_not_announced() {
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let mut noise = Noise(5);
    // Walking past: from 15 m to 9 m and on, behind the glass (-86 at the closest).
    let mut walk_by = |t: Millis| {
        let y = -15.0 + 1.3 * (t as f64 / 1000.0);
        let d = (9.0f64 * 9.0 + y * y).sqrt();
        (-59.0 - 22.0 * d.log10() - 6.0) as i16 + noise.jitter(4)
    };
    let events = feed_devices(&mut tracker, 0, 25_000, &mut [(1, 1000, &mut walk_by)]);
    assert!(events.is_empty(), "walk-by: {events:?}");
    tracker.tick(100_000);
    // Walks up to the bus stop outside the window and waits ten minutes there.
    let mut noise = Noise(9);
    let mut waiter = |t: Millis| {
        let along = (12.0 - 1.3 * ((t - 100_000) as f64 / 1000.0)).max(0.0);
        let d = (9.5f64 * 9.5 + along * along).sqrt();
        (-59.0 - 22.0 * d.log10() - 6.0) as i16 + noise.jitter(4)
    };
    let events = feed_devices(&mut tracker, 100_000, 700_000, &mut [(1, 500, &mut waiter)]);
    assert!(events.is_empty(), "bus waiter: {events:?}");
}

#[test]
fn a_phone_in_a_backpack_in_the_queue_is_announced_within_seconds() {
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let mut noise = Noise(13);
    // Walks in (faint behind the glass, louder through the door) and queues at -82, never
    // near enough for the near rule.
    let mut phone = |t: Millis| match t {
        0..8_000 => -94 + noise.jitter(2),
        8_000..12_000 => -88 + noise.jitter(2),
        _ => -82 + noise.jitter(3),
    };
    let events = feed_devices(&mut tracker, 0, 60_000, &mut [(1, 1000, &mut phone)]);
    let [PresenceEvent::CustomerArrived(arrived)] = events.as_slice() else {
        panic!("one arrival: {events:?}");
    };
    assert!(
        arrived.arrived_at_ms <= 12_000 + 8_000,
        "announced within 8 s of queueing: {arrived:?}"
    );
}

#[test]
fn a_backpack_first_heard_inside_is_announced_as_it_settles_and_a_phone_appearing_loud_is_not() {
    // Walks in with the phone in a backpack, the body between it and the box: unheard
    // outside, first heard at the edge of range inside the door, then standing at the till
    // at -80 (never near enough for the near rule). Coming from out of range is its approach.
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let mut noise = Noise(17);
    let mut backpack = |t: Millis| match t {
        0..10_000 => -120,
        10_000..12_000 => -89 + noise.jitter(1),
        12_000..14_000 => -85 + noise.jitter(1),
        _ => -80 + noise.jitter(2),
    };
    let events = feed_devices(&mut tracker, 0, 60_000, &mut [(1, 1000, &mut backpack)]);
    let [PresenceEvent::CustomerArrived(arrived)] = events.as_slice() else {
        panic!("one arrival: {events:?}");
    };
    assert!(
        arrived.arrived_at_ms <= 10_000 + 7_000,
        "announced within 7 s of being first heard: {arrived:?}"
    );
    // Someone outside switches a phone on, or is first heard right by the glass: it appears
    // at -84 and stays around -80. No approach was heard: nobody came in.
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let mut noise = Noise(19);
    let mut appears = |t: Millis| match t {
        0..10_000 => -120,
        10_000..12_000 => -84 + noise.jitter(1),
        _ => -80 + noise.jitter(2),
    };
    let events = feed_devices(&mut tracker, 0, 120_000, &mut [(1, 1000, &mut appears)]);
    assert!(events.is_empty(), "appeared loud: {events:?}");
}

#[test]
fn a_quiet_tag_is_judged_by_its_own_calibration() {
    // A tag calibrated at -71 dBm at 1 m heard at -82 is as near as a -59 one heard at -70;
    // a nonsense calibration (+20 dBm) is ignored.
    let calibrated = |rssi, calibrated_1m| Sighting {
        calibrated_1m,
        ..sighting(1, 1, rssi, 0)
    };
    assert_eq!(calibrated(-82, Some(-71)).level(), -70);
    assert_eq!(calibrated(-82, Some(20)).level(), -82);
    assert_eq!(calibrated(-82, None).level(), -82);
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let events: Vec<_> = (0..5)
        .filter_map(|i| tracker.observe(&calibrated(-82, Some(-71)).at_ms(i * 1000)))
        .collect();
    assert_eq!(arrivals(&events), 1, "{events:?}");
}

/// Customer 1's phone (device 1) as scanner `scanner` of `zone` and `role` hears it.
fn heard_by(
    scanner: u64,
    zone: &'static str,
    role: ScannerRole,
    rssi: i16,
    at: Millis,
) -> Sighting<'static> {
    Sighting {
        scanner: ScannerKey(scanner),
        zone,
        role,
        ..sighting(1, 1, rssi, at)
    }
}

/// A scanner hearing customer 1: its key, its zone and the level it hears at a time.
type Hearing<'a> = (u64, &'static str, &'a mut dyn FnMut(Millis) -> i16);

/// Feeds one sighting per second from each scanner, ticking too.
fn feed_scanners(
    tracker: &mut PresenceTracker,
    from: Millis,
    to: Millis,
    scanners: &mut [Hearing],
) -> Vec<PresenceEvent> {
    let mut events = Vec::new();
    for t in (from..to).step_by(1000) {
        for (scanner, zone, level) in scanners.iter_mut() {
            let rssi = level(t);
            if rssi >= -96 {
                events.extend(tracker.observe(&heard_by(
                    *scanner,
                    zone,
                    ScannerRole::Room,
                    rssi,
                    t,
                )));
            }
        }
        events.extend(tracker.tick(t));
    }
    events
}

fn zone_changes(events: &[PresenceEvent]) -> Vec<(String, String, Millis)> {
    events
        .iter()
        .filter_map(|e| match e {
            PresenceEvent::ZoneChanged(z) => Some((z.from_zone.clone(), z.zone.clone(), z.at_ms)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_customer_moving_to_the_terrace_changes_zone_once_and_keeps_one_visit() {
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    let mut noise = Noise(21);
    // At the counter for a minute (the terrace scanner hears them faintly), then on the
    // terrace for two minutes (the counter hears them faintly).
    let mut counter = |t: Millis| if t < 60_000 { -62 } else { -86 } + noise.jitter(2);
    let mut noise = Noise(22);
    let mut terrace = |t: Millis| if t < 60_000 { -88 } else { -63 } + noise.jitter(2);
    let events = feed_scanners(
        &mut tracker,
        0,
        180_000,
        &mut [(1, "counter", &mut counter), (2, "terrace", &mut terrace)],
    );
    assert_eq!(arrivals(&events), 1, "one visit: {events:?}");
    let PresenceEvent::CustomerArrived(arrived) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(arrived.zone, "counter");
    let moves = zone_changes(&events);
    assert_eq!(moves.len(), 1, "one move: {moves:?}");
    let (from, to, at) = &moves[0];
    assert_eq!((from.as_str(), to.as_str()), ("counter", "terrace"));
    assert!(
        (60_000..=70_000).contains(at),
        "moved within seconds of walking over: {at}"
    );
}

#[test]
fn a_customer_between_two_scanners_does_not_flap() {
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    // Halfway: both scanners hear them alike, each now and then 3 dB the louder.
    let mut noise = Noise(31);
    let mut counter = |_| -70 + noise.jitter(3);
    let mut noise = Noise(32);
    let mut terrace = |_| -70 + noise.jitter(3);
    let events = feed_scanners(
        &mut tracker,
        0,
        300_000,
        &mut [(1, "counter", &mut counter), (2, "terrace", &mut terrace)],
    );
    assert_eq!(arrivals(&events), 1, "{events:?}");
    assert!(
        zone_changes(&events).len() <= 1,
        "no flapping: {:?}",
        zone_changes(&events)
    );
}

#[test]
fn a_door_scanner_announces_a_close_pass_at_once_and_never_the_street() {
    let config = PresenceConfig::default();
    let door = |rssi, at| heard_by(9, "door", ScannerRole::Door, rssi, at);
    // Someone walking past the shop front: loud for a door scanner behind glass, never close.
    let mut tracker = PresenceTracker::new(config.clone());
    let street: Vec<_> = [-80, -75, -71, -69, -70, -74, -79]
        .iter()
        .enumerate()
        .filter_map(|(i, &rssi)| tracker.observe(&door(rssi, i as Millis * 1000)))
        .collect();
    assert!(street.is_empty(), "street: {street:?}");
    // Someone coming in: two sightings, the nearer one close.
    let mut tracker = PresenceTracker::new(config);
    assert!(tracker.observe(&door(-78, 0)).is_none());
    let Some(PresenceEvent::CustomerArrived(arrived)) = tracker.observe(&door(-58, 1000)) else {
        panic!("announced on the close pass");
    };
    assert_eq!(
        (arrived.zone.as_str(), arrived.arrived_at_ms),
        ("door", 1000)
    );
}

#[test]
fn with_a_door_scanner_at_work_staying_counts_only_for_who_passed_the_door() {
    // A phone in a backpack queueing at -80 (the staying rule's case), while the door
    // scanner hears the street: not announced unless it passed the door.
    let queue = |tracker: &mut PresenceTracker, customer: i64| {
        let mut events = Vec::new();
        for t in (20_000..60_000).step_by(1000) {
            let rssi = if t < 30_000 { -93 } else { -80 };
            tracker.door_heard(t);
            events.extend(tracker.observe(&sighting(customer, 1, rssi, t)));
        }
        events
    };
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    assert!(queue(&mut tracker, 1).is_empty(), "behind the glass");
    // Customer 2 passed the door scanner (not close enough to be announced there).
    tracker.observe(&Sighting {
        scanner: ScannerKey(9),
        role: ScannerRole::Door,
        zone: "door",
        ..sighting(2, 1, -69, 19_000)
    });
    assert_eq!(arrivals(&queue(&mut tracker, 2)), 1, "came in the door");
    // The door scanner went silent a minute ago: the staying rule is back for everyone.
    let mut tracker = PresenceTracker::new(PresenceConfig::default());
    tracker.door_heard(0);
    let events: Vec<_> = (70_000..110_000)
        .step_by(1000)
        .filter_map(|t| {
            let rssi = if t < 80_000 { -93 } else { -80 };
            tracker.observe(&sighting(3, 1, rssi, t))
        })
        .collect();
    assert_eq!(arrivals(&events), 1, "{events:?}");
}
