//! `tastesync-edge demo`: the whole box on one machine with no radio and no cloud.
//!
//! Seeds customers through the same CSV import the owner uses (static tags and EID phones,
//! whose temporary keys are derived here as the cloud would), then plays a simulated shop's
//! radio traffic through the real pipeline and store, and prints arrivals and departures.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tastesync_shared::eid::{epoch_of, temporary_key};
use tastesync_shared::hexfmt::hex;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::Config;
use crate::daemon::{self, Source};
use crate::events::{CustomerArrived, CustomerLeft, PresenceEvent};
use crate::presence::PresenceConfig;
use crate::simulate::{
    Broadcast, Schedule, Simulation, eddystone_uid_advertisement, ibeacon_advertisement,
};
use crate::store::Store;
use crate::{Millis, now_ms};

/// The loyalty tags' iBeacon UUID in the demo shop.
const SHOP_UUID: [u8; 16] = [
    0xf7, 0x82, 0x6d, 0xa6, 0x4f, 0xa2, 0x4e, 0x98, 0x80, 0x24, 0xbc, 0x5b, 0x71, 0xe0, 0x89, 0x3e,
];
const NAMESPACE: [u8; 10] = [0x75, 0x73, 0x65, 0x72, 0x74, 0x61, 0x73, 0x74, 0x65, 0x73];

/// A demo customer and what they carry.
struct DemoCustomer {
    customer_ref: &'static str,
    name: &'static str,
    tier: &'static str,
    notes: &'static str,
    preferences: &'static str,
    carries: Carries,
    past_visits: u32,
}

enum Carries {
    IBeacon(u16),
    EddystoneUid([u8; 6]),
    EidPhone([u8; 16]),
}

const CUSTOMERS: &[DemoCustomer] = &[
    DemoCustomer {
        customer_ref: "C-1001",
        name: "Minji Kim",
        tier: "gold",
        notes: "allergic to peanuts",
        preferences: "oat latte",
        carries: Carries::IBeacon(1),
        past_visits: 13,
    },
    DemoCustomer {
        customer_ref: "C-1002",
        name: "Joon Park",
        tier: "silver",
        notes: "",
        preferences: "americano, extra shot",
        carries: Carries::IBeacon(2),
        past_visits: 4,
    },
    DemoCustomer {
        customer_ref: "C-1003",
        name: "Sophie Martin",
        tier: "",
        notes: "lactose intolerant",
        preferences: "green tea",
        carries: Carries::EddystoneUid([0, 0, 0, 0, 0, 3]),
        past_visits: 1,
    },
    DemoCustomer {
        customer_ref: "C-1004",
        name: "Hyun-woo Lee",
        tier: "gold",
        notes: "",
        preferences: "cold brew",
        carries: Carries::EidPhone([0x11; 16]),
        past_visits: 22,
    },
    DemoCustomer {
        customer_ref: "C-1005",
        name: "Seo-yeon Jung",
        tier: "",
        notes: "vegan",
        preferences: "soy latte, no sugar",
        carries: Carries::EidPhone([0x22; 16]),
        past_visits: 0,
    },
    DemoCustomer {
        customer_ref: "C-1006",
        name: "Daniel Choi",
        tier: "silver",
        notes: "gluten-free",
        preferences: "flat white",
        carries: Carries::IBeacon(6),
        past_visits: 7,
    },
];

/// Options of `tastesync-edge demo`.
pub struct DemoOptions {
    pub database: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub strangers: usize,
    pub seed: u64,
    /// Where the POS page is served.
    pub listen: String,
    /// An MQTT broker (`host:port`) to sync with, as a box set up by hand (shop `demo-shop`).
    pub broker: Option<String>,
    /// The cloud's provisioning API (e.g. `http://127.0.0.1:8443` with `scripts/cloud.sh`
    /// running): the demo box starts blank, to be claimed on its owner page or with `claim`.
    pub cloud: Option<String>,
    /// A claim code from HQ (`tastesync-cloud shops claim-code`): the box claims itself with it
    /// at start (needs `cloud`).
    pub claim: Option<String>,
}

