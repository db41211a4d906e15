//! `tastesync-cloud kafka tail`: the stream as JSON lines, for debugging and as a consumer
//! example for other teams. It reads every partition of the topics directly (no consumer
//! group, nothing committed), from the end or from the beginning, and prints each record's
//! topic, partition, offset, key, CloudEvents headers and JSON value (`null`: a tombstone).
//! A consumer that must process each event once drops records whose `ce_id` it has seen.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Map, Value, json};

use crate::config::KafkaConfig;

/// Prints records until stopped, or until `count` were printed.
pub async fn run(
    config: &KafkaConfig,
    topics: &[String],
    from_beginning: bool,
    count: Option<u64>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.enabled(),
        "kafka.brokers is not set in the configuration"
    );
    let consumer: StreamConsumer = config
        .client_config()
        .set("group.id", "tastesync-tail")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let start = if from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("cannot reach Kafka at {}", config.brokers))?;
        let partitions = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions())
            .map(|p| p.id())
            .collect::<Vec<_>>();
        anyhow::ensure!(!partitions.is_empty(), "no Kafka topic {topic:?}");
        for partition in partitions {
            assignment.add_partition_offset(topic, partition, start)?;
        }
    }
    consumer.assign(&assignment)?;
    let mut printed = 0;
    let mut records = consumer.stream();
    while count.is_none_or(|count| printed < count) {
        let Some(record) = records.next().await else {
            break;
        };
        let record = record?;
        let mut headers = Map::new();
        if let Some(all) = record.headers() {
            for header in all.iter() {
                let value = header.value.map(String::from_utf8_lossy);
                headers.insert(header.key.to_string(), json!(value));
            }
        }
        let value = match record.payload() {
            None => Value::Null,
            Some(bytes) => serde_json::from_slice(bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
        };
        let line = json!({
            "topic": record.topic(),
            "partition": record.partition(),
            "offset": record.offset(),
            "key": record.key().map(String::from_utf8_lossy),
            "headers": headers,
            "value": value,
        });
        println!("{line}");
        printed += 1;
    }
    Ok(())
}
