//! The replay source: advertisements from a JSON-lines file, one object per line:
//!
//! ```json
//! {"t_ms": 1764000000123, "address": "c0:ff:ee:00:00:01", "rssi": -61, "data": "0201061aff4c00...", "zone": "counter", "scanner": "box:door"}
//! ```
//!
//! `t_ms` is Unix time in ms (the pipeline's clock, so EIDs resolve as they did when recorded),
//! `data` the advertising data in hex, `zone` optional (defaults to the scanner's zone),
//! `scanner` optional (which of the shop's scanners heard it; defaults to one scanner per
//! zone).
//! Bad lines are reported with their line number and skipped. Format documented in
//! `firmware-notes/replay-format.md`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};

use super::{Advertisement, Scanner, format_address, parse_address};
use crate::Millis;
use crate::presence::ScannerRole;

/// One line of a replay file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayLine {
    pub t_ms: Millis,
    pub address: String,
    pub rssi: i16,
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
}

impl ReplayLine {
    pub fn from_advertisement(ad: &Advertisement) -> ReplayLine {
        ReplayLine {
            t_ms: ad.at_ms,
            address: format_address(&ad.address),
            rssi: ad.rssi,
            data: tastesync_shared::hexfmt::hex(&ad.data),
            zone: Some(ad.scanner.zone.clone()),
            scanner: Some(ad.scanner.name.clone()),
        }
    }

    /// Parses one line; the error says what is wrong with it.
    pub fn parse(text: &str, scanners: &mut ReplayScanners) -> Result<Advertisement, String> {
        let line: ReplayLine = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let address = parse_address(&line.address)
            .ok_or_else(|| format!("address {:?} is not aa:bb:cc:dd:ee:ff", line.address))?;
        let data = tastesync_shared::hexfmt::parse(&line.data)
            .ok_or_else(|| "data is not hex".to_string())?;
        if data.is_empty() || data.len() > 255 {
            return Err(format!("data is {} bytes; expected 1 to 255", data.len()));
        }
        Ok(Advertisement {
            at_ms: line.t_ms,
            address,
            rssi: line.rssi,
            data,
            scanner: scanners.get(line.scanner.as_deref(), line.zone.as_deref()),
        })
    }
}

/// The scanners a recording names, each made once: a line that names neither scanner nor
/// zone was heard by the default one (the box's own radio in its configured zone); one that
/// names a zone only, by a scanner of that zone.
pub struct ReplayScanners {
    default: Arc<Scanner>,
    named: Vec<Arc<Scanner>>,
}

impl ReplayScanners {
    pub fn new(default_zone: &str) -> ReplayScanners {
        ReplayScanners {
            default: Scanner::new(default_zone, default_zone, ScannerRole::Room),
            named: Vec::new(),
        }
    }

    fn get(&mut self, name: Option<&str>, zone: Option<&str>) -> Arc<Scanner> {
        let zone = zone.unwrap_or(&self.default.zone);
        let name = name.unwrap_or(zone);
        if (name, zone) == (self.default.name.as_str(), self.default.zone.as_str()) {
            return self.default.clone();
        }
        if let Some(known) = self.named.iter().find(|s| s.name == name && s.zone == zone) {
            return known.clone();
        }
        // A recording names a handful of scanners; a hostile one cannot grow this much.
        if self.named.len() >= 64 {
            self.named.remove(0);
        }
        let scanner = Scanner::new(name, zone, ScannerRole::Room);
        self.named.push(scanner.clone());
        scanner
    }
}

/// Counts of a finished replay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub played: u64,
    pub bad_lines: u64,
}

