//! A box with its POS server up, on a random port, fed by the mocked BlueZ, for the API,
//! resume and browser tests.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use crate::ble::{Daemon, MockBluez};
use crate::{Shop, ibeacon_manufacturer_payload, run, stdout};

pub const UUID: &str = "f7826da64fa24e988024bc5b71e0893e";

/// Customers of the POS tests: C1..C3 with iBeacon tags minor 1..3.
pub const CUSTOMERS: &str = "customer_ref,display_name,tier,notes,preferences,tag_ids\n\
C1,Minji Kim,gold,allergic to peanuts,oat latte,ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:1\n\
C2,Joon Park,silver,,americano,ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2\n\
C3,Sophie Martin,,lactose intolerant,green tea,ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:3\n";

pub struct PosBox {
    pub shop: Shop,
    pub mock: MockBluez,
    pub daemon: Option<Daemon>,
    pub base: String,
    pub http: reqwest::blocking::Client,
    /// The daemon's extra environment, kept for restarts.
    env: Vec<(String, String)>,
}

impl PosBox {
    /// The box with its POS on loopback, as the owner's own machine sees it.
    pub fn start() -> PosBox {
        PosBox::start_with("127.0.0.1:0", "")
    }

    /// The box with its POS on every interface, reached at this machine's LAN address (as a
    /// tablet, or an attacker, on the shop's Wi-Fi reaches it); `pos` adds `[pos]` keys.
    pub fn start_on_lan(pos: &str) -> PosBox {
        let mut pos_box = PosBox::start_with("0.0.0.0:0", pos);
        let port = pos_box.base.rsplit_once(':').unwrap().1.to_string();
        pos_box.base = format!("http://{}:{port}", lan_address());
        pos_box
    }

    /// The box of shop `shop_id`, set up by hand to sync through `broker`, its POS on
    /// loopback.
    pub fn start_synced(shop_id: &str, broker: &str) -> PosBox {
        PosBox::start_configured(
            &format!("shop_id = {shop_id:?}\n"),
            "127.0.0.1:0",
            &format!("[uplink]\nbroker = {broker:?}\n"),
        )
    }

    fn start_with(listen: &str, pos: &str) -> PosBox {
        PosBox::start_configured("", listen, pos)
    }

    /// `top` goes before the sections, `pos` at the end of `[pos]` (further sections may
    /// follow it).
    fn start_configured(top: &str, listen: &str, pos: &str) -> PosBox {
        PosBox::start_in(Shop::new(), top, listen, pos, Vec::new())
    }

    /// In `shop` (its files may be named in the config), with POS on loopback, more config
    /// (as for [`start_configured`](Self::start_configured)) and the daemon's extra
    /// environment.
    pub fn start_custom(shop: Shop, top: &str, pos: &str, env: Vec<(String, String)>) -> PosBox {
        PosBox::start_in(shop, top, "127.0.0.1:0", pos, env)
    }

    fn start_in(
        shop: Shop,
        top: &str,
        listen: &str,
        pos: &str,
        env: Vec<(String, String)>,
    ) -> PosBox {
        shop.import_customers(CUSTOMERS);
        let config = shop.write(
            "edge.toml",
            &format!(
                "{top}database = {:?}\n[scanner]\nsource = \"ble\"\nzone = \"counter\"\n[pos]\nlisten = {listen:?}\nannounce = false\n{pos}\n",
                shop.db()
            ),
        );
        let mut mock = MockBluez::start(&[]);
        let (daemon, base) = start_daemon(&config, &mock.bus, &env);
        for minor in 1..=4 {
            mock.send(serde_json::json!({"cmd": "add_device", "mac": mac(minor), "name": "tag"}));
        }
        PosBox {
            shop,
            mock,
            daemon: Some(daemon),
            base,
            http: crate::http(),
            env,
        }
    }

