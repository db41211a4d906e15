//! PostgreSQL: versioned migrations applied on start, the events of every shop (replays are
//! no-ops thanks to the primary key `(shop_id, seq)`), per-shop state, dead letters, and HQ's
//! customers with each shop's change log (see `customers`).

use std::time::Duration;

use anyhow::Context;
use tastesync_shared::wire::EventBatch;
use tokio_postgres::{Client, NoTls, Transaction};

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
    // 2: HQ's customers and the downlink: per shop, the latest change of each customer with
    // the shop's version at that change (a compacted log; a deletion stays as a tombstone,
    // `customer` NULL). Identity keys stay here; shops only get temporary keys.
    "ALTER TABLE shops ADD COLUMN downlink_version BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE customers (
        customer_ref TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        tier TEXT NOT NULL DEFAULT '',
        notes TEXT NOT NULL DEFAULT '',
        preferences TEXT NOT NULL DEFAULT '',
        tag_ids TEXT[] NOT NULL DEFAULT '{}',
        shops TEXT[] NOT NULL,
        eid_identity_key BYTEA CHECK (length(eid_identity_key) = 16),
        eid_exponent SMALLINT CHECK (eid_exponent BETWEEN 0 AND 15),
        eid_keys_until BIGINT,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX customers_eid_keys_until ON customers (eid_keys_until)
        WHERE eid_identity_key IS NOT NULL;
    CREATE TABLE shop_changes (
        shop_id TEXT NOT NULL REFERENCES shops (shop_id),
        customer_ref TEXT NOT NULL,
        version BIGINT NOT NULL,
        customer JSONB,
        PRIMARY KEY (shop_id, customer_ref),
        UNIQUE (shop_id, version)
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
    // The ack query's estimated cost grows with the table and crosses the JIT thresholds;
    // compiling it costs 20-200 ms per run for a query that runs in a few.
    // Notices (such as "already exists, skipping") are not worth the log.
    client
        .batch_execute("SET jit = off; SET client_min_messages = warning")
        .await?;
    migrate(&mut client).await?;
    Ok(client)
}

/// Connects, retrying with backoff until PostgreSQL answers (a restart, a failover).
pub async fn reconnect(url: &str) -> Client {
    let mut delay = Duration::from_millis(250);
    loop {
        match connect(url).await {
            Ok(client) => return client,
            Err(e) => {
                tracing::warn!("{e:#}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
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

/// Stores the batches of one or more shops in one transaction (events already stored are
/// skipped) and returns, for each shop, the highest seq up to which its events are now all
/// stored: what may be acknowledged.
pub async fn store_batches(
    tx: &Transaction<'_>,
    batches: &[EventBatch],
) -> anyhow::Result<Vec<(String, i64)>> {
    let mut shops: Vec<&str> = batches.iter().map(|b| b.shop_id.as_str()).collect();
    shops.sort_unstable(); // rows locked in one order: concurrent instances cannot deadlock
    shops.dedup();
    tx.execute(
        "INSERT INTO shops (shop_id, last_seen) SELECT unnest($1::text[]), now()
         ON CONFLICT (shop_id) DO UPDATE SET last_seen = now()",
        &[&shops],
    )
    .await?;
    // One statement for all the events (row-by-row inserts cut the ingest rate by 4).
    let events = batches
        .iter()
        .flat_map(|b| b.events.iter().map(move |e| (b.shop_id.as_str(), e)));
    let mut columns = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (shop, e) in events {
        columns.0.push(shop);
        columns.1.push(e.seq);
        columns.2.push(e.event_id.as_str());
        columns.3.push(e.kind.as_str());
        columns.4.push(e.at_ms as i64);
        columns.5.push(&e.body);
    }
    tx.execute(
        "INSERT INTO events (shop_id, seq, event_id, kind, at_ms, body)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
         ON CONFLICT (shop_id, seq) DO NOTHING",
        &[
            &columns.0, &columns.1, &columns.2, &columns.3, &columns.4, &columns.5,
        ],
    )
    .await?;
    // Each shop advances over the contiguous run of stored seqs after its acknowledged one
    // (instances sharing the load may store a shop's batches out of order).
    tx.execute(
        "UPDATE shops SET acked_seq = r.up_to FROM (
            SELECT s.shop_id, max(e.seq) AS up_to
            FROM shops s CROSS JOIN LATERAL (
                SELECT seq, seq - row_number() OVER (ORDER BY seq) AS run
                FROM events WHERE events.shop_id = s.shop_id AND events.seq > s.acked_seq
            ) e
            WHERE s.shop_id = ANY($1) AND e.run = s.acked_seq GROUP BY s.shop_id
         ) r WHERE shops.shop_id = r.shop_id",
        &[&shops],
    )
    .await?;
    let rows = tx
        .query(
            "SELECT shop_id, acked_seq FROM shops WHERE shop_id = ANY($1)",
            &[&shops],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Records a refused message with the reason.
pub async fn dead_letter(
    client: &Transaction<'_>,
    topic: &str,
    payload: &[u8],
    reason: &str,
) -> anyhow::Result<i64> {
    Ok(client
        .query_one(
            "INSERT INTO dead_letters (topic, payload, reason) VALUES ($1, $2, $3) RETURNING id",
            &[&topic, &payload, &reason],
        )
        .await?
        .get(0))
}

/// Records a shop's online/offline status message.
pub async fn set_online(
    client: &Transaction<'_>,
    shop_id: &str,
    online: bool,
) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO shops (shop_id, online, last_seen) VALUES ($1, $2, now())
             ON CONFLICT (shop_id) DO UPDATE SET online = $2, last_seen = now()",
            &[&shop_id, &online],
        )
        .await?;
    Ok(())
}
