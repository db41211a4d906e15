use std::io::Write;

use super::*;
use crate::events::{CustomerArrived, CustomerLeft};
use crate::store::{ActionOutcome, StaffAction};
use uuid::Uuid;

const MINJI_TAG: &str = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:14";

fn csv(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("edge.db")).unwrap()
}

#[test]
fn imports_customers_and_tags_and_builds_the_index_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(&dir);
    let file = csv(
        &dir,
        "c.csv",
        &format!(
            "customer_ref,display_name,tier,notes,preferences,tag_ids\n\
             C1,Minji,gold,\"allergic to peanuts\",oat latte,{MINJI_TAG}\n\
             C2,Joon,,,,\n"
        ),
    );
    let report = store.import_customers(&file).unwrap();
    assert_eq!(report, ImportReport { rows: 2, tags: 1 });
    let customers = store.customers().unwrap();
    assert_eq!(customers.len(), 2);
    assert_eq!(customers[0].notes, "allergic to peanuts");
    assert_eq!(customers[0].tag_ids, vec![MINJI_TAG.to_string()]);
    let snapshot = store.index_snapshot().unwrap();
    assert_eq!(snapshot.tags.len(), 1);
    assert_eq!(snapshot.tags[0].1, customers[0].id);
}

#[test]
fn bad_rows_are_reported_by_line_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(&dir);
    let file = csv(
        &dir,
        "c.csv",
        &format!(
            "customer_ref,display_name,tag_ids\n\
             C1,Minji,{MINJI_TAG}\n\
             C2,,\n\
             C3,Bora,ibeacon:nope\n\
             C1,Again,\n\
             C4,Dup,{MINJI_TAG}\n"
        ),
    );
    let err = store.import_customers(&file).unwrap_err().to_string();
    for expected in [
        "line 3: display_name is empty",
        "line 4: invalid tag id \"ibeacon:nope\"",
        "line 5: customer_ref \"C1\" already appears on line 2",
        "line 6: tag ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:14 is already given to the customer on line 2",
        "nothing was imported",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(store.customers().unwrap().is_empty());
}

#[test]
fn a_tag_owned_by_another_customer_is_refused_and_the_file_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(&dir);
    let first = csv(
        &dir,
        "a.csv",
        &format!("customer_ref,display_name,tag_ids\nC1,Minji,{MINJI_TAG}\n"),
    );
    store.import_customers(&first).unwrap();
    let second = csv(
        &dir,
        "b.csv",
        &format!("customer_ref,display_name,tag_ids\nC9,New,\nC2,Thief,{MINJI_TAG}\n"),
    );
    let err = store.import_customers(&second).unwrap_err().to_string();
    assert!(
        err.contains("line 3: tag") && err.contains("already belongs to customer C1"),
        "{err}"
    );
    assert_eq!(store.customers().unwrap().len(), 1, "C9 was rolled back");
    // Moving a tag within one file is fine.
    let moved = csv(
        &dir,
        "c.csv",
        &format!("customer_ref,display_name,tag_ids\nC1,Minji,\nC2,Bora,{MINJI_TAG}\n"),
    );
    store.import_customers(&moved).unwrap();
    let owners: Vec<_> = store
        .customers()
        .unwrap()
        .into_iter()
        .map(|c| c.tag_ids.len())
        .collect();
    assert_eq!(owners, vec![0, 1]);
}

#[test]
fn unknown_or_missing_columns_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(&dir);
    let file = csv(&dir, "c.csv", "customer_ref,name\nC1,Minji\n");
    let err = store.import_customers(&file).unwrap_err().to_string();
    assert!(err.contains("unknown column \"name\""), "{err}");
    assert!(
        err.contains("lacks the required column \"display_name\""),
        "{err}"
    );
    let missing = store
        .import_customers(&dir.path().join("nope.csv"))
        .unwrap_err();
    assert!(missing.to_string().starts_with("cannot read"), "{missing}");
}