/// Plays `path` into `tx`. `speed` 1.0 keeps the recorded pacing, 0 plays as fast as the
/// pipeline takes it. Returns when the file ends, the receiver is gone, or on shutdown.
pub async fn run(
    path: &Path,
    speed: f64,
    zone: &str,
    tx: mpsc::Sender<Advertisement>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<ReplaySummary> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open the replay file {}", path.display()))?;
    let mut lines = tokio::io::BufReader::new(file).lines();
    let mut summary = ReplaySummary::default();
    let started = tokio::time::Instant::now();
    let mut first_t: Option<Millis> = None;
    let mut number = 0u64;
    let mut scanners = ReplayScanners::new(zone);
    while let Some(text) = lines.next_line().await? {
        number += 1;
        if text.trim().is_empty() {
            continue;
        }
        let ad = match ReplayLine::parse(&text, &mut scanners) {
            Ok(ad) => ad,
            Err(why) => {
                summary.bad_lines += 1;
                tracing::warn!(file = %path.display(), line = number, "skipping a bad replay line: {why}");
                continue;
            }
        };
        if speed > 0.0 {
            let first = *first_t.get_or_insert(ad.at_ms);
            let offset = ad.at_ms.saturating_sub(first) as f64 / speed;
            let due = started + Duration::from_secs_f64(offset / 1000.0);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = shutdown.changed() => return Ok(summary),
            }
        }
        if tx.send(ad).await.is_err() {
            break;
        }
        summary.played += 1;
        if *shutdown.borrow() {
            break;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_explains_bad_ones() {
        let mut scanners = ReplayScanners::new("main");
        let ad = ReplayLine::parse(
            r#"{"t_ms": 5, "address": "c0:ff:ee:00:00:01", "rssi": -61, "data": "020106"}"#,
            &mut scanners,
        )
        .unwrap();
        assert_eq!(ad.data, vec![2, 1, 6]);
        assert_eq!(ad.scanner.zone, "main");
        let line = ReplayLine::from_advertisement(&ad);
        let again = ReplayLine::parse(&serde_json::to_string(&line).unwrap(), &mut scanners);
        assert_eq!(again.unwrap(), ad);
        // A line of another zone's scanner, then one of the default scanner again.
        let door = ReplayLine::parse(
            r#"{"t_ms": 6, "address": "c0:ff:ee:00:00:01", "rssi": -61, "data": "02", "zone": "door", "scanner": "box:d1"}"#,
            &mut scanners,
        )
        .unwrap();
        assert_eq!(
            (door.scanner.name.as_str(), door.scanner.zone.as_str()),
            ("box:d1", "door")
        );
        let main = ReplayLine::parse(
            r#"{"t_ms": 7, "address": "c0:ff:ee:00:00:01", "rssi": -61, "data": "02"}"#,
            &mut scanners,
        );
        assert_eq!(main.unwrap().scanner.zone, "main");
        for (bad, why) in [
            ("{", "EOF"),
            (
                r#"{"t_ms": 5, "address": "x", "rssi": -61, "data": "02"}"#,
                "address",
            ),
            (
                r#"{"t_ms": 5, "address": "c0:ff:ee:00:00:01", "rssi": -61, "data": "0g"}"#,
                "not hex",
            ),
            (
                r#"{"t_ms": 5, "address": "c0:ff:ee:00:00:01", "rssi": -61, "data": ""}"#,
                "0 bytes",
            ),
            (
                r#"{"t_ms": -5, "address": "c0:ff:ee:00:00:01", "rssi": -61, "data": "02"}"#,
                "invalid value",
            ),
        ] {
            let err = ReplayLine::parse(bad, &mut scanners).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_lines_never_panic(text in "\\PC{0,120}") {
            let _ = ReplayLine::parse(&text, &mut ReplayScanners::new("main"));
        }

        #[test]
        fn json_shaped_lines_never_panic(t in proptest::num::i64::ANY, rssi in proptest::num::i32::ANY,
                                        address in "[0-9a-fA-F:]{0,20}", data in "[0-9a-fA-Fx]{0,80}") {
            let line = format!(r#"{{"t_ms":{t},"address":"{address}","rssi":{rssi},"data":"{data}"}}"#);
            let _ = ReplayLine::parse(&line, &mut ReplayScanners::new("main"));
        }
    }
}
