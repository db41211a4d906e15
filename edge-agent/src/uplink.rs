//! The uplink: drains the outbox to the cloud over MQTT, in `seq` order, and deletes events
//! only when cloud-sync acknowledges them (after its PostgreSQL commit). A broker's PUBACK is
//! not durability: rumqttc keeps unacknowledged publishes in memory only, and brokers may not
//! persist them, so anything not acknowledged end to end is simply sent again (cloud-sync
//! ignores seqs it already has).
//!
//! The box speaks protocol 2 (`tastesync_shared::wire`): its own topics under its shop's, a
//! client id of its own, batches of its store's stream cut by size, each carrying the
//! low-water mark (everything below was acknowledged), so a cloud restored from a backup
//! moves on instead of waiting for events that left the box. An acknowledgement counts only
//! for the box's stream and for seqs it sent; one that reports a conflict (the cloud holds
//! other events under these seqs: this store was restored or copied) makes the store start a
//! new stream.
//!
//! A bounded window of batches is in flight; with no progress for `ack_timeout_secs`, or
//! after a reconnection, sending restarts after the last acknowledged seq. Connection failures
//! back off exponentially with jitter. A retained status says the box is online, and its last
//! will that it is not, so HQ sees a box drop.
//!
//! Where it connects comes from the config (a box set up by hand) or from the box's claim; a
//! box in neither state waits for its claim. If the broker refuses a claimed box, the cloud
//! is asked whether HQ revoked it; a revoked box works offline until it is claimed again.
//!
//! The same connection carries the downlink: HQ's customer changes arrive in version order and
//! are applied atomically to the store; the daemon is told to reload its index at once. On
//! every connection, and whenever a batch does not continue the version the box has, the box
//! asks for a resync from that version; after applying changes it reports the version it has
//! (HQ waits for every box's report before calling an erasure done).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde::Deserialize;
use tastesync_shared::downlink::{ChangeBatch, DownlinkApplied, ResyncRequest};
use tastesync_shared::wire::{self, Ack, BatchWriter, BoxStatus, BoxTopics, WireEvent};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::identity::{IdentityFile, Standing};
use crate::store::{Applied, Store};

