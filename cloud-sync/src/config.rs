//! `tastesync-cloud` configuration: one TOML file (`--config`), every key optional, defaults
//! that run against this machine's PostgreSQL and Mosquitto. Checked once, at start, so a
//! mistake stops the service with the reason instead of surfacing later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use tastesync_shared::wire;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// PostgreSQL, e.g. `host=127.0.0.1 user=postgres dbname=tastesync`.
    pub database_url: String,
    /// The MQTT broker, `host:port`.
    pub broker: String,
    /// cloud-sync's own broker user. With `provisioning.credentials = "dynsec"` it must be an
    /// administrator of Mosquitto's dynamic-security plugin.
    pub username: String,
    pub password: String,
    /// Shared-subscription group: instances with the same group split the boxes.
    pub group: String,
    /// This instance's MQTT client id (unique per instance).
    pub client_id: String,
    /// How many days ahead shops get EID temporary keys (1 to 60); keys are renewed daily.
    pub eid_days: u32,
    /// How often keys running short are renewed, seconds.
    pub eid_refresh_secs: u64,
    pub http: HttpConfig,
    pub provisioning: ProvisioningConfig,
    pub console: ConsoleConfig,
    pub kafka: KafkaConfig,
}

/// Section `[kafka]`: every stored shop event, and HQ's customer changes, on Kafka for HQ's
/// other services (firmware-notes/cloud-configuration.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// The brokers, `host:port[,host:port...]`; empty (the default) turns the relay off
    /// (events still wait for it in PostgreSQL).
    pub brokers: String,
    /// The topic of the shops' events (key: the shop id).
    pub shop_events_topic: String,
    /// The compacted topic of HQ's customers (key: the customer ref; a tombstone on
    /// deletion and erasure).
    pub customers_topic: String,
    /// Create the topics if they are missing, with these partitions and replication factor
    /// (-1: the brokers' default).
    pub create_topics: bool,
    pub partitions: i32,
    pub replication_factor: i32,
    /// How long a record may wait for the brokers before the relay tries it again, ms.
    pub message_timeout_ms: u64,
    /// Most events published per round (in order per stream; at most 1,000 streams).
    pub batch_events: usize,
    /// Published customer changes are kept this long in the outbox, hours.
    pub outbox_retention_hours: u64,
    /// librdkafka properties passed through as they are, e.g. `"security.protocol" =
    /// "SASL_SSL"`, `"sasl.mechanism" = "SCRAM-SHA-512"`, `"sasl.username"`,
    /// `"sasl.password"`, `"ssl.ca.location"`. Those the relay's guarantees rest on
    /// (idempotence, the partitioner, acks) cannot be changed here.
    pub options: std::collections::BTreeMap<String, String>,
}

/// Section `[http]`: the API server (provisioning and the HQ console).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port; empty turns the API off.
    pub listen: String,
    /// PEM certificate chain and key: HTTPS (rustls). Without them the API speaks plain HTTP,
    /// which is refused on anything but loopback (put a TLS proxy in front instead).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The token Prometheus presents for `/metrics` (`Authorization: Bearer ...`). Without
    /// one, `/metrics` answers loopback clients only.
    pub metrics_token: Option<String>,
}

/// Section `[provisioning]`: what claimed boxes are given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    /// How boxes get broker credentials: `dynsec` (each box its own user and password,
    /// confined to its own topics, created through Mosquitto's dynamic-security plugin) or
    /// `none` (a broker without authentication; for development only).
    pub credentials: Credentials,
    /// The broker address boxes are given, `host:port` (default: `broker`).
    pub box_broker: String,
    /// Whether boxes connect to it with TLS, and the PEM file of the CA they should trust
    /// (sent to them; none: the box's system roots).
    pub box_broker_tls: bool,
    pub box_broker_ca_file: Option<PathBuf>,
}

/// Section `[console]`: HQ's console and its sign-in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// How long an access token is valid, minutes (1 to 60).
    pub access_token_minutes: u64,
    /// How long a refresh token is valid, days (1 to 90); each refresh issues a new one.
    pub refresh_token_days: u64,
    /// The `iss` of the tokens this service signs.
    pub issuer: String,
    /// An external OpenID Connect provider whose tokens are accepted too.
    pub oidc: Option<OidcConfig>,
}

