//! A PostgreSQL server of the test's own, for tests that stop and restart PostgreSQL: the
//! machine's shared server (127.0.0.1:5432) serves the other tests and must stay up.
//!
//! The binaries are taken from `PG_BINDIR`, else from `pg_config --bindir`, else from the
//! newest `/usr/lib/postgresql/<version>/bin` (Debian's layout). PostgreSQL refuses to run as
//! root, so a root test runs them as the `postgres` OS user.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::cloud::free_port;

/// A private PostgreSQL cluster in a temporary directory, trust authentication, listening on
/// 127.0.0.1 at `port`. Stopped and deleted on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    pub port: u16,
}

impl Postgres {
    /// Creates the cluster (`initdb`, under a second) and starts it.
    pub fn create() -> Postgres {
        let dir = tempfile::tempdir().expect("temp dir");
        if running_as_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        let postgres = Postgres {
            dir,
            bindir: bindir(),
            port: free_port(),
        };
        // --no-sync: the cluster is thrown away; the server itself keeps fsync on.
        let data = postgres.data();
        postgres.run_ok(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        let settings = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
            postgres.port,
            postgres.dir.path().display()
        );
        let conf = postgres.dir.path().join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("write postgresql.conf");
        postgres.start();
        postgres
    }

    /// Starts the stopped server and waits until it accepts connections.
    pub fn start(&self) {
        let log = self.dir.path().join("server.log").display().to_string();
        let output = self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-w", "start"]);
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server with a fast shutdown: open transactions are rolled back and clients
    /// disconnected, as in a planned restart or a failover.
    pub fn stop(&self) {
        self.run_ok("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Stops (fast) and starts again at once.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    /// A libpq connection string for `dbname` on this server.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// Runs a query in the `postgres` database; returns the rows as `|`-separated text lines.
    pub fn query(&self, sql: &str) -> Vec<String> {
        let output = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-AtX"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql");
        assert!(
            output.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bindir.join(program);
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .output()
            .expect("run a PostgreSQL binary")
    }

    fn run_ok(&self, program: &str, args: &[&str]) {
        let output = self.run(program, args);
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: nothing in the cluster is kept, so there is no point in a clean shutdown.
        let _ = self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return dir.into();
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| d.join("initdb").exists()) {
        return dir;
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .max();
    match newest {
        Some((_, dir)) if dir.join("bin/initdb").exists() => dir.join("bin"),
        _ => panic!("initdb not found: set PG_BINDIR to PostgreSQL's bin directory"),
    }
}
