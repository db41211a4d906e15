//! PostgreSQL: versioned migrations applied on start, the events of every shop (replays are
//! no-ops thanks to the primary key `(shop_id, seq)`), per-shop state and dead letters.

use anyhow::Context;
use tastesync_shared::wire::EventBatch;
use tokio_postgres::{Client, NoTls};

/// Append-only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: shops, their events, dead letters.
    "CREATE TABLE shops (
        shop_id TEXT PRIMARY KEY,
        acked_seq BIGINT NOT NULL DEFAULT 0,
        last_seen TIMESTAMPTZ,
        online BOOLEAN NOT NULL DEFAULT false
    );
    CREATE TABLE events (
        shop_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        body JSONB NOT NULL,
        received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (shop_id, seq)
    );
    CREATE TABLE dead_letters (
        id BIGSERIAL PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BYTEA NOT NULL,
        reason TEXT NOT NULL,
        received_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );",
];

/// Connects and brings the schema up to date.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| "cannot connect to PostgreSQL (check database_url)".to_string())?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!("PostgreSQL connection lost: {e}");
        }
    });
    migrate(&mut client).await?;
    Ok(client)
}

async fn migrate(client: &mut Client) -> anyhow::Result<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
    let tx = client.transaction().await?;
    // One migrator at a time when several instances start together.
    tx.batch_execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
        .await?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("migration {}", i + 1))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Stores a batch (events already stored are skipped) and returns the highest seq up to
/// which the shop's events are now all stored: what may be acknowledged.
pub async fn store_batch(client: &mut Client, batch: &EventBatch) -> anyhow::Result<i64> {
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO shops (shop_id, last_seen) VALUES ($1, now())
         ON CONFLICT (shop_id) DO UPDATE SET last_seen = now()",
        &[&batch.shop_id],
    )
    .await?;
    // One statement for the whole batch (row-by-row inserts halve the ingest rate).
    let seqs: Vec<i64> = batch.events.iter().map(|e| e.seq).collect();
    let ids: Vec<&str> = batch.events.iter().map(|e| e.event_id.as_str()).collect();
    let kinds: Vec<&str> = batch.events.iter().map(|e| e.kind.as_str()).collect();
    let times: Vec<i64> = batch.events.iter().map(|e| e.at_ms as i64).collect();
    let bodies: Vec<&serde_json::Value> = batch.events.iter().map(|e| &e.body).collect();
    tx.execute(
        "INSERT INTO events (shop_id, seq, event_id, kind, at_ms, body)
         SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
         ON CONFLICT (shop_id, seq) DO NOTHING",
        &[&batch.shop_id, &seqs, &ids, &kinds, &times, &bodies],
    )
    .await?;
    let acked: i64 = tx
        .query_one(
            "SELECT acked_seq FROM shops WHERE shop_id = $1 FOR UPDATE",
            &[&batch.shop_id],
        )
        .await?
        .get(0);
    // Advance over the contiguous run of stored seqs after the last acknowledged one.
    let row = tx
        .query_one(
            "SELECT coalesce(max(seq), $2) FROM (
                SELECT seq, seq - row_number() OVER (ORDER BY seq) AS run
                FROM events WHERE shop_id = $1 AND seq > $2
             ) s WHERE run = $2",
            &[&batch.shop_id, &acked],
        )
        .await?;
    let up_to: i64 = row.get(0);
    if up_to > acked {
        tx.execute(
            "UPDATE shops SET acked_seq = $2 WHERE shop_id = $1",
            &[&batch.shop_id, &up_to],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(up_to)
}

/// Records a refused message with the reason.
pub async fn dead_letter(
    client: &Client,
    topic: &str,
    payload: &[u8],
    reason: &str,
) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO dead_letters (topic, payload, reason) VALUES ($1, $2, $3)",
            &[&topic, &payload, &reason],
        )
        .await?;
    Ok(())
}

/// Records a shop's online/offline status message.
pub async fn set_online(client: &Client, shop_id: &str, online: bool) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO shops (shop_id, online, last_seen) VALUES ($1, $2, now())
             ON CONFLICT (shop_id) DO UPDATE SET online = $2, last_seen = now()",
            &[&shop_id, &online],
        )
        .await?;
    Ok(())
}
