//! The relay: from the outbox in PostgreSQL to Kafka, at least once and in order per stream.
//!
//! One relay at a time, so two instances never interleave a shop's events: the instance
//! whose connection holds the advisory lock relays, the others stand by and try again every
//! second (a killed holder's session ends with it, and the lock passes on). The leader
//! works in rounds: read what is due (each stream's events after its mark, the customer
//! outbox), produce it all (an idempotent producer with `enable.gapless.guarantee`, so what
//! a partition accepted of a stream is always a prefix of what was sent), wait for every
//! delivery report, then move each stream's mark over its delivered prefix. A failure stops
//! the stream's mark where it failed and the round is tried again after a backoff; the
//! producer is made anew after a fatal error. A crash between delivery and marking sends
//! the same records again (same `ce_id`); nothing is ever marked that was not delivered.
//!
//! Kafka down for hours: ingest and the boxes' acks go on (they never wait for the relay),
//! the backlog stays in PostgreSQL, its size and age are logged at each retry, and when
//! Kafka returns the relay drains it round by round, oldest streams first.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::Client;

use super::records::{self, Record};
use crate::config::{Config, KafkaConfig};
use crate::metrics::COUNTERS;
use crate::storage::{
    self,
    kafka::{self as outbox, CHANNEL, PendingCustomer, PendingEvent},
};

/// Whoever holds it relays (session-level: it goes with the connection).
const LEAD: &str = "SELECT pg_try_advisory_lock(hashtext('tastesync kafka relay'))";
/// How often a standby instance asks for the lock.
const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// How long an idle relay waits for a wake-up before it looks anyway.
const POLL: Duration = Duration::from_millis(250);
/// Streams served per round, those waiting longest first.
const STREAMS_PER_ROUND: i64 = 1000;
/// Customer changes per round.
const CUSTOMERS_PER_ROUND: i64 = 1000;
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often published customer changes past their retention are deleted.
const TRIM_EVERY: Duration = Duration::from_secs(600);

/// Runs for ever: standing by, or relaying while this instance holds the lock.
pub async fn run(config: Config) {
    let kafka = config.kafka;
    loop {
        let (db, mut wake) = storage::listen(&config.database_url, CHANNEL).await;
        if let Err(e) = stand_by(&db).await {
            tracing::warn!("Kafka relay: {e:#}");
        } else {
            tracing::info!("this instance relays the outbox to Kafka");
            let Err(e) = lead(&kafka, &db, &mut wake).await;
            tracing::warn!("Kafka relay stopped: {e:#}; trying again");
        }
        // Closing the connection gives up the lock, if this instance held it.
        drop(db);
        tokio::time::sleep(STANDBY_RETRY).await;
    }
}

/// Returns once this connection holds the relay's lock.
async fn stand_by(db: &Client) -> anyhow::Result<()> {
    let mut told = false;
    while !db.query_one(LEAD, &[]).await?.get::<_, bool>(0) {
        if !told {
            tracing::info!("another instance relays to Kafka; standing by");
            told = true;
        }
        tokio::time::sleep(STANDBY_RETRY).await;
    }
    Ok(())
}

