//! `tastesync-edge doctor`: what a technician asks first, in one command. Each check says
//! what it found and, when something is wrong, what to do. A check that fails makes the
//! command exit non-zero; a warning (something to look at, nothing broken yet) does not.
//!
//! It reads what the daemon uses (its config, database, identity, BlueZ, the broker) and,
//! when the daemon runs, asks its `/metrics` on this machine what it hears.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tastesync_shared::days;

use crate::config::{Config, SourceKind};
use crate::identity::IdentityFile;
use crate::uplink::{BrokerProbe, probe_broker};
use crate::{Millis, clock, now_ms};

/// How long the daemon may hear nothing before it is worth a look.
const SILENCE_SECS: u64 = 300;
/// How long events may wait for the cloud before the sync is worth a look.
const UNACKED_SECS: u64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (when not ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check; `min_free_mb` is the free disk space below which the disk check fails.
pub async fn examine(config_path: Option<&Path>, min_free_mb: u64) -> Vec<Check> {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            return vec![Check::fail(
                "config",
                format!("{e:#}"),
                "fix the config file (firmware-notes/configuration.md lists every key)",
            )];
        }
    };
    let mut checks = vec![Check::ok(
        "config",
        format!("database {}", config.database.display()),
    )];
    checks.push(clock(&config));
    checks.push(bluetooth(&config));
    checks.push(database(&config));
    checks.push(disk(&config, min_free_mb));
    let metrics = daemon_metrics(&config).await;
    checks.push(pos(&config, &metrics));
    checks.push(advertisements(&metrics));
    checks.push(broker(&config).await);
    checks.push(last_acknowledged(&config));
    checks
}

fn clock(config: &Config) -> Check {
    let (y, m, d) = clock::RELEASED;
    let now = now_ms();
    if now < clock::released_ms() {
        return Check::fail(
            "clock",
            format!(
                "the clock says {}, before this release ({y}-{m:02}-{d:02}): it was never set",
                days::format_day((now / 86_400_000) as i64)
            ),
            "let the box reach an NTP server (UDP port 123; timedatectl timesync-status); until \
             then visits get provisional times and wait to be sent",
        );
    }
    match config.clock.trusted_when.synchronised() {
        Some(true) => Check::ok("clock", "synchronised"),
        Some(false) => Check::warn(
            "clock",
            "not synchronised with network time yet: visits get provisional times and wait to be sent",
            "let the box reach an NTP server (UDP port 123; timedatectl timesync-status); a \
             Raspberry Pi has no clock of its own",
        ),
        None => Check::warn(
            "clock",
            "cannot tell whether the clock is synchronised (no systemd-timesyncd, no systemd-timedated)",
            "install systemd-timesyncd or chrony",
        ),
    }
}

fn bluetooth(config: &Config) -> Check {
    if config.scanner.source != SourceKind::Ble {
        return Check::ok("bluetooth", "not used: the scanner replays a file");
    }
    match adapters() {
        Err(e) => Check::fail(
            "bluetooth",
            format!("cannot ask BlueZ over the system D-Bus: {e}"),
            "install and start BlueZ: apt install bluez; systemctl enable --now bluetooth",
        ),
        Ok(adapters) if adapters.is_empty() => Check::fail(
            "bluetooth",
            "BlueZ runs but sees no Bluetooth adapter",
            "plug in a supported adapter (firmware-notes) or enable the built-in one; `bluetoothctl list`",
        ),
        Ok(adapters) => match adapters.iter().find(|a| a.powered) {
            None => Check::fail(
                "bluetooth",
                format!("adapter {} is powered off", adapters[0].name),
                "bluetoothctl power on (and check `rfkill list` for a block)",
            ),
            Some(adapter) => Check::ok(
                "bluetooth",
                format!(
                    "adapter {} powered{}",
                    adapter.name,
                    if adapter.discovering {
                        ", scanning"
                    } else {
                        ", not scanning"
                    }
                ),
            ),
        },
    }
}

struct Adapter {
    name: String,
    powered: bool,
    discovering: bool,
}