#[test]
fn eid_keys_import_and_removal_deletes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(&dir);
    store
        .import_customers(&csv(
            &dir,
            "c.csv",
            "customer_ref,display_name\nP1,Phone person\n",
        ))
        .unwrap();
    let key = "00112233445566778899aabbccddeeff";
    let keys = csv(
        &dir,
        "k.csv",
        &format!(
            "customer_ref,exponent,epoch,temporary_key\nP1,10,25939,{key}\nP1,10,25940,{key}\n"
        ),
    );
    assert_eq!(store.import_eid_keys(&keys).unwrap().rows, 2);
    let snapshot = store.index_snapshot().unwrap();
    assert_eq!(snapshot.eid_tags.len(), 1);
    assert_eq!(snapshot.eid_tags[0].1.temporary_keys.len(), 2);

    let bad = csv(
        &dir,
        "bad.csv",
        &format!(
            "customer_ref,exponent,epoch,temporary_key\nP1,16,1,{key}\nZZ,10,1,{key}\nP1,10,70000,00\n"
        ),
    );
    let err = store.import_eid_keys(&bad).unwrap_err().to_string();
    assert!(err.contains("line 2: exponent must be"), "{err}");
    assert!(err.contains("line 4: epoch must be"), "{err}");
    assert!(err.contains("line 4: temporary_key must be"), "{err}");

    let id = store.customers().unwrap()[0].id;
    let arrived = CustomerArrived {
        visit_id: Uuid::now_v7(),
        customer: id,
        zone: "door".into(),
        arrived_at_ms: 1000,
    };
    store.record_arrival(&arrived).unwrap();
    store.record_arrival(&arrived).unwrap(); // idempotent
    assert_eq!(store.visit_count(id).unwrap(), 1);
    store
        .record_departure(&CustomerLeft {
            visit_id: arrived.visit_id,
            customer: id,
            zone: "door".into(),
            arrived_at_ms: 1000,
            left_at_ms: 61_000,
            dwell_s: 60,
        })
        .unwrap();
    assert_eq!(store.visits(10).unwrap()[0].dwell_s, Some(60));

    assert!(store.remove_customer("P1").unwrap());
    assert!(!store.remove_customer("P1").unwrap());
    let snapshot = store.index_snapshot().unwrap();
    assert!(snapshot.eid_tags.is_empty());
    assert!(
        store.visits(10).unwrap().is_empty(),
        "visits go with the customer"
    );
}

#[test]
fn writers_in_two_connections_never_fail_with_a_stale_snapshot() {
    // Each write reads first (the customer's ref, the visit) and then writes; as deferred
    // transactions, two connections doing this at once failed with SQLITE_BUSY_SNAPSHOT,
    // which no busy timeout waits out.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.db");
    let mut first = Store::open(&path).unwrap();
    first
        .import_customers(&csv(&dir, "c.csv", "customer_ref,display_name\nC1,Minji\n"))
        .unwrap();
    let customer = first.customers().unwrap()[0].id;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).unwrap();
                for i in 0..300u64 {
                    let arrived = CustomerArrived {
                        visit_id: Uuid::now_v7(),
                        customer,
                        zone: "counter".into(),
                        arrived_at_ms: 1_000_000 + w * 10_000 + i,
                    };
                    store.record_arrival(&arrived).unwrap();
                    let action = StaffAction::Order {
                        items: vec!["tea".into()],
                    };
                    let outcome = store
                        .record_action(
                            &Uuid::now_v7().to_string(),
                            &arrived.visit_id.to_string(),
                            1,
                            &action,
                            2_000_000,
                        )
                        .unwrap();
                    assert_eq!(outcome, ActionOutcome::Recorded);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("no write failed");
    }
    assert_eq!(first.visits(10_000).unwrap().len(), 600);
    assert_eq!(first.outbox_pending().unwrap(), 1200);
}

#[test]
fn the_store_file_is_private_and_failures_say_what_they_are() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.db");
    drop(Store::open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "it holds customers' names and notes");

    let full = anyhow::Error::from(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        None,
    ));
    assert_eq!(Failure::of(&full), Failure::Full);
    let busy = anyhow::Error::from(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        None,
    ))
    .context("recording an arrival");
    assert_eq!(Failure::of(&busy), Failure::Busy);
    assert!(Failure::Full.explain().contains("free disk space"));
}

