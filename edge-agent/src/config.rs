//! The daemon's configuration: one TOML file, every key optional, overridable from the
//! environment as `TASTESYNC__<SECTION>__<KEY>` (for example
//! `TASTESYNC__PRESENCE__ARRIVE_RSSI=-70`, `TASTESYNC__DATABASE=/tmp/edge.db`).
//! Every key is documented in `firmware-notes/configuration.md`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::presence::{PresenceConfig, ScannerRole};
use crate::scan::espresense::EspresenseConfig;

/// The whole configuration of `tastesync-edge run`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The shop's id, for a box set up by hand (1 to 64 letters, digits, `-` and `_`). Empty
    /// (the default): the box is claimed for its shop through the cloud (`[cloud]`).
    pub shop_id: String,
    /// The SQLite database file.
    pub database: PathBuf,
    /// The box's identity (its box id and, once claimed, its shop and broker credentials);
    /// default: `box-identity.json` beside the database.
    pub identity_file: Option<PathBuf>,
    /// Largest size of the database in MB (0: as large as the disk allows). When it is full
    /// (or the disk is), the box keeps alerting and says so; see firmware-notes.
    pub database_max_mb: u64,
    /// Visits (with their orders, feedback and acknowledgements) are kept this many days on
    /// the box; HQ keeps its own copy. Nothing waiting for the cloud is deleted.
    pub retention_days: u64,
    pub scanner: ScannerConfig,
    /// ESPresense nodes on the shop's LAN, as more scanners.
    pub espresense: EspresenseConfig,
    pub presence: PresenceConfig,
    pub eid: EidConfig,
    pub pos: PosConfig,
    pub uplink: crate::uplink::UplinkConfig,
    pub cloud: CloudConfig,
    pub clock: ClockConfig,
}

/// When the box trusts its clock (section `[clock]`; see `crate::clock`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    /// `"ntp"` (systemd-timesyncd or another NTP client synchronised it), `"always"` (a
    /// battery-backed clock, no network time), or the absolute path of a flag file that
    /// exists once the clock is right.
    pub trusted_when: crate::clock::TrustedWhen,
}

/// The cloud's provisioning API, which a blank box is claimed through (section `[cloud]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// Its base address, e.g. `https://cloud.tastesync.example:8443`. Plain `http://` is
    /// accepted only to this machine (development).
    pub url: String,
    /// PEM file of the CA that signed the API's certificate, if not one the system trusts.
    pub ca_file: Option<PathBuf>,
}

/// The POS server for tablets and the owner's page (section `[pos]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PosConfig {
    /// Address and port to serve on; empty turns the POS server off.
    pub listen: String,
    /// How long tablets can be away and still resume exactly where they left off, seconds.
    pub retention_secs: u64,
    /// Announce the POS on the LAN by mDNS/DNS-SD (`_tastesync._tcp`, `_http._tcp`).
    pub announce: bool,
    /// The network interface to announce on (e.g. `wlan0`); empty: every interface but loopback.
    pub announce_interface: String,
    /// Names the box also answers to besides its addresses and mDNS names (e.g. a name your
    /// router gives it). Requests naming anything else are refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// A tablet not used for this many days must be paired again.
    pub device_idle_days: u64,
    /// Live streams one tablet may hold open, and all tablets together.
    pub max_streams_per_tablet: usize,
    pub max_streams: usize,
    /// The token Prometheus presents for `/metrics` (`Authorization: Bearer ...`, at least
    /// 16 characters). Without one, `/metrics` answers loopback clients only.
    pub metrics_token: Option<String>,
}

impl Default for PosConfig {
    fn default() -> Self {
        PosConfig {
            listen: "0.0.0.0:8080".into(),
            retention_secs: 7200,
            announce: true,
            announce_interface: String::new(),
            allowed_hosts: Vec::new(),
            device_idle_days: 90,
            max_streams_per_tablet: 3,
            max_streams: 64,
            metrics_token: None,
        }
    }
}