/// At most one resync request per this long while one is awaited.
const RESYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Section `[uplink]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// For a box set up by hand: the MQTT broker, `host:port`; empty keeps the box offline.
    /// A claimed box uses what the cloud gave it instead.
    pub broker: String,
    /// This box's broker credentials (the broker's ACL confines it to its own topics).
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
    /// Most events per MQTT message.
    pub batch_size: usize,
    /// Largest MQTT message, bytes (at most the 1 MiB both sides accept).
    pub batch_bytes: usize,
    /// Batches in flight before waiting for acknowledgements.
    pub window_batches: usize,
    /// Resend from the last acknowledged seq when nothing was acknowledged for this long.
    pub ack_timeout_secs: u64,
    /// MQTT keep-alive: the broker publishes the offline last will about 1.5 times this
    /// long after the box goes silent.
    pub keep_alive_secs: u64,
    /// Also ask for HQ's changes this often while connected (besides at every connection and
    /// on a gap): a cloud database restored from a backup learns this way that the box is
    /// ahead of it.
    pub resync_secs: u64,
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
            batch_bytes: 256 << 10,
            window_batches: 8,
            ack_timeout_secs: 10,
            keep_alive_secs: 15,
            resync_secs: 600,
        }
    }
}

/// What the owner page shows about the sync.
pub type SyncStatus = watch::Sender<String>;

/// Checks a hand-set connection (broker address, TLS files) so a mistake stops the daemon at
/// start, with the reason, instead of surfacing later.
pub fn validate(uplink: &UplinkConfig) -> anyhow::Result<()> {
    broker_address(&uplink.broker)?;
    if uplink.tls {
        configured_tls(uplink)?;
    }
    Ok(())
}

/// Checks the batching and timing keys.
pub fn validate_tuning(uplink: &UplinkConfig) -> anyhow::Result<()> {
    if !(4096..=wire::MAX_PAYLOAD).contains(&uplink.batch_bytes) {
        anyhow::bail!(
            "uplink.batch_bytes must be 4096 to {} (the limit the cloud accepts)",
            wire::MAX_PAYLOAD
        );
    }
    if uplink.batch_size == 0 || uplink.window_batches == 0 {
        anyhow::bail!("uplink.batch_size and uplink.window_batches must be positive");
    }
    Ok(())
}

fn broker_address(broker: &str) -> anyhow::Result<(&str, u16)> {
    wire::parse_broker(broker).with_context(|| format!("broker {broker:?} must be host:port"))
}

/// Where and how the box connects.
struct Link {
    shop_id: String,
    box_id: String,
    broker: String,
    credentials: Option<(String, String)>,
    tls: Option<TlsConfiguration>,
    /// Set for a claimed box: the broker refusing it may mean HQ revoked it.
    claimed: bool,
}

/// The link the box should use now, if any.
fn current_link(config: &Config, identity: &IdentityFile) -> anyhow::Result<Option<Link>> {
    let identity = identity.get();
    let uplink = &config.uplink;
    if !config.shop_id.is_empty() {
        if uplink.broker.is_empty() {
            return Ok(None);
        }
        return Ok(Some(Link {
            shop_id: config.shop_id.clone(),
            box_id: identity.box_id,
            broker: uplink.broker.clone(),
            credentials: (!uplink.username.is_empty())
                .then(|| (uplink.username.clone(), uplink.password.clone())),
            tls: uplink.tls.then(|| configured_tls(uplink)).transpose()?,
            claimed: false,
        }));
    }
    let Some(claim) = identity.claim.filter(|_| identity.revoked_at_ms.is_none()) else {
        return Ok(None);
    };
    let tls = match (claim.broker_tls, &claim.broker_ca_pem) {
        (false, _) => None,
        (true, Some(ca)) => Some(TlsConfiguration::Simple {
            ca: ca.clone().into_bytes(),
            alpn: None,
            client_auth: None,
        }),
        (true, None) => Some(TlsConfiguration::default()),
    };
    Ok(Some(Link {
        shop_id: claim.shop_id,
        box_id: identity.box_id,
        broker: claim.broker,
        credentials: claim.username.zip(claim.password),
        tls,
        claimed: true,
    }))
}

/// How the box connects to `link` as `client_id`: its broker, credentials and TLS.
fn mqtt_options(config: &Config, link: &Link, client_id: String) -> anyhow::Result<MqttOptions> {
    let (host, port) = broker_address(&link.broker)?;
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_keep_alive(Duration::from_secs(config.uplink.keep_alive_secs.max(1)));
    options.set_clean_session(true);
    options.set_max_packet_size(wire::MAX_PAYLOAD + 4096, wire::MAX_PAYLOAD + 4096);
    if let Some((username, password)) = &link.credentials {
        options.set_credentials(username.clone(), password.clone());
    }
    if let Some(tls) = &link.tls {
        options.set_transport(Transport::tls_with_config(tls.clone()));
    }
    Ok(options)
}

/// What a trial connection to the box's broker found (for `doctor`).
pub enum BrokerProbe {
    /// Neither set up by hand nor claimed: the box works offline.
    NotConfigured(String),
    Accepted {
        broker: String,
    },
    Refused {
        broker: String,
        why: String,
    },
    Unreachable {
        broker: String,
        why: String,
    },
}

/// Connects to the broker as the box would (its credentials and TLS, another client id so
/// the running daemon keeps its connection) and disconnects.
pub async fn probe_broker(config: &Config, identity: &IdentityFile) -> anyhow::Result<BrokerProbe> {
    let Some(link) = current_link(config, identity)? else {
        let why = match identity.get().standing(&config.shop_id) {
            Standing::Setup => "not claimed yet: claim this box on the owner page",
            Standing::Revoked => "revoked by HQ: the box works offline",
            _ => "no [uplink] broker configured: the box works offline",
        };
        return Ok(BrokerProbe::NotConfigured(why.into()));
    };
    let options = mqtt_options(
        config,
        &link,
        format!("tastesync-edge-{}-doctor", link.box_id),
    )?;
    let (client, mut events) = AsyncClient::new(options, 8);
    let broker = link.broker.clone();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    let probe = match outcome {
        Ok(Ok(())) => BrokerProbe::Accepted { broker },
        Ok(Err(ConnectionError::ConnectionRefused(code))) => BrokerProbe::Refused {
            broker,
            why: format!("{code:?}"),
        },
        Ok(Err(e)) => BrokerProbe::Unreachable {
            broker,
            why: e.to_string(),
        },
        Err(_) => BrokerProbe::Unreachable {
            broker,
            why: "no answer within 10 s".into(),
        },
    };
    let _ = client.try_disconnect();
    Ok(probe)
}

/// Why one connection's run ended.
enum Stop {
    Shutdown,
    /// The box was claimed, claimed again, or revoked: connect as it says now.
    IdentityChanged,
    /// The cloud says HQ revoked the box.
    Revoked,
}

/// Runs until shutdown. A local failure (a full disk refusing HQ's changes, a store error)
/// never ends the sync for good: it is logged, shown on the owner page, and the uplink starts
/// over from what the store holds.
pub async fn run(
    config: &Config,
    identity: Arc<IdentityFile>,
    status: SyncStatus,
    index_changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        let link = match current_link(config, &identity) {
            Ok(Some(link)) => link,
            Ok(None) => {
                let why = match identity.get().standing(&config.shop_id) {
                    Standing::Setup => "not claimed yet: claim this box on the owner page",
                    Standing::Revoked => {
                        "revoked by HQ: the box works offline; HQ can give a new claim code"
                    }
                    _ => "not configured",
                };
                status.send_replace(why.into());
                tokio::select! {
                    _ = identity.changed() => continue,
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            Err(e) => Err(e)?,
        };
        let result = run_once(
            config,
            &link,
            &identity,
            &status,
            index_changed.clone(),
            shutdown.clone(),
        )
        .await;
        match result {
            Ok(Stop::Shutdown) => return Ok(()),
            Ok(Stop::IdentityChanged) => continue,
            Ok(Stop::Revoked) => {
                let mut revoked = identity.get();
                revoked.revoked_at_ms = Some(crate::now_ms());
                tracing::warn!("HQ revoked this box; it works offline until claimed again");
                identity.save(revoked)?;
            }
            Err(e) => {
                tracing::error!("the uplink stopped: {e:#}; starting over in 5 s");
                status.send_replace(format!("error: {e:#}; retrying"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = identity.changed() => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
    }
}

/// Where the box's stream stands: acknowledged up to `acked`, sent (this connection) up to
/// `sent`, and the highest seq sent since the stream began here (an ack beyond it is not
/// for anything this box sent).
struct StreamProgress {
    id: String,
    acked: i64,
    sent: i64,
    highest_sent: i64,
}

async fn run_once(
    config: &Config,
    link: &Link,
    identity: &IdentityFile,
    status: &SyncStatus,
    index_changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Stop> {
    let uplink = &config.uplink;
    let topics = BoxTopics::new(&link.shop_id, &link.box_id);
    let mut options = mqtt_options(config, link, format!("tastesync-edge-{}", link.box_id))?;
    options.set_last_will(LastWill::new(
        &topics.status,
        status_payload(false),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut events) = AsyncClient::new(options, 64);
    let store = Arc::new(Mutex::new(Store::open(&config.database)?));
    let mut downlink = DownlinkProgress::default();
    let window = (uplink.batch_size * uplink.window_batches) as i64;
    let ack_timeout = Duration::from_secs(uplink.ack_timeout_secs);
    let resync_every = Duration::from_secs(uplink.resync_secs.max(1));

    let (id, first) = on_store(&store, {
        let shop = link.shop_id.clone();
        move |s| Ok((s.stream_id(&shop)?, s.outbox_first_seq()?))
    })
    .await?;
    let mut stream = StreamProgress {
        id,
        acked: first - 1,
        sent: first - 1,
        highest_sent: first - 1,
    };
    let mut connected = false;
    let mut backoff = Duration::from_millis(500);
    let mut last_progress = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let identity_changed = identity.changed();
    tokio::pin!(identity_changed);
    loop {
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    backoff = Duration::from_millis(500);
                    client.try_subscribe(&topics.ack, QoS::AtLeastOnce)?;
                    client.try_subscribe(&topics.changes, QoS::AtLeastOnce)?;
                    // Whatever changed while the box was away.
                    request_resync(&client, &topics.resync, &store, &mut downlink).await?;
                    client.try_publish(&topics.status, QoS::AtLeastOnce, true, status_payload(true))?;
                    stream.sent = stream.acked; // whatever was in flight may be lost: send it again
                    last_progress = Instant::now();
                    tracing::info!(shop = link.shop_id, "uplink connected");
                    status.send_replace("connected".into());
                }
                Ok(Event::Incoming(Packet::Publish(message))) if message.topic == topics.changes => {
                    let batch = match ChangeBatch::parse(&message.payload, &link.shop_id) {
                        Ok(batch) => batch,
                        Err(e) => {
                            tracing::warn!("ignoring a refused customer-change message: {}", e.without_payload());
                            continue;
                        }
                    };
                    let to = batch.to_version;
                    let applied = on_store(&store, move |s| s.apply_changes(&batch)).await?;
                    downlink.seen = downlink.seen.max(to);
                    match applied {
                        Applied::Applied { changes } => {
                            tracing::info!(changes, version = to, "customer changes from HQ applied");
                            index_changed.notify_one();
                            downlink.have = to;
                            downlink.requested = None; // answered, or news: ask at once if behind
                            // HQ waits for this to call an erasure done.
                            let report = DownlinkApplied { v: wire::VERSION, version: to };
                            client.try_publish(&topics.applied, QoS::AtLeastOnce, false, serde_json::to_vec(&report)?)?;
                        }
                        Applied::AlreadyApplied { have } => downlink.have = have,
                        Applied::Gap { have } => {
                            downlink.have = have;
                            if downlink.should_ask() {
                                tracing::info!(have, next = to, "customer changes missing; asking for a resync");
                                request_resync(&client, &topics.resync, &store, &mut downlink).await?;
                            }
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(message))) if message.topic == topics.ack => {
                    let ack = match serde_json::from_slice::<Ack>(&message.payload) {
                        Ok(ack) => ack,
                        Err(e) => {
                            tracing::warn!("ignoring a malformed acknowledgement: {e}");
                            continue;
                        }
                    };
                    if accept_ack(&store, &mut stream, &ack).await? {
                        let waiting = on_store(&store, |s| s.outbox_pending()).await?;
                        status.send_replace(format!("connected; {waiting} events waiting"));
                        last_progress = Instant::now();
                        // The window has room again: fill it now rather than at the next tick.
                        send_window(&client, &topics, link, uplink, &store, &mut stream, window).await?;
                    }
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(
                    ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword,
                )) => {
                    connected = false;
                    if link.claimed {
                        let claim = identity.get().claim.context("the claim vanished")?;
                        if crate::provisioning::is_revoked(config, &link.box_id, &claim).await == Some(true) {
                            return Ok(Stop::Revoked);
                        }
                    }
                    tracing::warn!("the broker refuses this box's credentials");
                    status.send_replace("refused by the broker: its credentials are not accepted; events wait in the outbox".into());
                    backoff = backoff.max(Duration::from_secs(30));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut identity_changed => return Ok(Stop::IdentityChanged),
                        _ = shutdown.changed() => return Ok(Stop::Shutdown),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                }
                Err(e) => {
                    if connected {
                        tracing::warn!("uplink disconnected: {e}");
                    }
                    connected = false;
                    status.send_replace("offline: cannot reach the broker; events wait in the outbox".into());
                    let jitter = Duration::from_millis(rand_jitter(backoff.as_millis() as u64 / 2));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff + jitter) => {}
                        _ = &mut identity_changed => return Ok(Stop::IdentityChanged),
                        _ = shutdown.changed() => return Ok(Stop::Shutdown),
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
                    request_resync(&client, &topics.resync, &store, &mut downlink).await?;
                    downlink.seen = downlink.have;
                } else if downlink.asked.is_none_or(|at| at.elapsed() >= resync_every) {
                    request_resync(&client, &topics.resync, &store, &mut downlink).await?;
                }
                if stream.sent > stream.acked && last_progress.elapsed() >= ack_timeout {
                    tracing::info!(from_seq = stream.acked + 1, "no acknowledgement in time; sending again");
                    stream.sent = stream.acked;
                    last_progress = Instant::now();
                }
                send_window(&client, &topics, link, uplink, &store, &mut stream, window).await?;
            }
            _ = &mut identity_changed => {
                disconnect(&client, &topics, &mut events).await;
                return Ok(Stop::IdentityChanged);
            }
            _ = shutdown.changed() => {
                disconnect(&client, &topics, &mut events).await;
                return Ok(Stop::Shutdown);
            }
        }
    }
}

/// Publishes batches after `stream.sent` while the window has room.
async fn send_window(
    client: &AsyncClient,
    topics: &BoxTopics,
    link: &Link,
    uplink: &UplinkConfig,
    store: &Arc<Mutex<Store>>,
    stream: &mut StreamProgress,
    window: i64,
) -> anyhow::Result<()> {
    while stream.sent - stream.acked < window {
        let (after, limit) = (stream.sent, uplink.batch_size);
        let rows = on_store(store, move |s| {
            s.outbox(after, limit, crate::clock::held_from())
        })
        .await?;
        if rows.is_empty() {
            break;
        }
        let mut batch = BatchWriter::new(
            &link.shop_id,
            &link.box_id,
            &stream.id,
            stream.acked,
            uplink.batch_bytes,
        );
        for row in rows {
            let event = WireEvent {
                seq: row.seq,
                event_id: row.event_id,
                kind: row.kind,
                at_ms: row.at_ms,
                body: row.body,
            };
            if !batch.push(&event) {
                break; // the batch is full; the rest goes in the next one
            }
        }
        let last = batch.last_seq();
        if client
            .try_publish(&topics.events, QoS::AtLeastOnce, false, batch.finish())
            .is_err()
        {
            break; // the client's queue is full; the event loop drains it
        }
        stream.sent = last;
        stream.highest_sent = stream.highest_sent.max(last);
    }
    Ok(())
}

/// Applies an acknowledgement; returns whether it moved the stream on. Acks for another
/// stream (an earlier one of this store) or beyond what this box sent are ignored.
async fn accept_ack(
    store: &Arc<Mutex<Store>>,
    stream: &mut StreamProgress,
    ack: &Ack,
) -> anyhow::Result<bool> {
    if ack.stream_id.as_deref() != Some(stream.id.as_str()) {
        tracing::debug!("ignoring an acknowledgement for another stream");
        return Ok(false);
    }
    if ack.up_to_seq > stream.highest_sent {
        tracing::warn!(
            up_to_seq = ack.up_to_seq,
            highest_sent = stream.highest_sent,
            "ignoring an acknowledgement beyond what this box sent"
        );
        return Ok(false);
    }
    let mut moved = false;
    if ack.up_to_seq > stream.acked {
        let up_to = ack.up_to_seq;
        on_store(store, move |s| s.delete_outbox_up_to(up_to)).await?;
        stream.acked = up_to;
        stream.sent = stream.sent.max(up_to);
        moved = true;
    }
    if let Some(at) = ack.stream_conflict_at {
        tracing::warn!(
            seq = at,
            "the cloud holds other events under this store's numbers (restored or copied \
             from another box?); the waiting events start a new stream"
        );
        let id = on_store(store, |s| s.start_new_stream()).await?;
        *stream = StreamProgress {
            id,
            acked: 0,
            sent: 0,
            highest_sent: 0,
        };
        moved = true;
    }
    Ok(moved)
}

/// Says offline (the last will is only for an unclean end) and lets the event loop send it.
async fn disconnect(client: &AsyncClient, topics: &BoxTopics, events: &mut rumqttc::EventLoop) {
    let _ = client.try_publish(
        &topics.status,
        QoS::AtLeastOnce,
        true,
        status_payload(false),
    );
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while events.poll().await.is_ok() {}
    })
    .await;
}

fn status_payload(online: bool) -> Vec<u8> {
    serde_json::to_vec(&BoxStatus {
        v: wire::VERSION,
        online,
        software: Some(env!("CARGO_PKG_VERSION").into()),
    })
    .expect("a status serialises")
}

/// Runs `f` on the store off the async threads.
async fn on_store<T: Send + 'static>(
    store: &Arc<Mutex<Store>>,
    f: impl FnOnce(&mut Store) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&mut store.lock().expect("store"))).await?
}

/// The TLS settings of a box set up by hand: the broker's CA, and the client certificate if
/// configured.
fn configured_tls(uplink: &UplinkConfig) -> anyhow::Result<TlsConfiguration> {
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
/// announced, when it asked for a resync whose answer it awaits, and when it last asked.
#[derive(Default)]
struct DownlinkProgress {
    have: i64,
    seen: i64,
    requested: Option<Instant>,
    asked: Option<Instant>,
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
    downlink: &mut DownlinkProgress,
) -> anyhow::Result<()> {
    let now = Instant::now();
    downlink.requested = Some(now);
    downlink.asked = Some(now);
    let from_version = on_store(store, |s| s.downlink_version()).await?;
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

/// A pseudo-random jitter below `max_ms` (spreads reconnecting boxes; no crypto needed).
fn rand_jitter(max_ms: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos % max_ms.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(stream_id: &str, up_to_seq: i64, conflict_at: Option<i64>) -> Ack {
        Ack {
            v: wire::VERSION,
            stream_id: Some(stream_id.into()),
            up_to_seq,
            stream_conflict_at: conflict_at,
        }
    }

    #[tokio::test]
    async fn acks_count_only_for_this_stream_and_for_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("edge.db")).unwrap();
        for at in 1..=10 {
            store.record_health(at, &serde_json::json!({})).unwrap();
        }
        let id = store.stream_id("s1").unwrap();
        let store = Arc::new(Mutex::new(store));
        let pending = || store.lock().unwrap().outbox_pending().unwrap();
        let mut stream = StreamProgress {
            id: id.clone(),
            acked: 0,
            sent: 6,
            highest_sent: 6,
        };

        let foreign = ack("0190e6b2-0000-7000-8000-000000000009", 6, None);
        assert!(!accept_ack(&store, &mut stream, &foreign).await.unwrap());
        assert_eq!(pending(), 10, "another stream's ack deletes nothing");
        assert!(
            !accept_ack(&store, &mut stream, &ack(&id, 9, None))
                .await
                .unwrap()
        );
        assert_eq!(pending(), 10, "nor one beyond what was sent");
        let legacy = Ack {
            stream_id: None,
            ..ack(&id, 6, None)
        };
        assert!(!accept_ack(&store, &mut stream, &legacy).await.unwrap());
        assert_eq!(pending(), 10, "nor a protocol-1 ack naming no stream");

        assert!(
            accept_ack(&store, &mut stream, &ack(&id, 4, None))
                .await
                .unwrap()
        );
        assert_eq!((pending(), stream.acked), (6, 4));

        // The cloud holds other events from seq 7: the rest becomes a new stream from 1.
        assert!(
            accept_ack(&store, &mut stream, &ack(&id, 6, Some(7)))
                .await
                .unwrap()
        );
        assert_ne!(stream.id, id);
        assert_eq!((stream.acked, stream.sent, stream.highest_sent), (0, 0, 0));
        let seqs: Vec<i64> = store
            .lock()
            .unwrap()
            .outbox(0, 100, u64::MAX)
            .unwrap()
            .iter()
            .map(|row| row.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4], "renumbered from 1, in order");
        assert_eq!(store.lock().unwrap().outbox_first_seq().unwrap(), 1);
        store
            .lock()
            .unwrap()
            .record_health(11, &serde_json::json!({}))
            .unwrap();
        assert_eq!(
            store.lock().unwrap().outbox(4, 10, u64::MAX).unwrap()[0].seq,
            5,
            "new events continue the new numbering"
        );
    }
}