/// Section `[console.oidc]`: tokens from an external OpenID Connect provider. Its users must
/// also be console users (`tastesync-cloud users add --external`): the provider says who
/// they are, the console what they may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's `iss`, exactly as in its tokens.
    pub issuer: String,
    /// Where its public keys are (HTTPS, or HTTP on loopback).
    pub jwks_url: String,
    /// The `aud` its tokens for the console carry.
    pub audience: String,
    /// The claim holding the user's email.
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
}

fn default_email_claim() -> String {
    "email".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Credentials {
    Dynsec,
    None,
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
            eid_days: 7,
            eid_refresh_secs: 3600,
            http: HttpConfig::default(),
            provisioning: ProvisioningConfig::default(),
            console: ConsoleConfig::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            shop_events_topic: "tastesync.shop-events".into(),
            customers_topic: "tastesync.customers".into(),
            create_topics: true,
            partitions: 12,
            replication_factor: -1,
            message_timeout_ms: 30_000,
            batch_events: 10_000,
            outbox_retention_hours: 24,
            options: Default::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8443".into(),
            tls_cert_file: None,
            tls_key_file: None,
            metrics_token: None,
        }
    }
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        ProvisioningConfig {
            credentials: Credentials::Dynsec,
            box_broker: String::new(),
            box_broker_tls: false,
            box_broker_ca_file: None,
        }
    }
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            access_token_minutes: 15,
            refresh_token_days: 14,
            issuer: "tastesync-cloud".into(),
            oidc: None,
        }
    }
}

impl Config {
    /// Reads and checks the file, or the defaults without one.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("invalid configuration in {}", path.display()))?;
        config
            .validate()
            .with_context(|| format!("invalid configuration in {}", path.display()))?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        // Shops refuse a customer with more keys than 60 days' worth.
        if !(1..=60).contains(&self.eid_days) {
            bail!("eid_days must be 1 to 60");
        }
        self.broker_address()?;
        if !self.provisioning.box_broker.is_empty()
            && wire::parse_broker(&self.provisioning.box_broker).is_none()
        {
            bail!("provisioning.box_broker must be host:port");
        }
        if !self.http.listen.is_empty() {
            let address: SocketAddr = self.http.listen.parse().with_context(|| {
                format!("http.listen {:?} must be address:port", self.http.listen)
            })?;
            match (&self.http.tls_cert_file, &self.http.tls_key_file) {
                (Some(_), Some(_)) => {}
                (None, None) if address.ip().is_loopback() => {}
                (None, None) => bail!(
                    "http.listen {address} is not loopback: give http.tls_cert_file and \
                     http.tls_key_file (boxes receive their broker password through it)"
                ),
                _ => bail!("http.tls_cert_file and http.tls_key_file go together"),
            }
        }
        if self
            .http
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.len() < 16)
        {
            bail!("http.metrics_token must be at least 16 characters");
        }
        let console = &self.console;
        if !(1..=60).contains(&console.access_token_minutes) {
            bail!("console.access_token_minutes must be 1 to 60");
        }
        if !(1..=90).contains(&console.refresh_token_days) {
            bail!("console.refresh_token_days must be 1 to 90");
        }
        if console.issuer.is_empty() {
            bail!("console.issuer must not be empty");
        }
        if let Some(oidc) = &console.oidc {
            if oidc.issuer.is_empty() || oidc.audience.is_empty() || oidc.email_claim.is_empty() {
                bail!("console.oidc needs issuer, audience and email_claim");
            }
            if oidc.issuer == console.issuer {
                bail!("console.oidc.issuer must differ from console.issuer");
            }
            let url = reqwest::Url::parse(&oidc.jwks_url).with_context(|| {
                format!("console.oidc.jwks_url {:?} is not a URL", oidc.jwks_url)
            })?;
            let loopback = url.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                bail!("console.oidc.jwks_url must be https (plain http only on loopback)");
            }
        }
        self.kafka.validate()?;
        Ok(())
    }

    /// `broker` as host and port.
    pub fn broker_address(&self) -> anyhow::Result<(&str, u16)> {
        wire::parse_broker(&self.broker)
            .with_context(|| format!("broker {:?} must be host:port", self.broker))
    }

    /// The broker address claimed boxes are given.
    pub fn box_broker(&self) -> &str {
        if self.provisioning.box_broker.is_empty() {
            &self.broker
        } else {
            &self.provisioning.box_broker
        }
    }
}

/// librdkafka properties the relay sets itself: its delivery guarantees rest on them.
const KAFKA_RESERVED: [&str; 8] = [
    "bootstrap.servers",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "acks",
    "partitioner",
    "message.timeout.ms",
    "max.in.flight.requests.per.connection",
    "retries",
];

