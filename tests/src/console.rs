//! HQ's console for the tests: cloud-sync serving its API (plain HTTP on loopback) over a
//! fresh database and broker, console users made with the real command line, and a client
//! that signs in and calls the API as the console page does.

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::Value;

use crate::cloud::{CloudSync, Database, Mosquitto, free_port};
use crate::{Shop, bin, http};

/// cloud-sync with its console, over its own database and broker.
pub struct Console {
    pub broker: Mosquitto,
    pub database: Database,
    pub cloud: CloudSync,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub files: Shop,
}

/// An answer: its status and JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Console {
    /// With further `[console]` settings (e.g. an `[console.oidc]` section).
    pub fn start(console_sections: &str) -> Console {
        Console::start_on(Database::create(), console_sections)
    }

    /// Over `database` (a benchmark's data set).
    pub fn start_on(database: Database, console_sections: &str) -> Console {
        Console::start_with(database, "", console_sections)
    }

    /// With further `[http]` settings too.
    pub fn start_with(database: Database, http_settings: &str, console_sections: &str) -> Console {
        let files = Shop::new();
        let broker = Mosquitto::start("allow_anonymous true");
        let port = free_port();
        let sections = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n{http_settings}\n[provisioning]\ncredentials = \"none\"\n{console_sections}\n"
        );
        let cloud = CloudSync::start_configured(
            &files,
            &database,
            &broker,
            "cloud-console",
            ("", ""),
            "",
            &sections,
        );
        let console = Console {
            broker,
            database,
            cloud,
            base: format!("http://127.0.0.1:{port}"),
            files,
        };
        assert!(
            crate::cloud::eventually(20, || http()
                .get(console.url("/api/v1/health"))
                .send()
                .is_ok()),
            "the API answers"
        );
        console
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `tastesync-cloud <args>` with cloud-sync's configuration and `stdin`; must succeed;
    /// its stdout.
    pub fn command(&self, args: &[&str], stdin: &str) -> String {
        let output = self.command_output(args, stdin);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn command_output(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let mut child = Command::new(bin("tastesync-cloud"))
            .arg(args[0])
            .arg("--config")
            .arg(&self.cloud.config)
            .args(&args[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tastesync-cloud");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Adds a shop (`shops add`).
    pub fn add_shop(&self, shop_id: &str, name: &str, time_zone: &str) {
        self.command(
            &[
                "shops",
                "add",
                shop_id,
                "--name",
                name,
                "--time-zone",
                time_zone,
            ],
            "",
        );
    }

    /// Adds a console user with `password` (`users add ... --password-stdin`); `role` is
    /// `admin`, `manager` or `analyst`.
    pub fn add_user(&self, email: &str, role: &str, shops: &[&str], password: &str) {
        let mut args = vec![
            "users",
            "add",
            "--email",
            email,
            "--role",
            role,
            "--password-stdin",
        ];
        for shop in shops {
            args.extend(["--shop", shop]);
        }
        self.command(&args, &format!("{password}\n"));
    }

    /// Signs in; the login answer.
    pub fn login(&self, email: &str, password: &str) -> Answer {
        self.call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(serde_json::json!({ "email": email, "password": password })),
        )
    }

    /// Signs in, which must succeed; the access token.
    pub fn token(&self, email: &str, password: &str) -> String {
        let answer = self.login(email, password);
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        answer.body["access_token"].as_str().unwrap().to_string()
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call("GET", path, token, None)
    }

    /// A request with an optional bearer token and JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = http().request(method.parse().unwrap(), self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("the API answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().unwrap_or_default();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }
}
