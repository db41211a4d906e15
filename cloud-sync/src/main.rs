//! `tastesync-cloud`: the cloud side. For now it does the one cloud job the box already
//! relies on: deriving EID temporary keys from a customer's identity key, so that identity
//! keys never leave the cloud (the MQTT sync service comes with the sync issue).

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
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
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
