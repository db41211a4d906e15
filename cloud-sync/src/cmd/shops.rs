//! `tastesync-cloud shops ...`: HQ's shops and their boxes: add a shop, give its owner a
//! claim code, list shops with their boxes' state, revoke a box. Changes are audited under
//! the OS user who ran the command.

use std::time::Duration;

use serde_json::json;

use crate::ShopsCommand;
use crate::config::{Config, Credentials};
use crate::mqtt::dynsec::{self, BrokerAdmin};
use crate::storage::audit::{self, Actor};
use crate::storage::{self, shops};

pub async fn run(config: Config, command: ShopsCommand) -> anyhow::Result<()> {
    let db = storage::connect(&config.database_url).await?;
    let actor = Actor::command_line();
    match command {
        ShopsCommand::Add {
            shop_id,
            name,
            time_zone,
        } => {
            shops::add_shop(&db, &shop_id, &name, &time_zone).await??;
            let detail = json!({ "time_zone": time_zone });
            audit::record(&db, &actor, "shop_added", &shop_id, detail).await?;
            println!(
                "{}",
                json!({ "shop_id": shop_id, "name": name, "time_zone": time_zone })
            );
        }
        ShopsCommand::ClaimCode {
            shop_id,
            valid_hours,
        } => {
            if !(1..=24 * 30).contains(&valid_hours) {
                anyhow::bail!("--valid-hours must be 1 to 720");
            }
            let valid_for = Duration::from_secs(valid_hours * 3600);
            let Some(code) = shops::new_claim_code(&db, &shop_id, valid_for).await? else {
                anyhow::bail!("no shop {shop_id:?}; add it first with `tastesync-cloud shops add`");
            };
            let detail = json!({ "valid_hours": valid_hours });
            audit::record(&db, &actor, "claim_code_created", &shop_id, detail).await?;
            let mut output = serde_json::to_value(&code)?;
            output["valid_hours"] = valid_hours.into();
            println!("{output}");
        }
        ShopsCommand::List { shop } => {
            for summary in shops::list(&db, shop.as_deref(), config.kafka.enabled()).await? {
                println!("{}", serde_json::to_string(&summary)?);
            }
        }
        ShopsCommand::Revoke { box_id } => {
            let admin = match config.provisioning.credentials {
                Credentials::Dynsec => Some(BrokerAdmin::connect(
                    &config,
                    &format!("revoke-{}", std::process::id()),
                )?),
                Credentials::None => None,
            };
            let Some(shop_id) = dynsec::revoke_box(&db, admin.as_ref(), &box_id).await? else {
                anyhow::bail!("no box {box_id:?}");
            };
            audit::record(
                &db,
                &actor,
                "box_revoked",
                &box_id,
                json!({ "shop_id": shop_id }),
            )
            .await?;
            println!(
                "{}",
                json!({ "box_id": box_id, "shop_id": shop_id, "revoked": true })
            );
        }
    }
    Ok(())
}
