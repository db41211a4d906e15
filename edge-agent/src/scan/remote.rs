//! Scanner boxes: a second TasteSync box in the scanner role sends what it hears to the
//! shop's main box, which decides presence for the whole shop (one visit per customer, the
//! zone from the scanner that hears them best).
//!
//! The scanner box keeps only beacon frames (iBeacon, AltBeacon, Eddystone UID and EID: what
//! can identify an enrolled customer; EIDs are resolved on the main box, which has the keys)
//! and posts them every quarter second to the main box's `POST /api/scanners/sightings`,
//! authenticated with the device token it got by pairing like a tablet. Each sighting says
//! how long before the post it was heard, so the two boxes' clocks never need to agree.
//! Nothing is buffered beyond a few seconds: a sighting is only worth something now.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::{Advertisement, Scanner, format_address, parse_address};
use crate::Millis;
use crate::presence::ScannerRole;

/// Most sightings in one batch (a batch stays under the POS's 64 kB request limit).
pub const MAX_SIGHTINGS: usize = 400;
/// Sightings older than this are not worth sending (or accepting).
pub const MAX_AGE_MS: u32 = 10_000;
const SEND_EVERY: Duration = Duration::from_millis(250);

/// What a scanner box heard lately (`POST /api/scanners/sightings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SightingBatch {
    /// The zone the scanner covers, e.g. `door` (1 to 40 printable characters).
    pub zone: String,
    /// `room` or `door` (a scanner by the door decides arrivals only on close passes).
    #[serde(default)]
    pub role: ScannerRole,
    pub sightings: Vec<RemoteSighting>,
}

/// One advertisement as the scanner box heard it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteSighting {
    /// How long before the batch was sent it was heard, in ms (at most 10,000).
    pub age_ms: u32,
    /// `aa:bb:cc:dd:ee:ff`.
    pub address: String,
    /// dBm, -127 to 20.
    pub rssi: i16,
    /// The advertising data in hex (AD structures as broadcast, 1 to 255 bytes).
    pub data: String,
}

/// A zone's name: 1 to 40 printable characters (it is shown on tablets and synced).
pub fn is_valid_zone(zone: &str) -> bool {
    !zone.trim().is_empty() && zone.chars().count() <= 40 && !zone.chars().any(char::is_control)
}

impl SightingBatch {
    /// The advertisements of a batch from scanner `name`, received at `now` (the pipeline's
    /// clock); the error says what is wrong, and nothing of a bad batch is taken.
    pub fn into_advertisements(
        self,
        name: &str,
        now: Millis,
    ) -> Result<Vec<Advertisement>, String> {
        if !is_valid_zone(&self.zone) {
            return Err("zone must be 1 to 40 printable characters".into());
        }
        if self.sightings.len() > MAX_SIGHTINGS {
            return Err(format!("at most {MAX_SIGHTINGS} sightings in a batch"));
        }
        let scanner = Scanner::new(name, &self.zone, self.role);
        self.sightings
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let bad = |why: &str| format!("sighting {i}: {why}");
                if s.age_ms > MAX_AGE_MS {
                    return Err(bad("age_ms is over 10000"));
                }
                if !(-127..=20).contains(&s.rssi) {
                    return Err(bad("rssi must be -127 to 20 dBm"));
                }
                let address = parse_address(&s.address)
                    .ok_or_else(|| bad("address is not aa:bb:cc:dd:ee:ff"))?;
                let data = tastesync_shared::hexfmt::parse(&s.data)
                    .filter(|d| (1..=255).contains(&d.len()))
                    .ok_or_else(|| bad("data must be 1 to 255 bytes of hex"))?;
                Ok(Advertisement {
                    at_ms: now.saturating_sub(Millis::from(s.age_ms)),
                    address,
                    rssi: s.rssi,
                    data,
                    scanner: scanner.clone(),
                })
            })
            .collect()
    }
}

