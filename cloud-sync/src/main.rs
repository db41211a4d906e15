//! `tastesync-cloud`: the cloud side. `serve` ingests the shops' events from MQTT into
//! PostgreSQL, acknowledges them, and publishes HQ's customer changes to the shops;
//! `customers` is HQ's admin tool (enroll, update, delete, list); `eid-keys` derives EID
//! temporary keys from a customer's identity key, so that identity keys never leave the cloud.

mod customers;
mod db;
mod downlink;
mod ingest;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tastesync_shared::TagId;
use tastesync_shared::eid::{MAX_EXPONENT, epoch_of, temporary_key};
use tastesync_shared::hexfmt::{hex, parse_fixed};

#[derive(Parser)]
#[command(name = "tastesync-cloud", version, about = "TasteSync cloud side")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest shops' events from the MQTT broker into PostgreSQL (runs until stopped).
    Serve {
        /// TOML: database_url, broker, username, password, group, client_id, eid_days,
        /// eid_refresh_secs.
        #[arg(long, short)]
        config: Option<std::path::PathBuf>,
    },
    /// HQ's customers: enrolled here, they reach their shops' boxes through the downlink.
    Customers {
        /// TOML with `database_url` and `eid_days` (the `serve` configuration will do).
        #[arg(long, short, global = true)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: CustomersCommand,
    },
    /// Print, as the CSV `tastesync-edge eid-keys` imports, the temporary keys a shop needs to
    /// recognise one customer's EID tag for the coming days.
    EidKeys {
        #[arg(long)]
        customer_ref: String,
        /// The tag's identity key, 32 hex digits. Stays in the cloud.
        #[arg(long)]
        identity_key: String,
        /// The tag's rotation exponent K, 0 to 15.
        #[arg(long)]
        exponent: u8,
        /// Start of the horizon, Unix seconds (default: now).
        #[arg(long)]
        from: Option<u32>,
        /// How many days ahead the shop may recognise the customer.
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
}

#[derive(Subcommand)]
enum CustomersCommand {
    /// Enroll a new customer for one or more shops, with static tags and/or a new EID tag.
    /// Prints the customer as JSON; with `--eid`, the generated identity key to provision the
    /// customer's phone or tag with (shown once; shops only ever get temporary keys).
    Enroll {
        #[arg(long = "ref")]
        customer_ref: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        fields: Fields,
        /// A shop that should recognise the customer (repeat for several).
        #[arg(long = "shop", required = true)]
        shops: Vec<String>,
        /// A static beacon id, e.g. `ibeacon:<uuid>:<major>:<minor>` (repeat for several).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Generate an EID identity key for the customer's phone or tag.
        #[arg(long)]
        eid: bool,
        /// The EID rotation exponent K (the id changes every 2^K seconds).
        #[arg(long, default_value_t = 10)]
        eid_exponent: u8,
    },
    /// Change a customer; what is not given stays as it is.
    Update {
        #[arg(long = "ref")]
        customer_ref: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: Fields,
        /// Replace the customer's shops (shops left out receive a deletion).
        #[arg(long = "shop")]
        shops: Vec<String>,
        /// Replace the customer's static tags.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Remove all static tags.
        #[arg(long, conflicts_with = "tags")]
        no_tags: bool,
        /// Give the customer a new EID identity key (a lost phone); printed once.
        #[arg(long)]
        new_eid: bool,
        /// Remove the customer's EID tag.
        #[arg(long, conflicts_with = "new_eid")]
        no_eid: bool,
    },
    /// Delete a customer at HQ and, through the downlink, from every shop's box.
    Delete {
        #[arg(long = "ref")]
        customer_ref: String,
    },
    /// List customers as JSON lines (never the identity keys).
    List {
        /// Only this shop's customers.
        #[arg(long)]
        shop: Option<String>,
    },
}

#[derive(clap::Args)]
struct Fields {
    #[arg(long)]
    tier: Option<String>,
    /// What staff must know, such as allergies.
    #[arg(long)]
    notes: Option<String>,
    #[arg(long)]
    preferences: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Customers { config, command } = cli.command {
        let result = load(config.as_deref()).and_then(|config| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(manage_customers(config, command))
        });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Serve { config } = &cli.command {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .init();
        let result = load(config.as_deref()).and_then(|config| {
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)?
                .block_on(ingest::serve(config))
        });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<ingest::Config> {
    let Some(path) = path else {
        return Ok(ingest::Config::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let config: ingest::Config = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("invalid configuration in {}: {e}", path.display()))?;
    // Shops refuse a customer with more keys than 60 days' worth.
    if !(1..=60).contains(&config.eid_days) {
        anyhow::bail!(
            "invalid configuration in {}: eid_days must be 1 to 60",
            path.display()
        );
    }
    Ok(config)
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve { .. } | Command::Customers { .. } => unreachable!("handled in main"),
        Command::EidKeys {
            customer_ref,
            identity_key,
            exponent,
            from,
            days,
        } => {
            let key: [u8; 16] = parse_fixed(identity_key.trim())
                .ok_or("--identity-key must be 32 hex digits (16 bytes)")?;
            if exponent > MAX_EXPONENT {
                return Err(format!("--exponent must be 0 to {MAX_EXPONENT}"));
            }
            if customer_ref.is_empty() || customer_ref.contains([',', '"', '\n']) {
                return Err("--customer-ref must be non-empty, without commas or quotes".into());
            }
            if !(1..=60).contains(&days) {
                return Err("--days must be 1 to 60".into());
            }
            let from = from.unwrap_or_else(downlink::now_s);
            let until = from.saturating_add(days * 86_400);
            println!("customer_ref,exponent,epoch,temporary_key");
            // One epoch back too: a tag whose clock runs late is still in the previous one.
            for epoch in epoch_of(from).saturating_sub(1)..=epoch_of(until) {
                println!(
                    "{customer_ref},{exponent},{epoch},{}",
                    hex(&temporary_key(&key, epoch))
                );
            }
        }
    }
    Ok(())
}

async fn manage_customers(config: ingest::Config, command: CustomersCommand) -> anyhow::Result<()> {
    let mut db = db::connect(&config.database_url).await?;
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
