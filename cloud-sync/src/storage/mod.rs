//! PostgreSQL, one file per table family: `events` (the streams' events, their
//! acknowledgements, gaps and dead letters), `shops` (shops, their boxes and claim codes),
//! `customers` (HQ's customers and each shop's change log). Here: the connection and the
//! versioned migrations, applied on start.

pub mod customers;
pub mod events;
pub mod shops;

use std::time::Duration;

use anyhow::Context;
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
    // 3: boxes and streams. A stream is one box's store; events are keyed by (stream, seq),
    // so a replaced box or a second box of a shop can never be taken for another. The
    // events of protocol-1 boxes (all events so far) form each shop's legacy stream, whose id
    // the box derives the same way (`wire::legacy_stream_id`) when it is upgraded in place.
    // Gaps record seqs a restored database lost and seqs where a box's store was restored;
    // claim codes let an owner attach a blank box to its shop.
    "CREATE FUNCTION tastesync_legacy_stream(shop TEXT) RETURNS UUID IMMUTABLE LANGUAGE SQL
        AS $$ SELECT encode(substring(sha256(convert_to('tastesync legacy stream ' || shop, 'UTF8'))
                                      FROM 1 FOR 16), 'hex')::uuid $$;
    ALTER TABLE shops ADD COLUMN name TEXT NOT NULL DEFAULT '',
        ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now();
    CREATE TABLE boxes (
        box_id TEXT PRIMARY KEY,
        shop_id TEXT NOT NULL REFERENCES shops (shop_id),
        claimed_at TIMESTAMPTZ,
        revoked_at TIMESTAMPTZ,
        credential_hash BYTEA,
        software TEXT,
        online BOOLEAN NOT NULL DEFAULT false,
        status_at TIMESTAMPTZ,
        last_seen TIMESTAMPTZ,
        health JSONB,
        health_at_ms BIGINT
    );
    CREATE INDEX boxes_shop ON boxes (shop_id);
    CREATE TABLE streams (
        stream_id UUID PRIMARY KEY,
        shop_id TEXT NOT NULL REFERENCES shops (shop_id),
        box_id TEXT REFERENCES boxes (box_id),
        protocol INT NOT NULL,
        acked_seq BIGINT NOT NULL DEFAULT 0,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        last_seen TIMESTAMPTZ
    );
    CREATE INDEX streams_shop ON streams (shop_id);
    INSERT INTO streams (stream_id, shop_id, protocol, acked_seq, last_seen)
        SELECT tastesync_legacy_stream(shop_id), shop_id, 1, acked_seq, last_seen FROM shops
        WHERE acked_seq > 0 OR EXISTS (SELECT 1 FROM events e WHERE e.shop_id = shops.shop_id);
    ALTER TABLE events ADD COLUMN stream_id UUID, ADD COLUMN box_id TEXT;
    UPDATE events SET stream_id = tastesync_legacy_stream(shop_id);
    ALTER TABLE events ALTER COLUMN stream_id SET NOT NULL,
        DROP CONSTRAINT events_pkey, ADD PRIMARY KEY (stream_id, seq);
    CREATE TABLE stream_gaps (
        id BIGSERIAL PRIMARY KEY,
        stream_id UUID NOT NULL REFERENCES streams (stream_id),
        from_seq BIGINT NOT NULL,
        to_seq BIGINT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('restore', 'conflict')),
        detected_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX stream_gaps_stream ON stream_gaps (stream_id);
    CREATE TABLE claim_codes (
        code_hash BYTEA PRIMARY KEY,
        shop_id TEXT NOT NULL REFERENCES shops (shop_id),
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        expires_at TIMESTAMPTZ NOT NULL,
        used_at TIMESTAMPTZ,
        used_by TEXT
    );
    CREATE TABLE claim_failures (
        client TEXT PRIMARY KEY,
        window_start TIMESTAMPTZ NOT NULL,
        failures INT NOT NULL
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

/// A pool of connections for the API's requests (the schema is already migrated by then).
pub fn pool(url: &str) -> anyhow::Result<deadpool_postgres::Pool> {
    let config: tokio_postgres::Config = url
        .parse()
        .with_context(|| "database_url is not a valid PostgreSQL connection string".to_string())?;
    let manager = deadpool_postgres::Manager::from_config(
        config,
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    Ok(deadpool_postgres::Pool::builder(manager)
        .max_size(16)
        .build()?)
}
