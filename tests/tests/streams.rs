//! A shop's events are kept per stream (one box's store), so the things every chain meets in
//! its first year lose and duplicate nothing: a box whose store is replaced, two boxes in one
//! shop, a PostgreSQL restored from a backup taken mid-stream, a box's store restored from a
//! backup, and batches of very large events.

use std::collections::BTreeSet;

use tastesync_e2e::cloud::{CloudSync, Database, Hq, Mosquitto, eventually};
use tastesync_e2e::*;

fn uplink(broker: &Mosquitto, tuning: &str) -> String {
    format!("broker = {:?}\n{tuning}", broker.address())
}

fn stream_of(shop: &Shop) -> String {
    shop.identity()["stream_id"].as_str().unwrap().to_string()
}

/// Removes the box's store (as a dead SD card does), keeping its identity file.
fn wipe_store(shop: &Shop) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", shop.db()));
    }
}

#[test]
fn a_box_whose_store_is_replaced_starts_a_new_stream_and_nothing_is_lost() {
    let shop = Shop::new();
    let first = shop.record_offline("seoul-1", 10);
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-replace");
    assert!(
        shop.drain_online("seoul-1", &uplink(&broker, ""), 20),
        "the first store drained"
    );
    let old_stream = stream_of(&shop);
    let box_id = shop.identity()["box_id"].clone();

    // The card dies; a new store starts at seq 1 again, for the same shop.
    wipe_store(&shop);
    let second = shop.record_offline("seoul-1", 7);
    assert_eq!(second[0]["seq"], 1, "a new store numbers from 1");
    let new_stream = stream_of(&shop);
    assert_ne!(new_stream, old_stream, "a new store is a new stream");
    assert_eq!(shop.identity()["box_id"], box_id, "the same box");
    assert!(
        shop.drain_online("seoul-1", &uplink(&broker, ""), 20),
        "the new store drained"
    );

    assert_eq!(database.stored_stream(&old_stream), as_rows(&first));
    assert_eq!(
        database.stored_stream(&new_stream),
        as_rows(&second),
        "every event of the new store, though its seqs were taken before"
    );
    assert_eq!(
        database.query("SELECT count(*) FROM streams WHERE shop_id = 'seoul-1'"),
        ["2"]
    );
    assert_eq!(
        database.query("SELECT count(*) FROM stream_gaps"),
        ["0"],
        "nothing lost, nothing in conflict"
    );
}

#[test]
fn two_boxes_of_one_shop_sync_at_once_with_client_ids_of_their_own() {
    let (counter, terrace) = (Shop::new(), Shop::new());
    let from_counter = counter.record_offline("busan-2", 150);
    let from_terrace = terrace.record_offline("busan-2", 150);
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let _cloud = CloudSync::start(&counter, &database, &broker, "cloud-two");
    // Small batches: the two drains overlap for a while.
    let tuning = "batch_size = 10\nwindow_batches = 2";
    let a = counter.run_online("busan-2", &uplink(&broker, tuning));
    let b = terrace.run_online("busan-2", &uplink(&broker, tuning));
    let drained = eventually(60, || {
        counter.outbox_is_empty() && terrace.outbox_is_empty()
    });
    let both_online = eventually(10, || {
        database.query("SELECT count(*) FROM boxes WHERE shop_id = 'busan-2' AND online") == ["2"]
    });
    drop((a, b));
    assert!(drained, "both boxes drained");
    assert!(both_online, "both boxes are online, side by side");
    assert_eq!(
        database.stored_stream(&stream_of(&counter)),
        as_rows(&from_counter)
    );
    assert_eq!(
        database.stored_stream(&stream_of(&terrace)),
        as_rows(&from_terrace)
    );
    assert_eq!(
        database.query("SELECT count(*) FROM events WHERE shop_id = 'busan-2'"),
        [(from_counter.len() + from_terrace.len()).to_string()]
    );
    let log = broker.log();
    assert!(
        !log.contains("already connected"),
        "no box took the other's connection over:\n{log}"
    );
}

