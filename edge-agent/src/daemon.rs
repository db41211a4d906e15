//! The daemon: wires a scanner source, the pipeline and the store together as tasks.
//!
//! ```text
//! source task ──mpsc<Advertisement>──> pipeline task ──std mpsc<PresenceEvent>──> store thread
//!                                       (ticks, index reloads)                    (visits, log, UI)
//! ```
//! The pipeline never waits for the disk: SQLite writes (durable, fsync'd) happen on their own
//! thread. Shutdown (SIGINT/SIGTERM, or the end of a replay) is one watch signal; every stage
//! drains what it has and stops.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::config::{Config, ScannerConfig, SourceKind};
use crate::events::PresenceEvent;
use crate::identity::IdentityFile;
use crate::pipeline::{Advertisement, Pipeline, PipelineStats};
use crate::pos::{self, EventHub, Health};
use crate::simulate::Simulation;
use crate::store::{StopClock, Store};
use crate::{Millis, clock, now_ms, scan};

/// Where advertisements come from for one run.
pub enum Source {
    Ble(ScannerConfig),
    Replay {
        path: PathBuf,
        speed: f64,
        zone: String,
    },
    Simulated(Simulation),
    /// Advertisements sent by another part of the program (benchmarks, future remote
    /// scanners); timestamps are the senders'.
    Channel(mpsc::Receiver<Advertisement>),
}

impl Source {
    pub fn from_config(config: &ScannerConfig) -> Source {
        match config.source {
            SourceKind::Ble => Source::Ble(config.clone()),
            SourceKind::Replay => Source::Replay {
                path: config.replay_file.clone().expect("validated"),
                speed: config.replay_speed,
                zone: config.zone.clone(),
            },
        }
    }

    /// Live sources are ticked by the wall clock; a replay by its own timestamps.
    fn is_live(&self) -> bool {
        !matches!(self, Source::Replay { .. })
    }

    fn name(&self) -> &'static str {
        match self {
            Source::Ble(_) => "ble",
            Source::Replay { .. } => "replay",
            Source::Simulated(_) => "simulated",
            Source::Channel(_) => "channel",
        }
    }
}