/// Runs the demo until Ctrl-C or the optional duration.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let database = options
        .database
        .unwrap_or_else(|| std::env::temp_dir().join("tastesync-demo").join("edge.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    let start = now_ms();
    let mut store = Store::open(&database)?;
    seed(
        &mut store,
        database.parent().unwrap_or(Path::new(".")),
        start,
    )?;
    // A tablet already paired, so a newcomer sees alerts at once.
    let tablet_token = crate::pos::auth::new_token();
    store.add_device(
        "Demo tablet",
        crate::store::DeviceKind::Tablet,
        &crate::pos::auth::hash(&tablet_token),
        start,
    )?;
    drop(store);

    if options.broker.is_some() && options.cloud.is_some() {
        anyhow::bail!(
            "give --broker (a box set up by hand) or --cloud (a box claimed through the cloud), not both"
        );
    }
    if options.claim.is_some() && options.cloud.is_none() {
        anyhow::bail!("--claim needs --cloud, the provisioning API's address");
    }
    let config = Config {
        // Claimed through the cloud, the box has no shop of its own until then.
        shop_id: if options.cloud.is_some() {
            String::new()
        } else {
            "demo-shop".into()
        },
        database: database.clone(),
        cloud: crate::config::CloudConfig {
            url: options.cloud.clone().unwrap_or_default(),
            ca_file: None,
        },
        presence: PresenceConfig {
            // A short demo; a real shop waits about a minute, five for someone seated.
            absence_ms: 10_000,
            seated_absence_ms: 10_000,
            ..PresenceConfig::default()
        },
        pos: crate::config::PosConfig {
            listen: options.listen.clone(),
            // The demo serves this machine only: announce it there, not on the LAN.
            announce_interface: "lo".into(),
            ..crate::config::PosConfig::default()
        },
        uplink: crate::uplink::UplinkConfig {
            broker: options.broker.clone().unwrap_or_default(),
            ..crate::uplink::UplinkConfig::default()
        },
        ..Config::default()
    };
    let mut sim = Simulation::new(
        options.seed,
        "counter",
        Schedule {
            stay_ms: (15_000, 40_000),
            gap_ms: (20_000, 60_000),
        },
    );
    for (i, customer) in CUSTOMERS.iter().enumerate() {
        let (broadcast, period) = match customer.carries {
            Carries::IBeacon(minor) => (
                Broadcast::Fixed(ibeacon_advertisement(&SHOP_UUID, 1, minor)),
                1000,
            ),
            Carries::EddystoneUid(instance) => (
                Broadcast::Fixed(eddystone_uid_advertisement(&NAMESPACE, &instance)),
                1000,
            ),
            Carries::EidPhone(identity_key) => (
                Broadcast::Eid {
                    identity_key,
                    exponent: 10,
                },
                250,
            ),
        };
        sim.add_customer(broadcast, period, start, 2_000 + 4_000 * i as Millis);
    }
    sim.add_strangers(options.strangers);

    println!(
        "TasteSync Edge demo: {} customers enrolled (tags and EID phones), {} strangers' devices nearby.",
        CUSTOMERS.len(),
        options.strangers
    );
    println!("Database: {}. Press Ctrl-C to stop.\n", database.display());

    if let Some(code) = &options.claim {
        claim_afresh(&config, code).await?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    spawn_stopper(stop_tx, options.duration);
    let (listening_tx, listening_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Ok(address) = listening_rx.await {
            let url = format!("http://{address}/pos#token={tablet_token}");
            println!("POS page (a paired demo tablet): {url}");
            println!("Owner page: http://{address}/owner\n");
            open_in_browser(&url);
        }
    });
    let stats = daemon::run(
        &config,
        Source::Simulated(sim),
        stop_rx,
        Some(Box::new(print_event)),
        Some(listening_tx),
    )
    .await?;
    println!(
        "\n{} advertisements heard, {} beacons, {} from enrolled customers, {} malformed.",
        stats.advertisements, stats.beacons, stats.recognised, stats.malformed
    );
    Ok(())
}

/// Claims the demo box with `code`. Its store is new at every start, so any earlier claim is
/// forgotten first (the box id stays).
async fn claim_afresh(config: &Config, code: &str) -> anyhow::Result<()> {
    let identity = crate::identity::IdentityFile::open(&config.identity_path())?;
    let mut blank = identity.get();
    blank.claim = None;
    blank.revoked_at_ms = None;
    identity.save(blank)?;
    let claim = crate::provisioning::claim(config, &identity, code).await?;
    println!(
        "Claimed for shop {}: the box connects to the cloud with its own credentials.",
        claim.shop_id
    );
    Ok(())
}

/// Opens `url` in the desktop's browser when there is a desktop (nothing happens on a
/// headless machine; the URL is printed either way).
fn open_in_browser(url: &str) {
    let desktop = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if desktop {
        let _ = std::process::Command::new("xdg-open")
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

fn spawn_stopper(stop: watch::Sender<bool>, duration: Option<Duration>) {
    tokio::spawn(async move {
        match duration {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        let _ = stop.send(true);
    });
}

/// Enrolls the demo customers through the owner's CSV import, with EID keys for a week.
fn seed(store: &mut Store, dir: &Path, now: Millis) -> anyhow::Result<()> {
    let mut customers = String::from("customer_ref,display_name,tier,notes,preferences,tag_ids\n");
    let mut keys = String::from("customer_ref,exponent,epoch,temporary_key\n");
    let first_epoch = epoch_of((now / 1000) as u32);
    for c in CUSTOMERS {
        let tag = match c.carries {
            Carries::IBeacon(minor) => format!(
                "ibeacon:{}:1:{minor}",
                tastesync_shared::hexfmt::uuid(&SHOP_UUID)
            ),
            Carries::EddystoneUid(instance) => {
                format!("eddystone-uid:{}:{}", hex(&NAMESPACE), hex(&instance))
            }
            Carries::EidPhone(identity_key) => {
                // What the cloud does: derive temporary keys for the coming days.
                for epoch in first_epoch.saturating_sub(1)..=first_epoch.saturating_add(10) {
                    let _ = writeln!(
                        keys,
                        "{},10,{epoch},{}",
                        c.customer_ref,
                        hex(&temporary_key(&identity_key, epoch))
                    );
                }
                String::new()
            }
        };
        let _ = writeln!(
            customers,
            "{},{},{},{},\"{}\",{tag}",
            c.customer_ref, c.name, c.tier, c.notes, c.preferences
        );
    }
    let customers_csv = dir.join("demo-customers.csv");
    let keys_csv = dir.join("demo-eid-keys.csv");
    std::fs::write(&customers_csv, customers)?;
    std::fs::write(&keys_csv, keys)?;
    store.import_customers(&customers_csv)?;
    store.import_eid_keys(&keys_csv)?;
    // Visit history, so alerts say "14th visit".
    for c in CUSTOMERS {
        let id = store
            .customers()?
            .into_iter()
            .find(|x| x.customer_ref == c.customer_ref)
            .context("seeded customer")?
            .id;
        for n in 1..=c.past_visits {
            let arrived_at_ms = now - Millis::from(n) * 3 * 86_400_000;
            let visit_id = Uuid::now_v7();
            store.record_arrival(&CustomerArrived {
                visit_id,
                customer: id,
                zone: "counter".into(),
                arrived_at_ms,
            })?;
            store.record_departure(&CustomerLeft {
                visit_id,
                customer: id,
                zone: "counter".into(),
                arrived_at_ms,
                left_at_ms: arrived_at_ms + 1_800_000,
                dwell_s: 1800,
            })?;
        }
    }
    Ok(())
}

fn print_event(store: &Store, event: &PresenceEvent) {
    let line = match describe(store, event) {
        Ok(line) => line,
        Err(e) => format!("(cannot describe the event: {e:#})"),
    };
    println!("{line}");
}

fn describe(store: &Store, event: &PresenceEvent) -> anyhow::Result<String> {
    let customer = store
        .customer(event.customer())?
        .context("customer removed meanwhile")?;
    Ok(match event {
        PresenceEvent::CustomerArrived(a) => {
            let mut line = format!(
                "{}  ▶ {} is here",
                clock(a.arrived_at_ms),
                customer.display_name
            );
            if !customer.tier.is_empty() {
                let _ = write!(line, " ({})", customer.tier);
            }
            let visits = store.visit_count(customer.id)?;
            let _ = write!(line, ": {} visit", ordinal(visits));
            if let Some(previous) = store.previous_visit(customer.id, a.arrived_at_ms)? {
                let _ = write!(
                    line,
                    ", last {}",
                    ago(a.arrived_at_ms.saturating_sub(previous))
                );
            }
            if !customer.preferences.is_empty() {
                let _ = write!(line, " · usually {}", customer.preferences);
            }
            if !customer.notes.is_empty() {
                let _ = write!(line, " · careful: {}", customer.notes);
            }
            let _ = write!(line, "  [{}]", a.zone);
            line
        }
        PresenceEvent::CustomerLeft(l) => format!(
            "{}  ◀ {} left after {} s",
            clock(l.left_at_ms),
            customer.display_name,
            l.dwell_s
        ),
        PresenceEvent::ZoneChanged(z) => format!(
            "{}  ↔ {} moved from {} to {}",
            clock(z.at_ms),
            customer.display_name,
            z.from_zone,
            z.zone
        ),
    })
}

/// `HH:MM:SS` UTC.
fn clock(ms: Millis) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn ago(ms: Millis) -> String {
    let minutes = ms / 60_000;
    match minutes {
        0 => "just now".into(),
        1..=59 => format!("{minutes} min ago"),
        60..=2879 => format!("{} h ago", minutes / 60),
        _ => format!("{} days ago", minutes / 1440),
    }
}

/// 1st, 2nd, 3rd, 4th ... 11th, 12th, 13th, 21st ...
pub fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_and_durations_read_naturally() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 111]
            .map(ordinal)
            .to_vec();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "14th", "21st", "22nd", "111th"
            ]
        );
        assert_eq!(ago(3 * 86_400_000), "3 days ago");
        assert_eq!(ago(5 * 60_000), "5 min ago");
        assert_eq!(clock(3_723_000), "01:02:03");
    }
}
