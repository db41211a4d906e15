//! ESPresense nodes as scanners: ESP32s that many shops and homes already run. Each node
//! publishes every device it hears to an MQTT broker on the LAN, on
//! `espresense/devices/{id}/{room}`, as JSON such as
//! `{"id":"iBeacon:e5ca1ade-f007-ba11-0000-000000000000-7-42","rssi@1m":-59,"rssi":-71,"mac":"c0ffee000001",...}`.
//!
//! The box subscribes to that broker with its own credentials and turns each report of a
//! static iBeacon or AltBeacon id into an advertisement of scanner `espresense:{room}`, in
//! the room's zone, with the node's calibrated power at 1 m as the beacon's measured power.
//! Its presence rules then treat it like any other scanner. EIDs stay with our own scanners
//! (a node cannot report the frame). ESPresense reports a standing device only every few
//! seconds, and a moving one more often: enough for zones, a little slower for arrivals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::{Advertisement, Scanner};
use crate::presence::ScannerRole;

/// Section `[espresense]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EspresenseConfig {
    /// The broker the nodes publish to, `host:port`; empty (the default): no nodes.
    pub broker: String,
    pub username: String,
    pub password: String,
    /// The nodes' topic prefix (ESPresense's default is `espresense`).
    pub topic_prefix: String,
    /// Room name → its zone and role; a room not listed is its own zone, role `room`.
    pub rooms: BTreeMap<String, RoomConfig>,
}

/// One ESPresense room (`[espresense.rooms.<room>]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    pub zone: String,
    #[serde(default)]
    pub role: ScannerRole,
}

impl Default for EspresenseConfig {
    fn default() -> Self {
        EspresenseConfig {
            broker: String::new(),
            username: String::new(),
            password: String::new(),
            topic_prefix: "espresense".into(),
            rooms: BTreeMap::new(),
        }
    }
}

impl EspresenseConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.broker.is_empty() {
            return Ok(());
        }
        tastesync_shared::wire::parse_broker(&self.broker)
            .ok_or_else(|| format!("espresense.broker {:?} must be host:port", self.broker))?;
        if self.topic_prefix.is_empty() || self.topic_prefix.contains(['#', '+']) {
            return Err("espresense.topic_prefix must be a plain topic prefix".into());
        }
        for (room, settings) in &self.rooms {
            if !super::remote::is_valid_zone(&settings.zone) {
                return Err(format!(
                    "espresense.rooms.{room}.zone must be 1 to 40 printable characters"
                ));
            }
        }
        Ok(())
    }
}

/// A node's report, as far as presence needs it.
#[derive(Debug, Deserialize)]
struct Report {
    id: String,
    rssi: f64,
    #[serde(rename = "rssi@1m")]
    rssi_1m: Option<f64>,
    mac: Option<String>,
}

/// Why a message was not taken (counted, and logged without its content).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("not a device report topic")]
    Topic,
    #[error("not a report: {0}")]
    Payload(String),
    #[error("rssi out of range")]
    Rssi,
    /// A device that is not a static beacon (a phone's address, a name): not an error.
    #[error("not an iBeacon or AltBeacon id")]
    NotABeacon,
}

/// The scanners the nodes' rooms are, each made once.
pub struct Rooms {
    config: EspresenseConfig,
    known: BTreeMap<String, Arc<Scanner>>,
}

/// Most rooms remembered: a shop has a handful; a broker full of strangers' rooms cannot
/// grow this without bound.
const MAX_ROOMS: usize = 64;

impl Rooms {
    pub fn new(config: EspresenseConfig) -> Rooms {
        Rooms {
            config,
            known: BTreeMap::new(),
        }
    }

    fn scanner(&mut self, room: &str) -> Arc<Scanner> {
        if let Some(scanner) = self.known.get(room) {
            return scanner.clone();
        }
        let (zone, role) = match self.config.rooms.get(room) {
            Some(settings) => (settings.zone.as_str(), settings.role),
            None => (room, ScannerRole::Room),
        };
        let scanner = Scanner::new(&format!("espresense:{room}"), zone, role);
        if self.known.len() >= MAX_ROOMS {
            self.known.pop_first();
        }
        self.known.insert(room.to_string(), scanner.clone());
        scanner
    }

