//! The downlink publisher: HQ's customer changes, from each shop's change log in PostgreSQL
//! to the shop's `.../changes` topic (the format and its rules are in
//! `tastesync_shared::downlink`).
//!
//! - Live: `customers::save`/`delete` notify a shop id on commit; the publisher sends that
//!   shop the changes after the version it last sent it.
//! - On start and after every broker reconnection it sends each shop its latest change, so a
//!   box that missed changes while this service was down sees the gap and asks for a resync.
//! - A box's resync request is answered with every change after the box's version, in batches
//!   of bounded size.
//! - Every `eid_refresh_secs` (an hour), EID customers whose temporary keys run short get new
//!   ones.
//!
//! Several instances may run: each publishes live changes (boxes ignore versions they have),
//! and resync requests reach one of them through the shared subscription.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tastesync_shared::downlink::{CHANGES_VERSION, ChangeBatch, CustomerChange};
use tastesync_shared::wire::{self, MAX_PAYLOAD};
use tokio::sync::Notify;
use tokio_postgres::Client;

use crate::config::Config;
use crate::storage::{
    self,
    customers::{self, CHANNEL},
};

/// Changes read from PostgreSQL at a time.
const PAGE: i64 = 500;
/// A batch is cut before it passes this size (a record is at most a few kB).
const BATCH_BYTES: usize = MAX_PAYLOAD / 4;

/// Work for the publisher from the broker side, coalesced so that none is dropped and none
/// piles up however many boxes ask at once: per shop the lowest and the highest version asked
/// from, and whether the broker connection (re)started (announce every shop's latest version).
#[derive(Default)]
pub struct Requests {
    pending: Mutex<Pending>,
    wake: Notify,
}

#[derive(Default)]
struct Pending {
    /// Per shop: (lowest, highest) version boxes asked from.
    resync: HashMap<String, (i64, i64)>,
    announce: bool,
}

impl Requests {
    /// A box asked for the changes after `from_version`.
    pub fn resync(&self, shop: &str, from_version: i64) {
        let mut pending = self.pending.lock().expect("requests");
        let (lowest, highest) = pending
            .resync
            .entry(shop.to_string())
            .or_insert((from_version, from_version));
        *lowest = (*lowest).min(from_version);
        *highest = (*highest).max(from_version);
        drop(pending);
        self.wake.notify_one();
    }

    /// The broker connection (re)started.
    pub fn broker_connected(&self) {
        self.pending.lock().expect("requests").announce = true;
        self.wake.notify_one();
    }

    async fn next(&self) -> Pending {
        loop {
            let pending = std::mem::take(&mut *self.pending.lock().expect("requests"));
            if pending.announce || !pending.resync.is_empty() {
                return pending;
            }
            self.wake.notified().await; // a notification in between leaves a permit
        }
    }
}

/// Runs for ever: a lost database connection is re-established and the heads announced again.
pub async fn run(config: Config, mqtt: AsyncClient, requests: Arc<Requests>) {
    loop {
        let (mut db, mut notifications) = storage::listen(&config.database_url, CHANNEL).await;
        let mut sent: HashMap<String, i64> = HashMap::new();
        let mut refresh =
            tokio::time::interval(Duration::from_secs(config.eid_refresh_secs.max(1)));
        let result: anyhow::Result<std::convert::Infallible> = async {
            announce_heads(&db, &mqtt, &mut sent).await?;
            loop {
                tokio::select! {
                    shop = notifications.recv() => {
                        let Some(shop) = shop else { anyhow::bail!("the notification stream ended") };
                        let after = sent.get(&shop).copied().unwrap_or(0);
                        let up_to = publish_after(&db, &mqtt, &shop, after).await?;
                        sent.insert(shop, up_to);
                    }
                    pending = requests.next() => {
                        if pending.announce {
                            announce_heads(&db, &mqtt, &mut sent).await?;
                        }
                        for (shop, (lowest, highest)) in pending.resync {
                            // A box ahead of this database: it was restored from a backup.
                            if customers::catch_up_versions(&mut db, &shop, highest).await? {
                                tracing::warn!(
                                    shop,
                                    box_version = highest,
                                    "a box has customer changes past this database's (restored \
                                     from a backup?); the shop's customers are sent again as newer versions"
                                );
                            }
                            publish_after(&db, &mqtt, &shop, lowest).await?;
                        }
                    }
                    _ = refresh.tick() => {
                        let renewed = customers::refresh_eid_keys(&mut db, now_s(), config.eid_days).await?;
                        if renewed > 0 {
                            tracing::info!(customers = renewed, "EID temporary keys renewed");
                        }
                    }
                }
            }
        }
        .await;
        let Err(e) = result;
        tracing::warn!("downlink: {e:#}; reconnecting");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Sends every shop its latest change, and notes it as sent.
async fn announce_heads(
    db: &Client,
    mqtt: &AsyncClient,
    sent: &mut HashMap<String, i64>,
) -> anyhow::Result<()> {
    let heads = db
        .query(
            "SELECT shop_id, downlink_version FROM shops WHERE downlink_version > 0",
            &[],
        )
        .await?;
    for row in heads {
        let (shop, head): (String, i64) = (row.get(0), row.get(1));
        let up_to = publish_after(db, mqtt, &shop, head - 1).await?;
        sent.insert(shop, up_to.max(head));
    }
    Ok(())
}

/// Publishes a shop's changes after version `after`, in batches; returns the last version sent.
async fn publish_after(
    db: &Client,
    mqtt: &AsyncClient,
    shop: &str,
    after: i64,
) -> anyhow::Result<i64> {
    let topic = wire::changes_topic(shop);
    let mut from = after;
    loop {
        let rows = db
            .query(
                "SELECT version, customer_ref, customer FROM shop_changes
                 WHERE shop_id = $1 AND version > $2 ORDER BY version LIMIT $3",
                &[&shop, &from, &PAGE],
            )
            .await?;
        if rows.is_empty() {
            return Ok(from);
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        for row in &rows {
            let customer: Option<serde_json::Value> = row.get(2);
            let change = CustomerChange {
                version: row.get(0),
                customer_ref: row.get(1),
                customer: customer.map(serde_json::from_value).transpose()?,
            };
            bytes += serde_json::to_vec(&change)?.len();
            batch.push(change);
            if bytes >= BATCH_BYTES {
                from = publish(mqtt, &topic, shop, from, std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            from = publish(mqtt, &topic, shop, from, batch).await?;
        }
    }
}

async fn publish(
    mqtt: &AsyncClient,
    topic: &str,
    shop: &str,
    from_version: i64,
    changes: Vec<CustomerChange>,
) -> anyhow::Result<i64> {
    let to_version = changes.last().map_or(from_version, |c| c.version);
    let batch = ChangeBatch {
        v: CHANGES_VERSION,
        shop_id: shop.to_string(),
        from_version,
        to_version,
        changes,
    };
    mqtt.publish(topic, QoS::AtLeastOnce, false, serde_json::to_vec(&batch)?)
        .await?;
    Ok(to_version)
}

pub fn now_s() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}
