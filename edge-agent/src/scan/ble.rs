//! The BLE source: BlueZ over D-Bus through btleplug.
//!
//! btleplug reports each advertisement's manufacturer or service data as an event (the scan
//! asks BlueZ for duplicate data) and RSSI changes as separate events. This source keeps, per
//! device, the last RSSI and rebuilds the advertising data from the data events, so the
//! pipeline sees the same AD bytes a raw HCI scan would give. The per-device cache is bounded
//! (`max_devices`, least recently heard evicted), so a street full of phones with rotating
//! random addresses cannot grow it.
//!
//! btleplug's event stream has been seen to stop after hours with many devices (btleplug
//! issue 332): a watchdog restarts discovery and re-subscribes when nothing arrived for
//! `watchdog_secs`, and gives up (so systemd restarts the daemon) after repeated failures.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use btleplug::api::{Central, CentralEvent, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::{Advertisement, Scanner};
use crate::config::ScannerConfig;

/// The Bluetooth base UUID: 16-bit service UUIDs are `0000xxxx-0000-1000-8000-00805f9b34fb`.
const BASE_UUID_MASK: u128 = !(0xffff_u128 << 96);
const BASE_UUID: u128 = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;
/// Consecutive failed restarts after which the source gives up.
const MAX_FAILED_RESTARTS: u32 = 5;

/// What the scanner knows of one device.
struct Device {
    address: [u8; 6],
    rssi: Option<i16>,
    manufacturer: Vec<(u16, Vec<u8>)>,
    service: Vec<(u16, Vec<u8>)>,
    last_heard: Instant,
}

impl Device {
    /// The advertising data as AD structures, rebuilt from what BlueZ reported.
    fn advertising_data(&self) -> Vec<u8> {
        let mut data = Vec::with_capacity(31);
        for (company, payload) in &self.manufacturer {
            push_structure(&mut data, 0xff, &company.to_le_bytes(), payload);
        }
        for (uuid16, payload) in &self.service {
            push_structure(&mut data, 0x16, &uuid16.to_le_bytes(), payload);
        }
        data
    }
}

fn push_structure(out: &mut Vec<u8>, ad_type: u8, prefix: &[u8], payload: &[u8]) {
    let Ok(length) = u8::try_from(1 + prefix.len() + payload.len()) else {
        return; // cannot be one AD structure; BlueZ would not have parsed it from one either
    };
    out.push(length);
    out.push(ad_type);
    out.extend_from_slice(prefix);
    out.extend_from_slice(payload);
}

/// The 16-bit form of a service UUID built on the Bluetooth base UUID.
fn short_uuid(uuid: &Uuid) -> Option<u16> {
    let value = uuid.as_u128();
    (value & BASE_UUID_MASK == BASE_UUID).then_some((value >> 96) as u16)
}

