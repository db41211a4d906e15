//! `tastesync-cloud`: the cloud side. `serve` ingests the boxes' events from MQTT into
//! PostgreSQL, acknowledges them, publishes HQ's customer changes to the boxes, and serves
//! the API blank boxes claim themselves through and HQ's console; `shops`, `customers`,
//! `users`, `keys` and `analytics` are HQ's admin tools; `kafka` reads the Kafka stream;
//! `eid-keys` derives EID temporary keys from a customer's identity key, so that identity
//! keys never leave the cloud.
//!
//! The code is laid out by concern: `config`, `storage/` (PostgreSQL, one file per table
//! family), `mqtt/` (the boxes' side), `kafka/` (the stream for HQ's other services), `api/`
//! (HTTP), `cmd/` (one file per command).

mod api;
mod cmd;
mod config;
mod kafka;
mod metrics;
mod mqtt;
mod storage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(name = "tastesync-cloud", version, about = "TasteSync cloud side")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest the boxes' events from the MQTT broker into PostgreSQL, publish HQ's changes
    /// to them, and serve the API (runs until stopped).
    Serve {
        /// TOML: database_url, broker, username, password, group, client_id, eid_days,
        /// eid_refresh_secs, [http], [provisioning] (firmware-notes/cloud-configuration.md).
        #[arg(long, short)]
        config: Option<std::path::PathBuf>,
    },
    /// HQ's shops and their boxes: add a shop, give its owner a claim code, list, revoke.
    Shops {
        /// The `serve` configuration (its database, and its broker to revoke a box).
        #[arg(long, short, global = true)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: ShopsCommand,
    },
    /// HQ's customers: enrolled here, they reach their shops' boxes through the downlink.
    Customers {
        /// TOML with `database_url` and `eid_days` (the `serve` configuration will do).
        #[arg(long, short, global = true)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: CustomersCommand,
    },
    /// HQ's console users: add one (the first admin), list, disable, set a password.
    Users {
        /// The `serve` configuration (its database).
        #[arg(long, short, global = true)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// The keys that sign console tokens: `rotate` replaces the signing key; tokens signed
    /// by the old one stay valid until they expire, so nobody is signed out.
    Keys {
        /// The `serve` configuration (its database).
        #[arg(long, short, global = true)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The analytics rollups: `rebuild` recomputes them from every stored event (ingest
    /// waits meanwhile).
    Analytics {
        /// The `serve` configuration (its database).
        #[arg(long, short, global = true)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: AnalyticsCommand,
    },
    /// The Kafka stream: `tail` prints it as JSON lines; `status` shows what waits for it.
    Kafka {
        /// The `serve` configuration (its `[kafka]` section and database).
        #[arg(long, short, global = true)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: KafkaCommand,
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
enum ShopsCommand {
    /// Add a shop.
    Add {
        /// 1 to 64 letters, digits, - and _.
        shop_id: String,
        /// The shop's name, for people.
        #[arg(long, default_value = "")]
        name: String,
        /// The shop's time zone (IANA), in which its analytics count days and hours.
        #[arg(long, default_value = "Asia/Seoul")]
        time_zone: String,
    },
    /// Print a one-time code the shop's owner types on a blank box to claim it for the shop.
    ClaimCode {
        shop_id: String,
        /// How long the code is valid.
        #[arg(long, default_value_t = 24)]
        valid_hours: u64,
    },
    /// List shops with their boxes (online, last event, backlog, software) and gaps, as JSON
    /// lines.
    List {
        /// Only this shop.
        #[arg(long)]
        shop: Option<String>,
    },
    /// Revoke a box: the broker refuses it from now on (a lost or stolen box).
    Revoke { box_id: String },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a console user. Without --password-stdin or --external, a password is generated
    /// and printed once.
    Add {
        #[arg(long)]
        email: String,
        /// An admin (everything): the same as `--role admin`.
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// admin, manager (their --shop shops only) or analyst (chain analytics only).
        #[arg(long, value_parser = ["admin", "manager", "analyst"])]
        role: Option<String>,
        /// A manager's shop (repeat for several).
        #[arg(long = "shop")]
        shops: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long, conflicts_with = "external")]
        password_stdin: bool,
        /// No password: the user signs in through the external OpenID Connect provider.
        #[arg(long)]
        external: bool,
    },
    /// List console users as JSON lines.
    List,
    /// Disable a user and end their sessions.
    Disable {
        #[arg(long)]
        email: String,
    },
    /// Set a user's password from the first line of standard input.
    SetPassword {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Sign new tokens with a new RSA-2048 key.
    Rotate,
}

#[derive(Subcommand)]
enum KafkaCommand {
    /// Print the records as they arrive, as JSON lines (topic, partition, offset, key,
    /// headers, value).
    Tail {
        /// Start with the oldest record Kafka still holds, not with the next one.
        #[arg(long)]
        from_beginning: bool,
        /// Only this topic (default: the shop events and the customers topic).
        #[arg(long)]
        topic: Option<String>,
        /// Stop after this many records.
        #[arg(long)]
        count: Option<u64>,
    },
    /// What waits in PostgreSQL for the relay, as JSON: events and customer changes, and
    /// the oldest of each.
    Status,
}

#[derive(Subcommand)]
enum AnalyticsCommand {
    /// Recompute every rollup from the stored events.
    Rebuild,
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
    let result = match cli.command {
        Command::Serve { config } => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let result = Config::load(config.as_deref()).and_then(|config| {
                tokio::runtime::Runtime::new()?.block_on(cmd::serve::run(config))
            });
            // The service failing is not the caller's mistake: exit code 1.
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Shops { config, command } => Config::load(config.as_deref())
            .and_then(|config| block_on(cmd::shops::run(config, command))),
        Command::Customers { config, command } => Config::load(config.as_deref())
            .and_then(|config| block_on(cmd::customers::run(config, command))),
        Command::Users { config, command } => Config::load(config.as_deref())
            .and_then(|config| block_on(cmd::users::run(config, command))),
        Command::Keys { config, command } => Config::load(config.as_deref())
            .and_then(|config| block_on(cmd::keys::run(config, command))),
        Command::Analytics { config, command } => Config::load(config.as_deref())
            .and_then(|config| block_on(cmd::analytics::run(config, command))),
        Command::Kafka { config, command } => Config::load(config.as_deref())
            .and_then(|config| block_on(cmd::kafka::run(config, command))),
        Command::EidKeys {
            customer_ref,
            identity_key,
            exponent,
            from,
            days,
        } => cmd::eid_keys::run(&customer_ref, &identity_key, exponent, from, days)
            .map_err(anyhow::Error::msg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}
