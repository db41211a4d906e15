//! `tastesync-cloud customers ...`: HQ's customers, written to PostgreSQL; each change reaches
//! the boxes of the customer's shops through the downlink.

use tastesync_shared::TagId;
use tastesync_shared::eid::MAX_EXPONENT;
use tastesync_shared::hexfmt::hex;

use crate::CustomersCommand;
use crate::config::Config;
use crate::mqtt::downlink;
use crate::storage::{self, customers};

pub async fn run(config: Config, command: CustomersCommand) -> anyhow::Result<()> {
    let mut db = storage::connect(&config.database_url).await?;
    let now = downlink::now_s();
    match command {
        CustomersCommand::Enroll {
            customer_ref,
            name,
            fields,
            shops,
            tags,
            eid,
            eid_exponent,
        } => {
            if !customers::list(&db, Some(&customer_ref), None)
                .await?
                .is_empty()
            {
                anyhow::bail!("customer {customer_ref:?} already exists; use `update`");
            }
            let mut customer = customers::Customer {
                customer_ref,
                display_name: name,
                tier: fields.tier.unwrap_or_default(),
                notes: fields.notes.unwrap_or_default(),
                preferences: fields.preferences.unwrap_or_default(),
                tag_ids: canonical_tags(&tags)?,
                shops,
                eid_exponent: None,
                eid_identity_key: None,
            };
            if eid {
                if eid_exponent > MAX_EXPONENT {
                    anyhow::bail!("--eid-exponent must be 0 to {MAX_EXPONENT}");
                }
                customer.eid_exponent = Some(eid_exponent);
                customer.eid_identity_key = Some(new_identity_key());
            }
            customers::save(&mut db, &customer, now, config.eid_days).await?;
            print_customer(&customer, eid);
        }
        CustomersCommand::Update {
            customer_ref,
            name,
            fields,
            shops,
            tags,
            no_tags,
            new_eid,
            no_eid,
        } => {
            let Some(mut customer) = customers::list(&db, Some(&customer_ref), None).await?.pop()
            else {
                anyhow::bail!("no customer {customer_ref:?}");
            };
            customer.display_name = name.unwrap_or(customer.display_name);
            customer.tier = fields.tier.unwrap_or(customer.tier);
            customer.notes = fields.notes.unwrap_or(customer.notes);
            customer.preferences = fields.preferences.unwrap_or(customer.preferences);
            if !shops.is_empty() {
                customer.shops = shops;
            }
            if no_tags || !tags.is_empty() {
                customer.tag_ids = canonical_tags(&tags)?;
            }
            if new_eid {
                customer.eid_exponent = customer.eid_exponent.or(Some(10));
                customer.eid_identity_key = Some(new_identity_key());
            }
            if no_eid {
                customer.eid_exponent = None;
                customer.eid_identity_key = None;
            }
            customers::save(&mut db, &customer, now, config.eid_days).await?;
            print_customer(&customer, new_eid);
        }
        CustomersCommand::Delete { customer_ref } => {
            if !customers::delete(&mut db, &customer_ref).await? {
                anyhow::bail!("no customer {customer_ref:?}");
            }
        }
        CustomersCommand::List { shop } => {
            for customer in customers::list(&db, None, shop.as_deref()).await? {
                print_customer(&customer, false);
            }
        }
    }
    Ok(())
}

/// Tags in their canonical text form (as shops store and match them).
fn canonical_tags(tags: &[String]) -> anyhow::Result<Vec<String>> {
    tags.iter()
        .map(|t| {
            t.parse::<TagId>()
                .map(|tag| tag.to_string())
                .map_err(|e| anyhow::anyhow!("--tag {t:?}: {e}"))
        })
        .collect()
}

fn new_identity_key() -> [u8; 16] {
    let mut key = [0; 16];
    getrandom::fill(&mut key).expect("the OS random number generator");
    key
}

fn print_customer(customer: &customers::Customer, with_identity_key: bool) {
    let mut json = serde_json::to_value(customer).expect("a customer serialises");
    if let Some(key) = customer.eid_identity_key.filter(|_| with_identity_key) {
        json["eid_identity_key"] = hex(&key).into();
    }
    println!("{json}");
}