    /// The advertisement a node's message on `topic` stands for, heard at `at_ms`.
    pub fn parse(
        &mut self,
        topic: &str,
        payload: &[u8],
        at_ms: crate::Millis,
    ) -> Result<Advertisement, Rejected> {
        let rest = topic
            .strip_prefix(self.config.topic_prefix.as_str())
            .and_then(|t| t.strip_prefix("/devices/"))
            .ok_or(Rejected::Topic)?;
        let (_, room) = rest.rsplit_once('/').ok_or(Rejected::Topic)?;
        if !super::remote::is_valid_zone(room) {
            return Err(Rejected::Topic);
        }
        if payload.len() > 4096 {
            return Err(Rejected::Payload("larger than 4 kB".into()));
        }
        let report: Report =
            serde_json::from_slice(payload).map_err(|e| Rejected::Payload(e.to_string()))?;
        if !(-127.0..=20.0).contains(&report.rssi) {
            return Err(Rejected::Rssi);
        }
        let measured = match report.rssi_1m {
            Some(p) if (-127.0..=20.0).contains(&p) => p.round() as i8,
            Some(_) => return Err(Rejected::Rssi),
            None => 0, // "not calibrated"
        };
        let data = beacon_frame(&report.id, measured).ok_or(Rejected::NotABeacon)?;
        let address = report
            .mac
            .as_deref()
            .and_then(tastesync_shared::hexfmt::parse)
            .and_then(|m| <[u8; 6]>::try_from(m).ok())
            .unwrap_or_default();
        Ok(Advertisement {
            at_ms,
            address,
            rssi: report.rssi.round() as i16,
            data,
            scanner: self.scanner(room),
        })
    }
}

/// The advertising data of the beacon ESPresense names `iBeacon:<uuid>-<major>-<minor>` or
/// `altBeacon:<uuid>-<major>-<minor>`, with `measured` as its power at 1 m.
fn beacon_frame(id: &str, measured: i8) -> Option<Vec<u8>> {
    let (kind, rest) = id.split_once(':')?;
    let mut parts = rest.rsplitn(3, '-');
    let minor: u16 = parts.next()?.parse().ok()?;
    let major: u16 = parts.next()?.parse().ok()?;
    let uuid = parts.next()?;
    let uuid: [u8; 16] = tastesync_shared::hexfmt::parse(&uuid.replace('-', ""))?
        .try_into()
        .ok()?;
    let mut data = vec![0x02, 0x01, 0x06];
    match kind {
        "iBeacon" => data.extend_from_slice(&[0x1a, 0xff, 0x4c, 0x00, 0x02, 0x15]),
        // Radius Networks' company id, as AltBeacon's reference uses.
        "altBeacon" => data.extend_from_slice(&[0x1b, 0xff, 0x18, 0x01, 0xbe, 0xac]),
        _ => return None,
    }
    data.extend_from_slice(&uuid);
    data.extend_from_slice(&major.to_be_bytes());
    data.extend_from_slice(&minor.to_be_bytes());
    data.push(measured as u8);
    if kind == "altBeacon" {
        data.push(0); // manufacturer reserved
    }
    Some(data)
}