/// Relays round after round; returns only when PostgreSQL fails it.
async fn lead(
    config: &KafkaConfig,
    db: &Client,
    wake: &mut UnboundedReceiver<String>,
) -> anyhow::Result<Infallible> {
    let mut publisher = Publisher::new(config)?;
    let mut topics_ready = !config.create_topics;
    let mut backoff = MIN_BACKOFF;
    let mut trimmed = Instant::now() - TRIM_EVERY;
    let per_stream = (config.batch_events as i64 / 10).max(100);
    loop {
        if trimmed.elapsed() >= TRIM_EVERY {
            let retention = Duration::from_secs(config.outbox_retention_hours * 3600);
            let trimmed_rows = outbox::trim_customer_outbox(db, retention).await?;
            if trimmed_rows > 0 {
                tracing::info!(rows = trimmed_rows, "trimmed published customer changes");
            }
            trimmed = Instant::now();
        }
        let round = if topics_ready {
            let events =
                outbox::pending_events(db, STREAMS_PER_ROUND, per_stream, config.batch_events)
                    .await?;
            let customers = outbox::pending_customers(db, CUSTOMERS_PER_ROUND).await?;
            if events.is_empty() && customers.is_empty() {
                tokio::select! {
                    woken = wake.recv() => if woken.is_none() {
                        anyhow::bail!("lost the PostgreSQL connection");
                    },
                    _ = tokio::time::sleep(POLL) => {}
                }
                while wake.try_recv().is_ok() {}
                continue;
            }
            let round = publisher.publish(&events, &customers).await;
            COUNTERS
                .kafka_records_published
                .inc_by(round.delivered as u64);
            outbox::mark_published(db, &round.marks).await?;
            outbox::customers_published(db, &round.customers).await?;
            if round.error.as_ref().is_some_and(topic_missing) && config.create_topics {
                // Deleted, or a broker that lost its data: made again before the next round.
                topics_ready = false;
            }
            round.error.map(anyhow::Error::from)
        } else {
            match super::create_topics(config).await {
                Ok(()) => {
                    topics_ready = true;
                    None
                }
                Err(e) => Some(e),
            }
        };
        let Some(error) = round else {
            backoff = MIN_BACKOFF;
            continue;
        };
        let waiting = outbox::backlog(db, None).await?;
        tracing::warn!(
            events_waiting = waiting.events,
            oldest_stored_at = waiting.oldest_event_stored_at,
            customer_changes_waiting = waiting.customer_changes,
            "cannot publish to Kafka: {error:#}; retrying in {backoff:?}"
        );
        if publisher.is_broken() {
            tracing::warn!("the Kafka producer hit a fatal error; making a new one");
            publisher = Publisher::new(config)?;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether a delivery failed for want of its topic.
fn topic_missing(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
    )
}

/// What a round achieved: the marks to move, the customer changes published, and the first
/// failure if any.
#[derive(Default)]
struct Round {
    /// Per stream, the last seq of its delivered prefix.
    marks: Vec<(String, i64)>,
    customers: Vec<i64>,
    /// Records Kafka acknowledged.
    delivered: usize,
    error: Option<KafkaError>,
}

/// The producer and the topics it writes.
struct Publisher {
    producer: FutureProducer<super::Quiet>,
    shop_events_topic: String,
    customers_topic: String,
}

impl Publisher {
    fn new(config: &KafkaConfig) -> anyhow::Result<Publisher> {
        let mut producer_config = config.producer_config();
        // Room for a whole round in librdkafka's queue.
        producer_config.set(
            "queue.buffering.max.messages",
            (config.batch_events + CUSTOMERS_PER_ROUND as usize).to_string(),
        );
        Ok(Publisher {
            producer: producer_config.create_with_context(super::Quiet::default())?,
            shop_events_topic: config.shop_events_topic.clone(),
            customers_topic: config.customers_topic.clone(),
        })
    }

    /// Whether the producer can no longer be used (librdkafka's fatal error).
    fn is_broken(&self) -> bool {
        self.producer.client().fatal_error().is_some()
    }

    /// Produces everything and waits for every delivery report.
    async fn publish(&self, events: &[PendingEvent], customers: &[PendingCustomer]) -> Round {
        let mut deliveries = Vec::with_capacity(events.len() + customers.len());
        for event in events {
            deliveries.push(self.send(&self.shop_events_topic, records::shop_event(event)));
        }
        for change in customers {
            deliveries.push(self.send(&self.customers_topic, records::customer(change)));
        }
        let results = join_all(deliveries).await;
        let (event_results, customer_results) = results.split_at(events.len());

        let mut round = Round {
            delivered: results.iter().filter(|r| r.is_ok()).count(),
            ..Round::default()
        };
        let mut marks: BTreeMap<&str, i64> = BTreeMap::new();
        let mut broken: HashSet<&str> = HashSet::new();
        // Events come grouped by stream, in seq order: a stream's mark covers its events up
        // to the first that failed.
        for (event, result) in events.iter().zip(event_results) {
            match result {
                Ok(()) if !broken.contains(event.stream_id.as_str()) => {
                    marks.insert(&event.stream_id, event.seq);
                }
                Ok(()) => {}
                Err(e) => {
                    broken.insert(&event.stream_id);
                    round.error.get_or_insert_with(|| e.clone());
                }
            }
        }
        round.marks = marks
            .into_iter()
            .map(|(stream, seq)| (stream.to_string(), seq))
            .collect();
        for (change, result) in customers.iter().zip(customer_results) {
            match result {
                Ok(()) => round.customers.extend(&change.ids),
                Err(e) => {
                    round.error.get_or_insert_with(|| e.clone());
                }
            }
        }
        round
    }

    /// Hands one record to the producer; resolves with its delivery report.
    fn send(
        &self,
        topic: &str,
        record: Record,
    ) -> impl Future<Output = Result<(), KafkaError>> + use<> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut message = FutureRecord::to(topic).key(&record.key).headers(headers);
        if let Some(value) = &record.value {
            message = message.payload(value);
        }
        let queued = self.producer.send_result(message).map_err(|(e, _)| e);
        async move {
            match queued?.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(e),
                Err(_) => Err(KafkaError::Canceled),
            }
        }
    }
}
