//! PostgreSQL, one file per table family: `events` (the streams' events, their
//! acknowledgements, gaps and dead letters), `shops` (shops, their boxes and claim codes),
//! `customers` (HQ's customers and each shop's change log). Here: the connection and the
//! versioned migrations, applied on start.

pub mod analytics;
pub mod audit;
pub mod budgets;
pub mod customers;
pub use tastesync_shared::days;
pub mod events;
pub mod feedback;
pub mod kafka;
pub mod privacy;
pub mod sessions;
pub mod shops;
pub mod users;

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

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
    CREATE TABLE failure_counts (
        scope TEXT NOT NULL,
        client TEXT NOT NULL,
        window_start TIMESTAMPTZ NOT NULL,
        failures INT NOT NULL,
        PRIMARY KEY (scope, client)
    );",
    // 4: HQ's console. Its users, the keys that sign their tokens, their refresh tokens (by
    // hash, in families: reusing a spent one revokes the family), and the append-only audit
    // log. Analytics rollups kept at ingest (per shop and for the chain: days, hours, items,
    // and each customer's first visit to each shop, which makes a visit a return). What boxes
    // reported applying of the downlink, and erasures with the boxes they wait for (an erased
    // ref stays, so events still in a box's outbox are scrubbed as they arrive). Indexes for
    // the feedback page and for finding a customer's events. The time format is STABLE, as
    // `to_char` is, so PostgreSQL inlines it (an IMMUTABLE label made it a call per value).
    "CREATE FUNCTION tastesync_rfc3339(at TIMESTAMPTZ) RETURNS TEXT STABLE LANGUAGE SQL
        AS $$ SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') $$;
    ALTER TABLE shops ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'Asia/Seoul',
        ADD COLUMN legacy_downlink_applied BIGINT;
    ALTER TABLE boxes ADD COLUMN downlink_applied BIGINT;
    CREATE TABLE hq_users (
        user_id BIGSERIAL PRIMARY KEY,
        email TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
        password_phc TEXT,
        role TEXT NOT NULL CHECK (role IN ('admin', 'manager', 'analyst')),
        shops TEXT[] NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        disabled_at TIMESTAMPTZ
    );
    CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        private_key_pem TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        retired_at TIMESTAMPTZ
    );
    CREATE TABLE refresh_tokens (
        token_hash BYTEA PRIMARY KEY,
        family UUID NOT NULL,
        user_id BIGINT NOT NULL REFERENCES hq_users (user_id),
        issued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        expires_at TIMESTAMPTZ NOT NULL,
        used_at TIMESTAMPTZ,
        revoked_at TIMESTAMPTZ
    );
    CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
    CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
    CREATE TABLE audit_log (
        id BIGSERIAL PRIMARY KEY,
        at TIMESTAMPTZ NOT NULL DEFAULT now(),
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        detail JSONB NOT NULL DEFAULT '{}',
        client TEXT NOT NULL DEFAULT ''
    );
    CREATE FUNCTION tastesync_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION tastesync_audit_append_only();
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION tastesync_audit_append_only();
    CREATE TABLE shop_days (
        shop_id TEXT NOT NULL,
        day DATE NOT NULL,
        visits INT NOT NULL DEFAULT 0,
        returning_visits INT NOT NULL DEFAULT 0,
        dwell_s_sum BIGINT NOT NULL DEFAULT 0,
        dwell_visits INT NOT NULL DEFAULT 0,
        feedback INT NOT NULL DEFAULT 0,
        feedback_satisfied INT NOT NULL DEFAULT 0,
        feedback_score_sum INT NOT NULL DEFAULT 0,
        orders INT NOT NULL DEFAULT 0,
        PRIMARY KEY (shop_id, day)
    );
    CREATE INDEX shop_days_day ON shop_days (day);
    CREATE TABLE chain_days (
        day DATE PRIMARY KEY,
        visits INT NOT NULL DEFAULT 0,
        returning_visits INT NOT NULL DEFAULT 0,
        dwell_s_sum BIGINT NOT NULL DEFAULT 0,
        dwell_visits INT NOT NULL DEFAULT 0,
        feedback INT NOT NULL DEFAULT 0,
        feedback_satisfied INT NOT NULL DEFAULT 0,
        feedback_score_sum INT NOT NULL DEFAULT 0,
        orders INT NOT NULL DEFAULT 0
    );
    CREATE TABLE shop_hours (
        shop_id TEXT NOT NULL,
        day DATE NOT NULL,
        hour SMALLINT NOT NULL CHECK (hour BETWEEN 0 AND 23),
        visits INT NOT NULL,
        PRIMARY KEY (shop_id, day, hour)
    );
    CREATE TABLE chain_hours (
        day DATE NOT NULL,
        hour SMALLINT NOT NULL CHECK (hour BETWEEN 0 AND 23),
        visits INT NOT NULL,
        PRIMARY KEY (day, hour)
    );
    CREATE TABLE shop_day_items (
        shop_id TEXT NOT NULL,
        day DATE NOT NULL,
        item TEXT NOT NULL,
        orders INT NOT NULL,
        PRIMARY KEY (shop_id, day, item)
    );
    CREATE TABLE chain_day_items (
        day DATE NOT NULL,
        item TEXT NOT NULL,
        orders INT NOT NULL,
        PRIMARY KEY (day, item)
    );
    CREATE TABLE customer_shops (
        shop_id TEXT NOT NULL,
        customer_ref TEXT NOT NULL,
        first_visit_ms BIGINT NOT NULL,
        last_visit_ms BIGINT NOT NULL,
        visits INT NOT NULL,
        -- One index for both lookups: a customer's shops (export, erasure) and a visit's
        -- row at ingest, where a second index was a tenth of the rollups' cost.
        PRIMARY KEY (customer_ref, shop_id)
    );
    CREATE TABLE analytics_state (
        singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
        rebuild_needed BOOLEAN NOT NULL
    );
    INSERT INTO analytics_state (rebuild_needed) SELECT EXISTS (SELECT 1 FROM events);
    CREATE INDEX events_feedback ON events (at_ms) WHERE kind = 'feedback_recorded';
    CREATE INDEX events_customer ON events ((body->>'customer_ref'))
        WHERE body ? 'customer_ref';
    CREATE INDEX customers_name ON customers (lower(display_name) text_pattern_ops);
    CREATE INDEX streams_box ON streams (box_id);
    CREATE TABLE erasures (
        id BIGSERIAL PRIMARY KEY,
        customer_ref TEXT NOT NULL UNIQUE,
        requested_by TEXT NOT NULL,
        requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        events_scrubbed BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE erasure_boxes (
        erasure_id BIGINT NOT NULL REFERENCES erasures (id),
        shop_id TEXT NOT NULL,
        box_id TEXT NOT NULL DEFAULT '',
        version BIGINT NOT NULL,
        PRIMARY KEY (erasure_id, shop_id, box_id)
    );",
    // 5: the Kafka stream. Shop events need no copy: the events table is their outbox, and
    // each stream's mark is how far its events are on Kafka (the relay publishes the seqs
    // after the mark up to the stream's acknowledged seq, which only ever covers committed,
    // contiguous events). Streams that exist now are marked as published up to what they
    // hold: the stream starts at the upgrade, it does not replay the past. HQ's customer
    // changes get an outbox of their own, written in the changing transaction under the
    // customer's lock; a row names the customer, never their data (the relay publishes their
    // record as it is then, or a tombstone), and published rows are trimmed after a while.
    "CREATE TABLE kafka_marks (
        stream_id UUID PRIMARY KEY REFERENCES streams (stream_id),
        published_seq BIGINT NOT NULL,
        published_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    INSERT INTO kafka_marks (stream_id, published_seq) SELECT stream_id, acked_seq FROM streams;
    CREATE TABLE kafka_customer_outbox (
        id BIGSERIAL PRIMARY KEY,
        customer_ref TEXT NOT NULL,
        event_id UUID NOT NULL,
        changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        published_at TIMESTAMPTZ
    );
    CREATE INDEX kafka_customer_outbox_pending ON kafka_customer_outbox (id)
        WHERE published_at IS NULL;",
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

/// A connection that LISTENs on `channel`, retrying until PostgreSQL answers; the
/// notifications' payloads arrive on the receiver, which closes when the connection is lost.
pub async fn listen(url: &str, channel: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
    let mut delay = Duration::from_millis(250);
    loop {
        match tokio_postgres::connect(url, NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                tokio::spawn(async move {
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = message
                            && tx.send(n.payload().to_string()).is_err()
                        {
                            break;
                        }
                    }
                });
                let setup = format!("SET jit = off; LISTEN {channel}");
                match client.batch_execute(&setup).await {
                    Ok(()) => return (client, rx),
                    Err(e) => tracing::warn!("cannot listen on {channel}: {e}"),
                }
            }
            Err(e) => tracing::warn!("cannot reach PostgreSQL to listen on {channel}: {e}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
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
