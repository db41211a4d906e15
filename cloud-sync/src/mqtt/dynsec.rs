//! Each box's own broker user, managed through Mosquitto's dynamic-security plugin: JSON
//! commands on `$CONTROL/dynamic-security/v1`, answers on `.../response`, over a connection
//! of cloud-sync's own (its broker user must be a dynamic-security administrator).
//!
//! A claimed box gets a user named after its box id, with a random password and a role that
//! lets it publish only under `tastesync/v1/shops/{shop}/boxes/{box}/` and subscribe only to
//! its own acks and its shop's changes. Revoking disables the user, which also drops its live
//! connection. cloud-sync itself gets a role for every shop's topics the first time it starts
//! (giving a user a role makes the broker drop that user's connections, once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tastesync_shared::wire::{self, BoxStatus, BoxTopics};
use tokio::sync::{oneshot, watch};

use crate::config::Config;

const COMMANDS: &str = "$CONTROL/dynamic-security/v1";
const RESPONSES: &str = "$CONTROL/dynamic-security/v1/response";
const CLOUD_ROLE: &str = "tastesync-cloud";
const TIMEOUT: Duration = Duration::from_secs(10);

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// A connection to the broker as its dynamic-security administrator.
pub struct BrokerAdmin {
    client: AsyncClient,
    pending: Pending,
    ready: watch::Receiver<bool>,
    username: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BrokerAdmin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BrokerAdmin {
    /// Connects (retrying in the background if the broker is away) as client
    /// `{client_id}-{role}`: each connection needs an id of its own, or the broker drops the
    /// older one.
    pub fn connect(config: &Config, role: &str) -> anyhow::Result<BrokerAdmin> {
        let (host, port) = config.broker_address()?;
        let mut options = MqttOptions::new(format!("{}-{role}", config.client_id), host, port);
        options.set_keep_alive(Duration::from_secs(15));
        if !config.username.is_empty() {
            options.set_credentials(config.username.clone(), config.password.clone());
        }
        let (client, mut events) = AsyncClient::new(options, 64);
        let pending: Pending = Arc::default();
        let (ready_tx, ready) = watch::channel(false);
        let (task_client, task_pending) = (client.clone(), pending.clone());
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = task_client.try_subscribe(RESPONSES, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let granted = ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)));
                        if !granted {
                            tracing::error!(
                                "the broker refused cloud-sync its dynamic-security answers: \
                                 is its user a dynamic-security administrator?"
                            );
                        }
                        ready_tx.send_replace(granted);
                    }
                    Ok(Event::Incoming(Packet::Publish(message))) if message.topic == RESPONSES => {
                        dispatch(&task_pending, &message.payload);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        ready_tx.send_replace(false);
                        tracing::debug!("broker administration connection: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(BrokerAdmin {
            client,
            pending,
            ready,
            username: config.username.clone(),
            task,
        })
    }

    /// Runs commands; returns each one's answer (`error` set if the broker refused it).
    async fn run(&self, commands: Vec<Value>) -> anyhow::Result<Vec<Value>> {
        let mut ready = self.ready.clone();
        tokio::time::timeout(TIMEOUT, ready.wait_for(|r| *r))
            .await
            .context(
                "cannot reach the broker as its dynamic-security administrator (check broker, \
                 username and password)",
            )??;
        let mut answers = Vec::new();
        let mut tagged = Vec::new();
        for mut command in commands {
            let id = format!("{:016x}", rand_u64());
            command["correlationData"] = id.clone().into();
            let (tx, rx) = oneshot::channel();
            self.pending.lock().expect("pending").insert(id, tx);
            answers.push(rx);
            tagged.push(command);
        }
        let payload = serde_json::to_vec(&json!({ "commands": tagged }))?;
        self.client
            .publish(COMMANDS, QoS::AtLeastOnce, false, payload)
            .await?;
        let mut results = Vec::new();
        for answer in answers {
            let answer = tokio::time::timeout(TIMEOUT, answer)
                .await
                .context("the broker did not answer a dynamic-security command")?
                .context("the broker connection was lost")?;
            results.push(answer);
        }
        Ok(results)
    }

    /// Runs commands that must succeed, except for the listed errors (such as "already exists").
    async fn run_ok(&self, commands: Vec<Value>, tolerated: &[&str]) -> anyhow::Result<()> {
        for answer in self.run(commands).await? {
            if let Some(error) = answer["error"].as_str()
                && !tolerated.contains(&error)
            {
                anyhow::bail!("the broker refused {}: {error}", answer["command"]);
            }
        }
        Ok(())
    }

    /// Gives cloud-sync's own user access to every shop's topics, if it has not got it yet.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        let all = "tastesync/v1/shops/#";
        let acls = json!([
            { "acltype": "publishClientSend", "topic": all, "allow": true },
            { "acltype": "publishClientReceive", "topic": all, "allow": true },
            { "acltype": "subscribePattern", "topic": all, "allow": true },
            { "acltype": "subscribePattern", "topic": format!("$share/+/{all}"), "allow": true },
        ]);
        self.run_ok(
            vec![json!({ "command": "createRole", "rolename": CLOUD_ROLE, "acls": acls })],
            &["Role already exists"],
        )
        .await?;
        let me = self
            .run(vec![
                json!({ "command": "getClient", "username": self.username }),
            ])
            .await?
            .remove(0);
        let has_role = me["data"]["client"]["roles"]
            .as_array()
            .is_some_and(|roles| roles.iter().any(|r| r["rolename"] == CLOUD_ROLE));
        if !has_role {
            tracing::info!("giving cloud-sync's broker user access to the shops' topics");
            // The broker drops this user's connections when its roles change: expect no answer.
            let payload = serde_json::to_vec(&json!({ "commands": [{
                "command": "addClientRole", "username": self.username, "rolename": CLOUD_ROLE,
            }]}))?;
            self.client
                .publish(COMMANDS, QoS::AtLeastOnce, false, payload)
                .await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let me = self
                .run(vec![
                    json!({ "command": "getClient", "username": self.username }),
                ])
                .await?
                .remove(0);
            if !me.to_string().contains(CLOUD_ROLE) {
                anyhow::bail!("the broker did not give cloud-sync's user the shops' topics");
            }
        }
        Ok(())
    }

    /// Creates (or renews) the box's broker user with `password`, confined to its own topics
    /// in `shop_id`'s subtree, and enables it.
    pub async fn provision_box(
        &self,
        shop_id: &str,
        box_id: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let topics = BoxTopics::new(shop_id, box_id);
        let own = topics.events.trim_end_matches("/events").to_string() + "/#";
        let acls = json!([
            { "acltype": "publishClientSend", "topic": own, "allow": true },
            { "acltype": "subscribeLiteral", "topic": topics.ack, "allow": true },
            { "acltype": "subscribeLiteral", "topic": topics.changes, "allow": true },
        ]);
        let role = box_role(box_id);
        self.run_ok(
            vec![
                json!({ "command": "createRole", "rolename": role, "acls": acls }),
                // A box claimed again, perhaps for another shop: its role's topics change.
                json!({ "command": "modifyRole", "rolename": role, "acls": acls }),
                json!({ "command": "createClient", "username": box_id, "password": password,
                        "roles": [{ "rolename": role }] }),
                json!({ "command": "setClientPassword", "username": box_id, "password": password }),
                json!({ "command": "enableClient", "username": box_id }),
            ],
            &["Role already exists", "Client already exists"],
        )
        .await
    }

    /// Stops the box's user from logging in, and drops its live connection. The broker does
    /// not publish a disabled user's last will, so the box's retained status is set offline
    /// here, on its behalf.
    pub async fn disable_box(&self, shop_id: &str, box_id: &str) -> anyhow::Result<()> {
        self.run_ok(
            vec![json!({ "command": "disableClient", "username": box_id })],
            &["Client not found"],
        )
        .await?;
        let offline = serde_json::to_vec(&BoxStatus {
            v: wire::VERSION,
            online: false,
            software: None,
        })?;
        self.client
            .publish(
                BoxTopics::new(shop_id, box_id).status,
                QoS::AtLeastOnce,
                true,
                offline,
            )
            .await?;
        // The broker handles one connection's packets in order: once this answer is back, the
        // status was delivered too (the command line may exit right after).
        self.run_ok(
            vec![json!({ "command": "getClient", "username": box_id })],
            &["Client not found"],
        )
        .await
    }
}