/// Where advertisements come from (section `[scanner]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScannerConfig {
    /// `"ble"` (the radio, through BlueZ) or `"replay"` (a JSON-lines file).
    pub source: SourceKind,
    /// The zone this scanner covers, reported with every visit.
    pub zone: String,
    /// `"room"`, or `"door"` for a scanner by the door that also hears the street.
    pub role: ScannerRole,
    /// Set on a scanner box: the POS address of the shop's main box (e.g.
    /// `http://192.168.1.20:8080`), which this box sends what it hears to instead of
    /// deciding presence itself. Pair it first with `tastesync-edge pair-scanner`.
    pub main_box: String,
    /// BlueZ adapter name such as `hci0`; empty means the first adapter.
    pub adapter: String,
    /// Restart discovery when no advertisement arrived for this long, in seconds.
    pub watchdog_secs: u64,
    /// Most devices whose last advertisement the scanner remembers (bounded memory).
    pub max_devices: usize,
    /// For `source = "replay"`: the file to play.
    pub replay_file: Option<PathBuf>,
    /// For `source = "replay"`: 1.0 plays at recorded speed, 10.0 ten times faster,
    /// 0 as fast as possible.
    pub replay_speed: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Ble,
    Replay,
}

/// Section `[eid]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EidConfig {
    /// Rotation windows accepted on each side of the current one, for tags whose clock drifts.
    pub tolerance_windows: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shop_id: String::new(),
            database: PathBuf::from("/var/lib/tastesync/edge.db"),
            identity_file: None,
            database_max_mb: 0,
            retention_days: 365,
            scanner: ScannerConfig::default(),
            espresense: EspresenseConfig::default(),
            presence: PresenceConfig::default(),
            eid: EidConfig::default(),
            pos: PosConfig::default(),
            uplink: crate::uplink::UplinkConfig::default(),
            cloud: CloudConfig::default(),
            clock: ClockConfig::default(),
        }
    }
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            source: SourceKind::Ble,
            zone: "main".into(),
            role: ScannerRole::Room,
            main_box: String::new(),
            adapter: String::new(),
            watchdog_secs: 30,
            max_devices: 4096,
            replay_file: None,
            replay_speed: 1.0,
        }
    }
}

impl Default for EidConfig {
    fn default() -> Self {
        EidConfig {
            tolerance_windows: 1,
        }
    }
}

const ENV_PREFIX: &str = "TASTESYNC__";

impl Config {
    /// Reads `path` (if given), applies environment overrides, and validates.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the config file {}", path.display()))?,
            None => String::new(),
        };
        let origin = path.map_or("the defaults".to_string(), |p| p.display().to_string());
        Self::parse(&text, std::env::vars(), &origin)
    }

    /// Parses TOML text plus `(name, value)` environment overrides.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        origin: &str,
    ) -> anyhow::Result<Config> {
        let mut table: toml::Table =
            toml::from_str(text).with_context(|| format!("{origin} is not valid TOML"))?;
        for (name, value) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            set_path(&mut table, path, &value)
                .with_context(|| format!("environment variable {name}"))?;
        }
        let config: Config = table
            .try_into()
            .with_context(|| format!("invalid configuration in {origin}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !self.shop_id.is_empty() && !tastesync_shared::wire::is_valid_id(&self.shop_id) {
            bail!(
                "shop_id {:?} must be 1 to 64 letters, digits, '-' or '_' (or empty, to claim \
                 the box through the cloud)",
                self.shop_id
            );
        }
        if self.shop_id.is_empty() && !self.uplink.broker.is_empty() {
            bail!(
                "uplink.broker is set but shop_id is not: set both (a box set up by hand), or \
                 neither (claim the box through the cloud)"
            );
        }
        crate::uplink::validate_tuning(&self.uplink).context("invalid [uplink] section")?;
        self.presence
            .validate()
            .map_err(anyhow::Error::msg)
            .context("invalid [presence] section")?;
        if !crate::scan::remote::is_valid_zone(&self.scanner.zone) {
            bail!("scanner.zone must be 1 to 40 printable characters");
        }
        let main_box = &self.scanner.main_box;
        if !(main_box.is_empty()
            || main_box.starts_with("http://")
            || main_box.starts_with("https://"))
        {
            bail!(
                "scanner.main_box must be the main box's POS address, e.g. \
                 \"http://192.168.1.20:8080\", not {:?}",
                self.scanner.main_box
            );
        }
        self.espresense
            .validate()
            .map_err(anyhow::Error::msg)
            .context("invalid [espresense] section")?;
        if self.scanner.source == SourceKind::Replay && self.scanner.replay_file.is_none() {
            bail!("scanner.source = \"replay\" needs scanner.replay_file");
        }
        if !(self.scanner.replay_speed >= 0.0 && self.scanner.replay_speed.is_finite()) {
            bail!("scanner.replay_speed must be 0 (as fast as possible) or a positive number");
        }
        if let crate::clock::TrustedWhen::File(path) = &self.clock.trusted_when
            && !path.is_absolute()
        {
            bail!(
                "clock.trusted_when must be \"ntp\", \"always\" or the absolute path of a flag file, not {:?}",
                path.display().to_string()
            );
        }
        if self.retention_days == 0 || self.pos.device_idle_days == 0 {
            bail!("retention_days and pos.device_idle_days must be at least 1");
        }
        if self.pos.max_streams_per_tablet == 0 || self.pos.max_streams == 0 {
            bail!("pos.max_streams_per_tablet and pos.max_streams must be positive");
        }
        if self
            .pos
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.len() < 16)
        {
            bail!("pos.metrics_token must be at least 16 characters");
        }
        if self.scanner.watchdog_secs == 0 || self.scanner.max_devices == 0 {
            bail!("scanner.watchdog_secs and scanner.max_devices must be positive");
        }
        Ok(())
    }

    /// The identity file: as configured, else beside the database.
    pub fn identity_path(&self) -> PathBuf {
        self.identity_file
            .clone()
            .unwrap_or_else(|| self.database.with_file_name("box-identity.json"))
    }

    /// Where a scanner box keeps the device token its main box gave it at pairing.
    pub fn scanner_token_path(&self) -> PathBuf {
        self.database.with_file_name("scanner-token")
    }
}

