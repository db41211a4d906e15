//! `tastesync-cloud shops ...`: HQ's shops and their boxes: add a shop, give its owner a
//! claim code, list shops with their boxes' state, revoke a box.

use std::time::Duration;

use serde_json::json;

use crate::ShopsCommand;
use crate::config::{Config, Credentials};
use crate::mqtt::dynsec::BrokerAdmin;
use crate::storage::{self, shops};

pub async fn run(config: Config, command: ShopsCommand) -> anyhow::Result<()> {
    let db = storage::connect(&config.database_url).await?;
    match command {
        ShopsCommand::Add { shop_id, name } => {
            if !shops::add_shop(&db, &shop_id, &name).await? {
                anyhow::bail!("shop {shop_id:?} already exists");
            }
            println!("{}", json!({ "shop_id": shop_id, "name": name }));
        }
        ShopsCommand::ClaimCode {
            shop_id,
            valid_hours,
        } => {
            if !(1..=24 * 30).contains(&valid_hours) {
                anyhow::bail!("--valid-hours must be 1 to 720");
            }
            let valid_for = Duration::from_secs(valid_hours * 3600);
            let code = shops::new_claim_code(&db, &shop_id, valid_for).await?;
            println!(
                "{}",
                json!({ "shop_id": shop_id, "claim_code": code, "valid_hours": valid_hours })
            );
        }
        ShopsCommand::List { shop } => {
            for summary in shops::list(&db, shop.as_deref()).await? {
                println!("{}", serde_json::to_string(&summary)?);
            }
        }
        ShopsCommand::Revoke { box_id } => {
            let Some(shop_id) = shops::revoke_box(&db, &box_id).await? else {
                anyhow::bail!("no box {box_id:?}");
            };
            if config.provisioning.credentials == Credentials::Dynsec {
                let admin =
                    BrokerAdmin::connect(&config, &format!("revoke-{}", std::process::id()))?;
                admin.disable_box(&shop_id, &box_id).await.map_err(|e| {
                    anyhow::anyhow!(
                        "box {box_id} is revoked at HQ, but the broker could not be told ({e:#}); \
                         run this again, or restart cloud-sync, which tells it"
                    )
                })?;
            }
            println!(
                "{}",
                json!({ "box_id": box_id, "shop_id": shop_id, "revoked": true })
            );
        }
    }
    Ok(())
}
