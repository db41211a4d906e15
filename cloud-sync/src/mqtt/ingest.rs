//! Ingest: consumes every box's uplink through shared subscriptions (several instances split
//! the load), validates each message, stores events in PostgreSQL, then acknowledges each
//! stream's highest contiguous seq to its box. Bad or foreign messages go to the dead-letter
//! table with the reason; they never stop the service or other boxes. Resync requests go to
//! the downlink worker; they and the boxes' `applied` reports also record which downlink
//! version each box holds. Boxes of both protocols are served (see `tastesync_shared::wire`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tastesync_shared::downlink::{DownlinkApplied, ResyncRequest};
use tastesync_shared::wire::{self, Ack, BoxStatus, EventBatch, LEGACY_VERSION, Topic};
use tokio::sync::{Notify, mpsc};
use tokio_postgres::{Client, Transaction};

use super::downlink;
use crate::config::Config;
use crate::metrics::COUNTERS;
use crate::storage::{self, events::StreamAck};

/// Largest MQTT packet cloud-sync reads; payloads over `wire::MAX_PAYLOAD` are refused.
const RECEIVE_LIMIT: usize = 16 << 20;

/// Messages stored in one PostgreSQL transaction at most (a busy broker's backlog is taken
/// in groups: one commit for many shops' batches).
const MAX_GROUP: usize = 256;

/// Store workers, each with its own PostgreSQL connection and transaction in flight: while
/// one waits for a round trip or its commit, the other works. Each shop's messages always go
/// to the same worker, so a stream is never in two transactions at once; the rows they share
/// (the chain's rollups) are locked in one order.
const STORE_WORKERS: usize = 2;

/// A message from the broker.
struct Message {
    topic: String,
    payload: bytes::Bytes,
}

