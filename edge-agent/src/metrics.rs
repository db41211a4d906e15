//! Prometheus metrics of the box, served at `/metrics` on the POS listener to loopback
//! clients, or to whoever presents `pos.metrics_token` (the shop's Wi-Fi never sees them
//! unauthenticated). What the pipeline counted, the alerts' delivery to the tablets, the
//! tablets connected, the outbox, the sync state and when each scanner last heard anything.
//!
//! Names follow Prometheus' conventions: `tastesync_edge_` first, base units (seconds),
//! `_total` on counters.

use std::sync::LazyLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::Millis;
use crate::pos::Health;

/// Counted where things happen (the store thread, the tablets' streams).
pub struct Counters {
    /// Arrivals recorded (visits started).
    pub arrivals: Counter,
    /// From a customer's arrival to its alert leaving for a tablet's live stream, seconds.
    pub alert_delivery: Histogram,
}

pub static COUNTERS: LazyLock<Counters> = LazyLock::new(|| Counters {
    arrivals: Counter::default(),
    // 1 ms to about 16 s.
    alert_delivery: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
});

/// What the page shows besides the counters, read at each scrape.
pub struct Now<'a> {
    pub health: &'a Health,
    pub tablets_connected: usize,
    pub outbox_pending: u64,
    pub outbox_oldest_at_ms: Option<Millis>,
    pub now_ms: Millis,
}

/// Where cloud sync stands, from the uplink's status line.
const SYNC_STATES: [&str; 7] = [
    "not configured",
    "not claimed yet",
    "revoked",
    "connecting",
    "connected",
    "offline",
    "refused",
];

fn sync_state(status: &str) -> &'static str {
    SYNC_STATES
        .iter()
        .find(|state| status.starts_with(*state))
        .copied()
        .unwrap_or("error")
}

/// The page Prometheus scrapes (OpenMetrics text).
pub fn render(now: &Now) -> anyhow::Result<String> {
    let mut registry = Registry::with_prefix("tastesync_edge");
    let stats = &now.health.pipeline;
    let source = [("source".to_string(), now.health.scanner.clone())];
    let per_source = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let family = Family::<[(String, String); 1], Counter>::default();
        family.get_or_create(&source).inc_by(value);
        registry.register(name, help, family);
    };
    per_source(
        &mut registry,
        "advertisements_heard",
        "Advertisements heard since the daemon started",
        stats.advertisements,
    );
    per_source(
        &mut registry,
        "advertisements_malformed",
        "Advertisements whose data could not be read",
        stats.malformed,
    );
    per_source(
        &mut registry,
        "beacons_decoded",
        "Advertisements decoded as a beacon (iBeacon, Eddystone, EID)",
        stats.beacons,
    );
    per_source(
        &mut registry,
        "beacons_identified",
        "Beacons that belong to a known customer",
        stats.recognised,
    );
    let counters = &*COUNTERS;
    registry.register(
        "arrivals",
        "Arrivals recorded since the daemon started",
        counters.arrivals.clone(),
    );
    registry.register_with_unit(
        "alert_delivery",
        "From a customer's arrival to the alert leaving for a tablet's live stream",
        Unit::Seconds,
        counters.alert_delivery.clone(),
    );
    registry.register(
        "tablets_connected",
        "Live streams open to paired tablets",
        ConstGauge::new(now.tablets_connected as i64),
    );
    registry.register(
        "outbox_pending",
        "Events in the outbox not yet acknowledged by the cloud",
        ConstGauge::new(now.outbox_pending as i64),
    );
    let oldest: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    oldest.set(
        now.outbox_oldest_at_ms
            .map_or(0.0, |at| now.now_ms.saturating_sub(at) as f64 / 1000.0),
    );
    registry.register_with_unit(
        "outbox_oldest_unsent_age",
        "Age of the oldest event not yet acknowledged by the cloud (0: none)",
        Unit::Seconds,
        oldest,
    );
    let current = sync_state(&now.health.cloud_sync);
    let states = Family::<[(String, String); 1], Gauge>::default();
    for state in SYNC_STATES.iter().chain(&["error"]) {
        let gauge = states.get_or_create(&[("state".to_string(), state.to_string())]);
        gauge.set(i64::from(*state == current));
    }
    registry.register(
        "cloud_sync_state",
        "Where cloud sync stands: 1 for the current state",
        states,
    );
    registry.register(
        "storage_ok",
        "1 while events are recorded, 0 when the disk refuses them",
        ConstGauge::new(i64::from(now.health.storage == "ok")),
    );
    let last: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    last.set(
        stats
            .last_advertisement_ms
            .map_or(0.0, |at| at as f64 / 1000.0),
    );
    registry.register_with_unit(
        "last_advertisement_timestamp",
        "When the last advertisement was heard, Unix time (0: none yet)",
        Unit::Seconds,
        last,
    );
    registry.register(
        "clock_synchronised",
        "1 once the system clock is synchronised; 0 while visits get provisional times",
        ConstGauge::new(i64::from(now.health.clock == "synchronised")),
    );
    registry.register(
        "scanner_running",
        "1 while the scanner runs",
        ConstGauge::new(i64::from(now.health.scanner_running)),
    );
    // Each of the shop's scanners (scanner boxes, ESPresense nodes): alert on one gone quiet.
    let scanners =
        Family::<[(String, String); 2], Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for seen in &now.health.scanners {
        scanners
            .get_or_create(&[
                ("scanner".to_string(), seen.name.clone()),
                ("zone".to_string(), seen.zone.clone()),
            ])
            .set(seen.last_heard_ms as f64 / 1000.0);
    }
    registry.register_with_unit(
        "scanner_last_heard_timestamp",
        "When each of the shop's scanners last heard anything, Unix time",
        Unit::Seconds,
        scanners,
    );
    let mut page = String::new();
    encode(&mut page, &registry)?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uplinks_status_lines_map_to_states() {
        for (line, state) in [
            ("not configured", "not configured"),
            ("connecting", "connecting"),
            (
                "not claimed yet: claim this box on the owner page",
                "not claimed yet",
            ),
            ("revoked by HQ: the box works offline", "revoked"),
            ("connected; 12 events waiting", "connected"),
            (
                "offline: cannot reach the broker; events wait in the outbox",
                "offline",
            ),
            (
                "refused by the broker: its credentials are not accepted",
                "refused",
            ),
            ("error: something; retrying", "error"),
        ] {
            assert_eq!(sync_state(line), state, "{line}");
        }
    }
}
