//! Versioned schema migrations, tracked in SQLite's `user_version`. Append only: a released
//! migration is never edited, a change is a new entry.

use rusqlite::{Connection, TransactionBehavior};

const MIGRATIONS: &[&str] = &[
    // 1: customers, tag bindings, EID temporary keys, visits; a revision counter bumped by
    // triggers on any customer change.
    "CREATE TABLE customers (
        id INTEGER PRIMARY KEY,
        customer_ref TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        tier TEXT NOT NULL DEFAULT '',
        notes TEXT NOT NULL DEFAULT '',
        preferences TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE tag_bindings (
        tag_id TEXT PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE
    );
    CREATE INDEX tag_bindings_customer ON tag_bindings(customer_id);
    CREATE TABLE eid_tags (
        customer_id INTEGER PRIMARY KEY REFERENCES customers(id) ON DELETE CASCADE,
        exponent INTEGER NOT NULL CHECK (exponent BETWEEN 0 AND 15)
    );
    CREATE TABLE eid_temporary_keys (
        customer_id INTEGER NOT NULL REFERENCES eid_tags(customer_id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL CHECK (epoch BETWEEN 0 AND 65535),
        temporary_key BLOB NOT NULL CHECK (length(temporary_key) = 16),
        PRIMARY KEY (customer_id, epoch)
    );
    CREATE TABLE visits (
        visit_id TEXT PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
        zone TEXT NOT NULL,
        arrived_at_ms INTEGER NOT NULL,
        left_at_ms INTEGER,
        dwell_s INTEGER
    );
    CREATE INDEX visits_customer ON visits(customer_id, arrived_at_ms);
    CREATE TABLE meta (customers_revision INTEGER NOT NULL);
    INSERT INTO meta (customers_revision) VALUES (0);
    CREATE TRIGGER customers_insert_revision AFTER INSERT ON customers
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;
    CREATE TRIGGER customers_update_revision AFTER UPDATE ON customers
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;
    CREATE TRIGGER customers_delete_revision AFTER DELETE ON customers
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;
    CREATE TRIGGER tag_bindings_insert_revision AFTER INSERT ON tag_bindings
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;
    CREATE TRIGGER tag_bindings_update_revision AFTER UPDATE ON tag_bindings
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;
    CREATE TRIGGER tag_bindings_delete_revision AFTER DELETE ON tag_bindings
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;
    CREATE TRIGGER eid_tags_insert_revision AFTER INSERT ON eid_tags
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;
    CREATE TRIGGER eid_tags_update_revision AFTER UPDATE ON eid_tags
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;
    CREATE TRIGGER eid_tags_delete_revision AFTER DELETE ON eid_tags
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;
    CREATE TRIGGER eid_temporary_keys_insert_revision AFTER INSERT ON eid_temporary_keys
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;
    CREATE TRIGGER eid_temporary_keys_update_revision AFTER UPDATE ON eid_temporary_keys
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;
    CREATE TRIGGER eid_temporary_keys_delete_revision AFTER DELETE ON eid_temporary_keys
        BEGIN UPDATE meta SET customers_revision = customers_revision + 1; END;",
    // 2: the POS: paired tablets, pairing codes, the owner's PIN, the live event log tablets
    // resume from, and staff actions (acknowledgements, orders, feedback).
    "CREATE TABLE pos_devices (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        paired_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER
    );
    CREATE TABLE pairing_codes (
        code_hash BLOB PRIMARY KEY,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE TABLE owner (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pin_salt BLOB NOT NULL,
        pin_hash BLOB NOT NULL
    );
    CREATE TABLE pos_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        customer_id INTEGER REFERENCES customers(id) ON DELETE CASCADE,
        body TEXT NOT NULL
    );
    CREATE TABLE alert_acks (
        visit_id TEXT PRIMARY KEY REFERENCES visits(visit_id) ON DELETE CASCADE,
        device_id INTEGER NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE TABLE orders (
        action_id TEXT PRIMARY KEY,
        visit_id TEXT NOT NULL REFERENCES visits(visit_id) ON DELETE CASCADE,
        device_id INTEGER NOT NULL,
        items TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE TABLE order_items (
        action_id TEXT NOT NULL REFERENCES orders(action_id) ON DELETE CASCADE,
        item TEXT NOT NULL
    );
    CREATE INDEX order_items_action ON order_items(action_id);
    CREATE TABLE feedback (
        action_id TEXT PRIMARY KEY,
        visit_id TEXT NOT NULL REFERENCES visits(visit_id) ON DELETE CASCADE,
        device_id INTEGER NOT NULL,
        score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
        comment TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );",
    // 3: the outbox of domain events for the cloud, in the same transactions as their effects.
    "CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );",
    // 4: the version of HQ's customer changes (the downlink) applied so far.
    "ALTER TABLE meta ADD COLUMN downlink_version INTEGER NOT NULL DEFAULT 0;",
    // 5: the store's stream id (its events' numbering, see `tastesync_shared::wire`). A new
    // store gets a new one when it is opened; a store of the first release that already
    // numbered events keeps them in its shop's legacy stream, fixed when the uplink first
    // sends (the cloud holds its earlier events there).
    "ALTER TABLE meta ADD COLUMN stream_id TEXT;
    ALTER TABLE meta ADD COLUMN stream_legacy INTEGER NOT NULL DEFAULT 0;
    UPDATE meta SET stream_legacy = 1
        WHERE EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox');",
    // 6: the LAN's security. The owner's PIN as a PHC string (parameters with the hash; rows
    // of the first release keep salt and hash until the next login upgrades them); the
    // one-time setup code the box prints at first start; when each tablet was last used
    // (idle tablets expire); indexes for the owner page's queries and for retention.
    "ALTER TABLE owner ADD COLUMN pin_phc TEXT;
    ALTER TABLE meta ADD COLUMN setup_code TEXT;
    ALTER TABLE pos_devices ADD COLUMN last_used_ms INTEGER;
    UPDATE pos_devices SET last_used_ms = paired_at_ms;
    CREATE INDEX visits_arrived ON visits(arrived_at_ms);
    CREATE INDEX visits_open ON visits(arrived_at_ms) WHERE left_at_ms IS NULL;
    CREATE INDEX feedback_at ON feedback(at_ms);
    CREATE INDEX feedback_visit ON feedback(visit_id);
    CREATE INDEX orders_visit ON orders(visit_id);",
    // 7: when the daemon last stopped cleanly (consumed by the next start, which resumes the
    // visits still open if it was recent).
    "ALTER TABLE meta ADD COLUMN stopped_at_ms INTEGER;",
    // 8: the clock (see `crate::clock`). The clean stop's time since boot, so a restart in
    // the same boot knows how long it was stopped when the wall clock cannot be trusted; and
    // while it cannot, where this boot's provisional timeline stands.
    "ALTER TABLE meta ADD COLUMN stopped_boot_ms INTEGER;
    ALTER TABLE meta ADD COLUMN provisional_since_ms INTEGER;
    ALTER TABLE meta ADD COLUMN provisional_at_ms INTEGER;
    ALTER TABLE meta ADD COLUMN provisional_boot_ms INTEGER;",
    // 9: the owner's floor map. The plan's image (one at most), where zones and scanners are
    // on it (fractions of the image), and each visit's stays per zone, for the zones' figures
    // (they go with their visit: retention, a customer's deletion). Visits open at the
    // upgrade have no stays; they count from their next move.
    "CREATE TABLE floor_plan (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        content_type TEXT NOT NULL,
        image BLOB NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    CREATE TABLE floor_marks (
        kind TEXT NOT NULL CHECK (kind IN ('zone', 'scanner')),
        name TEXT NOT NULL,
        x REAL NOT NULL CHECK (x BETWEEN 0 AND 1),
        y REAL NOT NULL CHECK (y BETWEEN 0 AND 1),
        PRIMARY KEY (kind, name)
    );
    CREATE TABLE zone_stays (
        visit_id TEXT NOT NULL REFERENCES visits(visit_id) ON DELETE CASCADE,
        zone TEXT NOT NULL,
        from_ms INTEGER NOT NULL,
        to_ms INTEGER
    );
    CREATE INDEX zone_stays_from ON zone_stays(from_ms);
    CREATE INDEX zone_stays_visit ON zone_stays(visit_id);",
    // 10: what a paired device is. A scanner box's token may only send sightings, and a
    // tablet's may not: a box by the door must not be able to read who is in the shop.
    // Devices paired before are tablets.
    "ALTER TABLE pos_devices ADD COLUMN kind TEXT NOT NULL DEFAULT 'tablet'
        CHECK (kind IN ('tablet', 'scanner'));",
];

/// Applies the migrations the database has not seen yet, each in its own transaction. The
/// version is read inside an immediate (write-locked) transaction, so two processes opening
/// a new database at once (the daemon and a command) do not both migrate it.
pub fn apply(conn: &mut Connection) -> anyhow::Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if current > MIGRATIONS.len() {
            anyhow::bail!(
                "the database is at schema version {current}, newer than this program knows \
                 ({}); run a newer tastesync-edge",
                MIGRATIONS.len()
            );
        }
        let Some(sql) = MIGRATIONS.get(current) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", current + 1)?;
        tx.commit()?;
    }
}
