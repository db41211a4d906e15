//! Prometheus metrics, served at `/metrics` on the API's listener (`api::metrics`): what this
//! instance did since it started (counters and a histogram, kept in memory), and what the
//! database says now (gauges, read at each scrape, the same for every instance).
//!
//! Names follow Prometheus' conventions: `tastesync_cloud_` first, base units (seconds),
//! `_total` on counters. `docs/grafana/cloud-sync.json` is a dashboard of them.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio_postgres::GenericClient;

use crate::storage::kafka as outbox;

/// This instance's counters.
pub struct Counters {
    /// Events stored (new rows; a batch sent again adds nothing).
    pub events_stored: Counter,
    /// Messages refused into the dead letters.
    pub dead_letters: Counter,
    /// Storing a group of messages: from its transaction's begin to its commit (retries
    /// after a lost connection included).
    pub store_seconds: Histogram,
    /// Records the relay had acknowledged by Kafka (events and customer changes).
    pub kafka_records_published: Counter,
}

pub static COUNTERS: LazyLock<Counters> = LazyLock::new(|| Counters {
    events_stored: Counter::default(),
    dead_letters: Counter::default(),
    // 1 ms to about 16 s.
    store_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
    kafka_records_published: Counter::default(),
});

impl Counters {
    pub fn stored(&self, events: usize, dead_letters: usize, took: Duration) {
        self.events_stored.inc_by(events as u64);
        self.dead_letters.inc_by(dead_letters as u64);
        self.store_seconds.observe(took.as_secs_f64());
    }
}

/// The page Prometheus scrapes (its text format), the gauges read from the database now.
/// `kafka`: whether this deployment relays to Kafka (its backlog is shown then).
pub async fn render(db: &impl GenericClient, kafka: bool) -> anyhow::Result<String> {
    let mut registry = Registry::with_prefix("tastesync_cloud");
    let counters = &*COUNTERS;
    registry.register(
        "events_stored",
        "Events stored in PostgreSQL by this instance",
        counters.events_stored.clone(),
    );
    registry.register(
        "dead_letters",
        "Messages refused into the dead letters by this instance",
        counters.dead_letters.clone(),
    );
    registry.register_with_unit(
        "store_transaction",
        "Storing a group of messages in one transaction, begin to commit (retries included)",
        Unit::Seconds,
        counters.store_seconds.clone(),
    );
    registry.register(
        "kafka_records_published",
        "Records this instance's relay had acknowledged by Kafka",
        counters.kafka_records_published.clone(),
    );

    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM shops),
                    (SELECT count(*) FROM boxes WHERE online AND revoked_at IS NULL)
                      + (SELECT count(*) FROM shops WHERE online),
                    (SELECT count(*) FROM boxes b JOIN shops s USING (shop_id)
                      WHERE b.online AND b.revoked_at IS NULL
                        AND coalesce(b.downlink_applied, 0) < s.downlink_version),
                    (SELECT count(*) FROM dead_letters)",
            &[],
        )
        .await?;
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let gauge: Gauge = Gauge::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    };
    gauge(&mut registry, "shops", "Shops HQ has", row.get(0));
    gauge(
        &mut registry,
        "boxes_online",
        "Boxes whose broker connection is up (their retained status)",
        row.get(1),
    );
    gauge(
        &mut registry,
        "downlink_boxes_behind",
        "Online boxes that have not yet applied their shop's latest customer changes",
        row.get(2),
    );
    gauge(
        &mut registry,
        "dead_letters_stored",
        "Dead letters in PostgreSQL (every instance's)",
        row.get(3),
    );
    if kafka {
        let waiting = outbox::backlog(db, None).await?;
        gauge(
            &mut registry,
            "kafka_events_waiting",
            "Stored events not yet on Kafka",
            waiting.events,
        );
        gauge(
            &mut registry,
            "kafka_customer_changes_waiting",
            "HQ's customer changes not yet on Kafka",
            waiting.customer_changes,
        );
        let oldest: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        oldest.set(waiting.oldest_event_age_s.unwrap_or(0.0));
        registry.register_with_unit(
            "kafka_oldest_waiting_event_age",
            "How long the oldest event not yet on Kafka has been stored (0: none waiting)",
            Unit::Seconds,
            oldest,
        );
    }
    let mut page = String::new();
    encode(&mut page, &registry)?;
    Ok(page)
}
