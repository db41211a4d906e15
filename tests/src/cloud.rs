//! Real services for the sync tests: a Mosquitto of the test's own on a free port, a fresh
//! PostgreSQL database (dropped afterwards), and `tastesync-cloud serve` against them.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{Shop, bin};

/// A Mosquitto broker of the test's own.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn spawn_broker(config: &std::path::Path, port: u16) -> Child {
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (Debian package mosquitto)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Makes a test certificate authority, a broker certificate for 127.0.0.1, and a client
/// certificate whose common name is each of `clients`, in `dir` (PEM, with openssl).
pub fn make_certificates(dir: &std::path::Path, clients: &[&str]) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=TasteSync test CA",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    let sign = |name: &str, subject: &str, ext: &str| {
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            ext,
        ]);
    };
    sign("server", "/CN=localhost", "server.ext");
    for client in clients {
        sign(client, &format!("/CN={client}"), "client.ext");
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Mosquitto {
    /// `extra` is appended to the config (ACLs, passwords...).
    pub fn start(extra: &str) -> Mosquitto {
        Mosquitto::start_in(tempfile::tempdir().unwrap(), extra)
    }

    fn start_in(dir: tempfile::TempDir, extra: &str) -> Mosquitto {
        // `user root`: a broker started as root would otherwise switch to the mosquitto user,
        // which cannot write the test's directory.
        let log = dir.path().join("mosquitto.log").display().to_string();
        Mosquitto::start_with(dir, |port| {
            format!(
                "listener {port} 127.0.0.1\npersistence false\nuser root\nlog_dest file {log}\n\
                 log_type error\nlog_type warning\nlog_type notice\nlog_type information\n{extra}\n"
            )
        })
    }

    /// What the broker logged (connections, refusals, client ids taken over...).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// A broker whose whole config `config(port)` writes; `port` is the main listener's.
    pub fn start_with(dir: tempfile::TempDir, config: impl FnOnce(u16) -> String) -> Mosquitto {
        let port = free_port();
        std::fs::write(dir.path().join("mosquitto.conf"), config(port)).unwrap();
        let child = spawn_broker(&dir.path().join("mosquitto.conf"), port);
        Mosquitto { child, port, dir }
    }

    /// A broker with a plain listener (for cloud-sync) and a TLS listener on `tls_port` that
    /// requires a client certificate and takes its common name as the user name, confined by
    /// the shops' ACL. `certs` holds ca.crt, server.crt and server.key.
    pub fn with_tls(certs: &std::path::Path, tls_port: u16) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let acl = dir.path().join("acl");
        std::fs::write(&acl, "pattern readwrite tastesync/v1/shops/%u/#\n").unwrap();
        let c = |name: &str| certs.join(name).display().to_string();
        let (ca, cert, key, acl) = (
            c("ca.crt"),
            c("server.crt"),
            c("server.key"),
            acl.display().to_string(),
        );
        // `user root`: a broker started as root would otherwise switch to the mosquitto user,
        // which cannot read the test's keys.
        Mosquitto::start_with(dir, |port| {
            format!(
                "per_listener_settings true\npersistence false\n\
                 user root\n\
                 listener {port} 127.0.0.1\nallow_anonymous true\n\
                 listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                 require_certificate true\nuse_identity_as_username true\nacl_file {acl}\n"
            )
        })
    }

    /// A broker where each shop logs in as its shop id and may only touch its own subtree,
    /// the way a production broker is set up; `cloud` may touch every shop's.
    pub fn with_shop_acl(users: &[(&str, &str)]) -> Mosquitto {
        Mosquitto::with_users(
            users,
            "user cloud\ntopic readwrite tastesync/v1/shops/#\n\npattern readwrite tastesync/v1/shops/%u/#\n",
        )
    }

    /// A broker that takes only these users (`(name, password)`), with this ACL file.
    pub fn with_users(users: &[(&str, &str)], acl: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "").unwrap();
        for (user, password) in users {
            let status = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&passwd)
                .args([user, password])
                .status()
                .unwrap();
            assert!(status.success());
        }
        let acl_file = dir.path().join("acl");
        std::fs::write(&acl_file, acl).unwrap();
        let extra = format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}",
            passwd.display(),
            acl_file.display()
        );
        Mosquitto::start_in(dir, &extra)
    }

    /// A broker whose users and their rights are managed at run time through the
    /// dynamic-security plugin, as production's is; `admin` is its one user at first, a
    /// dynamic-security administrator (cloud-sync's).
    pub fn with_dynsec((user, password): (&str, &str)) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dynamic-security.json");
        let status = Command::new("mosquitto_ctrl")
            .args(["dynsec", "init"])
            .arg(&file)
            .args([user, password])
            .stdout(Stdio::null())
            .status()
            .expect("mosquitto_ctrl (Debian package mosquitto-clients)");
        assert!(status.success(), "mosquitto_ctrl dynsec init");
        let plugin = [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib",
        ]
        .iter()
        .map(|dir| std::path::Path::new(dir).join("mosquitto_dynamic_security.so"))
        .find(|path| path.exists())
        .expect("Mosquitto's dynamic-security plugin (Debian package mosquitto)");
        let extra = format!(
            "plugin {}\nplugin_opt_config_file {}",
            plugin.display(),
            file.display()
        );
        Mosquitto::start_in(dir, &extra)
    }

    /// Whether the broker refuses a connection with these credentials.
    pub fn refuses(&self, user: (&str, &str)) -> bool {
        let output = self
            .client("mosquitto_sub", Some(user), "tastesync/v1/probe")
            .args(["-C", "1", "-W", "2"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr).to_lowercase();
        said.contains("not authori") || said.contains("refused")
    }

    /// Stops the broker (everything in flight is lost: persistence is off) and starts it
    /// again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the broker (until [`start_again`](Self::start_again)).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn start_again(&mut self) {
        self.child = spawn_broker(&self.dir.path().join("mosquitto.conf"), self.port);
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Publishes one message with mosquitto_pub.
    pub fn publish(&self, topic: &str, payload: &str) {
        self.publish_as(None, topic, payload);
    }

    /// A mosquitto_pub or mosquitto_sub command aimed at this broker, QoS 1.
    fn client(&self, program: &str, user: Option<(&str, &str)>, topic: &str) -> Command {
        let mut command = Command::new(program);
        command.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ]);
        if let Some((name, password)) = user {
            command.args(["-u", name, "-P", password]);
        }
        command
    }

    /// Publishes a file's content (for payloads too large for a command-line argument).
    pub fn publish_file(&self, topic: &str, path: &std::path::Path) {
        let status = self
            .client("mosquitto_pub", None, topic)
            .arg("-f")
            .arg(path)
            .status();
        assert!(status.unwrap().success());
    }

    /// Publishes as a user (`(name, password)`), QoS 1.
    pub fn publish_as(&self, user: Option<(&str, &str)>, topic: &str, payload: &str) {
        let status = self
            .client("mosquitto_pub", user, topic)
            .args(["-m", payload])
            .status();
        assert!(status.unwrap().success());
    }

    /// Subscribes as a user in the background; the returned child prints the first message
    /// received within `seconds` (nothing if none arrives or the broker refuses).
    pub fn subscribe_as(&self, user: Option<(&str, &str)>, topic: &str, seconds: u32) -> Child {
        let child = self
            .client("mosquitto_sub", user, topic)
            .args(["-C", "1", "-W", &seconds.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300)); // let the subscription reach the broker
        child
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh database on the machine's PostgreSQL (127.0.0.1:5432, trust authentication).
pub struct Database {
    pub name: String,
    /// Kept when dropped (a benchmark's data set, generated once).
    keep: bool,
    /// The `application_name` its connections give (see [`Database::as_application`]).
    application: Option<String>,
}

impl Database {
    pub fn create() -> Database {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tastesync_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Database {
            name,
            keep: false,
            application: None,
        }
    }

    /// The database `name`, created if missing and kept when dropped; whether it is new.
    pub fn kept(name: &str) -> (Database, bool) {
        let exists = psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        );
        let created = exists.trim().is_empty();
        if created {
            psql("postgres", &format!("CREATE DATABASE {name}"));
        }
        let database = Database {
            name: name.to_string(),
            keep: true,
            application: None,
        };
        (database, created)
    }

    pub fn url(&self) -> String {
        let url = format!("host=127.0.0.1 user=postgres dbname={}", self.name);
        match &self.application {
            Some(name) => format!("{url} application_name={name}"),
            None => url,
        }
    }

    /// The same database, for a client whose connections say they are `name` (in
    /// `pg_stat_activity`); dropping it drops nothing.
    pub fn as_application(&self, name: &str) -> Database {
        Database {
            name: self.name.clone(),
            keep: true,
            application: Some(name.to_string()),
        }
    }

    /// Runs a query; returns the rows as `|`-separated text lines.
    pub fn query(&self, sql: &str) -> Vec<String> {
        psql(&self.name, sql).lines().map(String::from).collect()
    }

    /// Runs a statement that must fail; returns PostgreSQL's error.
    pub fn query_err(&self, sql: &str) -> String {
        let output = psql_output(&self.name, sql);
        assert!(!output.status.success(), "{sql} succeeded");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// The events PostgreSQL holds for a shop (all its streams), as `seq|event_id|type` in
    /// seq order.
    pub fn stored(&self, shop_id: &str) -> Vec<String> {
        self.query(&format!(
            "SELECT seq, event_id, kind FROM events WHERE shop_id = '{shop_id}' ORDER BY seq, stream_id"
        ))
    }

    /// The events of one stream, as `seq|event_id|type` in seq order.
    pub fn stored_stream(&self, stream_id: &str) -> Vec<String> {
        self.query(&format!(
            "SELECT seq, event_id, kind FROM events WHERE stream_id = '{stream_id}' ORDER BY seq"
        ))
    }
}

impl Database {
    /// `pg_dump` of the database as it is now (a consistent snapshot, taken while others
    /// write), in PostgreSQL's custom format.
    pub fn dump(&self, path: &std::path::Path) {
        let status = Command::new("pg_dump")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-Fc",
                "-d",
                &self.name,
                "-f",
            ])
            .arg(path)
            .status()
            .expect("pg_dump");
        assert!(status.success(), "pg_dump");
    }

    /// Drops the database (disconnecting its clients) and restores it from a dump.
    pub fn restore(&self, path: &std::path::Path) {
        psql(
            "postgres",
            &format!("DROP DATABASE {} WITH (FORCE)", self.name),
        );
        psql("postgres", &format!("CREATE DATABASE {}", self.name));
        let status = Command::new("pg_restore")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &self.name])
            .arg(path)
            .status()
            .expect("pg_restore");
        assert!(status.success(), "pg_restore");
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(database: &str, sql: &str) -> String {
    let output = psql_output(database, sql);
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `tastesync-cloud serve`, killed on drop.
pub struct CloudSync {
    child: Child,
    /// Its configuration file (HQ's commands take the same).
    pub config: std::path::PathBuf,
}

impl CloudSync {
    pub fn start(shop: &Shop, database: &Database, broker: &Mosquitto, name: &str) -> CloudSync {
        CloudSync::start_as(shop, database, broker, name, ("", ""), "")
    }

    /// With broker credentials and further configuration lines.
    pub fn start_as(
        shop: &Shop,
        database: &Database,
        broker: &Mosquitto,
        name: &str,
        (username, password): (&str, &str),
        extra: &str,
    ) -> CloudSync {
        CloudSync::start_configured(
            shop,
            database,
            broker,
            name,
            (username, password),
            extra,
            "[http]\nlisten = \"\"\n[provisioning]\ncredentials = \"none\"\n",
        )
    }

    /// With top-level keys `extra` and sections `sections` (`[http]`, `[provisioning]`).
    pub fn start_configured(
        shop: &Shop,
        database: &Database,
        broker: &Mosquitto,
        name: &str,
        (username, password): (&str, &str),
        extra: &str,
        sections: &str,
    ) -> CloudSync {
        let config = shop.write(
            &format!("{name}.toml"),
            &format!(
                "database_url = {:?}\nbroker = {:?}\nclient_id = {name:?}\nusername = {username:?}\npassword = {password:?}\n{extra}\n{sections}\n",
                database.url(),
                broker.address(),
            ),
        );
        let child = Command::new(bin("tastesync-cloud"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let cloud = CloudSync { child, config };
        // Ready once its migrations ran: tests query the tables right away.
        let ready = eventually(20, || {
            database.query("SELECT to_regclass('public.events') IS NOT NULL") == ["t"]
        });
        assert!(ready, "cloud-sync did not create its schema");
        cloud
    }
}

impl Drop for CloudSync {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HQ's admin tool, `tastesync-cloud customers`, against a test database.
pub struct Hq {
    config: std::path::PathBuf,
}

impl Hq {
    pub fn new(shop: &Shop, database: &Database) -> Hq {
        let config = shop.write("hq.toml", &format!("database_url = {:?}\n", database.url()));
        Hq { config }
    }

    /// With cloud-sync's own configuration (its broker, for revoking boxes).
    pub fn of(cloud: &CloudSync) -> Hq {
        Hq {
            config: cloud.config.clone(),
        }
    }

    /// Runs `customers <args>`; returns its output whatever the outcome.
    pub fn customers(&self, args: &[&str]) -> std::process::Output {
        self.command("customers", args)
    }

    /// `tastesync-cloud <what> --config <its config> <args>`.
    fn command(&self, what: &str, args: &[&str]) -> std::process::Output {
        Command::new(bin("tastesync-cloud"))
            .arg(what)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("tastesync-cloud")
    }

    /// Runs `customers <args>`, which must succeed; returns its JSON lines.
    pub fn ok(&self, args: &[&str]) -> Vec<serde_json::Value> {
        json_lines("customers", &self.customers(args), args)
    }

    /// Runs `shops <args>`; returns its output whatever the outcome.
    pub fn shops_output(&self, args: &[&str]) -> std::process::Output {
        self.command("shops", args)
    }

    /// Runs `shops <args>`, which must succeed; returns its JSON lines.
    pub fn shops(&self, args: &[&str]) -> Vec<serde_json::Value> {
        json_lines("shops", &self.shops_output(args), args)
    }
}

fn json_lines(
    command: &str,
    output: &std::process::Output,
    args: &[&str],
) -> Vec<serde_json::Value> {
    assert!(
        output.status.success(),
        "{command} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect()
}

/// Polls `check` until it holds or `seconds` pass.
pub fn eventually(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    check()
}

/// psql connected to `database` on this machine's PostgreSQL, without the user's psqlrc;
/// the caller adds what it runs.
pub fn psql_command(database: &str) -> Command {
    let mut psql = Command::new("psql");
    psql.args(["-h", "127.0.0.1", "-U", "postgres", "-d", database, "-X"]);
    psql
}

fn psql_output(database: &str, sql: &str) -> std::process::Output {
    psql_command(database)
        .args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql")
}