/// Resolves when the watchdog is due a ping; never without a watchdog.
async fn watchdog_due(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(every) => {
            every.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Starts the box's clocks: on the system clock if it is synchronised, on a provisional
/// timeline (kept in the store, so a restart in the same boot goes on with it) if not. A
/// provisional run of this boot before a synchronised start is corrected first.
fn start_clock(store: &mut Store, trusted: bool) -> anyhow::Result<()> {
    let (anchor, boot, system) = (store.clock_anchor()?, clock::boot_ms(), clock::system_ms());
    if trusted {
        clock::start_trusted();
        if let Some(anchor) = anchor {
            match clock::correction_at_start(anchor, system, boot, store.latest_stamp()?) {
                Some(correction) => correct_stored_times(store, correction),
                None => store.clear_clock_anchor()?,
            }
        }
    } else {
        let provisional = clock::Provisional::plan(anchor, store.latest_stamp()?, system, boot);
        clock::start_provisional(provisional);
        store.set_clock_anchor(provisional.anchor(boot))?;
    }
    Ok(())
}

/// The time the pipeline runs on: steady time for a live source (durations never jump with
/// the wall clock), the file's own times for a replay (passed with each advertisement).
fn pipeline_now(live: bool) -> Millis {
    if live { clock::steady_ms() } else { now_ms() }
}

/// What the store thread does, in order.
enum StoreWork {
    /// An event, its times on the pipeline's clock.
    Record(PresenceEvent),
    /// The clock synchronised: correct this run's provisional stamps, then trust it.
    CorrectTimes(clock::Correction),
}

/// Called on the store thread for every event, after it is stored (the demo prints here).
pub type EventHook = Box<dyn FnMut(&Store, &PresenceEvent) + Send>;

/// How often the daemon checks the database for customer changes made by other processes.
const RELOAD_CHECK: Duration = Duration::from_secs(2);
/// How often a live box reports its health to HQ through the outbox (and once more when it
/// is stopped cleanly).
const HEALTH_REPORT: Duration = Duration::from_secs(3600);
const CHANNEL_CAPACITY: usize = 4096;
/// How often visits past `retention_days` are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(86_400);

/// A scanner box (`scanner.main_box` set): what its scanner hears goes to the shop's main
/// box, which decides presence for the whole shop. It keeps no visits, serves no tablets and
/// talks to no cloud. Runs until shutdown or until its source ends.
pub async fn run_scanner_box(
    config: &Config,
    source: Source,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let path = config.scanner_token_path();
    let token = std::fs::read_to_string(&path).map_err(|_| {
        anyhow::anyhow!(
            "this scanner box is not paired with its main box ({} is missing): get a pairing \
             code on the main box's owner page and run `tastesync-edge pair-scanner CODE`",
            path.display()
        )
    })?;
    let main = scan::remote::MainBox {
        url: config.scanner.main_box.clone(),
        token: token.trim().to_string(),
        zone: config.scanner.zone.clone(),
        role: config.scanner.role,
    };
    tracing::info!(main_box = %main.url, zone = %main.zone, "scanning for the main box");
    let (tx, rx) = mpsc::channel::<Advertisement>(CHANNEL_CAPACITY);
    let source_task = tokio::spawn(run_source(source, tx, shutdown.clone()));
    let (status, _) = watch::channel(String::from("starting"));
    let mut forward = tokio::spawn(scan::remote::forward(main, rx, status, shutdown.clone()));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let mut watchdog = sd_notify::watchdog_enabled().map(|every| tokio::time::interval(every / 3));
    let outcome = loop {
        tokio::select! {
            _ = watchdog_due(&mut watchdog) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            ended = &mut forward => break ended,
        }
    };
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    source_task.abort();
    outcome?
}

/// Runs until shutdown or until a replay ends. Returns the pipeline's counters. When the POS
/// server is on, its address is sent to `listening` once it accepts connections.
pub async fn run(
    config: &Config,
    source: Source,
    shutdown: watch::Receiver<bool>,
    hook: Option<EventHook>,
    listening: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<PipelineStats> {
    let mut store = Store::open(&config.database)?;
    let live = source.is_live();
    // A live box's clock first: a Raspberry Pi may have booted at a stale time, and network
    // time may step it later (see `crate::clock`). A replay runs on its file's times.
    let (corrections_tx, mut corrections) = mpsc::unbounded_channel();
    if live {
        let when = config.clock.trusted_when.clone();
        let (trust, trusted) = tokio::task::spawn_blocking(move || clock::Trust::new(when)).await?;
        start_clock(&mut store, trusted)?;
        if !trusted {
            tracing::warn!(
                "the clock is not synchronised: visits get provisional times (after the last \
                 known one), corrected and sent to the cloud once network time arrives"
            );
            trust.watch(corrections_tx);
        }
    }
    // After a clean stop moments ago (an upgrade, a restart), the customers still in the shop
    // keep their visits and are not announced again; anything else left open is closed.
    let (resumable, since_stop) =
        store.take_resumable_visits(StopClock::now(), config.presence.absence_ms)?;
    let resumed = if live { resumable } else { Vec::new() };
    let interrupted = store.close_interrupted_visits(&resumed)?;
    if !resumed.is_empty() {
        tracing::info!(
            visits = resumed.len(),
            "visits open at the last clean stop resumed: they go on if the customer is heard again"
        );
    }
    if interrupted > 0 {
        tracing::warn!(
            visits = interrupted,
            "closed visits left open by an unclean stop"
        );
    }
    if let Some(code) = store.setup_code()? {
        // For the console and the journal: who can read them can set the owner's PIN.
        tracing::info!(
            setup_code = code,
            "the owner's PIN is not set: set it on the owner page with this setup code \
             (also: `tastesync-edge setup-code`)"
        );
    }
    let snapshot = store.index_snapshot()?;
    let mut pipeline = Pipeline::new(
        snapshot,
        config.presence.clone(),
        config.eid.tolerance_windows,
        pipeline_now(live),
    );
    pipeline.resume(&resumed, pipeline_now(live).saturating_sub(since_stop));
    let (tags, eid_tags) = pipeline.index().counts();
    tracing::info!(tags, eid_tags, "customer index loaded");

    let hub = EventHub::new();
    let (health_tx, health_rx) = watch::channel(Health {
        scanner: source.name().into(),
        scanner_running: true,
        pipeline: PipelineStats::default(),
        cloud_sync: "not configured".into(),
        storage: "ok".into(),
        clock: clock::describe(),
        scanners: Vec::new(),
    });
    let identity = Arc::new(IdentityFile::open(&config.identity_path())?);
    let box_id = identity.get().box_id;
    tracing::info!(
        box_id,
        standing = ?identity.get().standing(&config.shop_id),
        "box identity"
    );
    let (ad_tx, mut ad_rx) = mpsc::channel::<Advertisement>(CHANNEL_CAPACITY);
    // Other scanners of the shop (scanner boxes, ESPresense nodes) hear in real time: they
    // join a live box's own scanner, never a replay (which ends when its file does).
    let others = live.then(|| ad_tx.clone());
    let server = if config.pos.listen.is_empty() {
        None
    } else {
        let pos_store = Store::open(&config.database)?;
        pos_store.limit_size(config.database_max_mb)?;
        let server = pos::serve(
            Arc::new(config.clone()),
            identity.clone(),
            pos_store,
            hub.clone(),
            health_rx,
            others.clone(),
            shutdown.clone(),
        )
        .await?;
        if let Some(listening) = listening {
            let _ = listening.send(server.address);
        }
        Some(server)
    };

    let (sync_tx, sync_rx) = watch::channel(String::from("not configured"));
    let index_changed = Arc::new(tokio::sync::Notify::new());
    // A box set up by hand connects as its config says; a claimed one as its claim says; a
    // blank one waits for its claim.
    if !config.uplink.broker.is_empty() {
        crate::uplink::validate(&config.uplink).context("invalid [uplink] section")?;
        sync_tx.send_replace("connecting".into());
    }
    let uplink = {
        let (config, shutdown, notify) = (config.clone(), shutdown.clone(), index_changed.clone());
        let identity = identity.clone();
        Some(tokio::spawn(async move {
            crate::uplink::run(&config, identity, sync_tx, notify, shutdown).await
        }))
    };

    if let Some(tx) = others.filter(|_| !config.espresense.broker.is_empty()) {
        let (config, shutdown) = (config.espresense.clone(), shutdown.clone());
        let (status, _) = watch::channel(String::new());
        tokio::spawn(async move {
            if let Err(e) = scan::espresense::run(config, &box_id, tx, status, shutdown).await {
                tracing::error!("ESPresense nodes are not heard: {e:#}");
            }
        });
    }
    let mut source_task = tokio::spawn(run_source(source, ad_tx, shutdown.clone()));
    let mut source_ended = None;

    let (event_tx, event_rx) = std::sync::mpsc::channel::<StoreWork>();
    store.limit_size(config.database_max_mb)?;
    let (storage_tx, storage_rx) = watch::channel(String::from("ok"));
    let store_thread = std::thread::Builder::new()
        .name("store".into())
        .spawn(move || record_events(store, event_rx, hub, storage_tx, hook))?;

    let mut reader = IndexReader::open(config.database.clone()).await?;
    let health_store = Arc::new(std::sync::Mutex::new(Store::open(&config.database)?));
    health_store
        .lock()
        .expect("health store")
        .limit_size(config.database_max_mb)?;
    let mut health_report =
        tokio::time::interval_at(tokio::time::Instant::now() + HEALTH_REPORT, HEALTH_REPORT);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reload = tokio::time::interval(RELOAD_CHECK);
    let retention_before = |now: Millis| now.saturating_sub(config.retention_days * 86_400_000);
    apply_retention(&health_store, retention_before(now_ms())).await;
    let mut retention = tokio::time::interval_at(
        tokio::time::Instant::now() + RETENTION_EVERY,
        RETENTION_EVERY,
    );
    let mut shutdown = shutdown;
    let mut events = Vec::new();
    let mut last_at: Option<Millis> = None;
    // systemd (Type=notify): ready now that the store, the POS and the scanner run. The loop
    // below pings the watchdog itself, so a stuck pipeline is restarted, not only a dead
    // process. Without systemd (the demo, a terminal) these do nothing.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let mut watchdog = sd_notify::watchdog_enabled().map(|every| tokio::time::interval(every / 3));
    loop {
        tokio::select! {
            _ = watchdog_due(&mut watchdog) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            ad = ad_rx.recv() => {
                let Some(ad) = ad else { break };
                last_at = Some(ad.at_ms);
                pipeline.process(&ad, &mut events);
            }
            ended = &mut source_task, if source_ended.is_none() => {
                source_ended = Some(ended);
                // A live scanner that stopped (no adapter, BlueZ gone) ends the run: the
                // channel's other senders (scanner boxes, ESPresense nodes) would keep it
                // open. A replay ends when the channel closes, after all it sent.
                if live {
                    break;
                }
            }
            _ = tick.tick(), if live => {
                clock::follow_system();
                pipeline.set_wall_offset(clock::correction_ms());
                pipeline.tick(clock::steady_ms(), &mut events);
                health_tx.send_modify(|h| h.pipeline = pipeline.stats());
            }
            _ = health_report.tick(), if live => {
                health_tx.send_modify(|h| h.pipeline = pipeline.stats());
                let report = health_body("running", &health_tx.borrow());
                record_health(&health_store, report).await;
            }
            _ = retention.tick() => apply_retention(&health_store, retention_before(now_ms())).await,
            _ = index_changed.notified() => {
                reload_index(&mut reader, &mut pipeline, last_at.filter(|_| !live)).await?;
            }
            _ = reload.tick() => {
                health_tx.send_modify(|h| {
                    h.pipeline = pipeline.stats();
                    h.scanners = pipeline.scanners();
                    h.cloud_sync = sync_rx.borrow().clone();
                    h.storage = storage_rx.borrow().clone();
                    h.clock = clock::describe();
                });
                reload_index(&mut reader, &mut pipeline, last_at.filter(|_| !live)).await?;
            }
            Some(correction) = corrections.recv() => {
                // In order with the events: those already queued are stamped provisionally
                // and corrected with the rest; the store thread then trusts the clock.
                event_tx.send(StoreWork::CorrectTimes(correction)).context("the store thread stopped")?;
            }
            _ = shutdown.changed() => break,
        }
        for event in events.drain(..) {
            log_event(&event);
            event_tx
                .send(StoreWork::Record(event))
                .context("the store thread stopped")?;
        }
    }
    if !live {
        // The recording is over: let everyone still present time out, as they would have
        // (the seated absence is the longer one).
        if let Some(last) = last_at {
            let longest = config
                .presence
                .seated_absence_ms
                .max(config.presence.absence_ms);
            pipeline.tick(last + longest, &mut events);
        }
        for event in events.drain(..) {
            log_event(&event);
            event_tx
                .send(StoreWork::Record(event))
                .context("the store thread stopped")?;
        }
    }
    drop(corrections);
    if *shutdown.borrow() {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        health_tx.send_modify(|h| {
            h.pipeline = pipeline.stats();
            h.storage = storage_rx.borrow().clone();
        });
        let report = health_body("stopping", &health_tx.borrow());
        record_health(&health_store, report).await;
    }
    drop(event_tx);
    drop(ad_rx);
    let source_result = match source_ended {
        Some(ended) => ended,
        None => source_task.await,
    }
    .context("the scanner task panicked")?;
    store_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the store thread panicked"))??;
    if *shutdown.borrow() {
        // Every event is stored: the visits still open may be resumed by the next start.
        let stopped = health_store
            .lock()
            .expect("health store")
            .record_clean_stop(StopClock::now());
        if let Err(e) = stopped {
            tracing::warn!(
                "cannot note the clean stop (visits will be closed at the next start): {e:#}"
            );
        }
    }
    if let Some(server) = server {
        if !*shutdown.borrow() {
            // A finished replay: stop the server too.
            server.task.abort();
        } else {
            server.task.await.context("the POS server panicked")??;
        }
    }
    if let Some(uplink) = uplink {
        if !*shutdown.borrow() {
            uplink.abort(); // a finished replay; the outbox keeps what was not acknowledged
        } else {
            uplink.await.context("the uplink task panicked")??;
        }
    }
    source_result?;
    Ok(pipeline.stats())
}

/// A `box_health` event's body: counters and states, no personal data.
fn health_body(status: &str, health: &Health) -> serde_json::Value {
    serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "scanner": health.scanner,
        "advertisements": health.pipeline.advertisements,
        "malformed": health.pipeline.malformed,
        "beacons": health.pipeline.beacons,
        "recognised": health.pipeline.recognised,
        "last_advertisement_ms": health.pipeline.last_advertisement_ms,
        "storage": health.storage,
    })
}

/// Deletes visits older than `before` (the retention setting); a failure is logged.
async fn apply_retention(store: &Arc<std::sync::Mutex<Store>>, before: Millis) {
    let store = store.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        store.lock().expect("health store").apply_retention(before)
    })
    .await
    .map_err(anyhow::Error::from)
    .and_then(|result| result);
    match deleted {
        Ok(0) => {}
        Ok(visits) => tracing::info!(visits, "visits past the retention period deleted"),
        Err(e) => tracing::warn!("cannot apply the retention period: {e:#}"),
    }
}

