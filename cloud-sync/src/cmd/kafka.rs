//! `tastesync-cloud kafka ...`: `tail` prints the stream (see `kafka::tail`); `status` what
//! waits for the relay in PostgreSQL.

use crate::KafkaCommand;
use crate::config::Config;
use crate::kafka::tail;
use crate::storage;

pub async fn run(config: Config, command: KafkaCommand) -> anyhow::Result<()> {
    match command {
        KafkaCommand::Tail {
            from_beginning,
            topic,
            count,
        } => {
            let topics = match topic {
                Some(topic) => vec![topic],
                None => vec![
                    config.kafka.shop_events_topic.clone(),
                    config.kafka.customers_topic.clone(),
                ],
            };
            tail::run(&config.kafka, &topics, from_beginning, count).await
        }
        KafkaCommand::Status => {
            let db = storage::connect(&config.database_url).await?;
            let backlog = storage::kafka::backlog(&db, None).await?;
            println!("{}", serde_json::to_string(&backlog)?);
            Ok(())
        }
    }
}
