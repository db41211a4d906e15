//! `tastesync-cloud`: the cloud side. `serve` ingests the shops' events from MQTT into
//! PostgreSQL and acknowledges them; `eid-keys` derives EID temporary keys from a customer's
//! identity key, so that identity keys never leave the cloud.

mod db;
mod ingest;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
        /// TOML: database_url, broker, username, password, group, client_id.
        #[arg(long, short)]
        config: Option<std::path::PathBuf>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("invalid configuration in {}: {e}", path.display()))
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve { .. } => unreachable!("handled in main"),
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
            let from = from.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as u32)
                    .unwrap_or(0)
            });
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
