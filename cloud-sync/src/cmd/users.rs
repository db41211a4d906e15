//! `tastesync-cloud users ...`: HQ's console users. The first admin is added here; the
//! audit log names the OS user who ran the command.

use std::io::BufRead;

use serde_json::json;

use crate::UsersCommand;
use crate::api::auth::passwords;
use crate::config::Config;
use crate::storage;
use crate::storage::audit::{self, Actor};
use crate::storage::users::{self, Role};

pub async fn run(config: Config, command: UsersCommand) -> anyhow::Result<()> {
    let db = storage::connect(&config.database_url).await?;
    let actor = Actor::command_line();
    match command {
        UsersCommand::Add {
            email,
            admin,
            role,
            shops,
            password_stdin,
            external,
        } => {
            let role = match (admin, role.as_deref().and_then(Role::parse)) {
                (true, _) => Role::Admin,
                (false, Some(role)) => role,
                (false, None) => anyhow::bail!("give --admin or --role admin|manager|analyst"),
            };
            let (password, generated) = if external {
                (None, false)
            } else if password_stdin {
                (Some(read_password()?), false)
            } else {
                (Some(generate_password()), true)
            };
            if let Some(password) = &password {
                passwords::check_new(password).map_err(anyhow::Error::msg)?;
            }
            let phc = password.as_deref().map(passwords::hash);
            let user = users::add(&db, &email, role, &shops, phc.as_deref()).await??;
            let detail = json!({ "role": role.as_str(), "shops": shops });
            audit::record(&db, &actor, "user_added", &user.email, detail).await?;
            let mut output = serde_json::to_value(&user)?;
            if generated {
                // Shown once: only its hash is stored.
                output["password"] = password.into();
            }
            println!("{output}");
        }
        UsersCommand::List => {
            for user in users::list(&db).await? {
                println!("{}", serde_json::to_string(&user)?);
            }
        }
        UsersCommand::Disable { email } => {
            if !users::disable(&db, &email).await? {
                anyhow::bail!("no user {email:?}");
            }
            audit::record(&db, &actor, "user_disabled", &email, json!({})).await?;
        }
        UsersCommand::SetPassword { email } => {
            let password = read_password()?;
            passwords::check_new(&password).map_err(anyhow::Error::msg)?;
            if !users::set_password(&db, &email, &passwords::hash(&password)).await? {
                anyhow::bail!("no user {email:?}");
            }
            audit::record(&db, &actor, "password_set", &email, json!({})).await?;
        }
    }
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    Ok(password)
}

/// 20 characters of Crockford's base32 (100 bits).
fn generate_password() -> String {
    let mut random = [0u8; 20];
    getrandom::fill(&mut random).expect("the OS random number generator");
    tastesync_shared::typed_code::from_random(&random)
}
