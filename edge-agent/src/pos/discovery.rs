//! DNS-SD over mDNS: the box announces its POS as `_tastesync._tcp` and `_http._tcp`, so a
//! tablet (or `tastesync-edge discover`) finds it without anyone typing an IP address.

use std::time::{Duration, Instant};

use anyhow::Context;
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};

pub const SERVICE_TYPE: &str = "_tastesync._tcp.local.";
const HTTP_SERVICE_TYPE: &str = "_http._tcp.local.";

/// A running announcement; dropping it withdraws the services.
pub struct Announcement {
    daemon: ServiceDaemon,
}

impl Drop for Announcement {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

/// Restricts an mDNS daemon to one interface (by name), or leaves all but loopback.
fn restrict(daemon: &ServiceDaemon, interface: &str) -> anyhow::Result<()> {
    if interface.is_empty() {
        daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
    } else {
        daemon.disable_interface(IfKind::All)?;
        daemon.enable_interface(IfKind::Name(interface.to_string()))?;
    }
    Ok(())
}

/// The box's mDNS host name (`tastesync-{name}.local.`).
pub fn host_name(name: &str) -> String {
    format!("tastesync-{name}.local.")
}

/// Announces the POS of shop `shop_id` on `port`, on `interface` (empty: every interface
/// but loopback). Only IPv4 addresses are announced: the POS listens on IPv4.
pub fn announce(shop_id: &str, port: u16, interface: &str) -> anyhow::Result<Announcement> {
    let daemon = ServiceDaemon::new().context("cannot start mDNS (UDP port 5353)")?;
    restrict(&daemon, interface)?;
    daemon.disable_interface(IfKind::IPv6)?;
    let host = host_name(shop_id);
    let properties = [
        ("path", "/pos"),
        ("shop", shop_id),
        ("version", env!("CARGO_PKG_VERSION")),
    ];
    for service_type in [SERVICE_TYPE, HTTP_SERVICE_TYPE] {
        let info = ServiceInfo::new(
            service_type,
            &format!("TasteSync {shop_id}"),
            &host,
            "",
            port,
            &properties[..],
        )
        .context("invalid mDNS service")?
        .enable_addr_auto();
        daemon
            .register(info)
            .context("cannot announce the POS over mDNS")?;
    }
    Ok(Announcement { daemon })
}

/// A box found on the network.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundBox {
    pub name: String,
    pub urls: Vec<String>,
}

/// Browses for boxes on `interface` (empty: all but loopback) for `wait`.
pub fn discover(interface: &str, wait: Duration) -> anyhow::Result<Vec<FoundBox>> {
    let daemon = ServiceDaemon::new().context("cannot start mDNS (UDP port 5353)")?;
    restrict(&daemon, interface)?;
    let events = daemon.browse(SERVICE_TYPE)?;
    let deadline = Instant::now() + wait;
    let mut found: Vec<FoundBox> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else {
            break;
        };
        if let ServiceEvent::ServiceResolved(service) = event {
            let path = service
                .get_property_val_str("path")
                .unwrap_or("/")
                .to_string();
            let port = service.get_port();
            let urls = service
                .get_addresses()
                .iter()
                .map(|ip| match ip.to_ip_addr() {
                    std::net::IpAddr::V4(v4) => format!("http://{v4}:{port}{path}"),
                    std::net::IpAddr::V6(v6) => format!("http://[{v6}]:{port}{path}"),
                });
            let name = service
                .get_fullname()
                .trim_end_matches(SERVICE_TYPE)
                .trim_end_matches('.')
                .to_string();
            // A service may resolve several times as its addresses arrive: merge them.
            let index = match found.iter().position(|f| f.name == name) {
                Some(i) => i,
                None => {
                    found.push(FoundBox {
                        name,
                        urls: Vec::new(),
                    });
                    found.len() - 1
                }
            };
            let entry = &mut found[index];
            entry.urls.extend(urls);
            entry.urls.sort();
            entry.urls.dedup();
        }
    }
    let _ = daemon.shutdown();
    Ok(found)
}
