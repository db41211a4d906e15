//! The POS: an HTTP server on the shop's LAN (axum) serving the tablet app, the owner's page
//! and their JSON API, with live alerts over Server-Sent Events. Assets are compiled into the
//! binary: the shop may be offline.
//!
//! Every `/api` route except pairing, the owner's login and `/api/health` needs a token:
//! a paired tablet's (or scanner box's) device token, or the owner's session token for
//! `/api/owner/...`.

mod api;
pub mod auth;
pub mod discovery;
pub mod hub;
pub mod label;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

pub use hub::EventHub;

use crate::config::Config;
use crate::identity::IdentityFile;
use crate::pipeline::{Advertisement, PipelineStats, ScannerSeen};
use crate::store::Store;
use crate::{Millis, now_ms};

/// What the owner's page shows about the box itself.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ble`, `replay` or `simulated`.
    pub scanner: String,
    pub scanner_running: bool,
    pub pipeline: PipelineStats,
    /// Cloud sync status.
    pub cloud_sync: String,
    /// `ok`, or why events cannot be recorded (a full disk).
    pub storage: String,
    /// `synchronised`, or why times are provisional (see `crate::clock`).
    pub clock: String,
    /// The shop's scanners heard so far: this box's own, scanner boxes, ESPresense nodes.
    pub scanners: Vec<ScannerSeen>,
}

/// Shared by every request.
pub struct PosState {
    config: Arc<Config>,
    identity: Arc<IdentityFile>,
    store: Arc<Mutex<Store>>,
    hub: EventHub,
    /// Failure budgets for guesses at pairing codes, the PIN and the setup code.
    pairing_attempts: auth::FailureLimiter,
    pin_attempts: auth::FailureLimiter,
    setup_attempts: auth::FailureLimiter,
    /// PINs are hashed a few at a time, off the store's lock.
    hashing: tokio::sync::Semaphore,
    owner: auth::OwnerSessions,
    tickets: auth::StreamTickets,
    streams: hub::LiveStreams,
    /// The names this box answers to besides its addresses (its mDNS names, configured ones).
    host_names: Vec<String>,
    health: watch::Receiver<Health>,
    /// Live streams end when the box shuts down (or graceful shutdown would wait forever).
    shutdown: watch::Receiver<bool>,
    /// The pipeline's input, for the scanner boxes' sightings (`None` during a replay).
    sightings: Option<mpsc::Sender<Advertisement>>,
}

/// A running POS server.
pub struct PosServer {
    pub address: SocketAddr,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Binds `config.listen`, announces it by mDNS if configured, and serves until `shutdown`.
/// Event-log entries older than the retention are pruned every minute; tablets away longer
/// reload their state.
pub async fn serve(
    box_config: Arc<Config>,
    identity: Arc<IdentityFile>,
    store: Store,
    hub: EventHub,
    health: watch::Receiver<Health>,
    sightings: Option<mpsc::Sender<Advertisement>>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<PosServer> {
    let config = &box_config.pos;
    let listen = config.listen.as_str();
    let retention = Duration::from_secs(config.retention_secs);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the POS (is another program using the port? choose another: pos.listen in the config, or --listen for the demo)"))?;
    let address = listener.local_addr()?;
    let current = identity.get();
    let name = current
        .shop_id(&box_config.shop_id)
        .unwrap_or(&current.box_id)
        .to_string();
    let mut host_names: Vec<String> = [current.box_id.as_str(), name.as_str()]
        .iter()
        .map(|n| {
            discovery::host_name(n)
                .trim_end_matches('.')
                .to_ascii_lowercase()
        })
        .collect();
    host_names.extend(config.allowed_hosts.iter().map(|n| n.to_ascii_lowercase()));
    let state = Arc::new(PosState {
        config: box_config.clone(),
        identity,
        store: Arc::new(Mutex::new(store)),
        hub,
        pairing_attempts: auth::FailureLimiter::new(auth::Budget::PAIRING),
        pin_attempts: auth::FailureLimiter::new(auth::Budget::PIN),
        setup_attempts: auth::FailureLimiter::new(auth::Budget::SETUP),
        hashing: tokio::sync::Semaphore::new(2),
        owner: auth::OwnerSessions::default(),
        tickets: auth::StreamTickets::default(),
        streams: hub::LiveStreams::new(config.max_streams_per_tablet, config.max_streams),
        host_names,
        health,
        shutdown: shutdown.clone(),
        sightings,
    });
    let pruner = state.store.clone();
    let mut prune_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = prune_shutdown.changed() => return,
            }
            let store = pruner.clone();
            let before: Millis = now_ms().saturating_sub(retention.as_millis() as Millis);
            let _ = tokio::task::spawn_blocking(move || {
                store.lock().expect("store lock").prune_pos_events(before)
            })
            .await;
        }
    });
    let announcement = if config.announce {
        let announcement = discovery::announce(&name, address.port(), &config.announce_interface)?;
        tracing::info!(service = discovery::SERVICE_TYPE, "POS announced by mDNS");
        Some(announcement)
    } else {
        None
    };
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        let _announcement = announcement; // withdrawn when the server stops
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await
            .context("the POS server failed")
    });
    tracing::info!("POS listening on http://{address}");
    Ok(PosServer { address, task })
}