/// Runs until the MQTT event loop or a worker fails for good. `stored`, if given, is told
/// after every commit that stored events (it wakes the Kafka relay).
pub async fn run(config: Config, stored: Option<Arc<Notify>>) -> anyhow::Result<()> {
    let (host, port) = config.broker_address()?;
    let mut options = MqttOptions::new(config.client_id.clone(), host, port);
    options.set_keep_alive(Duration::from_secs(15));
    // Accept packets well past the payload limit, so an oversized message is received and
    // dead-lettered with its reason instead of breaking the connection (and, being QoS 1,
    // coming back for ever). The broker's own max_packet_size bounds the rest.
    options.set_max_packet_size(RECEIVE_LIMIT, wire::MAX_PAYLOAD + 4096);
    if !config.username.is_empty() {
        options.set_credentials(config.username.clone(), config.password.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 1024);
    // The broker connection is polled here and nowhere else, so a slow database never stalls
    // its keep-alive; storing and the downlink run as their own tasks.
    let mut to_store = Vec::new();
    let mut stores = tokio::task::JoinSet::new();
    for _ in 0..STORE_WORKERS {
        let (sender, from_broker) = mpsc::channel::<Message>(4 * MAX_GROUP);
        to_store.push(sender);
        stores.spawn(store_loop(
            config.database_url.clone(),
            client.clone(),
            from_broker,
            stored.clone(),
        ));
    }
    let downlink_requests = Arc::new(downlink::Requests::default());
    let mut downlink = tokio::spawn(downlink::run(
        config.clone(),
        client.clone(),
        downlink_requests.clone(),
    ));
    let mut subscribed = false;
    tracing::info!("cloud-sync started");
    loop {
        let event = tokio::select! {
            event = events.poll() => event,
            result = stores.join_next() => anyhow::bail!("a store worker stopped: {result:?}"),
            result = &mut downlink => anyhow::bail!("the downlink worker stopped: {result:?}"),
        };
        if matches!(event, Ok(Event::Incoming(Packet::ConnAck(_)))) {
            subscribed = false;
        }
        if !subscribed && matches!(event, Ok(Event::Incoming(_) | Event::Outgoing(_))) {
            // Never wait on the client's request queue here: only this loop drains it (the
            // downlink may have filled it while the broker was away). Retried on the next
            // event until there is room.
            subscribed = ["events", "status", "resync", "applied"]
                .iter()
                .flat_map(|leaf| wire::shared_subscriptions(&config.group, leaf))
                .all(|filter| client.try_subscribe(filter, QoS::AtLeastOnce).is_ok());
            if subscribed {
                tracing::info!("connected to the broker");
                downlink_requests.broker_connected();
            }
        }
        match event {
            Ok(Event::Incoming(Packet::Publish(message))) => match Topic::parse(&message.topic) {
                Some(topic) if topic.leaf == "resync" => {
                    match ResyncRequest::parse(&message.payload) {
                        Ok(request) => {
                            downlink_requests.resync(topic.shop_id, request.from_version);
                            // It also tells which version the box holds: recorded with the rest.
                            let worker = worker_for(&to_store, topic.shop_id);
                            let message = Message {
                                topic: message.topic,
                                payload: message.payload,
                            };
                            if worker.send(message).await.is_err() {
                                anyhow::bail!("a store worker stopped");
                            }
                        }
                        Err(e) => tracing::warn!(
                            shop = topic.shop_id,
                            "ignoring a resync request: {}",
                            e.without_payload()
                        ),
                    }
                }
                topic => {
                    // Messages on no shop's topic go to the first worker (a dead letter).
                    let worker = worker_for(&to_store, topic.map_or("", |t| t.shop_id));
                    let message = Message {
                        topic: message.topic,
                        payload: message.payload,
                    };
                    if worker.send(message).await.is_err() {
                        anyhow::bail!("a store worker stopped");
                    }
                }
            },
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("broker connection: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The store worker that takes a shop's messages.
fn worker_for<'a>(
    workers: &'a [mpsc::Sender<Message>],
    shop_id: &str,
) -> &'a mpsc::Sender<Message> {
    let hash = shop_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    &workers[(hash % workers.len() as u64) as usize]
}

/// Stores messages in groups and acknowledges each stream after the commit. A lost database
/// connection is re-established and the group stored again; a group PostgreSQL refuses is
/// split, so one bad message goes to the dead letters and never blocks the other shops.
async fn store_loop(
    url: String,
    mqtt: AsyncClient,
    mut messages: mpsc::Receiver<Message>,
    stored: Option<Arc<Notify>>,
) {
    let mut db = storage::reconnect(&url).await;
    // Acks not yet handed to the MQTT client (its queue was full): the latest per stream.
    let mut unsent: HashMap<String, StreamAck> = HashMap::new();
    let mut retry = tokio::time::interval(Duration::from_millis(50));
    loop {
        let first = tokio::select! {
            m = messages.recv() => match m { Some(m) => m, None => return },
            _ = retry.tick(), if !unsent.is_empty() => {
                send_acks(&mqtt, &mut unsent);
                continue;
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match messages.try_recv() {
                Ok(message) => group.push(message),
                Err(_) => break,
            }
        }
        let began = std::time::Instant::now();
        let stored_group = loop {
            match store_group(&mut db, &group).await {
                Ok(stored) => break stored,
                Err(e) if db.is_closed() || !refused_for_its_content(&e) => {
                    // PostgreSQL restarting, a deadlock between instances...: store it again.
                    tracing::warn!("cannot store a group ({e:#}); retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if db.is_closed() {
                        db = storage::reconnect(&url).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "a group of {} messages was refused ({e:#}); storing them one by one",
                        group.len()
                    );
                    break store_one_by_one(&mut db, &group).await;
                }
            }
        };
        let Stored {
            acks,
            events,
            dead_letters,
        } = stored_group;
        COUNTERS.stored(events, dead_letters, began.elapsed());
        if let Some(stored) = stored.as_ref().filter(|_| !acks.is_empty()) {
            stored.notify_one();
        }
        for ack in acks {
            match unsent.get_mut(&ack.stream_id) {
                Some(waiting) if waiting.up_to_seq > ack.up_to_seq => {}
                Some(waiting) => *waiting = ack,
                None => {
                    unsent.insert(ack.stream_id.clone(), ack);
                }
            }
        }
        send_acks(&mqtt, &mut unsent);
    }
}

/// Hands acks to the MQTT client without waiting: the event loop that drains its queue may
/// itself be waiting for this worker.
fn send_acks(mqtt: &AsyncClient, unsent: &mut HashMap<String, StreamAck>) {
    unsent.retain(|_, ack| {
        let (topic, message) = match &ack.box_id {
            Some(box_id) => (
                wire::BoxTopics::new(&ack.shop_id, box_id).ack,
                Ack {
                    v: wire::VERSION,
                    stream_id: Some(ack.stream_id.clone()),
                    up_to_seq: ack.up_to_seq,
                    stream_conflict_at: ack.conflict_at,
                },
            ),
            // A protocol-1 box knows one stream and no conflicts.
            None => (
                wire::legacy::ack_topic(&ack.shop_id),
                Ack {
                    v: LEGACY_VERSION,
                    stream_id: None,
                    up_to_seq: ack.up_to_seq,
                    stream_conflict_at: None,
                },
            ),
        };
        let payload = serde_json::to_vec(&message).expect("an ack serialises");
        mqtt.try_publish(topic, QoS::AtLeastOnce, false, payload)
            .is_err()
    });
}

/// Whether PostgreSQL refused the data itself (a bad value, a constraint, a size limit), as
/// opposed to a passing condition worth retrying.
fn refused_for_its_content(error: &anyhow::Error) -> bool {
    let class = error
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .map(|code| &code.code()[..2]);
    // 22 data exception, 23 integrity constraint violation, 54 program limit exceeded.
    matches!(class, Some("22" | "23" | "54"))
}

async fn store_one_by_one(db: &mut Client, group: &[Message]) -> Stored {
    let mut all = Stored::default();
    for message in group {
        match store_group(db, std::slice::from_ref(message)).await {
            Ok(stored) => all.add(stored),
            Err(e) if db.is_closed() || !refused_for_its_content(&e) => {
                // Not acknowledged: the shops send these again.
                tracing::warn!("lost PostgreSQL: {e:#}");
                break;
            }
            Err(e) => {
                let stored = async {
                    let tx = db.transaction().await?;
                    let stored = refuse(&tx, message, &e).await?;
                    tx.commit().await?;
                    anyhow::Ok(stored)
                };
                match stored.await {
                    Ok(stored) => all.add(stored),
                    Err(e) => tracing::error!("cannot record a dead letter: {e:#}"),
                }
            }
        }
    }
    all
}

/// What a committed transaction of ingest did.
#[derive(Default)]
struct Stored {
    acks: Vec<StreamAck>,
    /// Events new to the database.
    events: usize,
    dead_letters: usize,
}

impl Stored {
    fn add(&mut self, other: Stored) {
        self.acks.extend(other.acks);
        self.events += other.events;
        self.dead_letters += other.dead_letters;
    }
}

impl From<storage::events::Stored> for Stored {
    fn from(stored: storage::events::Stored) -> Stored {
        Stored {
            acks: stored.acks,
            events: stored.events,
            dead_letters: 0,
        }
    }
}

/// A message PostgreSQL refused for its content (jsonb cannot hold `\u0000`, say) goes to the
/// dead letters whole. If it was a valid batch, its seqs are stored with a body pointing to
/// the dead letter, so the stream's acknowledgements move on: a box must never resend one bad
/// event for ever, and the event itself is kept (in `dead_letters.payload`).
async fn refuse(
    tx: &Transaction<'_>,
    message: &Message,
    error: &anyhow::Error,
) -> anyhow::Result<Stored> {
    let detail = error
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::as_db_error)
        .map_or_else(|| format!("{error:#}"), |e| e.message().to_string());
    let reason = format!("refused by the database: {detail}");
    tracing::warn!(
        topic = message.topic,
        "refused a message; the reason is in dead_letters"
    );
    let id = storage::events::dead_letter(tx, &message.topic, &message.payload, &reason).await?;
    let dead_letter = Stored {
        dead_letters: 1,
        ..Stored::default()
    };
    let Some(topic) = Topic::parse(&message.topic).filter(|t| t.leaf == "events") else {
        return Ok(dead_letter);
    };
    let Ok(mut batch) = EventBatch::parse(&message.payload, &topic) else {
        return Ok(dead_letter);
    };
    for event in &mut batch.events {
        event.body = serde_json::json!({ "dead_letter_id": id });
    }
    let mut stored = Stored::from(storage::events::store_batches(tx, &[batch]).await?);
    stored.dead_letters = 1;
    Ok(stored)
}

/// Validates a group of messages and stores it in one transaction; returns the acks to send.
async fn store_group(db: &mut Client, group: &[Message]) -> anyhow::Result<Stored> {
    let tx = db.transaction().await?;
    let mut batches = Vec::new();
    let mut dead_letters = 0;
    for Message {
        topic: text,
        payload,
    } in group
    {
        let refused = match Topic::parse(text) {
            None => Some("not a shop topic".to_string()),
            Some(topic) if topic.leaf == "events" => match EventBatch::parse(payload, &topic) {
                Ok(batch) => {
                    batches.push(batch);
                    None
                }
                Err(reason) => Some(reason.to_string()),
            },
            Some(topic) if topic.leaf == "status" => match BoxStatus::parse(payload) {
                // A box's status on its topic, a shop's (protocol 1) on the shop's.
                Ok(status) if (status.v == LEGACY_VERSION) == topic.box_id.is_none() => {
                    storage::events::set_status(&tx, topic.shop_id, topic.box_id, &status).await?;
                    None
                }
                Ok(_) => Some("a status of the wrong protocol for its topic".to_string()),
                Err(reason) => Some(reason),
            },
            Some(topic) if topic.leaf == "resync" => {
                // Checked before it was queued here.
                if let Ok(request) = ResyncRequest::parse(payload) {
                    storage::events::record_downlink_applied(
                        &tx,
                        topic.shop_id,
                        topic.box_id,
                        request.from_version,
                    )
                    .await?;
                }
                None
            }
            Some(topic) if topic.leaf == "applied" && topic.box_id.is_some() => {
                match DownlinkApplied::parse(payload) {
                    Ok(report) => {
                        storage::events::record_downlink_applied(
                            &tx,
                            topic.shop_id,
                            topic.box_id,
                            report.version,
                        )
                        .await?;
                        None
                    }
                    Err(reason) => Some(reason.to_string()),
                }
            }
            Some(_) => Some("unknown topic".to_string()),
        };
        if let Some(reason) = refused {
            // The reason may quote the payload: it goes to the table, not the log.
            tracing::warn!(
                topic = text,
                "refused a message; the reason is in dead_letters"
            );
            storage::events::dead_letter(&tx, text, payload, &reason).await?;
            dead_letters += 1;
        }
    }
    let mut stored = if batches.is_empty() {
        Stored::default()
    } else {
        Stored::from(storage::events::store_batches(&tx, &batches).await?)
    };
    stored.dead_letters = dead_letters;
    tx.commit().await?;
    Ok(stored)
}
