//! The uplink: drains the outbox to the cloud over MQTT, in `seq` order, and deletes events
//! only when cloud-sync acknowledges them (after its PostgreSQL commit). A broker's PUBACK is
//! not durability: rumqttc keeps unacknowledged publishes in memory only, and brokers may not
//! persist them, so anything not acknowledged end to end is simply sent again (cloud-sync
//! ignores seqs it already has).
//!
//! A bounded window of batches is in flight; with no progress for `ack_timeout_secs`, or
//! after a reconnection, sending restarts after the last acknowledged seq. Connection failures
//! back off exponentially with jitter. A retained status message says `online`, and the last
//! will `offline`, so HQ sees a box drop.
//!
//! The same connection carries the downlink: HQ's customer changes arrive in version order and
//! are applied atomically to the store; the daemon is told to reload its index at once. On
//! every connection, and whenever a batch does not continue the version the box has, the box
//! asks for a resync from that version.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde::Deserialize;
use tastesync_shared::downlink::{ChangeBatch, ResyncRequest};
use tastesync_shared::wire::{self, Ack, EventBatch, WireEvent};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::store::{Applied, Store};

/// At most one resync request per this long while one is awaited.
const RESYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Section `[uplink]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// The MQTT broker, `host:port`; empty turns the uplink off (the box works offline).
    pub broker: String,
    /// This shop's broker credentials (the broker's ACL confines it to its own topics).
    pub username: String,
    pub password: String,
    /// Connect with TLS (rustls), checking the broker's certificate against `ca_file`.
    pub tls: bool,
    /// PEM file of the certificate authority that signed the broker's certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for brokers that authenticate shops by certificate
    /// (Mosquitto: `require_certificate true`, `use_identity_as_username true`).
    pub client_cert_file: Option<std::path::PathBuf>,
    pub client_key_file: Option<std::path::PathBuf>,
    /// Events per MQTT message.
    pub batch_size: usize,
    /// Batches in flight before waiting for acknowledgements.
    pub window_batches: usize,
    /// Resend from the last acknowledged seq when nothing was acknowledged for this long.
    pub ack_timeout_secs: u64,
    /// MQTT keep-alive: the broker publishes the `offline` last will about 1.5 times this
    /// long after the box goes silent.
    pub keep_alive_secs: u64,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            broker: String::new(),
            username: String::new(),
            password: String::new(),
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            batch_size: 500,
            window_batches: 8,
            ack_timeout_secs: 10,
            keep_alive_secs: 15,
        }
    }
}

/// What the owner page shows about the sync.
pub type SyncStatus = watch::Sender<String>;

/// Checks the settings (broker address, TLS files) so a mistake stops the daemon at start,
/// with the reason, instead of surfacing later.
pub fn validate(uplink: &UplinkConfig) -> anyhow::Result<()> {
    broker_address(&uplink.broker)?;
    if uplink.tls {
        tls_configuration(uplink)?;
    }
    Ok(())
}

fn broker_address(broker: &str) -> anyhow::Result<(&str, u16)> {
    wire::parse_broker(broker)
        .with_context(|| format!("uplink.broker {broker:?} must be host:port"))
}

/// Runs until shutdown. A local failure (a full disk refusing HQ's changes, a store error)
/// never ends the sync for good: it is logged, shown on the owner page, and the uplink starts
/// over from what the store holds.
pub async fn run(
    config: &Config,
    status: SyncStatus,
    index_changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        let result = run_once(config, &status, index_changed.clone(), shutdown.clone()).await;
        let Err(e) = result else { return Ok(()) };
        tracing::error!("the uplink stopped: {e:#}; starting over in 5 s");
        status.send_replace(format!("error: {e:#}; retrying"));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

async fn run_once(
    config: &Config,
    status: &SyncStatus,
    index_changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let uplink = &config.uplink;
    let (host, port) = broker_address(&uplink.broker)?;
    let shop = config.shop_id.clone();
    let mut options = MqttOptions::new(format!("tastesync-edge-{shop}"), host, port);
    options.set_keep_alive(Duration::from_secs(uplink.keep_alive_secs.max(1)));
    options.set_clean_session(true);
    options.set_max_packet_size(wire::MAX_PAYLOAD + 4096, wire::MAX_PAYLOAD + 4096);
    options.set_last_will(LastWill::new(
        wire::status_topic(&shop),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if !uplink.username.is_empty() {
        options.set_credentials(uplink.username.clone(), uplink.password.clone());
    }
    if uplink.tls {
        options.set_transport(Transport::tls_with_config(tls_configuration(uplink)?));
    }
    let (client, mut events) = AsyncClient::new(options, 64);
    let store = Arc::new(Mutex::new(Store::open(&config.database)?));
    let ack_topic = wire::ack_topic(&shop);
    let changes_topic = wire::changes_topic(&shop);
    let resync_topic = wire::resync_topic(&shop);
    let mut downlink = DownlinkProgress::default();
    let events_topic = wire::events_topic(&shop);
    let window = (uplink.batch_size * uplink.window_batches) as i64;
    let ack_timeout = Duration::from_secs(uplink.ack_timeout_secs);

    let mut acked = first_pending(&store).await? - 1;
    let mut sent = acked;
    let mut connected = false;
    let mut backoff = Duration::from_millis(500);
    let mut last_progress = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    backoff = Duration::from_millis(500);
                    client.try_subscribe(&ack_topic, QoS::AtLeastOnce)?;
                    client.try_subscribe(&changes_topic, QoS::AtLeastOnce)?;
                    // Whatever changed while the box was away.
                    request_resync(&client, &resync_topic, &store).await?;
                    downlink.requested = Some(Instant::now());
                    client.try_publish(wire::status_topic(&shop), QoS::AtLeastOnce, true, "online")?;
                    sent = acked; // whatever was in flight may be lost: send it again
                    last_progress = Instant::now();
                    tracing::info!("uplink connected");
                    status.send_replace("connected".into());
                }
                Ok(Event::Incoming(Packet::Publish(message))) if message.topic == changes_topic => {
                    let batch = match ChangeBatch::parse(&message.payload, &shop) {
                        Ok(batch) => batch,
                        Err(e) => {
                            tracing::warn!("ignoring a refused customer-change message: {}", e.without_payload());
                            continue;
                        }
                    };
                    let (s, to) = (store.clone(), batch.to_version);
                    let applied = tokio::task::spawn_blocking(move || s.lock().expect("store").apply_changes(&batch)).await??;
                    downlink.seen = downlink.seen.max(to);
                    match applied {
                        Applied::Applied { changes } => {
                            tracing::info!(changes, version = to, "customer changes from HQ applied");
                            index_changed.notify_one();
                            downlink.have = to;
                            downlink.requested = None; // answered, or news: ask at once if behind
                        }
                        Applied::AlreadyApplied { have } => downlink.have = have,
                        Applied::Gap { have } => {
                            downlink.have = have;
                            if downlink.should_ask() {
                                tracing::info!(have, next = to, "customer changes missing; asking for a resync");
                                request_resync(&client, &resync_topic, &store).await?;
                                downlink.requested = Some(Instant::now());
                            }
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(message))) if message.topic == ack_topic => {
                    match serde_json::from_slice::<Ack>(&message.payload) {
                        Ok(ack) if ack.up_to_seq > acked => {
                            let up_to = ack.up_to_seq;
                            let s = store.clone();
                            let waiting = tokio::task::spawn_blocking(move || {
                                let mut store = s.lock().expect("store");
                                store.delete_outbox_up_to(up_to)?;
                                store.outbox_pending()
                            }).await??;
                            status.send_replace(format!("connected; {waiting} events waiting"));
                            acked = up_to;
                            sent = sent.max(acked);
                            last_progress = Instant::now();
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("ignoring a malformed acknowledgement: {e}"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!("uplink disconnected: {e}");
                    }
                    connected = false;
                    status.send_replace("offline: cannot reach the broker; events wait in the outbox".into());
                    let jitter = Duration::from_millis(rand_jitter(backoff.as_millis() as u64 / 2));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff + jitter) => {}
                        _ = shutdown.changed() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            },
            _ = tick.tick(), if connected => {
                // Still behind a batch that was set aside (it came before the answer to an
                // earlier request, or that answer was lost): ask once more. Once: a version
                // the cloud no longer has (its database restored from a backup) must not
                // make the box ask for ever; its next change or reconnection will tell.
                if downlink.should_ask() {
                    request_resync(&client, &resync_topic, &store).await?;
                    downlink.requested = Some(Instant::now());
                    downlink.seen = downlink.have;
                }
                if sent > acked && last_progress.elapsed() >= ack_timeout {
                    tracing::info!(from_seq = acked + 1, "no acknowledgement in time; sending again");
                    sent = acked;
                    last_progress = Instant::now();
                }
                while sent - acked < window {
                    let (s, after, limit) = (store.clone(), sent, uplink.batch_size);
                    let rows = tokio::task::spawn_blocking(move || s.lock().expect("store").outbox(after, limit)).await??;
                    let Some(last) = rows.last().map(|r| r.seq) else { break };
                    let batch = EventBatch {
                        v: wire::VERSION,
                        shop_id: shop.clone(),
                        events: rows.into_iter().map(|r| WireEvent {
                            seq: r.seq, event_id: r.event_id, kind: r.kind, at_ms: r.at_ms, body: r.body,
                        }).collect(),
                    };
                    if client.try_publish(&events_topic, QoS::AtLeastOnce, false, serde_json::to_vec(&batch)?).is_err() {
                        break; // the client's queue is full; the event loop drains it
                    }
                    sent = last;
                }
            }
            _ = shutdown.changed() => {
                let _ = client.try_publish(wire::status_topic(&shop), QoS::AtLeastOnce, true, "offline");
                let _ = client.try_disconnect();
                // Let the event loop send them, briefly.
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while events.poll().await.is_ok() {}
                }).await;
                return Ok(());
            }
        }
    }
}

/// The TLS settings: the broker's CA, and the client certificate if configured.
fn tls_configuration(uplink: &UplinkConfig) -> anyhow::Result<TlsConfiguration> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    let ca_file = uplink
        .ca_file
        .as_deref()
        .context("uplink.tls needs uplink.ca_file (the broker's certificate authority, PEM)")?;
    let client_auth = match (&uplink.client_cert_file, &uplink.client_key_file) {
        (Some(cert), Some(key)) => {
            Some((read(cert, "client certificate")?, read(key, "client key")?))
        }
        (None, None) => None,
        _ => anyhow::bail!("uplink.client_cert_file and uplink.client_key_file go together"),
    };
    Ok(TlsConfiguration::Simple {
        ca: read(ca_file, "CA certificate")?,
        alpn: None,
        client_auth,
    })
}

/// Where the box stands with HQ's changes: the version it has, the highest it has seen
/// announced, and when it last asked for a resync.
#[derive(Default)]
struct DownlinkProgress {
    have: i64,
    seen: i64,
    requested: Option<Instant>,
}

impl DownlinkProgress {
    /// Behind, and no request in the last `RESYNC_INTERVAL` (its answer may still be coming).
    fn should_ask(&self) -> bool {
        self.seen > self.have
            && self
                .requested
                .is_none_or(|at| at.elapsed() >= RESYNC_INTERVAL)
    }
}

/// Asks the cloud for every customer change after the version the box has applied.
async fn request_resync(
    client: &AsyncClient,
    topic: &str,
    store: &Arc<Mutex<Store>>,
) -> anyhow::Result<()> {
    let s = store.clone();
    let from_version =
        tokio::task::spawn_blocking(move || s.lock().expect("store").downlink_version()).await??;
    let request = ResyncRequest {
        v: wire::VERSION,
        from_version,
    };
    client.try_publish(
        topic,
        QoS::AtLeastOnce,
        false,
        serde_json::to_vec(&request)?,
    )?;
    Ok(())
}

async fn first_pending(store: &Arc<Mutex<Store>>) -> anyhow::Result<i64> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.lock().expect("store").outbox_first_seq()).await?
}

/// A pseudo-random jitter below `max_ms` (spreads reconnecting boxes; no crypto needed).
fn rand_jitter(max_ms: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos % max_ms.max(1)
}
