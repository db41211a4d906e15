//! The wire formats' document, `docs/asyncapi.yaml`, as the tests use it: every message the
//! tests see on MQTT or Kafka is checked against the schema of its channel's message, so the
//! document cannot drift from what the code sends.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

use crate::kafka::Record;
use crate::workspace;

/// The document, and a validator per schema asked for.
pub struct Contract {
    document: Value,
    /// `(channel address pattern, message pointer, text payload?)`, MQTT and Kafka alike.
    channels: Vec<(Vec<String>, String, bool)>,
    validators: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

impl Contract {
    pub fn load() -> Contract {
        let path = workspace().join("docs/asyncapi.yaml");
        let text = std::fs::read_to_string(&path).expect("docs/asyncapi.yaml");
        let document: Value = serde_norway::from_str(&text).expect("the document is YAML");
        let mut channels = Vec::new();
        for channel in document["channels"].as_object().expect("channels").values() {
            let address = channel["address"].as_str().expect("an address");
            let messages = channel["messages"].as_object().expect("messages");
            assert_eq!(messages.len(), 1, "one message per channel: {address}");
            let reference = messages.values().next().unwrap()["$ref"]
                .as_str()
                .expect("a message $ref")
                .to_string();
            let pointer = reference.trim_start_matches('#').to_string();
            let text = document
                .pointer(&pointer)
                .and_then(|m| m["contentType"].as_str())
                == Some("text/plain");
            let pattern = address.split('/').map(String::from).collect();
            channels.push((pattern, reference, text));
        }
        Contract {
            document,
            channels,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// The message (`#/components/messages/...`) of the channel `address` belongs to, and
    /// whether its payload is text.
    fn message_of(&self, address: &str) -> (&str, bool) {
        let parts: Vec<&str> = address.split('/').collect();
        let found = self.channels.iter().find(|(pattern, _, _)| {
            pattern.len() == parts.len()
                && pattern.iter().zip(&parts).all(|(p, part)| {
                    p == part || (p.starts_with('{') && p.ends_with('}') && !part.is_empty())
                })
        });
        let (_, message, text) =
            found.unwrap_or_else(|| panic!("no channel of docs/asyncapi.yaml is {address:?}"));
        (message, *text)
    }

    /// Checks `instance` against the schema at `reference` (a `#/...` pointer into the
    /// document); panics with every error.
    fn check(&self, reference: &str, instance: &Value, what: &str) {
        let validator = self
            .validators
            .lock()
            .unwrap()
            .entry(reference.to_string())
            .or_insert_with(|| {
                // The whole document, so that its internal $refs resolve; draft 7 (AsyncAPI's
                // schema dialect) ignores its other keys.
                let mut schema = self.document.clone();
                schema["$ref"] = Value::String(reference.to_string());
                std::sync::Arc::new(jsonschema::draft7::new(&schema).expect("a valid schema"))
            })
            .clone();
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what} does not match {reference}: {errors:#?}\n{instance}"
        );
    }

    /// Checks an MQTT message against its channel's message.
    pub fn check_mqtt(&self, topic: &str, payload: &[u8]) {
        let (message, text) = self.message_of(topic);
        let instance = if text {
            Value::String(String::from_utf8_lossy(payload).into_owned())
        } else {
            serde_json::from_slice(payload)
                .unwrap_or_else(|e| panic!("{topic}: not JSON ({e}): {payload:?}"))
        };
        self.check(&format!("{message}/payload"), &instance, topic);
    }

    /// Checks a Kafka record: its headers and value.
    pub fn check_kafka(&self, record: &Record) {
        let (message, _) = self.message_of(&record.topic);
        let headers = serde_json::to_value(&record.headers).unwrap();
        self.check(&format!("{message}/headers"), &headers, &record.topic);
        let value = record.value.clone().unwrap_or(Value::Null);
        self.check(&format!("{message}/payload"), &value, &record.topic);
    }
}

/// Runs the AsyncAPI Initiative's parser over the document (`tests/asyncapi/check.mjs`);
/// returns its report, and whether the document is valid.
pub fn parser_verdict(document: &std::path::Path) -> (bool, String) {
    let dir = workspace().join("tests/asyncapi");
    assert!(
        dir.join("node_modules/@asyncapi/parser").exists(),
        "run scripts/test.sh, which installs the AsyncAPI parser"
    );
    let output = Command::new("node")
        .arg(dir.join("check.mjs"))
        .arg(document)
        .current_dir(&dir)
        .output()
        .expect("node");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), report)
}

/// Captures every message under `tastesync/` on a broker (`mosquitto_sub -v`), until
/// [`Capture::messages`] is called.
pub struct Capture {
    child: std::process::Child,
    reader: std::thread::JoinHandle<Vec<(String, String)>>,
}

impl Capture {
    pub fn start(port: u16) -> Capture {
        use std::io::BufRead;
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-t", "tastesync/#", "-v"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto_sub");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        // Read as it comes, so that a large batch never fills the pipe.
        let reader = std::thread::spawn(move || {
            stdout
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| {
                    let (topic, payload) = line.split_once(' ')?;
                    Some((topic.to_string(), payload.to_string()))
                })
                .collect()
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        Capture { child, reader }
    }

    /// Stops capturing; the messages as `(topic, payload)`.
    pub fn messages(mut self) -> Vec<(String, String)> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader.join().expect("the capture's reader")
    }
}