#[test]
fn reopening_keeps_data_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.db");
    {
        let mut store = Store::open(&path).unwrap();
        store
            .import_customers(&csv(&dir, "c.csv", "customer_ref,display_name\nC1,Minji\n"))
            .unwrap();
        store.conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = Store::open(&path).err().unwrap();
    assert!(
        format!("{err:#}").contains("newer than this program knows"),
        "{err:#}"
    );
}

#[test]
fn every_local_effect_writes_its_event_in_the_same_transaction_with_gap_free_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(&dir);
    store
        .import_customers(&csv(&dir, "c.csv", "customer_ref,display_name\nC1,Minji\n"))
        .unwrap();
    let id = store.customers().unwrap()[0].id;
    let visit_id = Uuid::now_v7();
    let arrived = CustomerArrived {
        visit_id,
        customer: id,
        zone: "door".into(),
        arrived_at_ms: 1000,
    };
    store.record_arrival(&arrived).unwrap();
    store.record_arrival(&arrived).unwrap(); // a replay of the same event: no second row
    let visit = visit_id.to_string();
    assert_eq!(
        store.acknowledge(&visit, 7, 1500).unwrap(),
        ActionOutcome::Recorded
    );
    assert_eq!(
        store.acknowledge(&visit, 8, 1600).unwrap(),
        ActionOutcome::Duplicate
    );
    let order = StaffAction::Order {
        items: vec!["oat latte".into()],
    };
    store.record_action("a1", &visit, 7, &order, 2000).unwrap();
    store.record_action("a1", &visit, 7, &order, 2000).unwrap();
    // An action on an unknown visit changes nothing and writes no event.
    assert_eq!(
        store.record_action("a2", "nope", 7, &order, 2000).unwrap(),
        ActionOutcome::UnknownVisit
    );
    // The box stops with the visit open: the next start closes it, with an event.
    assert_eq!(store.close_interrupted_visits(&[]).unwrap(), 1);
    let left = CustomerLeft {
        visit_id,
        customer: id,
        zone: "door".into(),
        arrived_at_ms: 1000,
        left_at_ms: 9000,
        dwell_s: 8,
    };
    store.record_departure(&left).unwrap(); // already closed: no second departure

    let events = store.outbox(0, 100, u64::MAX).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "customer_arrived",
            "alert_acknowledged",
            "order_recorded",
            "customer_left"
        ]
    );
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert!(
        events
            .iter()
            .all(|e| e.body["customer_ref"] == "C1" && e.body["visit_id"] == visit.as_str())
    );
    assert_eq!(events[3].body["interrupted"], true);
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 4);
    assert!(
        events
            .iter()
            .all(|e| Uuid::parse_str(&e.event_id).unwrap().get_version_num() == 7)
    );
}

mod downlink {
    use super::*;
    use tastesync_shared::downlink::{
        ChangeBatch, CustomerChange, CustomerRecord, EidKeys, EpochKey,
    };

    fn record(name: &str, tag: Option<&str>, epochs: &[u16]) -> CustomerRecord {
        CustomerRecord {
            display_name: name.into(),
            tier: "gold".into(),
            notes: "allergic to peanuts".into(),
            preferences: "oat latte".into(),
            tag_ids: tag.into_iter().map(String::from).collect(),
            eid: (!epochs.is_empty()).then(|| EidKeys {
                exponent: 10,
                keys: epochs
                    .iter()
                    .map(|&epoch| EpochKey {
                        epoch,
                        temporary_key: format!("{epoch:032x}"),
                    })
                    .collect(),
            }),
        }
    }

    fn batch(from: i64, changes: Vec<(i64, &str, Option<CustomerRecord>)>) -> ChangeBatch {
        ChangeBatch {
            v: 1,
            shop_id: "s1".into(),
            from_version: from,
            to_version: changes.last().unwrap().0,
            changes: changes
                .into_iter()
                .map(|(version, customer_ref, customer)| CustomerChange {
                    version,
                    customer_ref: customer_ref.into(),
                    customer,
                })
                .collect(),
        }
    }

