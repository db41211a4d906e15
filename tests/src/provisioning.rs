//! The cloud side with provisioning (a broker with dynamic security, PostgreSQL, cloud-sync
//! serving its API over HTTPS with a test CA), and blank boxes to claim, for the claiming
//! tests and benchmark.

use std::process::Command;

use crate::ble::Daemon;
use crate::cloud::{CloudSync, Database, Hq, Mosquitto, eventually, free_port, make_certificates};
use crate::{Shop, http, ibeacon, now_ms, run};

/// cloud-sync's broker user: the broker's dynamic-security administrator.
pub const ADMIN: (&str, &str) = ("cloud", "cloud-admin-secret");
const UUID: &str = "f7826da64fa24e988024bc5b71e0893e";

/// The cloud side with provisioning: a broker with dynamic security, PostgreSQL, and
/// cloud-sync serving its API over HTTPS with a test CA.
pub struct Cloud {
    certs: tempfile::TempDir,
    pub broker: Mosquitto,
    pub database: Database,
    pub cloud: CloudSync,
    pub api: String,
    _files: Shop,
}

impl Cloud {
    pub fn start() -> Cloud {
        let files = Shop::new();
        let certs = tempfile::tempdir().unwrap();
        make_certificates(certs.path(), &[]);
        let broker = Mosquitto::with_dynsec(ADMIN);
        let database = Database::create();
        let port = free_port();
        let sections = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            certs.path().join("server.crt").display().to_string(),
            certs.path().join("server.key").display().to_string(),
        );
        let cloud = CloudSync::start_configured(
            &files,
            &database,
            &broker,
            "cloud-claims",
            ADMIN,
            "",
            &sections,
        );
        let cloud = Cloud {
            certs,
            broker,
            database,
            cloud,
            api: format!("https://127.0.0.1:{port}"),
            _files: files,
        };
        assert!(
            eventually(20, || cloud
                .https()
                .get(cloud.url("/api/v1/health"))
                .send()
                .is_ok()),
            "the API answers over HTTPS"
        );
        cloud
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    pub fn ca(&self) -> String {
        self.certs.path().join("ca.crt").display().to_string()
    }

    /// An HTTPS client trusting the test CA.
    pub fn https(&self) -> reqwest::blocking::Client {
        let _ = http(); // installs the crypto provider
        let ca = std::fs::read(self.ca()).unwrap();
        reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap()
    }

    pub fn hq(&self) -> Hq {
        Hq::of(&self.cloud)
    }

    pub fn claim_code(&self, shop_id: &str) -> String {
        self.hq().shops(&["claim-code", shop_id])[0]["claim_code"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// A blank box: no shop, the cloud's address and CA, its POS on a free port, and a scanner
/// fed through a pipe (`air`) so the test decides who walks in.
pub struct BlankBox {
    pub shop: Shop,
    pub config: std::path::PathBuf,
    daemon: Option<Daemon>,
    air: Option<std::fs::File>,
    pub pos: String,
}

impl BlankBox {
    pub fn new(cloud: &Cloud) -> BlankBox {
        let shop = Shop::new();
        let air = shop.path("air.fifo");
        assert!(Command::new("mkfifo").arg(&air).status().unwrap().success());
        let config = shop.write(
            "edge.toml",
            &format!(
                "database = {:?}\n[scanner]\nsource = \"replay\"\nreplay_file = {:?}\nreplay_speed = 0\nzone = \"counter\"\n\
                 [pos]\nlisten = \"127.0.0.1:0\"\nannounce = false\n[cloud]\nurl = {:?}\nca_file = {:?}\n",
                shop.db(),
                air.display().to_string(),
                cloud.api,
                cloud.ca(),
            ),
        );
        BlankBox {
            shop,
            config,
            daemon: None,
            air: None,
            pos: String::new(),
        }
    }

    /// Starts the daemon; returns once its POS answers.
    pub fn run(mut self) -> BlankBox {
        let daemon = Daemon::start(&self.config, "unix:path=/nonexistent");
        let air = std::fs::OpenOptions::new()
            .write(true)
            .open(self.shop.path("air.fifo"))
            .unwrap();
        let log = daemon.wait_for_log("POS listening on ");
        self.pos = log
            .last()
            .and_then(|l| l.split("POS listening on ").nth(1))
            .unwrap()
            .trim()
            .to_string();
        self.daemon = Some(daemon);
        self.air = Some(air);
        self
    }

    /// `tastesync-edge claim CODE`.
    pub fn claim(&self, code: &str) -> std::process::Output {
        run(
            "tastesync-edge",
            &["claim", code, "--config", self.config.to_str().unwrap()],
        )
    }

    pub fn box_id(&self) -> String {
        self.shop.identity()["box_id"].as_str().unwrap().to_string()
    }

    pub fn standing(&self) -> String {
        self.shop.identity()["standing"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The broker username and password the cloud gave the box.
    pub fn credentials(&self) -> (String, String) {
        let text = std::fs::read_to_string(self.shop.path("box-identity.json")).unwrap();
        let identity: serde_json::Value = serde_json::from_str(&text).unwrap();
        let claim = &identity["claim"];
        (
            claim["username"].as_str().unwrap().to_string(),
            claim["password"].as_str().unwrap().to_string(),
        )
    }

    /// The customer with tag minor 7 stands at the counter for a moment.
    pub fn regular_walks_in(&mut self) {
        use std::io::Write;
        let air = self.air.as_mut().unwrap();
        let now = now_ms();
        for i in 0..3u64 {
            let data = ibeacon(UUID, 1, 7);
            writeln!(
                air,
                r#"{{"t_ms":{},"address":"c0:00:00:00:00:07","rssi":-55,"data":"{data}"}}"#,
                now + i * 300
            )
            .unwrap();
        }
        air.flush().unwrap();
    }

    pub fn owner_status(&self) -> serde_json::Value {
        http()
            .get(format!("{}/api/owner/status", self.pos))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
}
