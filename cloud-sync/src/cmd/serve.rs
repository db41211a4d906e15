//! `tastesync-cloud serve`: the service. Ingests the boxes' events from MQTT into
//! PostgreSQL, publishes HQ's customer changes to them, and serves the API boxes claim
//! themselves through.

use std::time::Duration;

use anyhow::Context;

use crate::api::{self, ApiState};
use crate::config::{Config, Credentials};
use crate::mqtt::{dynsec::BrokerAdmin, ingest};
use crate::storage;

/// Runs until a worker fails for good.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Fail fast on a wrong database URL or schema; later losses are retried.
    drop(storage::connect(&config.database_url).await?);
    let api = if config.http.listen.is_empty() {
        None
    } else {
        let broker_admin = match config.provisioning.credentials {
            Credentials::Dynsec => {
                let admin = BrokerAdmin::connect(&config, "claims")?;
                Some(admin)
            }
            Credentials::None => {
                tracing::warn!(
                    "provisioning.credentials = \"none\": claimed boxes get no broker \
                     credentials (a broker without authentication; development only)"
                );
                None
            }
        };
        let box_broker_ca_pem = match &config.provisioning.box_broker_ca_file {
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read provisioning.box_broker_ca_file {}",
                    path.display()
                )
            })?),
            None => None,
        };
        let state = ApiState {
            db: storage::pool(&config.database_url)?,
            config: config.clone(),
            broker_admin,
            box_broker_ca_pem,
        };
        Some(api::serve(state).await?)
    };
    if config.provisioning.credentials == Credentials::Dynsec {
        tokio::spawn(prepare_broker(config.clone()));
    }
    let ingest = ingest::run(config);
    match api {
        Some(api) => tokio::select! {
            result = ingest => result,
            result = api => result.context("the API server stopped")?,
        },
        None => ingest.await,
    }
}

/// Gives cloud-sync's broker user the shops' topics if it lacks them, and tells the broker
/// again which boxes are revoked (a revocation it missed while away). Retried until done:
/// ingest runs meanwhile, and claims wait for it.
async fn prepare_broker(config: Config) {
    let mut delay = Duration::from_secs(1);
    loop {
        let done = async {
            let admin = BrokerAdmin::connect(&config, "prepare")?;
            admin.prepare().await?;
            let db = storage::connect(&config.database_url).await?;
            for (shop_id, box_id) in storage::shops::revoked_boxes(&db).await? {
                admin.disable_box(&shop_id, &box_id).await?;
            }
            anyhow::Ok(())
        };
        match done.await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!("cannot prepare the broker's dynamic security: {e:#}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}
