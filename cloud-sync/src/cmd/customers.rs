//! `tastesync-cloud customers ...`: HQ's customers, written to PostgreSQL; each change reaches
//! the boxes of the customer's shops through the downlink, and the audit log names the OS
//! user who ran the command.

use tastesync_shared::eid::MAX_EXPONENT;
use tastesync_shared::hexfmt::hex;

use crate::CustomersCommand;
use crate::config::Config;
use crate::mqtt::downlink;
use crate::storage;
use crate::storage::audit::Actor;
use crate::storage::customers::{self, Customer, canonical_tags, new_identity_key};

pub async fn run(config: Config, command: CustomersCommand) -> anyhow::Result<()> {
    let mut db = storage::connect(&config.database_url).await?;
    let now = downlink::now_s();
    let actor = Actor::command_line();
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
            if eid && eid_exponent > MAX_EXPONENT {
                anyhow::bail!("--eid-exponent must be 0 to {MAX_EXPONENT}");
            }
            let customer = Customer {
                customer_ref,
                display_name: name,
                tier: fields.tier.unwrap_or_default(),
                notes: fields.notes.unwrap_or_default(),
                preferences: fields.preferences.unwrap_or_default(),
                tag_ids: tag_option(&tags)?,
                shops,
                eid_exponent: eid.then_some(eid_exponent),
                eid_identity_key: eid.then(new_identity_key),
            };
            customers::enroll(&mut db, &customer, now, config.eid_days, &actor).await??;
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
            let tags = if no_tags || !tags.is_empty() {
                Some(tag_option(&tags)?)
            } else {
                None
            };
            let edit = |mut customer: Customer| {
                customer.display_name = name.unwrap_or(customer.display_name);
                customer.tier = fields.tier.unwrap_or(customer.tier);
                customer.notes = fields.notes.unwrap_or(customer.notes);
                customer.preferences = fields.preferences.unwrap_or(customer.preferences);
                if !shops.is_empty() {
                    customer.shops = shops;
                }
                if let Some(tags) = tags {
                    customer.tag_ids = tags;
                }
                if new_eid {
                    customer.eid_exponent = customer.eid_exponent.or(Some(10));
                    customer.eid_identity_key = Some(new_identity_key());
                }
                if no_eid {
                    customer.eid_exponent = None;
                    customer.eid_identity_key = None;
                }
                Ok(customer)
            };
            let customer =
                customers::update(&mut db, &customer_ref, edit, now, config.eid_days, &actor)
                    .await??;
            print_customer(&customer, new_eid);
        }
        CustomersCommand::Delete { customer_ref } => {
            customers::delete(&mut db, &customer_ref, |_| Ok(()), &actor).await??;
        }
        CustomersCommand::List { shop } => {
            for customer in customers::list(&db, None, shop.as_deref()).await? {
                print_customer(&customer, false);
            }
        }
    }
    Ok(())
}

/// The `--tag` values in canonical form; a refusal names the option.
fn tag_option(tags: &[String]) -> anyhow::Result<Vec<String>> {
    canonical_tags(tags).map_err(|refused| anyhow::anyhow!("--{refused}"))
}

fn print_customer(customer: &Customer, with_identity_key: bool) {
    let mut json = serde_json::to_value(customer).expect("a customer serialises");
    if let Some(key) = customer.eid_identity_key.filter(|_| with_identity_key) {
        json["eid_identity_key"] = hex(&key).into();
    }
    println!("{json}");
}
