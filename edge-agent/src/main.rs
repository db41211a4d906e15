//! `tastesync-edge`: the shop box's command line. See the README for every command.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tastesync_edge::config::Config;
use tastesync_edge::daemon::{self, Source};
use tastesync_edge::demo::{self, DemoOptions};
use tastesync_edge::identity::{self, IdentityFile};
use tastesync_edge::provisioning::{self, ClaimError};
use tastesync_edge::store::Store;
use tastesync_edge::{now_ms, pos, scan};
use tastesync_shared::eid::{MAX_EXPONENT, eid};
use tastesync_shared::hexfmt::{hex, parse, parse_fixed};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "tastesync-edge",
    version,
    about = "TasteSync Edge: the in-store customer-recognition box"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct DbArgs {
    /// The daemon's config file (its `database` key names the store).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The store file, overriding the config.
    #[arg(long)]
    db: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Decode one advertisement (AD structures, or manufacturer or service data alone) given
    /// in hex, and print it as JSON.
    Decode {
        /// The bytes in hex; spaces, colons and a leading 0x are ignored.
        hex: String,
    },
    /// Print the Eddystone-EID a tag broadcasts at a given time.
    Eid {
        /// The tag's 16-byte identity key, 32 hex digits.
        #[arg(long)]
        identity_key: String,
        /// Rotation exponent K (the EID changes every 2^K seconds), 0 to 15.
        #[arg(long)]
        exponent: u8,
        /// The tag's clock, in seconds.
        #[arg(long)]
        time: u32,
    },
    /// Run the box: scan, recognise, track presence, store visits.
    Run {
        /// The config file (TOML); see firmware-notes/configuration.md.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The whole box with simulated customers and traffic, no radio or cloud needed.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Where to keep the demo's database (recreated on every start).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Strangers' devices in range.
        #[arg(long, default_value_t = 40)]
        strangers: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Where to serve the POS and owner pages.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Sync with the cloud through this MQTT broker (host:port), as a box set up by hand
        /// for shop demo-shop.
        #[arg(long)]
        broker: Option<String>,
        /// The cloud's provisioning API, e.g. http://127.0.0.1:8443 with `scripts/cloud.sh`
        /// running: the box starts blank, to be claimed on its owner page or with --claim.
        #[arg(long)]
        cloud: Option<String>,
        /// Claim the box with this code from HQ at start (`tastesync-cloud shops claim-code`).
        #[arg(long, requires = "cloud")]
        claim: Option<String>,
    },
    /// Check the box: config, clock, Bluetooth adapter, what the daemon hears, database,
    /// disk, POS, broker and credentials, the sync; says what to do about each problem. Exits
    /// non-zero when a check fails.
    Doctor {
        /// The daemon's config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One JSON object: {"ok": ..., "checks": [{"name", "status", "detail", "fix"}]}.
        #[arg(long)]
        json: bool,
        /// Free disk space below which the disk check fails, MB.
        #[arg(long, default_value_t = 200)]
        min_free_mb: u64,
    },
    /// Look for TasteSync boxes on the LAN (mDNS) and print their POS addresses.
    Discover {
        /// How long to listen, in seconds.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// The network interface to look on (default: all but loopback).
        #[arg(long, default_value = "")]
        interface: String,
    },
    /// Claim this box for its shop with the code HQ gave the owner; the running box connects
    /// to the cloud within seconds.
    Claim {
        /// The claim code, e.g. 7KQM-X3PA-9RTD.
        code: String,
        /// The daemon's config file (its `[cloud]` address and `database`).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Pair this scanner box with the shop's main box (`scanner.main_box` in the config),
    /// with a pairing code from the main box's owner page or its `tastesync-edge pair`.
    PairScanner {
        /// The 8-digit pairing code.
        code: String,
        /// The name the owner sees for this scanner (default: "Scanner: <zone>").
        #[arg(long)]
        name: Option<String>,
        /// The scanner box's config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the box's identity: its box id, whether and for which shop it is claimed, and
    /// its store's stream id.
    Identity {
        #[command(flatten)]
        db: DbArgs,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the one-time setup code the owner page asks for before the owner's PIN is set
    /// (nothing once it is set).
    SetupCode {
        #[command(flatten)]
        db: DbArgs,
        /// Also write a printable label (HTML) with the code, the box id and the owner page's
        /// address, to stick on the box.
        #[arg(long)]
        label: Option<PathBuf>,
    },
    /// The owner's PIN.
    #[command(subcommand)]
    Owner(OwnerCommand),
    /// Print a one-time code (valid 10 minutes) to pair a tablet with the box.
    Pair {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Manage customers.
    #[command(subcommand)]
    Customers(CustomersCommand),
    /// Import EID temporary keys (CSV: customer_ref,exponent,epoch,temporary_key).
    EidKeys {
        #[command(flatten)]
        db: DbArgs,
        /// The CSV file.
        file: PathBuf,
    },
    /// List the events waiting in the outbox for the cloud, oldest first (JSON lines).
    Outbox {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List recent visits.
    Visits {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OwnerCommand {
    /// Forget the owner's PIN (a forgotten PIN; needs a shell on the box) and print a new
    /// setup code to set one again. Owner sessions end.
    ResetPin {
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum CustomersCommand {
    /// Import customers and their tags from CSV
    /// (customer_ref,display_name,tier,notes,preferences,tag_ids; tag_ids separated by ';').
    Import {
        #[command(flatten)]
        db: DbArgs,
        file: PathBuf,
    },
    /// List customers.
    List {
        #[command(flatten)]
        db: DbArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Remove a customer and everything the box holds about them.
    Remove {
        #[command(flatten)]
        db: DbArgs,
        customer_ref: String,
    },
}

/// An error caused by the command's input: exit code 2, like clap's usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadInput(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Decode { hex: text } => {
            let bytes = parse_hex_argument(&text)?;
            let decoded = tastesync_shared::decode_any(&bytes);
            println!("{}", serde_json::to_string(&decoded)?);
        }
        Command::Eid {
            identity_key,
            exponent,
            time,
        } => {
            let key: [u8; 16] = parse_fixed(identity_key.trim()).ok_or_else(|| {
                BadInput(format!(
                    "--identity-key must be 32 hex digits (16 bytes), got {identity_key:?}"
                ))
            })?;
            if exponent > MAX_EXPONENT {
                return Err(BadInput(format!(
                    "--exponent must be 0 to {MAX_EXPONENT}, got {exponent}"
                ))
                .into());
            }
            println!("{}", hex(&eid(&key, exponent, time)));
        }
        Command::Run { config } => {
            let config = Config::load(config.as_deref())?;
            runtime()?.block_on(async {
                let (stop_tx, stop_rx) = watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("shutting down");
                    let _ = stop_tx.send(true);
                });
                let source = Source::from_config(&config.scanner);
                if !config.scanner.main_box.is_empty() {
                    return daemon::run_scanner_box(&config, source, stop_rx).await;
                }
                let stats = daemon::run(&config, source, stop_rx, None, None).await?;
                tracing::info!(
                    advertisements = stats.advertisements,
                    recognised = stats.recognised,
                    malformed = stats.malformed,
                    peak_rss_kb = peak_rss_kb().unwrap_or(0),
                    "stopped"
                );
                anyhow::Ok(())
            })?;
        }
        Command::Demo {
            duration,
            db,
            strangers,
            seed,
            listen,
            broker,
            cloud,
            claim,
        } => runtime()?.block_on(demo::run(DemoOptions {
            database: db,
            duration: duration.map(Duration::from_secs),
            strangers,
            seed,
            listen,
            broker,
            cloud,
            claim,
        }))?,
        Command::Doctor {
            config,
            json,
            min_free_mb,
        } => {
            let checks = runtime()?.block_on(tastesync_edge::doctor::examine(
                config.as_deref(),
                min_free_mb,
            ));
            let failed = checks
                .iter()
                .filter(|c| c.status == tastesync_edge::doctor::Status::Fail)
                .count();
            if json {
                let report = serde_json::json!({"ok": failed == 0, "checks": checks});
                println!("{report}");
            } else {
                print!("{}", tastesync_edge::doctor::report(&checks));
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} checks failed", checks.len());
            }
        }
        Command::Discover { seconds, interface } => {
            let found = pos::discovery::discover(&interface, Duration::from_secs(seconds))?;
            if found.is_empty() {
                println!("no TasteSync box answered within {seconds} s");
            }
            for b in found {
                println!("{}\t{}", b.name, b.urls.join(" "));
            }
        }
        Command::Claim { code, config } => {
            let config = Config::load(config.as_deref())?;
            let identity = IdentityFile::open(&config.identity_path())?;
            let claimed = runtime()?
                .block_on(provisioning::claim(&config, &identity, &code))
                .map_err(|e| match e {
                    ClaimError::Unreachable { .. } => anyhow::Error::from(e),
                    other => BadInput(other.to_string()).into(),
                })?;
            println!(
                "Claimed for shop {}. A running box connects to the cloud within seconds.",
                claimed.shop_id
            );
        }
        Command::PairScanner { code, name, config } => {
            let config = Config::load(config.as_deref())?;
            if config.scanner.main_box.is_empty() {
                return Err(BadInput(
                    "set scanner.main_box in the config to the main box's POS address first, \
                     e.g. \"http://192.168.1.20:8080\""
                        .into(),
                )
                .into());
            }
            let name = name.unwrap_or_else(|| format!("Scanner: {}", config.scanner.zone));
            let token = runtime()?
                .block_on(scan::remote::pair(&config.scanner.main_box, &code, &name))
                .map_err(|e| match e {
                    scan::remote::PairError::Refused(why) => BadInput(why).into(),
                    other => anyhow::Error::from(other),
                })?;
            identity::write_private(&config.scanner_token_path(), token.as_bytes())?;
            println!(
                "Paired with the main box at {}. Start the scanner box (tastesync-edge run).",
                config.scanner.main_box
            );
        }
        Command::Identity { db, json } => {
            let mut config = Config::load(db.config.as_deref())?;
            if let Some(path) = &db.db {
                config.database = path.clone();
            }
            let identity = IdentityFile::open(&config.identity_path())?.get();
            let store = open_store(&db)?;
            let standing = identity.standing(&config.shop_id);
            let shop_id = identity.shop_id(&config.shop_id);
            let stream_id = store.current_stream_id()?;
            if json {
                let value = serde_json::json!({
                    "box_id": identity.box_id,
                    "standing": standing,
                    "shop_id": shop_id,
                    "stream_id": stream_id,
                    "identity_file": config.identity_path(),
                });
                println!("{value}");
            } else {
                println!("box id:    {}", identity.box_id);
                println!(
                    "standing:  {}",
                    serde_json::to_value(standing)?.as_str().unwrap_or("?")
                );
                println!("shop:      {}", shop_id.unwrap_or("none (claim this box)"));
                println!(
                    "stream id: {}",
                    stream_id.as_deref().unwrap_or("(set when it first syncs)")
                );
            }
        }
        Command::Pair { db } => {
            let mut store = open_store(&db)?;
            let code = pos::auth::new_pairing_code();
            store.add_pairing_code(
                &pos::auth::hash(&code),
                now_ms() + pos::auth::PAIRING_CODE_TTL_MS,
            )?;
            println!("Pairing code: {code} (valid 10 minutes; enter it on the tablet's POS page)");
        }
        Command::SetupCode { db, label } => {
            let mut config = Config::load(db.config.as_deref())?;
            if let Some(path) = &db.db {
                config.database = path.clone();
            }
            let Some(code) = Store::open(&config.database)?.setup_code()? else {
                println!(
                    "The owner's PIN is set; no setup code is needed (a forgotten PIN: `tastesync-edge owner reset-pin`)."
                );
                return Ok(());
            };
            println!("Setup code: {code} (the owner page asks for it to set the owner's PIN)");
            if let Some(path) = label {
                let box_id = IdentityFile::open(&config.identity_path())?.get().box_id;
                std::fs::write(&path, pos::label::html(&box_id, &code, &config.pos.listen))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!(
                    "Label: {} (print it and stick it on the box)",
                    path.display()
                );
            }
        }
        Command::Owner(OwnerCommand::ResetPin { db }) => {
            let mut store = open_store(&db)?;
            let code = store.reset_owner_pin()?;
            println!(
                "The owner's PIN is forgotten and owner sessions ended. Set a new one on the owner page with the setup code {code}."
            );
        }
        Command::Customers(CustomersCommand::Import { db, file }) => {
            let mut store = open_store(&db)?;
            let report = store.import_customers(&file)?;
            println!(
                "imported {} customers with {} tags",
                report.rows, report.tags
            );
        }
        Command::Customers(CustomersCommand::List { db, json }) => {
            let store = open_store(&db)?;
            for c in store.customers()? {
                if json {
                    println!("{}", serde_json::to_string(&c)?);
                } else {
                    let eid = c
                        .eid_exponent
                        .map(|k| format!(" eid(K={k})"))
                        .unwrap_or_default();
                    println!(
                        "{}\t{}\t{}\t{}{eid}",
                        c.customer_ref,
                        c.display_name,
                        c.tier,
                        c.tag_ids.join(";")
                    );
                }
            }
        }
        Command::Customers(CustomersCommand::Remove { db, customer_ref }) => {
            let mut store = open_store(&db)?;
            if !store.remove_customer(&customer_ref)? {
                return Err(BadInput(format!("no customer {customer_ref:?}")).into());
            }
            println!("removed {customer_ref} and their tags, keys and visits");
        }
        Command::EidKeys { db, file } => {
            let mut store = open_store(&db)?;
            let report = store.import_eid_keys(&file)?;
            println!("imported {} EID temporary keys", report.rows);
        }
        Command::Outbox { db, limit } => {
            let store = open_store(&db)?;
            for row in store.outbox(0, limit, u64::MAX)? {
                println!("{}", serde_json::to_string(&row)?);
            }
        }
        Command::Visits { db, limit, json } => {
            let store = open_store(&db)?;
            for v in store.visits(limit)? {
                if json {
                    println!("{}", serde_json::to_string(&v)?);
                } else {
                    let dwell = v
                        .dwell_s
                        .map(|d| format!("{d} s"))
                        .unwrap_or_else(|| "present".into());
                    println!(
                        "{}\t{}\t{}\t{}\t{dwell}",
                        v.visit_id, v.customer_ref, v.zone, v.arrived_at_ms
                    );
                }
            }
        }
    }
    Ok(())
}

fn parse_hex_argument(text: &str) -> anyhow::Result<Vec<u8>> {
    let cleaned: String = text
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':' && *c != '-')
        .collect();
    if cleaned.is_empty() {
        return Err(BadInput(
            "no bytes given: pass the advertisement in hex, e.g. 0201061aff4c000215...".into(),
        )
        .into());
    }
    if let Some(bad) = cleaned.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(BadInput(format!(
            "{bad:?} is not a hex digit; pass the advertisement in hex"
        ))
        .into());
    }
    parse(&cleaned).ok_or_else(|| {
        BadInput(format!(
            "odd number of hex digits ({}): each byte takes two",
            cleaned.len()
        ))
        .into()
    })
}

fn open_store(args: &DbArgs) -> anyhow::Result<Store> {
    let path = match &args.db {
        Some(path) => path.clone(),
        None => Config::load(args.config.as_deref())?.database,
    };
    Store::open(Path::new(&path))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The process's peak resident memory (VmHWM), in kB, on Linux.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