    #[test]
    fn changes_apply_in_order_once_and_gaps_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(&dir);
        assert_eq!(store.downlink_version().unwrap(), 0);
        let first = batch(
            0,
            vec![
                (1, "C1", Some(record("Minji", Some(MINJI_TAG), &[]))),
                (2, "C2", Some(record("Joon", None, &[100, 101]))),
            ],
        );
        assert_eq!(
            store.apply_changes(&first).unwrap(),
            Applied::Applied { changes: 2 }
        );
        assert_eq!(
            store.apply_changes(&first).unwrap(),
            Applied::AlreadyApplied { have: 2 }
        );
        // Version 4 follows 3, which the box never saw.
        let later = batch(3, vec![(4, "C1", None)]);
        assert_eq!(
            store.apply_changes(&later).unwrap(),
            Applied::Gap { have: 2 }
        );
        assert_eq!(store.customers().unwrap().len(), 2);

        // A resync from 2: C2's keys roll forward, C1 is deleted.
        let resync = batch(
            2,
            vec![
                (3, "C2", Some(record("Joon", None, &[101, 102]))),
                (4, "C1", None),
            ],
        );
        assert_eq!(
            store.apply_changes(&resync).unwrap(),
            Applied::Applied { changes: 2 }
        );
        assert_eq!(store.downlink_version().unwrap(), 4);
        let customers = store.customers().unwrap();
        assert_eq!(customers.len(), 1);
        assert_eq!(customers[0].customer_ref, "C2");
        assert_eq!(customers[0].eid_exponent, Some(10));
        let snapshot = store.index_snapshot().unwrap();
        assert!(snapshot.tags.is_empty());
        let epochs: Vec<u16> = snapshot.eid_tags[0]
            .1
            .temporary_keys
            .iter()
            .map(|k| k.0)
            .collect();
        assert_eq!(epochs, [101, 102]);
    }

    #[test]
    fn a_deletion_removes_the_customers_visits_and_hq_tags_win() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(&dir);
        let file = csv(
            &dir,
            "c.csv",
            &format!("customer_ref,display_name,tag_ids\nLOCAL,Local,{MINJI_TAG}\n"),
        );
        store.import_customers(&file).unwrap();
        store
            .apply_changes(&batch(
                0,
                vec![(1, "C1", Some(record("Minji", Some(MINJI_TAG), &[])))],
            ))
            .unwrap();
        let minji = store
            .customers()
            .unwrap()
            .into_iter()
            .find(|c| c.customer_ref == "C1")
            .unwrap();
        assert_eq!(minji.tag_ids, [MINJI_TAG]);
        store
            .record_arrival(&CustomerArrived {
                visit_id: Uuid::now_v7(),
                customer: minji.id,
                zone: "counter".into(),
                arrived_at_ms: 1_000,
            })
            .unwrap();
        assert_eq!(store.visit_count(minji.id).unwrap(), 1);
        store
            .apply_changes(&batch(1, vec![(2, "C1", None)]))
            .unwrap();
        assert!(store.customer(minji.id).unwrap().is_none());
        assert_eq!(store.visit_count(minji.id).unwrap(), 0);
        assert!(store.visits(10).unwrap().is_empty());
    }
}

/// A store with customer C1 and one visit of theirs, arrived at `at`; returns the visit.
fn store_with_a_visit(dir: &tempfile::TempDir, at: Millis) -> (Store, CustomerArrived) {
    let mut store = store(dir);
    store
        .import_customers(&csv(dir, "c.csv", "customer_ref,display_name\nC1,Minji\n"))
        .unwrap();
    let arrived = CustomerArrived {
        visit_id: Uuid::now_v7(),
        customer: store.customers().unwrap()[0].id,
        zone: "counter".into(),
        arrived_at_ms: at,
    };
    store.record_arrival(&arrived).unwrap();
    (store, arrived)
}