#[test]
fn a_postgres_restored_from_a_dump_taken_mid_stream_records_the_gap_and_nothing_jams() {
    const EVENTS: i64 = 40_000;
    let shop = Shop::new();
    shop.write_outbox_backlog(EVENTS);
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let cloud = CloudSync::start(&shop, &database, &broker, "cloud-before");
    // Small batches keep the drain going while the dump is taken, the database moves on
    // past it, and then is restored.
    let tuning = "batch_size = 100\nwindow_batches = 2\nack_timeout_secs = 2";
    let daemon = shop.run_online("seoul-9", &uplink(&broker, tuning));
    let acked = || {
        database
            .query("SELECT acked_seq FROM streams WHERE shop_id = 'seoul-9'")
            .first()
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let hq = Hq::new(&shop, &database);
    let has = |customer: &str| shop.has_customer(customer);
    hq.ok(&[
        "enroll", "--ref", "A1", "--name", "Before", "--shop", "seoul-9",
    ]);
    assert!(eventually(10, || has("A1")));
    assert!(eventually(30, || acked() >= 4_000), "the drain started");
    let dump = shop.path("backup.dump");
    database.dump(&dump);
    // HQ changes a customer after the backup: the box has it, the restored database will not.
    hq.ok(&[
        "enroll", "--ref", "B1", "--name", "Lost", "--shop", "seoul-9",
    ]);
    assert!(eventually(10, || has("B1")));
    assert!(eventually(30, || acked() >= 16_000), "the drain went on");
    let before_restore = acked();
    assert!(before_restore < EVENTS, "the restore comes mid-stream");

    // The database is lost and restored from the dump: everything acknowledged after it is
    // gone from PostgreSQL, and from the box too.
    drop(cloud);
    database.restore(&dump);
    let at_dump = acked();
    assert!(
        (4_000..before_restore).contains(&at_dump),
        "the restored database is behind the box: {at_dump} < {before_restore}"
    );
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-after");
    // HQ goes on: a change right after the restore takes a version the box already holds
    // from the lost database; it must reach the box all the same.
    hq.ok(&[
        "enroll", "--ref", "C1", "--name", "After", "--shop", "seoul-9",
    ]);
    let drained = eventually(60, || shop.outbox_is_empty());
    let final_acked = acked();
    assert!(
        eventually(20, || has("C1") && has("A1")),
        "HQ's changes after the restore reach the box"
    );
    drop(daemon);
    assert!(drained, "the box drained to empty; acked {final_acked}");
    assert_eq!(final_acked, EVENTS, "the stream is acknowledged to its end");

    // What PostgreSQL holds and the recorded gaps cover every seq exactly once.
    let gaps: Vec<(i64, i64)> = database
        .query("SELECT from_seq, to_seq FROM stream_gaps WHERE kind = 'restore' ORDER BY from_seq")
        .iter()
        .map(|row| {
            let (a, b) = row.split_once('|').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert!(!gaps.is_empty(), "the gap is recorded");
    let stored: BTreeSet<i64> = database
        .query("SELECT seq FROM events WHERE shop_id = 'seoul-9'")
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(
        database.query("SELECT count(*) FROM events WHERE shop_id = 'seoul-9'"),
        [stored.len().to_string()],
        "no seq twice"
    );
    let mut covered = stored.clone();
    for (from, to) in &gaps {
        for seq in *from..=*to {
            assert!(covered.insert(seq), "seq {seq} is both stored and in a gap");
        }
    }
    assert_eq!(covered, (1..=EVENTS).collect::<BTreeSet<_>>());
    assert!(
        gaps.iter()
            .all(|(from, to)| *from > at_dump && *to <= before_restore.max(*from)),
        "the gaps lie between the dump ({at_dump}) and the restore: {gaps:?}"
    );

    // HQ sees it.
    let listed = hq.shops(&["list", "--shop", "seoul-9"]);
    assert_eq!(listed[0]["gaps"][0]["kind"], "restore", "{listed:?}");
}

#[test]
fn batches_of_very_large_events_are_cut_under_the_limit_stored_and_acknowledged() {
    const EVENTS: i64 = 120;
    let shop = Shop::new();
    // Each event holds a staff comment of ~57 kB as JSON: control characters take six bytes
    // each (an older box accepted them). 500 of these in one batch would be ~28 MB.
    shop.write_outbox_events(EVENTS, |seq| {
        let comment = "\\u0001".repeat(9_000) + &"x".repeat(3_000);
        format!(r#"{{"visit_id":"v{seq}","comment":"{comment}"}}"#)
    });
    let pending = shop.outbox_rows();
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-large");
    // Batches as large as both sides accept: 1 MiB.
    assert!(
        shop.drain_online("seoul-4", &uplink(&broker, "batch_bytes = 1048576"), 60),
        "every batch was acknowledged"
    );
    assert_eq!(database.stored("seoul-4"), pending);
    assert_eq!(
        database.query("SELECT count(*) FROM dead_letters"),
        ["0"],
        "no batch over the limit"
    );
    assert_eq!(
        database.query(
            "SELECT min(length(body->>'comment')), max(length(body->>'comment')) FROM events"
        ),
        ["12000|12000"],
        "the comments arrived whole"
    );
}

#[test]
fn a_box_whose_store_was_restored_from_a_backup_starts_a_new_stream_instead_of_overwriting() {
    let shop = Shop::new();
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-backup");
    shop.record_offline("seoul-6", 5);
    // The owner copies the store aside (the box is stopped, so the copy is whole).
    let backup = shop.path("edge.db.backup");
    std::fs::copy(shop.db(), &backup).unwrap();
    let more = shop.record_offline("seoul-6", 5);
    assert!(
        shop.drain_online("seoul-6", &uplink(&broker, ""), 20),
        "drained"
    );
    let stream = stream_of(&shop);
    assert_eq!(database.stored_stream(&stream), as_rows(&more));
    assert_eq!(more.len(), 20);

    // Later the owner restores that copy: the store numbers new events with seqs the cloud
    // already holds, with other events.
    wipe_store(&shop);
    std::fs::copy(&backup, shop.db()).unwrap();
    let after_restore = shop.record_offline("seoul-6", 3);
    let new_events: Vec<serde_json::Value> = after_restore[10..].to_vec();
    assert_eq!(new_events[0]["seq"], 11, "seqs the cloud already holds");
    assert!(
        shop.drain_online("seoul-6", &uplink(&broker, ""), 20),
        "the restored store drained"
    );
    let new_stream = stream_of(&shop);
    assert_ne!(
        new_stream, stream,
        "the restored store continued as a new stream"
    );
    assert_eq!(
        database.stored_stream(&stream),
        as_rows(&more),
        "the cloud's copy was not overwritten"
    );
    let moved: Vec<String> = database
        .stored_stream(&new_stream)
        .iter()
        .map(|row| row.split_once('|').unwrap().1.to_string())
        .collect();
    let expected: Vec<String> = as_rows(&new_events)
        .iter()
        .map(|row| row.split_once('|').unwrap().1.to_string())
        .collect();
    assert_eq!(moved, expected, "the new events, renumbered, once each");
    assert_eq!(
        database.query("SELECT count(*) = count(DISTINCT event_id) FROM events"),
        ["t"],
        "no event twice"
    );
    assert_eq!(
        database.query("SELECT kind, from_seq FROM stream_gaps"),
        ["conflict|11"]
    );
}
