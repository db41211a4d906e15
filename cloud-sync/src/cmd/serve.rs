//! `tastesync-cloud serve`: the service. Ingests the boxes' events from MQTT into
//! PostgreSQL, publishes HQ's customer changes to them, relays both to Kafka (with
//! `[kafka]`), and serves the API boxes claim themselves through and HQ's console.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;

use crate::api::auth::keys::SigningKeys;
use crate::api::auth::oidc::ExternalIssuer;
use crate::api::{self, ApiState};
use crate::config::{Config, Credentials};
use crate::kafka;
use crate::mqtt::{dynsec::BrokerAdmin, ingest};
use crate::storage;

/// Runs until a worker fails for good.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // The one TLS crypto provider, for the API's HTTPS and the OpenID provider's keys.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Fail fast on a wrong database URL or schema; later losses are retried. Rollups a
    // migration asked for are computed before ingest starts.
    let mut db = storage::connect(&config.database_url).await?;
    storage::analytics::rebuild_if_needed(&mut db).await?;
    drop(db);
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
        let db = storage::pool(&config.database_url)?;
        let oidc = config
            .console
            .oidc
            .clone()
            .map(ExternalIssuer::new)
            .transpose()?;
        let state = ApiState {
            keys: SigningKeys::load(db.clone()).await?,
            db,
            config: config.clone(),
            broker_admin,
            box_broker_ca_pem,
            oidc,
            hashing: tokio::sync::Semaphore::new(2),
        };
        tokio::spawn(tidy_up(config.clone()));
        Some(api::serve(state).await?)
    };
    if config.provisioning.credentials == Credentials::Dynsec {
        tokio::spawn(prepare_broker(config.clone()));
    }
    let stored = if config.kafka.enabled() {
        let stored = Arc::new(Notify::new());
        tokio::spawn(kafka::wake_relay(
            config.database_url.clone(),
            stored.clone(),
        ));
        tokio::spawn(kafka::relay::run(config.clone()));
        Some(stored)
    } else {
        None
    };
    let ingest = ingest::run(config, stored);
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

/// Now and then: forgets failure windows long over, refresh tokens long expired, and signing
/// keys retired before any token they signed could still be valid.
async fn tidy_up(config: Config) {
    let token_lifetime = Duration::from_secs(config.console.access_token_minutes * 60);
    loop {
        let done = async {
            let db = storage::connect(&config.database_url).await?;
            storage::budgets::forget_old(&db).await?;
            storage::sessions::forget_expired_tokens(&db).await?;
            storage::sessions::forget_retired_keys(&db, token_lifetime * 2).await?;
            anyhow::Ok(())
        };
        if let Err(e) = done.await {
            tracing::warn!("cannot tidy up old sign-in data: {e:#}");
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
