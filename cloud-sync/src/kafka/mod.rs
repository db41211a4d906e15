//! Kafka: every stored shop event and HQ's customer changes, for HQ's other services.
//!
//! ```text
//! ingest transaction: events + streams.acked_seq ──┐      HQ's change: customers + outbox row ──┐
//!                                                  v                                          v
//!                       relay (one instance, the holder of a PostgreSQL advisory lock)
//!                       reads each stream's events after its mark, in seq order, and the
//!                       customer outbox; publishes (idempotent producer); after the delivery
//!                       reports, moves the marks ──> tastesync.shop-events (key: shop)
//!                                                    tastesync.customers (key: ref, compacted)
//! ```
//! At least once, in order per stream: a record is marked only after its delivery report,
//! so a crash re-sends (the event id is in `ce_id`), never skips. `records` says what a
//! record holds; `relay` runs the loop; `tail` is `tastesync-cloud kafka tail`.

pub mod records;
pub mod relay;
pub mod tail;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;

use crate::config::KafkaConfig;
use crate::storage::{self, kafka::CHANNEL};

/// Creates the topics that are missing (the customers topic compacted). Topics that exist
/// are left as they are.
pub async fn create_topics(config: &KafkaConfig) -> anyhow::Result<()> {
    let admin: AdminClient<Quiet> = config
        .client_config()
        .create_with_context(Quiet::default())?;
    let replication = || TopicReplication::Fixed(config.replication_factor);
    let topics = [
        NewTopic::new(&config.shop_events_topic, config.partitions, replication()),
        NewTopic::new(&config.customers_topic, config.partitions, replication())
            .set("cleanup.policy", "compact"),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(topic) => tracing::info!(topic, "created the Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create the Kafka topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Wakes the relay, whichever instance runs it, after ingest stored events: a NOTIFY on a
/// connection of its own, at most every 20 ms however many commits there are (the relay also
/// polls, so a lost wake-up only costs a little lag).
pub async fn wake_relay(database_url: String, stored: Arc<Notify>) {
    loop {
        let db = storage::reconnect(&database_url).await;
        loop {
            stored.notified().await;
            if let Err(e) = db.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await {
                tracing::warn!("cannot wake the Kafka relay: {e}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How often "Kafka is unreachable" is logged while it stays so.
const UNREACHABLE_EVERY: Duration = Duration::from_secs(60);

/// The relay's clients' context: librdkafka's logs and errors as ours, except that a Kafka
/// out of reach is said once a minute, not at every reconnection attempt (several lines a
/// second, for hours of an outage). The relay logs each failed round with the backlog.
#[derive(Default)]
pub struct Quiet {
    unreachable_said: Mutex<Option<Instant>>,
}

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match facility {
            // A failed connection (also reported through `error`, below).
            "FAIL" => tracing::debug!("librdkafka: {message}"),
            // enable.gapless.guarantee is flagged experimental at every producer made; it is
            // chosen on purpose (ARCHITECTURE.md, "Kafka").
            "CONFWARN" if message.contains("gapless") => tracing::debug!("librdkafka: {message}"),
            _ => DefaultClientContext.log(level, facility, message),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let unreachable = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
        );
        if !unreachable {
            return DefaultClientContext.error(error, reason);
        }
        let mut said = self
            .unreachable_said
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if said.is_none_or(|at| at.elapsed() >= UNREACHABLE_EVERY) {
            tracing::warn!(
                "Kafka is unreachable: {reason} (said again in a minute if it stays so)"
            );
            *said = Some(Instant::now());
        } else {
            tracing::debug!("Kafka is unreachable: {reason}");
        }
    }
}