/// Writes a health report; a failure (a full disk) is logged, never fatal.
async fn record_health(store: &Arc<std::sync::Mutex<Store>>, body: serde_json::Value) {
    let store = store.clone();
    let written = tokio::task::spawn_blocking(move || {
        store
            .lock()
            .expect("health store")
            .record_health(now_ms(), &body)
    })
    .await
    .map_err(anyhow::Error::from)
    .and_then(|result| result);
    if let Err(e) = written {
        tracing::warn!("cannot record a health report: {e:#}");
    }
}

/// Reloads the customer index if the store's customers changed (an import by another
/// process, or HQ's changes through the downlink).
async fn reload_index(
    reader: &mut IndexReader,
    pipeline: &mut Pipeline,
    replay_clock: Option<Millis>,
) -> anyhow::Result<()> {
    if let Some(snapshot) = reader.changed_snapshot().await? {
        pipeline.apply_snapshot(snapshot, replay_clock.unwrap_or_else(clock::steady_ms));
        let (tags, eid_tags) = pipeline.index().counts();
        tracing::info!(tags, eid_tags, "customer index reloaded");
    }
    Ok(())
}

async fn run_source(
    source: Source,
    tx: mpsc::Sender<Advertisement>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    match source {
        Source::Ble(config) => scan::ble::run(&config, tx, shutdown).await,
        Source::Replay { path, speed, zone } => {
            let summary = scan::replay::run(&path, speed, &zone, tx, shutdown).await?;
            tracing::info!(
                played = summary.played,
                bad_lines = summary.bad_lines,
                "replay finished"
            );
            Ok(())
        }
        Source::Channel(mut rx) => {
            let mut shutdown = shutdown;
            loop {
                tokio::select! {
                    ad = rx.recv() => match ad {
                        Some(ad) => if tx.send(ad).await.is_err() { return Ok(()) },
                        None => return Ok(()),
                    },
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
        Source::Simulated(mut sim) => {
            let mut shutdown = shutdown;
            let mut step = tokio::time::interval(Duration::from_millis(100));
            let mut from = clock::steady_ms();
            loop {
                tokio::select! {
                    _ = step.tick() => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                let to = clock::steady_ms();
                for ad in sim.advertisements_between(from, to) {
                    if tx.send(ad).await.is_err() {
                        return Ok(());
                    }
                }
                from = to;
            }
        }
    }
}

/// The store thread: records each event, then sends it to the tablets and the hook.
///
/// A failed write (a full disk) must not stop the box: alerts go on, the failure is logged,
/// counted and shown on the owner page, and nothing already stored is touched.
fn record_events(
    mut store: Store,
    work: std::sync::mpsc::Receiver<StoreWork>,
    hub: EventHub,
    storage: watch::Sender<String>,
    mut hook: Option<EventHook>,
) -> anyhow::Result<()> {
    let mut unrecorded: u64 = 0;
    for work in work {
        let mut event = match work {
            StoreWork::Record(event) => event,
            StoreWork::CorrectTimes(correction) => {
                correct_times(&mut store, correction);
                continue;
            }
        };
        // Steady time to wall time (zero for a replay).
        event.shift(clock::correction_ms());
        match record(&mut store, &event) {
            Ok(()) => {
                if matches!(event, PresenceEvent::CustomerArrived(_)) {
                    crate::metrics::COUNTERS.arrivals.inc();
                }
                storage.send_if_modified(|s| std::mem::replace(s, "ok".into()) != "ok");
            }
            Err(e) => {
                unrecorded += 1;
                let failure = crate::store::Failure::of(&e);
                tracing::error!(unrecorded, "{e:#}; {}", failure.explain());
                storage.send_replace(format!(
                    "cannot write ({unrecorded} events not recorded): {}",
                    failure.explain()
                ));
            }
        }
        if let Err(e) = publish(&hub, &mut store, &event) {
            tracing::error!("alert sent live only: {e:#}");
        }
        if let Some(hook) = hook.as_mut() {
            hook(&store, &event);
        }
    }
    Ok(())
}

/// Rewrites this run's provisional stamps once the clock is synchronised, then trusts it.
fn correct_times(store: &mut Store, correction: clock::Correction) {
    correct_stored_times(store, correction);
    clock::apply(correction);
}

/// Moves provisional stamps by a correction. A failure (a full disk) leaves them as they
/// were, which is logged: nothing is lost.
fn correct_stored_times(store: &mut Store, correction: clock::Correction) {
    match store.correct_times(correction) {
        Ok(rows) => tracing::info!(
            rows,
            moved_by_s = correction.delta_ms / 1000,
            "the clock is synchronised: provisional times corrected"
        ),
        Err(e) => {
            tracing::error!(
                "the clock is synchronised, but provisional times stay as they were: {e:#}"
            );
            // Not to be corrected twice later: those times now go out as they are.
            let _ = store.clear_clock_anchor();
        }
    }
}

/// Sends an event to the tablets: arrivals as full alerts, departures by visit id.
fn publish(hub: &EventHub, store: &mut Store, event: &PresenceEvent) -> anyhow::Result<()> {
    match event {
        PresenceEvent::CustomerArrived(arrived) => {
            if let Some(alert) = store.alert_for(arrived)? {
                hub.publish(
                    store,
                    "arrival",
                    Some(arrived.customer),
                    &alert,
                    arrived.arrived_at_ms,
                )?;
            }
        }
        PresenceEvent::CustomerLeft(left) => {
            let body = serde_json::json!({
                "visit_id": left.visit_id, "left_at_ms": left.left_at_ms, "dwell_s": left.dwell_s,
            });
            hub.publish(
                store,
                "departure",
                Some(left.customer),
                &body,
                left.left_at_ms,
            )?;
        }
        PresenceEvent::ZoneChanged(moved) => {
            let body = serde_json::json!({
                "visit_id": moved.visit_id, "zone": moved.zone, "at_ms": moved.at_ms,
            });
            hub.publish(store, "zone", Some(moved.customer), &body, moved.at_ms)?;
        }
    }
    Ok(())
}

fn record(store: &mut Store, event: &PresenceEvent) -> anyhow::Result<()> {
    match event {
        PresenceEvent::CustomerArrived(arrived) => store.record_arrival(arrived),
        PresenceEvent::CustomerLeft(left) => store.record_departure(left),
        PresenceEvent::ZoneChanged(moved) => store.record_zone_change(moved),
    }
    .context("cannot record a visit")
}

/// Logs an event without personal data: ids only.
fn log_event(event: &PresenceEvent) {
    match event {
        PresenceEvent::CustomerArrived(e) => tracing::info!(
            visit = %e.visit_id, customer = e.customer.0, zone = %e.zone, "customer arrived"
        ),
        PresenceEvent::CustomerLeft(e) => tracing::info!(
            visit = %e.visit_id, customer = e.customer.0, zone = %e.zone, dwell_s = e.dwell_s,
            "customer left"
        ),
        PresenceEvent::ZoneChanged(e) => tracing::info!(
            visit = %e.visit_id, customer = e.customer.0, from = %e.from_zone, zone = %e.zone,
            "customer moved"
        ),
    }
}

/// A second connection that notices customer changes committed by other processes (an
/// import, later the sync) and loads a fresh snapshot off the async threads.
struct IndexReader {
    store: Arc<std::sync::Mutex<Store>>,
    revision: i64,
}

impl IndexReader {
    async fn open(path: PathBuf) -> anyhow::Result<IndexReader> {
        let store = tokio::task::spawn_blocking(move || Store::open(&path)).await??;
        let revision = store.customers_revision()?;
        Ok(IndexReader {
            store: Arc::new(std::sync::Mutex::new(store)),
            revision,
        })
    }

    async fn changed_snapshot(&mut self) -> anyhow::Result<Option<crate::resolve::IndexSnapshot>> {
        let store = self.store.clone();
        let last = self.revision;
        let (revision, snapshot) = tokio::task::spawn_blocking(move || {
            let store = store.lock().expect("reader lock");
            let revision = store.customers_revision()?;
            let snapshot = if revision != last {
                Some(store.index_snapshot()?)
            } else {
                None
            };
            anyhow::Ok((revision, snapshot))
        })
        .await??;
        self.revision = revision;
        Ok(snapshot)
    }
}