/// BlueZ's adapters, from its object manager.
fn adapters() -> Result<Vec<Adapter>, dbus::Error> {
    use dbus::arg::prop_cast;
    use dbus::blocking::stdintf::org_freedesktop_dbus::ObjectManager;
    let connection = dbus::blocking::Connection::new_system()?;
    let bluez = connection.with_proxy("org.bluez", "/", Duration::from_secs(5));
    let objects = bluez.get_managed_objects()?;
    Ok(objects
        .iter()
        .filter_map(|(path, interfaces)| {
            let adapter = interfaces.get("org.bluez.Adapter1")?;
            Some(Adapter {
                name: path.rsplit('/').next().unwrap_or("").to_string(),
                powered: prop_cast::<bool>(adapter, "Powered")
                    .copied()
                    .unwrap_or(false),
                discovering: prop_cast::<bool>(adapter, "Discovering")
                    .copied()
                    .unwrap_or(false),
            })
        })
        .collect())
}

fn database(config: &Config) -> Check {
    let path = &config.database;
    if !path.exists() {
        return Check::warn(
            "database",
            format!("no database at {} yet", path.display()),
            "the daemon creates it when it first starts; import customers with `tastesync-edge customers import`",
        );
    }
    let checked = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|db| {
        db.busy_timeout(Duration::from_secs(5))?;
        let mut rows = db.prepare("PRAGMA quick_check")?;
        let found: Vec<String> = rows
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(found)
    });
    let size_mb = std::fs::metadata(path).map_or(0, |m| m.len() >> 20);
    match checked {
        Err(e) => Check::fail(
            "database",
            format!("{} cannot be read: {e}", path.display()),
            "stop the daemon, keep a copy of the file, and restore the last backup (visits since are in the cloud once synced)",
        ),
        Ok(found) if found != ["ok"] => Check::fail(
            "database",
            format!(
                "{} is damaged: {}",
                path.display(),
                found.into_iter().take(3).collect::<Vec<_>>().join("; ")
            ),
            "stop the daemon, keep a copy of the file, and restore the last backup (visits since are in the cloud once synced)",
        ),
        Ok(_) if config.database_max_mb > 0 && size_mb >= config.database_max_mb => Check::fail(
            "database",
            format!(
                "intact, but {size_mb} MB: at its limit (database_max_mb = {})",
                config.database_max_mb
            ),
            "raise database_max_mb, or lower retention_days so old visits are trimmed",
        ),
        Ok(_) => Check::ok("database", format!("intact (quick_check), {size_mb} MB")),
    }
}

fn disk(config: &Config, min_free_mb: u64) -> Check {
    let directory = config
        .database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match free_mb(directory) {
        None => Check::warn(
            "disk",
            format!("cannot tell the free space of {}", directory.display()),
            "check it with `df -h`",
        ),
        Some(free) if free < min_free_mb => Check::fail(
            "disk",
            format!(
                "{free} MB free on {} (less than {min_free_mb} MB)",
                directory.display()
            ),
            "free disk space (old logs: journalctl --vacuum-size=50M); visits stop being recorded when it is full",
        ),
        Some(free) => Check::ok("disk", format!("{free} MB free on {}", directory.display())),
    }
}

/// Free megabytes of the file system holding `directory`, from `df` (POSIX output).
fn free_mb(directory: &Path) -> Option<u64> {
    let output = std::process::Command::new("df")
        .args(["-Pk"])
        .arg(directory)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let available_kb: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(available_kb / 1024)
}

/// What the running daemon's `/metrics` said, or why it could not be asked.
type Metrics = Result<String, String>;

/// The POS address on this machine: the configured port on loopback.
fn local_pos(config: &Config) -> Option<String> {
    let address: std::net::SocketAddr = config.pos.listen.parse().ok()?;
    (address.port() != 0).then(|| format!("http://127.0.0.1:{}", address.port()))
}

async fn daemon_metrics(config: &Config) -> Metrics {
    let Some(base) = local_pos(config) else {
        return Err("the POS is off or on a port chosen at start".into());
    };
    let client = crate::http_client(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client.get(format!("{base}/metrics"));
    if let Some(token) = &config.pos.metrics_token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("nothing answers on {base}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{base}/metrics answered {}", response.status()));
    }
    response.text().await.map_err(|e| e.to_string())
}

fn pos(config: &Config, metrics: &Metrics) -> Check {
    if config.pos.listen.is_empty() {
        return Check::ok("pos", "off (pos.listen is empty)");
    }
    match metrics {
        Ok(page) => Check::ok(
            "pos",
            format!(
                "answers on port {}; {} tablet(s) connected",
                config.pos.listen.rsplit(':').next().unwrap_or("?"),
                sample(page, "tastesync_edge_tablets_connected").unwrap_or(0.0)
            ),
        ),
        Err(why) => Check::fail(
            "pos",
            format!("the daemon's POS does not answer: {why}"),
            "is the daemon running? systemctl status tastesync-edge; journalctl -u tastesync-edge",
        ),
    }
}