/// Whether a scanner box forwards this advertisement: a beacon frame that can identify a
/// customer. Phones' other chatter and URL or telemetry frames stay on the scanner box.
fn worth_forwarding(ad: &Advertisement) -> bool {
    matches!(
        tastesync_shared::decode_advertisement(&ad.data),
        Ok(Some(beacon)) if beacon.identity().is_some()
    )
}

/// Where a scanner box sends its sightings, and as whom.
#[derive(Debug, Clone)]
pub struct MainBox {
    /// The main box's POS address, e.g. `http://192.168.1.20:8080`.
    pub url: String,
    pub token: String,
    pub zone: String,
    pub role: ScannerRole,
}

/// The scanner box's loop: batches what `ads` brings and posts it to the main box until
/// shutdown or the source ends. A main box that cannot be reached is retried every few
/// seconds (said once, not per batch); what was heard meanwhile is dropped.
pub async fn forward(
    main: MainBox,
    mut ads: mpsc::Receiver<Advertisement>,
    status: watch::Sender<String>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = crate::http_client(Duration::from_secs(5)).build()?;
    let endpoint = format!("{}/api/scanners/sightings", main.url.trim_end_matches('/'));
    let mut pending: Vec<Advertisement> = Vec::new();
    let mut every = tokio::time::interval(SEND_EVERY);
    let mut retry_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            ad = ads.recv() => match ad {
                Some(ad) if worth_forwarding(&ad) => {
                    if pending.len() >= MAX_SIGHTINGS {
                        pending.remove(0);
                    }
                    pending.push(ad);
                }
                Some(_) => {}
                None => return Ok(()),
            },
            _ = every.tick() => {}
            _ = shutdown.changed() => return Ok(()),
        }
        let now = crate::clock::steady_ms();
        pending.retain(|ad| now.saturating_sub(ad.at_ms) <= Millis::from(MAX_AGE_MS));
        let due = pending.len() >= MAX_SIGHTINGS
            || pending
                .first()
                .is_some_and(|ad| now.saturating_sub(ad.at_ms) >= SEND_EVERY.as_millis() as Millis);
        if !due || tokio::time::Instant::now() < retry_at {
            continue;
        }
        let batch = SightingBatch {
            zone: main.zone.clone(),
            role: main.role,
            sightings: pending
                .drain(..)
                .map(|ad| RemoteSighting {
                    age_ms: now.saturating_sub(ad.at_ms).min(Millis::from(MAX_AGE_MS)) as u32,
                    address: format_address(&ad.address),
                    rssi: ad.rssi,
                    data: tastesync_shared::hexfmt::hex(&ad.data),
                })
                .collect(),
        };
        let sent = client
            .post(&endpoint)
            .bearer_auth(&main.token)
            .json(&batch)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let code = response.status();
                let why = response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["error"].as_str().map(String::from))
                    .unwrap_or_default();
                Err(format!(
                    "the main box refused the sightings ({code}): {why}"
                ))
            }
            Err(e) => Err(format!("cannot reach the main box at {}: {e}", main.url)),
        };
        match outcome {
            Ok(()) => {
                status.send_if_modified(|s| std::mem::replace(s, "ok".into()) != "ok");
            }
            Err(why) => {
                if status.send_if_modified(|s| std::mem::replace(s, why.clone()) != why) {
                    tracing::warn!("{why}; retrying every few seconds");
                }
                retry_at = tokio::time::Instant::now() + Duration::from_secs(3);
            }
        }
    }
}

/// Why pairing with the main box did not work; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("the main box refused: {0}")]
    Refused(String),
    #[error("cannot reach the main box at {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// Pairs this scanner box with the main box at `url` (its POS address) with a pairing code