/// Bounded per-device cache, keyed by btleplug's peripheral id.
struct DeviceCache<K = PeripheralId> {
    devices: HashMap<K, Device>,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Clone> DeviceCache<K> {
    fn new(capacity: usize) -> Self {
        DeviceCache {
            devices: HashMap::new(),
            capacity,
        }
    }

    /// The device's record, created if new; when full, the least recently heard device is
    /// forgotten first.
    fn get_or_insert(&mut self, id: &K, address: [u8; 6]) -> &mut Device {
        if !self.devices.contains_key(id)
            && self.devices.len() >= self.capacity
            && let Some(oldest) = self
                .devices
                .iter()
                .min_by_key(|(_, d)| d.last_heard)
                .map(|(id, _)| id.clone())
        {
            self.devices.remove(&oldest);
        }
        self.devices.entry(id.clone()).or_insert_with(|| Device {
            address,
            rssi: None,
            manufacturer: Vec::new(),
            service: Vec::new(),
            last_heard: Instant::now(),
        })
    }
}

/// Scans until shutdown. Errors only when BlueZ cannot be used at all.
pub async fn run(
    config: &ScannerConfig,
    tx: mpsc::Sender<Advertisement>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let scanner = Scanner::local(&config.zone);
    let watchdog = Duration::from_secs(config.watchdog_secs);
    let mut cache = DeviceCache::new(config.max_devices);
    let mut failed_restarts = 0;
    let mut first_open = true;
    loop {
        let adapter = match open_adapter(&config.adapter).await {
            Ok(adapter) => adapter,
            Err(e) if first_open => return Err(e),
            Err(e) => {
                failed_restarts += 1;
                if failed_restarts > MAX_FAILED_RESTARTS {
                    return Err(e.context("the scanner could not be restarted"));
                }
                tracing::warn!("cannot reopen the Bluetooth adapter: {e:#}");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut events = adapter
            .events()
            .await
            .context("cannot subscribe to BlueZ events")?;
        adapter.start_scan(ScanFilter::default()).await.context(
            "cannot start BLE discovery (is the adapter powered? `bluetoothctl power on`)",
        )?;
        tracing::info!(adapter = %config.adapter, "BLE discovery started");
        first_open = false;
        let mut last_event = Instant::now();
        let mut check = tokio::time::interval(watchdog / 2);
        loop {
            tokio::select! {
                event = events.next() => {
                    let Some(event) = event else {
                        tracing::warn!("the BlueZ event stream ended; restarting discovery");
                        break;
                    };
                    last_event = Instant::now();
                    failed_restarts = 0;
                    if let Some(ad) = handle_event(&adapter, &mut cache, event, &scanner).await
                        && tx.send(ad).await.is_err() {
                            return Ok(());
                        }
                }
                _ = check.tick() => {
                    if last_event.elapsed() >= watchdog {
                        tracing::info!(
                            "no BLE events for {} s; restarting discovery (btleplug event streams can stall)",
                            watchdog.as_secs()
                        );
                        break;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = adapter.stop_scan().await;
                    return Ok(());
                }
            }
        }
        let _ = adapter.stop_scan().await;
    }
}

async fn open_adapter(name: &str) -> anyhow::Result<Adapter> {
    let bus = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "the default system bus".into());
    let manager = Manager::new().await.with_context(|| {
        format!("cannot connect to D-Bus ({bus}); is dbus running on this machine?")
    })?;
    let adapters = manager.adapters().await.with_context(|| {
        format!("cannot list Bluetooth adapters on {bus}: is BlueZ installed and bluetoothd running? (`systemctl status bluetooth`)")
    })?;
    let mut named = Vec::new();
    for adapter in adapters {
        let info = adapter.adapter_info().await.unwrap_or_default();
        if name.is_empty() || info.split_whitespace().next() == Some(name) {
            return Ok(adapter);
        }
        named.push(info);
    }
    if named.is_empty() {
        bail!(
            "no Bluetooth adapter found on {bus}; plug one in, or check `bluetoothctl list` and `rfkill list`"
        );
    }
    bail!(
        "no Bluetooth adapter named {name:?}; found: {}",
        named.join(", ")
    )
}

async fn handle_event(
    adapter: &Adapter,
    cache: &mut DeviceCache,
    event: CentralEvent,
    scanner: &Arc<Scanner>,
) -> Option<Advertisement> {
    let (id, update) = match event {
        CentralEvent::RssiUpdate { id, rssi } => {
            if let Some(device) = cache.devices.get_mut(&id) {
                device.rssi = Some(rssi);
            }
            return None;
        }
        CentralEvent::ManufacturerDataAdvertisement {
            id,
            manufacturer_data,
        } => (
            id,
            Update::Manufacturer(manufacturer_records(manufacturer_data)),
        ),
        CentralEvent::ServiceDataAdvertisement { id, service_data } => {
            (id, Update::Service(service_records(service_data)))
        }
        CentralEvent::DeviceDiscovered(id) => {
            // A device BlueZ already knew (cached, or seen before we subscribed) only shows
            // up as discovered: its current data is in its properties.
            let properties = adapter
                .peripheral(&id)
                .await
                .ok()?
                .properties()
                .await
                .ok()
                .flatten()?;
            let device = cache.get_or_insert(&id, properties.address.into_inner());
            device.rssi = properties.rssi;
            device.manufacturer = manufacturer_records(properties.manufacturer_data);
            device.service = service_records(properties.service_data);
            device.last_heard = Instant::now();
            if device.manufacturer.is_empty() && device.service.is_empty() {
                return None;
            }
            return Some(Advertisement {
                at_ms: crate::clock::steady_ms(),
                address: device.address,
                rssi: device.rssi?,
                data: device.advertising_data(),
                scanner: scanner.clone(),
            });
        }
        _ => return None,
    };
    if !cache.devices.contains_key(&id) {
        // First time: one D-Bus round trip for the address, current RSSI and data.
        let peripheral = adapter.peripheral(&id).await.ok()?;
        let properties = peripheral.properties().await.ok().flatten()?;
        let device = cache.get_or_insert(&id, properties.address.into_inner());
        device.rssi = properties.rssi;
    }
    let device = cache.devices.get_mut(&id)?;
    match update {
        Update::Manufacturer(data) => device.manufacturer = data,
        Update::Service(data) => device.service = data,
    }
    device.last_heard = Instant::now();
    Some(Advertisement {
        at_ms: crate::clock::steady_ms(),
        address: device.address,
        rssi: device.rssi?,
        data: device.advertising_data(),
        scanner: scanner.clone(),
    })
}

/// Manufacturer data records in a stable order (BlueZ hands over a map).
fn manufacturer_records(data: HashMap<u16, Vec<u8>>) -> Vec<(u16, Vec<u8>)> {
    let mut records: Vec<_> = data.into_iter().collect();
    records.sort();
    records
}

/// Service data records of 16-bit UUIDs in a stable order; 128-bit UUIDs are not beacons.
fn service_records(data: HashMap<Uuid, Vec<u8>>) -> Vec<(u16, Vec<u8>)> {
    let mut records: Vec<_> = data
        .into_iter()
        .filter_map(|(uuid, d)| Some((short_uuid(&uuid)?, d)))
        .collect();
    records.sort();
    records
}

enum Update {
    Manufacturer(Vec<(u16, Vec<u8>)>),
    Service(Vec<(u16, Vec<u8>)>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_uuids_only_from_the_base_uuid() {
        let eddystone = Uuid::parse_str("0000feaa-0000-1000-8000-00805f9b34fb").unwrap();
        assert_eq!(short_uuid(&eddystone), Some(0xfeaa));
        let custom = Uuid::parse_str("0000feaa-0000-1000-8000-00805f9b34fc").unwrap();
        assert_eq!(short_uuid(&custom), None);
        let long = Uuid::parse_str("1234feaa-0000-1000-8000-00805f9b34fb").unwrap();
        assert_eq!(short_uuid(&long), None);
    }

    #[test]
    fn the_device_cache_stays_bounded_and_forgets_the_least_recently_heard() {
        let mut cache: DeviceCache<u32> = DeviceCache::new(3);
        for id in 0..3 {
            cache.get_or_insert(&id, [id as u8; 6]);
        }
        cache.get_or_insert(&0, [0; 6]).last_heard = Instant::now() + Duration::from_secs(1);
        for id in 3..10_000 {
            cache.get_or_insert(&id, [0; 6]).last_heard = Instant::now() + Duration::from_secs(2);
            assert!(cache.devices.len() <= 3);
        }
        assert!(cache.devices.contains_key(&9_999));
        assert!(
            !cache.devices.contains_key(&1),
            "least recently heard goes first"
        );
    }

    #[test]
    fn rebuilt_data_decodes_like_the_broadcast() {
        let device = Device {
            address: [0; 6],
            rssi: Some(-60),
            manufacturer: vec![(
                0x004c,
                tastesync_shared::hexfmt::parse("0215f7826da64fa24e988024bc5b71e0893e00010002c5")
                    .unwrap(),
            )],
            service: vec![],
            last_heard: Instant::now(),
        };
        let beacon = tastesync_shared::decode_advertisement(&device.advertising_data())
            .unwrap()
            .unwrap();
        assert_eq!(beacon.format(), "ibeacon");
    }
}