/// Revokes a box at HQ and, given the broker's administrator, at the broker (which drops its
/// connection at once); the shop it belonged to, or `None` if there is no such box.
pub async fn revoke_box(
    db: &impl tokio_postgres::GenericClient,
    admin: Option<&BrokerAdmin>,
    box_id: &str,
) -> anyhow::Result<Option<String>> {
    let Some(shop_id) = crate::storage::shops::revoke_box(db, box_id).await? else {
        return Ok(None);
    };
    if let Some(admin) = admin {
        admin.disable_box(&shop_id, box_id).await.map_err(|e| {
            anyhow::anyhow!(
                "box {box_id} is revoked at HQ, but the broker could not be told ({e:#}); \
                 revoke it again, or restart cloud-sync, which tells it"
            )
        })?;
    }
    Ok(Some(shop_id))
}

fn box_role(box_id: &str) -> String {
    format!("tastesync-box-{box_id}")
}

/// Hands each answer to the command that is waiting for it.
fn dispatch(pending: &Pending, payload: &[u8]) {
    let Ok(answers) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    let Some(answers) = answers["responses"].as_array() else {
        return;
    };
    let mut pending = pending.lock().expect("pending");
    for answer in answers {
        if let Some(waiting) = answer["correlationData"]
            .as_str()
            .and_then(|id| pending.remove(id))
        {
            let _ = waiting.send(answer.clone());
        }
    }
}

fn rand_u64() -> u64 {
    let mut bytes = [0; 8];
    getrandom::fill(&mut bytes).expect("the OS random number generator");
    u64::from_le_bytes(bytes)
}
