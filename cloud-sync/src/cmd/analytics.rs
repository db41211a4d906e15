//! `tastesync-cloud analytics rebuild`: recomputes the rollups from every stored event, for
//! a database whose rollups are in doubt (they are kept at ingest otherwise).

use std::time::Instant;

use crate::AnalyticsCommand;
use crate::config::Config;
use crate::storage::{self, analytics};

pub async fn run(config: Config, command: AnalyticsCommand) -> anyhow::Result<()> {
    let mut db = storage::connect(&config.database_url).await?;
    match command {
        AnalyticsCommand::Rebuild => {
            let started = Instant::now();
            analytics::rebuild(&mut db).await?;
            eprintln!(
                "rollups rebuilt in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