/// Subscribes to the nodes' reports and sends them into the pipeline until shutdown. The
/// broker going away is retried every few seconds and shown in `status`.
pub async fn run(
    config: EspresenseConfig,
    box_id: &str,
    tx: mpsc::Sender<Advertisement>,
    status: watch::Sender<String>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (host, port) = tastesync_shared::wire::parse_broker(&config.broker)
        .context("espresense.broker must be host:port")?;
    let mut options = MqttOptions::new(format!("tastesync-edge-{box_id}-espresense"), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    if !config.username.is_empty() {
        options.set_credentials(config.username.clone(), config.password.clone());
    }
    let topic = format!("{}/devices/+/+", config.topic_prefix);
    let (client, mut events) = AsyncClient::new(options, 16);
    let mut rooms = Rooms::new(config);
    let mut rejected: u64 = 0;
    loop {
        let event = tokio::select! {
            event = events.poll() => event,
            _ = shutdown.changed() => return Ok(()),
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client.subscribe(&topic, QoS::AtMostOnce).await?;
                status.send_replace("connected".into());
                tracing::info!("listening to ESPresense nodes");
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let now = crate::clock::steady_ms();
                match rooms.parse(&publish.topic, &publish.payload, now) {
                    Ok(ad) => {
                        if tx.send(ad).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(Rejected::NotABeacon) => {}
                    Err(why) => {
                        rejected += 1;
                        if rejected.is_power_of_two() {
                            tracing::warn!(rejected, "an ESPresense message was not taken: {why}");
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                let why = format!("cannot reach the ESPresense broker: {e}");
                if status.send_if_modified(|s| std::mem::replace(s, why.clone()) != why) {
                    tracing::warn!("{why}; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3)) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tastesync_shared::{Beacon, decode_advertisement};

    fn rooms() -> Rooms {
        let mut config = EspresenseConfig::default();
        config.rooms.insert(
            "entrance".into(),
            RoomConfig {
                zone: "door".into(),
                role: ScannerRole::Door,
            },
        );
        Rooms::new(config)
    }

    #[test]
    fn an_ibeacon_report_becomes_an_advertisement_of_its_room() {
        let payload = br#"{"mac":"c0ffee000001","id":"iBeacon:e5ca1ade-f007-ba11-0000-000000000000-7-42","idType":15,"rssi@1m":-65,"rssi":-71,"raw":2.1,"distance":1.9,"int":1012}"#;
        let ad = rooms()
            .parse("espresense/devices/iBeacon:x/entrance", payload, 5_000)
            .unwrap();
        assert_eq!((ad.at_ms, ad.rssi), (5_000, -71));
        assert_eq!(ad.address, [0xc0, 0xff, 0xee, 0, 0, 1]);
        assert_eq!(ad.scanner.name, "espresense:entrance");
        assert_eq!(
            (ad.scanner.zone.as_str(), ad.scanner.role),
            ("door", ScannerRole::Door)
        );
        let Ok(Some(Beacon::IBeacon {
            uuid,
            major,
            minor,
            tx_power,
        })) = decode_advertisement(&ad.data)
        else {
            panic!("an iBeacon: {:?}", decode_advertisement(&ad.data));
        };
        assert_eq!(uuid[..4], [0xe5, 0xca, 0x1a, 0xde]);
        assert_eq!((major, minor, tx_power), (7, 42, -65));
    }

    #[test]
    fn an_altbeacon_report_and_an_unlisted_room() {
        let payload = br#"{"id":"altBeacon:e5ca1ade-f007-ba11-0000-000000000000-1-2","rssi@1m":-59,"rssi":-80}"#;
        let ad = rooms()
            .parse("espresense/devices/a/terrace", payload, 1)
            .unwrap();
        assert_eq!(ad.scanner.zone, "terrace");
        assert_eq!(ad.scanner.role, ScannerRole::Room);
        assert!(matches!(
            decode_advertisement(&ad.data),
            Ok(Some(Beacon::AltBeacon { tx_power: -59, .. }))
        ));
    }

    #[test]
    fn other_devices_and_bad_messages_are_refused_with_the_reason() {
        let mut rooms = rooms();
        for (topic, payload, why) in [
            ("espresense/rooms/x", "{}", Rejected::Topic),
            ("other/devices/a/b", "{}", Rejected::Topic),
            (
                "espresense/devices/a/b",
                r#"{"id":"apple:1005:9-26","rssi":-60}"#,
                Rejected::NotABeacon,
            ),
            (
                "espresense/devices/a/b",
                r#"{"id":"c0ffee000001","rssi":-60}"#,
                Rejected::NotABeacon,
            ),
            (
                "espresense/devices/a/b",
                r#"{"id":"iBeacon:zz-1-2","rssi":-60}"#,
                Rejected::NotABeacon,
            ),
            (
                "espresense/devices/a/b",
                r#"{"id":"iBeacon:e5ca1ade-f007-ba11-0000-000000000000-1-2","rssi":900}"#,
                Rejected::Rssi,
            ),
        ] {
            assert_eq!(
                rooms.parse(topic, payload.as_bytes(), 0).unwrap_err(),
                why,
                "{topic} {payload}"
            );
        }
        assert!(matches!(
            rooms.parse("espresense/devices/a/b", b"garbage", 0),
            Err(Rejected::Payload(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_messages_never_panic(room in "\\PC{0,50}", payload in "\\PC{0,300}") {
            let mut rooms = rooms();
            let _ = rooms.parse(&format!("espresense/devices/x/{room}"), payload.as_bytes(), 0);
        }

        #[test]
        fn report_shaped_messages_never_panic(id in "[a-zA-Z]{0,10}:[0-9a-f-]{0,40}", rssi in proptest::num::f64::ANY) {
            let payload = format!(r#"{{"id":"{id}","rssi":{rssi},"rssi@1m":{rssi}}}"#);
            let _ = rooms().parse("espresense/devices/x/y", payload.as_bytes(), 0);
        }
    }
}