/// from the main box's owner page, as a tablet pairs; returns the device token.
pub async fn pair(url: &str, code: &str, name: &str) -> Result<String, PairError> {
    let unreachable = |e: reqwest::Error| PairError::Unreachable {
        url: url.to_string(),
        reason: e.to_string(),
    };
    let response = crate::http_client(Duration::from_secs(10))
        .build()
        .map_err(unreachable)?
        .post(format!("{}/api/pair", url.trim_end_matches('/')))
        .json(&serde_json::json!({ "code": code, "name": name, "kind": "scanner" }))
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(unreachable)?;
    match body["token"].as_str() {
        Some(token) if status.is_success() => Ok(token.to_string()),
        _ => Err(PairError::Refused(
            body["error"]
                .as_str()
                .map_or_else(|| format!("HTTP {status}"), String::from),
        )),
    }
}

/// The scanner a paired device's batches are heard by.
pub fn scanner_name(device_id: i64) -> String {
    format!("box:{device_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(json: &str) -> Result<Vec<Advertisement>, String> {
        serde_json::from_str::<SightingBatch>(json)
            .map_err(|e| e.to_string())?
            .into_advertisements("box:7", 100_000)
    }

    #[test]
    fn a_batch_becomes_advertisements_of_its_scanner_back_dated_by_their_age() {
        let ads = batch(
            r#"{"zone":"door","role":"door","sightings":[
                {"age_ms":300,"address":"c0:ff:ee:00:00:01","rssi":-61,"data":"0201061aff4c00"}]}"#,
        )
        .unwrap();
        assert_eq!(ads.len(), 1);
        assert_eq!(ads[0].at_ms, 99_700);
        assert_eq!(ads[0].scanner.name, "box:7");
        assert_eq!(ads[0].scanner.zone, "door");
        assert_eq!(ads[0].scanner.role, ScannerRole::Door);
    }

    #[test]
    fn bad_batches_are_refused_whole_with_the_reason() {
        let sighting = |age: u32, address: &str, rssi: i16, data: &str| {
            format!(
                r#"{{"zone":"door","sightings":[{{"age_ms":{age},"address":"{address}","rssi":{rssi},"data":"{data}"}}]}}"#
            )
        };
        for (json, why) in [
            (sighting(20_000, "c0:ff:ee:00:00:01", -60, "02"), "age_ms"),
            (sighting(1, "c0:ff:ee", -60, "02"), "address"),
            (sighting(1, "c0:ff:ee:00:00:01", 90, "02"), "rssi"),
            (sighting(1, "c0:ff:ee:00:00:01", -60, ""), "data"),
            (sighting(1, "c0:ff:ee:00:00:01", -60, "zz"), "data"),
            (r#"{"zone":"","sightings":[]}"#.to_string(), "zone must be"),
            (
                r#"{"zone":"a\nb","sightings":[]}"#.to_string(),
                "zone must be",
            ),
            (
                r#"{"zone":"door","sightings":[],"extra":1}"#.to_string(),
                "unknown field",
            ),
        ] {
            let err = batch(&json).unwrap_err();
            assert!(err.contains(why), "{json}: {err}");
        }
        let many = format!(
            r#"{{"zone":"door","sightings":[{}]}}"#,
            vec![r#"{"age_ms":1,"address":"c0:ff:ee:00:00:01","rssi":-60,"data":"02"}"#; 401]
                .join(",")
        );
        assert!(batch(&many).unwrap_err().contains("at most 400"));
    }

    #[test]
    fn only_beacons_that_can_identify_someone_are_forwarded() {
        let scanner = Scanner::local("door");
        let ad = |data: Vec<u8>| Advertisement {
            at_ms: 0,
            address: [0; 6],
            rssi: -60,
            data,
            scanner: scanner.clone(),
        };
        let ibeacon = crate::simulate::ibeacon_advertisement(&[7; 16], 1, 2);
        assert!(worth_forwarding(&ad(ibeacon)));
        assert!(!worth_forwarding(&ad(vec![2, 1, 6])), "flags only");
        assert!(!worth_forwarding(&ad(vec![0xff])), "malformed");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_batches_never_panic(text in "\\PC{0,200}") {
            if let Ok(batch) = serde_json::from_str::<SightingBatch>(&text) {
                let _ = batch.into_advertisements("box:1", 0);
            }
        }
    }
}