#[test]
fn provisional_times_are_held_back_then_corrected_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    // One visit from before (trusted), then this run's, stamped provisionally from 5000.
    let (mut store, before) = store_with_a_visit(&dir, 1000);
    let arrived = CustomerArrived {
        visit_id: Uuid::now_v7(),
        arrived_at_ms: 6000,
        ..before.clone()
    };
    store.record_arrival(&arrived).unwrap();
    let left = CustomerLeft {
        visit_id: arrived.visit_id,
        customer: arrived.customer,
        zone: "counter".into(),
        arrived_at_ms: 6000,
        left_at_ms: 9000,
        dwell_s: 3,
    };
    store.record_departure(&left).unwrap();
    assert_eq!(store.latest_stamp().unwrap(), 9000);

    // Held: only what came before the first provisional event goes out.
    let sendable = store.outbox(0, 100, 5000).unwrap();
    assert_eq!(sendable.len(), 1, "{sendable:?}");
    assert_eq!(sendable[0].at_ms, 1000);

    let hours = 3 * 3_600_000;
    let correction = crate::clock::Correction {
        since: 5000,
        delta_ms: hours,
    };
    assert!(store.correct_times(correction).unwrap() >= 4);
    let events = store.outbox(0, 100, u64::MAX).unwrap();
    let times: Vec<_> = events.iter().map(|e| e.at_ms).collect();
    assert_eq!(times, [1000, 6000 + hours as u64, 9000 + hours as u64]);
    assert_eq!(events[2].body["arrived_at_ms"], 6000 + hours);
    assert_eq!(events[2].body["left_at_ms"], 9000 + hours);
    let visits = store.visits(10).unwrap();
    let corrected = visits
        .iter()
        .find(|v| v.visit_id == arrived.visit_id.to_string())
        .unwrap();
    assert_eq!(corrected.arrived_at_ms, 6000 + hours as u64);
    assert_eq!(corrected.left_at_ms, Some(9000 + hours as u64));
    let earlier = visits
        .iter()
        .find(|v| v.visit_id == before.visit_id.to_string())
        .unwrap();
    assert_eq!(earlier.arrived_at_ms, 1000, "a trusted time is left alone");
    let stay: (u64, u64) = store
        .conn
        .query_row(
            "SELECT from_ms, to_ms FROM zone_stays WHERE visit_id = ?1",
            [arrived.visit_id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        stay,
        (6000 + hours as u64, 9000 + hours as u64),
        "the zone's stay too"
    );
}

#[test]
fn a_restart_in_the_same_boot_resumes_by_boot_time_whatever_the_wall_clock_says() {
    let dir = tempfile::tempdir().unwrap();
    let absence = 60_000;
    let stop = |store: &mut Store, wall_ms, boot_ms| {
        store
            .record_clean_stop(StopClock {
                wall_ms,
                wall_trusted: false,
                boot_ms,
            })
            .unwrap();
    };
    let (mut store, _) = store_with_a_visit(&dir, 1000);
    // Stopped at boot time 500 s; started 10 s later, the wall clock off by years.
    stop(&mut store, 2000, 500_000);
    let later = StopClock {
        wall_ms: 90_000_000_000,
        wall_trusted: false,
        boot_ms: 510_000,
    };
    let (visits, ago) = store.take_resumable_visits(later, absence).unwrap();
    assert_eq!((visits.len(), ago), (1, 10_000));

    // A reboot (boot time back near zero) with an untrusted clock: nothing is resumed.
    stop(&mut store, 2000, 500_000);
    let rebooted = StopClock {
        wall_ms: 2500,
        wall_trusted: false,
        boot_ms: 20_000,
    };
    assert!(
        store
            .take_resumable_visits(rebooted, absence)
            .unwrap()
            .0
            .is_empty()
    );
    // The same reboot with a trusted clock goes by the wall clock.
    stop(&mut store, 2000, 500_000);
    let trusted = StopClock {
        wall_trusted: true,
        ..rebooted
    };
    assert_eq!(
        store
            .take_resumable_visits(trusted, absence)
            .unwrap()
            .0
            .len(),
        1
    );
    // Too long ago by boot time.
    stop(&mut store, 2000, 500_000);
    let (visits, _) = store
        .take_resumable_visits(
            StopClock {
                boot_ms: 500_000 + absence + 1,
                ..later
            },
            absence,
        )
        .unwrap();
    assert!(visits.is_empty());
}
