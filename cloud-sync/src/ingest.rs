//! Ingest: consumes every shop's uplink through a shared subscription (several instances
//! split the load), validates each message, stores events in PostgreSQL, then acknowledges
//! the highest contiguous seq to the shop. Bad or foreign messages go to the dead-letter
//! table with the reason; they never stop the service or other shops.

use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Deserialize;
use tastesync_shared::wire::{self, Ack, EventBatch};
use tokio_postgres::Client;

use crate::db;

/// Largest MQTT packet cloud-sync reads; payloads over `wire::MAX_PAYLOAD` are refused.
const RECEIVE_LIMIT: usize = 16 << 20;

/// `tastesync-cloud serve` configuration (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// PostgreSQL, e.g. `host=127.0.0.1 user=postgres dbname=tastesync`.
    pub database_url: String,
    /// The MQTT broker, `host:port`.
    pub broker: String,
    pub username: String,
    pub password: String,
    /// Shared-subscription group: instances with the same group split the shops.
    pub group: String,
    /// This instance's MQTT client id (unique per instance).
    pub client_id: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "host=127.0.0.1 user=postgres dbname=tastesync".into(),
            broker: "127.0.0.1:1883".into(),
            username: String::new(),
            password: String::new(),
            group: "cloud-sync".into(),
            client_id: format!("tastesync-cloud-{}", std::process::id()),
        }
    }
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let mut db = db::connect(&config.database_url).await?;
    let (host, port) = wire::parse_broker(&config.broker)
        .with_context(|| format!("broker {:?} must be host:port", config.broker))?;
    let mut options = MqttOptions::new(config.client_id.clone(), host, port);
    options.set_keep_alive(Duration::from_secs(15));
    // Accept packets well past the payload limit, so an oversized message is received and
    // dead-lettered with its reason instead of breaking the connection (and, being QoS 1,
    // coming back for ever). The broker's own max_packet_size bounds the rest.
    options.set_max_packet_size(RECEIVE_LIMIT, wire::MAX_PAYLOAD + 4096);
    if !config.username.is_empty() {
        options.set_credentials(config.username.clone(), config.password.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 256);
    tracing::info!("cloud-sync started");
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                for leaf in ["events", "status"] {
                    client
                        .subscribe(
                            wire::shared_subscription(&config.group, leaf),
                            QoS::AtLeastOnce,
                        )
                        .await?;
                }
                tracing::info!("connected to the broker");
            }
            Ok(Event::Incoming(Packet::Publish(message))) => {
                if let Err(e) = handle(&client, &mut db, &message.topic, &message.payload).await {
                    // Not acknowledged: the shop sends it again.
                    tracing::error!("cannot store a message from {}: {e:#}", message.topic);
                    if db.is_closed() {
                        anyhow::bail!("lost the PostgreSQL connection");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("broker connection: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn handle(
    client: &AsyncClient,
    db: &mut Client,
    topic: &str,
    payload: &[u8],
) -> anyhow::Result<()> {
    let Some((shop, leaf)) = wire::parse_topic(topic) else {
        return db::dead_letter(db, topic, payload, "not a shop topic").await;
    };
    match leaf {
        "events" => match EventBatch::parse(payload, shop) {
            Ok(batch) => {
                let up_to = db::store_batch(db, &batch).await?;
                let ack = serde_json::to_vec(&Ack {
                    v: wire::VERSION,
                    up_to_seq: up_to,
                })?;
                client
                    .publish(wire::ack_topic(shop), QoS::AtLeastOnce, false, ack)
                    .await?;
                Ok(())
            }
            Err(reason) => {
                tracing::warn!(shop, "dead letter: {reason}");
                db::dead_letter(db, topic, payload, &reason.to_string()).await
            }
        },
        "status" => match payload {
            b"online" => db::set_online(db, shop, true).await,
            b"offline" => db::set_online(db, shop, false).await,
            _ => db::dead_letter(db, topic, payload, "status must be online or offline").await,
        },
        _ => db::dead_letter(db, topic, payload, "unknown topic").await,
    }
}
