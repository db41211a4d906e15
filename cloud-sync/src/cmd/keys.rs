//! `tastesync-cloud keys rotate`: a new key signs console tokens from now on. Every
//! instance picks it up within 30 s (or at once, for a token it cannot verify); tokens the
//! old key signed stay valid until they expire, so nobody is signed out.

use serde_json::json;

use crate::KeysCommand;
use crate::api::auth::keys;
use crate::config::Config;
use crate::storage::audit::{self, Actor};
use crate::storage::{self, sessions};

pub async fn run(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let mut db = storage::connect(&config.database_url).await?;
    match command {
        KeysCommand::Rotate => {
            let (kid, pem) = keys::generate()?;
            sessions::add_signing_key(&mut db, &kid, &pem, true).await?;
            audit::record(
                &db,
                &Actor::command_line(),
                "signing_key_rotated",
                &kid,
                json!({}),
            )
            .await?;
            println!("{}", json!({ "kid": kid }));
        }
    }
    Ok(())
}
