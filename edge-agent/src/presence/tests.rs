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
        events.extend(tracker.observe(CustomerId(1), ZONE, rssi(), t));
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
    // Gone for good: departure, then back 5 minutes later: a new visit.
    events.extend(tracker.tick(99_000 + 60_000));
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
        tracker.observe(CustomerId(i), ZONE, -95, 1000);
    }
    tracker.tick(10_000);
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