fn advertisements(metrics: &Metrics) -> Check {
    let Ok(page) = metrics else {
        return Check::warn(
            "advertisements",
            "unknown: the daemon could not be asked",
            "start the daemon, then run doctor again",
        );
    };
    let heard = sample(page, "tastesync_edge_advertisements_heard_total").unwrap_or(0.0);
    let last = sample(page, "tastesync_edge_last_advertisement_timestamp_seconds").unwrap_or(0.0);
    let silent_for = (now_ms() as f64 / 1000.0 - last).max(0.0);
    if heard == 0.0 {
        Check::fail(
            "advertisements",
            "the daemon has heard no advertisement since it started",
            "check the adapter (above) and that tags or phones are in range; `bluetoothctl scan on` shows what the radio hears",
        )
    } else if silent_for > SILENCE_SECS as f64 {
        Check::fail(
            "advertisements",
            format!("{heard} heard, but none for {silent_for:.0} s"),
            "the radio may be stuck: systemctl restart bluetooth tastesync-edge",
        )
    } else {
        Check::ok(
            "advertisements",
            format!("{heard} heard since start, the last {silent_for:.0} s ago"),
        )
    }
}

/// The value of an unlabelled sample (or the first sample) of `name` on a metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn broker(config: &Config) -> Check {
    let identity = match IdentityFile::open(&config.identity_path()) {
        Ok(identity) => identity,
        Err(e) => {
            return Check::fail(
                "broker",
                format!("cannot read the box's identity: {e:#}"),
                "check the permissions of the state directory",
            );
        }
    };
    match probe_broker(config, &identity).await {
        Err(e) => Check::fail("broker", format!("{e:#}"), "fix the [uplink] section"),
        Ok(BrokerProbe::NotConfigured(why)) => Check::warn(
            "broker",
            why,
            "claim the box on its owner page, or set [uplink] for a box set up by hand",
        ),
        Ok(BrokerProbe::Accepted { broker }) => {
            Check::ok("broker", format!("{broker} accepts the box's credentials"))
        }
        Ok(BrokerProbe::Refused { broker, why }) => Check::fail(
            "broker",
            format!("{broker} refuses the box: {why}"),
            "the box's credentials are not accepted: HQ may have revoked it (ask for a new claim code), or the [uplink] username and password are wrong",
        ),
        Ok(BrokerProbe::Unreachable { broker, why }) => Check::fail(
            "broker",
            format!("cannot reach {broker}: {why}"),
            "check the shop's internet connection and the broker address; events wait in the outbox meanwhile",
        ),
    }
}

fn last_acknowledged(config: &Config) -> Check {
    if !config.database.exists() {
        return Check::ok("sync", "no database yet: nothing waiting");
    }
    let store = match crate::store::Store::open(&config.database) {
        Ok(store) => store,
        Err(e) => {
            return Check::fail(
                "sync",
                format!("cannot open the store: {e:#}"),
                "see the database check",
            );
        }
    };
    let waiting = (store.outbox_pending(), store.outbox_oldest_at_ms());
    let (Ok(pending), Ok(oldest)) = waiting else {
        return Check::fail("sync", "cannot read the outbox", "see the database check");
    };
    match oldest {
        None => Check::ok("sync", "every event acknowledged by the cloud"),
        Some(at) => {
            let age_s = now_ms().saturating_sub(at as Millis) / 1000;
            if age_s > UNACKED_SECS {
                Check::fail(
                    "sync",
                    format!(
                        "{pending} events wait for the cloud, the oldest for {}",
                        human_duration(age_s)
                    ),
                    "nothing is lost (they stay in the outbox); see the broker check for why they do not go",
                )
            } else {
                Check::ok(
                    "sync",
                    format!("{pending} events on their way, the oldest {age_s} s old"),
                )
            }
        }
    }
}

fn human_duration(seconds: u64) -> String {
    match seconds {
        s if s >= 86_400 => format!("{} days", s / 86_400),
        s if s >= 3600 => format!("{} hours", s / 3600),
        s => format!("{} minutes", s / 60),
    }
}

/// The human report: one line per check, what to do under each that is not ok.
pub fn report(checks: &[Check]) -> String {
    let mut text = String::new();
    for check in checks {
        let mark = match check.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        text.push_str(&format!("{mark} {:<15} {}\n", check.name, check.detail));
        if let Some(fix) = &check.fix {
            text.push_str(&format!("     {:<15} -> {fix}\n", ""));
        }
    }
    text
}