/// Sets `SECTION__KEY` (case-insensitive) in the table; the value is read as TOML if it
/// parses as a number or boolean, else as a string.
fn set_path(table: &mut toml::Table, path: &str, value: &str) -> anyhow::Result<()> {
    let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    let (last, sections) = keys.split_last().expect("split yields at least one part");
    let mut current = table;
    for section in sections {
        current = current
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("{section} is not a section"))?;
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table() && !v.is_array())
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    current.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_run_and_env_overrides_file() {
        let config = Config::parse("", env(&[]), "test").unwrap();
        assert_eq!(config, Config::default());
        let config = Config::parse(
            "shop_id = \"seoul-1\"\n[presence]\narrive_rssi = -70\n",
            env(&[
                ("TASTESYNC__PRESENCE__ARRIVE_RSSI", "-65"),
                ("TASTESYNC__DATABASE", "/tmp/x.db"),
                ("TASTESYNC__SCANNER__ZONE", "terrace"),
                ("UNRELATED", "1"),
            ]),
            "test",
        )
        .unwrap();
        assert_eq!(config.shop_id, "seoul-1");
        assert_eq!(config.presence.arrive_rssi, -65);
        assert_eq!(config.database, PathBuf::from("/tmp/x.db"));
        assert_eq!(config.scanner.zone, "terrace");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_config_text_never_panics(text in "\\PC{0,200}") {
            let _ = Config::parse(&text, env(&[]), "fuzz.toml");
        }

        #[test]
        fn arbitrary_env_overrides_never_panic(key in "[A-Z_]{1,30}", value in "\\PC{0,20}") {
            let _ = Config::parse("", env(&[(&format!("TASTESYNC__{key}"), &value)]), "fuzz.toml");
        }
    }

    #[test]
    fn mistakes_are_explained() {
        let long = format!("shop_id = \"{}\"\n", "x".repeat(65));
        let cases = [
            (
                "[presence]\narive_rssi = -70\n",
                "unknown field `arive_rssi`",
            ),
            ("shop_id = \"a b\"\n", "must be 1 to 64 letters"),
            (long.as_str(), "must be 1 to 64 letters"),
            ("[uplink]\nbroker = \"127.0.0.1:1883\"\n", "shop_id is not"),
            ("[uplink]\nbatch_bytes = 100\n", "batch_bytes"),
            (
                "[scanner]\nsource = \"replay\"\n",
                "needs scanner.replay_file",
            ),
            ("[scanner]\nsource = \"radio\"\n", "unknown variant `radio`"),
            ("[presence]\nleave_rssi = -50\n", "leave_rssi"),
            ("shop_id = ", "not valid TOML"),
        ];
        for (text, expected) in cases {
            let err = format!(
                "{:#}",
                Config::parse(text, env(&[]), "test.toml").unwrap_err()
            );
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