    /// Stops the daemon cleanly (SIGTERM, as systemd does for an upgrade or a restart) and
    /// starts it again on the same store; the POS may come back on another port.
    pub fn restart(&mut self) {
        let daemon = self.daemon.take().expect("the daemon runs");
        assert!(daemon.terminate(), "a clean stop");
        let config = self.shop.dir.path().join("edge.toml");
        let (daemon, base) = start_daemon(&config, &self.mock.bus, &self.env);
        self.daemon = Some(daemon);
        self.base = base;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A pairing code from the owner's command line.
    pub fn pairing_code(&self) -> String {
        let out = stdout(&run("tastesync-edge", &["pair", "--db", &self.shop.db()]));
        out.split_whitespace().nth(2).expect("code").to_string()
    }

    /// Pairs a tablet; returns its token.
    pub fn pair(&self, name: &str) -> String {
        pair(&self.base, &self.pairing_code(), name)
    }

    /// Pairs a scanner box (as `tastesync-edge pair-scanner` does); returns its token.
    pub fn pair_scanner(&self, name: &str) -> String {
        pair_as(&self.base, &self.pairing_code(), name, "scanner")
    }

    /// The tag of customer C<minor> advertises near the counter three times: an arrival.
    pub fn customer_arrives(&mut self, minor: u16) {
        for _ in 0..3 {
            self.mock.send(serde_json::json!({
                "cmd": "advertise", "mac": mac(minor), "rssi": -58,
                "manufacturer_data": {"76": ibeacon_manufacturer_payload(UUID, 1, minor)}
            }));
        }
    }

    /// Sets the owner's PIN (first use) and returns the owner's session token.
    pub fn owner_session(&self, pin: &str) -> String {
        PosBox::owner_session_at(&self.base, pin)
    }

    /// Logs the owner in with the PIN set before; returns the session token.
    pub fn owner_login(&self, pin: &str) -> String {
        owner_token(&self.url("/api/owner/login"), pin, 200)
    }

    /// Sets the owner's PIN through the POS at `base` (from this machine itself, where no
    /// setup code is needed); returns the session token.
    pub fn owner_session_at(base: &str, pin: &str) -> String {
        owner_token(&format!("{base}/api/owner/setup"), pin, 201)
    }

    /// The POS's port.
    pub fn port(&self) -> u16 {
        self.base.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    /// The owner page's data.
    pub fn overview(&self, owner: &str) -> serde_json::Value {
        self.http
            .get(self.url("/api/owner/overview"))
            .bearer_auth(owner)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Customers present, as a tablet sees them.
    pub fn present(&self, token: &str) -> serde_json::Value {
        self.http
            .get(self.url("/api/present"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Waits until `count` customers are present; returns the present list.
    pub fn wait_present(&self, token: &str, count: usize) -> Vec<serde_json::Value> {
        for _ in 0..100 {
            let present = self.present(token)["present"].as_array().unwrap().clone();
            if present.len() >= count {
                return present;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{count} customers never became present");
    }

    /// Opens the live stream; events arrive on the returned channel.
    pub fn stream(&self, token: &str, last_event_id: Option<i64>) -> mpsc::Receiver<SseEvent> {
        stream(&self.base, token, last_event_id)
    }
}

/// Posts the owner's PIN to `url` (setup or login), expecting `status`; returns the
/// session token.
fn owner_token(url: &str, pin: &str, status: u16) -> String {
    let response = crate::http()
        .post(url)
        .json(&serde_json::json!({"pin": pin}))
        .send()
        .unwrap();
    assert_eq!(response.status(), status);
    let body: serde_json::Value = response.json().unwrap();
    body["token"].as_str().unwrap().to_string()
}

/// Pairs a tablet with the box at `base` using `code`; returns the tablet's token.
pub fn pair(base: &str, code: &str, name: &str) -> String {
    pair_as(base, code, name, "tablet")
}

/// Pairs a device of `kind` (`tablet` or `scanner`) with the code; returns its token.
fn pair_as(base: &str, code: &str, name: &str, kind: &str) -> String {
    let response = crate::http()
        .post(format!("{base}/api/pair"))
        .json(&serde_json::json!({"code": code, "name": name, "kind": kind}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().unwrap();
    body["token"].as_str().unwrap().to_string()
}

/// Opens the live stream of the box at `base`; events arrive on the returned channel.
/// As a browser does it: with a single-use ticket, not the token, in the URL.
pub fn stream(base: &str, token: &str, last_event_id: Option<i64>) -> mpsc::Receiver<SseEvent> {
    let ticket: serde_json::Value = crate::http()
        .post(format!("{base}/api/stream-tickets"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ticket = ticket["ticket"].as_str().expect("a stream ticket");
    let mut request = crate::http()
        .get(format!("{base}/api/stream?ticket={ticket}"))
        .timeout(Duration::from_secs(3600));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().unwrap();
    assert_eq!(response.status(), 200);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut event = SseEvent::default();
        for line in BufReader::new(response).lines().map_while(Result::ok) {
            if line.is_empty() {
                if !event.kind.is_empty() && tx.send(std::mem::take(&mut event)).is_err() {
                    return;
                }
                event = SseEvent::default();
            } else if let Some(v) = line.strip_prefix("id: ") {
                event.id = v.parse().unwrap_or(-1);
            } else if let Some(v) = line.strip_prefix("event: ") {
                event.kind = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                event.data = serde_json::from_str(v).unwrap_or(serde_json::Value::Null);
            }
        }
    });
    rx
}

impl Drop for PosBox {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.terminate();
        }
    }
}

/// Starts the daemon on `config` and waits until its POS listens and its scanner runs;
/// returns it and the POS's base URL.
fn start_daemon(config: &std::path::Path, bus: &str, env: &[(String, String)]) -> (Daemon, String) {
    let daemon = Daemon::start_with_env(&crate::bin("tastesync-edge"), config, bus, env);
    let log = daemon.wait_for_log("POS listening on ");
    let base = log
        .last()
        .and_then(|l| l.split("POS listening on ").nth(1))
        .expect("address")
        .trim()
        .to_string();
    daemon.wait_for_log("BLE discovery started");
    (daemon, base)
}

/// One Server-Sent Event.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseEvent {
    pub id: i64,
    pub kind: String,
    pub data: serde_json::Value,
}

fn mac(minor: u16) -> String {
    format!("c0:11:22:33:44:{minor:02x}")
}

/// This machine's address on its LAN (not loopback), as another device there would reach it.
pub fn lan_address() -> std::net::IpAddr {
    // Connecting a UDP socket sends nothing; it only picks the route and its source address.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    socket
        .connect("192.0.2.1:9")
        .or_else(|_| socket.connect("10.255.255.1:9"))
        .expect("a route off this machine");
    let address = socket.local_addr().expect("a local address").ip();
    assert!(
        !address.is_loopback(),
        "this machine needs a non-loopback address for the LAN tests"
    );
    address
}