impl KafkaConfig {
    pub fn enabled(&self) -> bool {
        !self.brokers.is_empty()
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        if let Some(broker) = self
            .brokers
            .split(',')
            .find(|b| wire::parse_broker(b.trim()).is_none())
        {
            bail!("kafka.brokers: {broker:?} must be host:port");
        }
        for (key, topic) in [
            ("shop_events_topic", &self.shop_events_topic),
            ("customers_topic", &self.customers_topic),
        ] {
            let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
                bail!(
                    "kafka.{key} {topic:?} is not a Kafka topic name (1 to 249 letters, digits, \
                     '.', '_' and '-')"
                );
            }
        }
        if self.shop_events_topic == self.customers_topic {
            bail!("kafka.shop_events_topic and kafka.customers_topic must differ");
        }
        if self.partitions < 1 {
            bail!("kafka.partitions must be at least 1");
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            bail!("kafka.replication_factor must be -1 (the brokers' default) or at least 1");
        }
        if !(1_000..=3_600_000).contains(&self.message_timeout_ms) {
            bail!("kafka.message_timeout_ms must be 1000 to 3600000");
        }
        if !(1..=100_000).contains(&self.batch_events) {
            bail!("kafka.batch_events must be 1 to 100000");
        }
        if let Some(key) = self
            .options
            .keys()
            .find(|k| KAFKA_RESERVED.contains(&k.as_str()))
        {
            bail!("kafka.options: {key:?} cannot be changed (the relay's guarantees rest on it)");
        }
        // librdkafka checks every property's name and value.
        self.client_config()
            .create_native_config()
            .map_err(|e| anyhow::anyhow!("kafka.options: {e}"))?;
        Ok(())
    }

    /// The librdkafka configuration of the relay's producer (and `kafka tail`'s consumer,
    /// which ignores the producer's properties): `options` and the relay's own.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    /// The producer's: idempotent (no duplicates or reordering from its own retries), and a
    /// fatal error rather than a gap in a partition, so that what was delivered of a stream
    /// is always a prefix of what was sent; Java's partitioner, so consumers in any language
    /// agree on a key's partition.
    pub fn producer_config(&self) -> rdkafka::ClientConfig {
        let mut config = self.client_config();
        config
            .set("enable.idempotence", "true")
            .set("enable.gapless.guarantee", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", self.message_timeout_ms.to_string());
        if !self.options.contains_key("linger.ms") {
            // Batches form within 5 ms: a fraction of the lag budget.
            config.set("linger.ms", "5");
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_run_and_mistakes_are_explained() {
        assert!(parse("").is_ok());
        for (text, expected) in [
            ("eid_days = 0", "eid_days"),
            ("broker = \"nowhere\"", "host:port"),
            ("[http]\nlisten = \"0.0.0.0:8443\"", "not loopback"),
            ("[http]\ntls_cert_file = \"a.pem\"", "go together"),
            ("[provisioning]\ncredentials = \"magic\"", "unknown variant"),
            ("[provisioning]\nbox_broker = \"x\"", "box_broker"),
            ("[http]\nlisten = \"localhost\"", "address:port"),
            ("[console]\naccess_token_minutes = 0", "1 to 60"),
            ("[console]\nrefresh_token_days = 365", "1 to 90"),
            (
                "[console.oidc]\nissuer = \"https://id.example\"\naudience = \"c\"\njwks_url = \"http://id.example/jwks\"",
                "must be https",
            ),
            (
                "[console.oidc]\nissuer = \"https://id.example\"\naudience = \"c\"",
                "missing field `jwks_url`",
            ),
            (
                "[kafka]\nbrokers = \"k:9092\"\npartitions = 0",
                "kafka.partitions",
            ),
            (
                "[kafka]\nbrokers = \"k:9092\"\n[kafka.options]\n\"enable.idempotence\" = \"false\"",
                "cannot be changed",
            ),
            (
                "[kafka]\nbrokers = \"k:9092\"\n[kafka.options]\n\"no.such.thing\" = \"1\"",
                "no.such.thing",
            ),
            (
                "[kafka]\nbrokers = \"k:9092\"\nshop_events_topic = \"a b\"",
                "topic",
            ),
            ("[kafka]\nbrokers = \"nowhere\"", "host:port"),
        ] {
            let error = format!("{:#}", parse(text).unwrap_err());
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
