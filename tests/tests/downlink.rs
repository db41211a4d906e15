//! HQ → shop: customers enrolled, changed and deleted with `tastesync-cloud customers` reach
//! the box from a real PostgreSQL through a real Mosquitto, and the box acts on them.

use std::collections::BTreeMap;
use std::io::Write;

use tastesync_e2e::cloud::{CloudSync, Database, Hq, Mosquitto, eventually};
use tastesync_e2e::*;
use tastesync_shared::eid::eid;
use tastesync_shared::hexfmt::{hex, parse_fixed};

/// The box's customers as `ref → (name, tier, notes, preferences, sorted tags, EID exponent)`,
/// the fields HQ and the box must agree on.
type Cache = BTreeMap<String, serde_json::Value>;

fn comparable(customers: impl IntoIterator<Item = serde_json::Value>) -> Cache {
    customers
        .into_iter()
        .map(|c| {
            let mut tags: Vec<String> = c["tag_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            tags.sort();
            let fields = serde_json::json!([
                c["display_name"],
                c["tier"],
                c["notes"],
                c["preferences"],
                tags,
                c["eid_exponent"]
            ]);
            (c["customer_ref"].as_str().unwrap().to_string(), fields)
        })
        .collect()
}

fn box_cache(shop: &Shop) -> Cache {
    comparable(
        shop.edge_ok(&["customers", "list", "--json", "--db", &shop.db()])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap()),
    )
}

fn box_version(shop: &Shop) -> i64 {
    let db = rusqlite::Connection::open(shop.db()).unwrap();
    db.query_row("SELECT downlink_version FROM meta", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn an_hq_enrollment_reaches_the_box_which_then_identifies_the_customer() {
    let shop = Shop::new();
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    // Keys running short are looked for every second here (hourly in production).
    let _cloud = CloudSync::start_as(
        &shop,
        &database,
        &broker,
        "cloud-1",
        ("", ""),
        "eid_refresh_secs = 1",
    );
    let hq = Hq::new(&shop, &database);

    // The box's scanner hears whatever the test writes into this pipe.
    let (_edge, mut air) = shop.run_on_air("seoul-1", &broker.address());
    assert!(
        eventually(20, || database
            .query("SELECT online FROM boxes WHERE shop_id = 'seoul-1'")
            == ["t"]),
        "the box connects"
    );

    // HQ enrolls Minji with a phone (a generated EID identity key) for this shop, and a
    // customer of another shop.
    let minji = hq.ok(&[
        "enroll",
        "--ref",
        "M1",
        "--name",
        "Minji Kim",
        "--tier",
        "gold",
        "--notes",
        "allergic to peanuts",
        "--preferences",
        "oat latte",
        "--shop",
        "seoul-1",
        "--eid",
    ]);
    let identity_key = minji[0]["eid_identity_key"].as_str().unwrap().to_string();
    hq.ok(&[
        "enroll",
        "--ref",
        "B1",
        "--name",
        "Busan Regular",
        "--shop",
        "busan-2",
        "--tag",
        "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2",
    ]);
    assert!(
        eventually(10, || box_cache(&shop).contains_key("M1")),
        "the enrollment reaches the box"
    );
    let cache = box_cache(&shop);
    assert_eq!(
        cache["M1"],
        serde_json::json!([
            "Minji Kim",
            "gold",
            "allergic to peanuts",
            "oat latte",
            [],
            10
        ])
    );
    assert!(
        !cache.contains_key("B1"),
        "another shop's customer stays away"
    );
    let temporary_keys: i64 = {
        let db = rusqlite::Connection::open(shop.db()).unwrap();
        db.query_row("SELECT count(*) FROM eid_temporary_keys", [], |r| r.get(0))
            .unwrap()
    };
    assert!(
        (9..=13).contains(&temporary_keys),
        "about a week of temporary keys, not {temporary_keys}"
    );
    let stored_key = {
        let db = rusqlite::Connection::open(shop.db()).unwrap();
        db.query_row(
            "SELECT count(*) FROM eid_temporary_keys WHERE hex(temporary_key) = upper(?1)",
            [&identity_key],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    assert_eq!(
        stored_key, 0,
        "the identity key itself never reaches the box"
    );

    // Her phone comes in: the box recognises her and tells the cloud.
    let key: [u8; 16] = parse_fixed(&identity_key).unwrap();
    let start = now_s() * 1000;
    for i in 0..5u64 {
        let t = start + i * 500;
        let data = eid_frame(&hex(&eid(&key, 10, (t / 1000) as u32)));
        writeln!(
            air,
            r#"{{"t_ms":{t},"address":"d4:11:22:33:44:02","rssi":-60,"data":"{data}"}}"#
        )
        .unwrap();
    }
    air.flush().unwrap();
    assert!(
        eventually(10, || shop
            .visits()
            .iter()
            .any(|v| v["customer_ref"] == "M1")),
        "the box identifies the enrolled customer"
    );
    assert!(
        eventually(10, || {
            database.query(
            "SELECT count(*) FROM events WHERE kind = 'customer_arrived' AND body->>'customer_ref' = 'M1'"
        ) == ["1"]
        }),
        "her arrival reaches the cloud"
    );

    // A batch that skips versions is not applied: the box asks for a resync from its own.
    let version = box_version(&shop);
    let resync = broker.subscribe_as(None, "tastesync/v1/shops/seoul-1/boxes/+/resync", 10);
    broker.publish(
        "tastesync/v1/shops/seoul-1/changes",
        r#"{"v":1,"shop_id":"seoul-1","from_version":40,"to_version":41,"changes":[{"version":41,"customer_ref":"X9","customer":{"display_name":"Nobody"}}]}"#,
    );
    let request = String::from_utf8_lossy(&resync.wait_with_output().unwrap().stdout).into_owned();
    assert_eq!(
        request.trim(),
        format!(r#"{{"v":2,"from_version":{version}}}"#)
    );
    assert!(!box_cache(&shop).contains_key("X9"));

    // Her keys run short (as days pass): the cloud renews them and the box gets the change.
    let version = box_version(&shop);
    database.query("UPDATE customers SET eid_keys_until = 0 WHERE customer_ref = 'M1'");
    assert!(
        eventually(10, || box_version(&shop) > version),
        "renewed keys reach the box"
    );
    let renewed_until: u64 = database
        .query("SELECT eid_keys_until FROM customers WHERE customer_ref = 'M1'")[0]
        .parse()
        .unwrap();
    assert!(renewed_until > now_s() + 6 * 86_400, "a week ahead again");
    assert_eq!(
        box_cache(&shop)["M1"][5],
        10,
        "still an EID customer on the box"
    );

    // HQ deletes her: the box forgets her, visits included.
    hq.ok(&["delete", "--ref", "M1"]);
    assert!(
        eventually(10, || !box_cache(&shop).contains_key("M1")),
        "the deletion reaches the box"
    );
    assert!(shop.visits().is_empty(), "her visits are gone from the box");
    assert!(hq.ok(&["list"]).iter().all(|c| c["customer_ref"] != "M1"));
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn random_hq_changes_while_the_box_comes_and_goes_converge_to_what_hq_says() {
    let shop = Shop::new();
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    // Two instances share the load; one is killed halfway.
    let mut first_cloud = Some(CloudSync::start(&shop, &database, &broker, "cloud-1"));
    let _second_cloud = CloudSync::start(&shop, &database, &broker, "cloud-2");
    let hq = Hq::new(&shop, &database);
    let uplink = format!("broker = {:?}", broker.address());

    let seed = std::env::var("DOWNLINK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(now_s);
    println!("seed {seed} (DOWNLINK_SEED={seed} replays this run)");
    let mut rng = Rng(seed);
    let shop_sets: [&[&str]; 3] = [&["seoul-1"], &["busan-2"], &["seoul-1", "busan-2"]];
    let mut enrolled = [false; 6];
    let mut edge = Some(shop.run_online("seoul-1", &uplink));
    let mut restarts = 0;
    for step in 0..66u64 {
        if step == 30 {
            drop(first_cloud.take());
        }
        if step == 60 {
            // The last changes always happen while the box is away.
            edge = None;
        } else if step < 60 && rng.below(6) == 0 {
            // The box drops off (SIGKILL, mid-whatever) or comes back.
            edge = match edge.take() {
                Some(running) => {
                    drop(running);
                    None
                }
                None => {
                    restarts += 1;
                    Some(shop.run_online("seoul-1", &uplink))
                }
            };
        }
        let c = rng.below(enrolled.len() as u64) as usize;
        let customer_ref = format!("C{c}");
        let shops: Vec<&str> = shop_sets[rng.below(3) as usize]
            .iter()
            .flat_map(|s| ["--shop", s])
            .collect();
        let tag = format!("ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:9:{step}");
        let name = format!("Customer {c} v{step}");
        let mut args = vec![];
        if !enrolled[c] {
            args.extend([
                "enroll",
                "--ref",
                &customer_ref,
                "--name",
                &name,
                "--tag",
                &tag,
            ]);
            args.extend(shops.iter().copied());
            if rng.below(2) == 0 {
                args.push("--eid");
            }
            enrolled[c] = true;
        } else {
            match rng.below(5) {
                0 => {
                    args.extend(["delete", "--ref", &customer_ref]);
                    enrolled[c] = false;
                }
                1 => args.extend(["update", "--ref", &customer_ref, "--notes", &name]),
                2 => args.extend(["update", "--ref", &customer_ref, "--tag", &tag]),
                3 => args.extend(["update", "--ref", &customer_ref, "--new-eid"]),
                _ => {
                    args.extend(["update", "--ref", &customer_ref, "--name", &name]);
                    args.extend(shops.iter().copied());
                }
            }
        }
        hq.ok(&args);
        std::thread::sleep(std::time::Duration::from_millis(rng.below(120)));
    }
    if edge.is_none() {
        edge = Some(shop.run_online("seoul-1", &uplink));
    }

    let expected = comparable(hq.ok(&["list", "--shop", "seoul-1"]));
    let converged = eventually(30, || box_cache(&shop) == expected);
    let head = database.query("SELECT downlink_version FROM shops WHERE shop_id = 'seoul-1'");
    drop(edge);
    assert!(
        converged,
        "seed {seed}: the box holds {:?}\nHQ says {expected:?}",
        box_cache(&shop)
    );
    assert_eq!(
        [box_version(&shop).to_string()],
        *head,
        "seed {seed}: the box is at HQ's version"
    );
    println!(
        "{restarts} restarts; {} customers at the end",
        expected.len()
    );
}

#[test]
fn hq_mistakes_are_refused_with_reasons_and_change_nothing() {
    let shop = Shop::new();
    let database = Database::create();
    // No cloud-sync needed: the tool brings the schema up to date itself.
    let hq = Hq::new(&shop, &database);
    hq.ok(&[
        "enroll",
        "--ref",
        "C1",
        "--name",
        "Minji Kim",
        "--shop",
        "seoul-1",
        "--tag",
        "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:14",
    ]);
    let refused = |args: &[&str], reason: &str| {
        let output = hq.customers(args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(message.contains(reason), "{args:?}: {message}");
    };
    refused(
        &[
            "enroll", "--ref", "C1", "--name", "Again", "--shop", "seoul-1",
        ],
        "already exists",
    );
    refused(
        &[
            "enroll",
            "--ref",
            "C2",
            "--name",
            "Joon",
            "--shop",
            "seoul-1",
            "--tag",
            "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:14",
        ],
        "already given to customer \"C1\"",
    );
    refused(
        &[
            "enroll",
            "--ref",
            "C2",
            "--name",
            "Joon",
            "--shop",
            "seoul-1",
            "--tag",
            "ibeacon:nope",
        ],
        "--tag \"ibeacon:nope\"",
    );
    refused(
        &[
            "enroll", "--ref", "C2", "--name", "Joon", "--shop", "shops/#",
        ],
        "not a valid shop id",
    );
    refused(
        &["enroll", "--ref", "C2", "--name", " ", "--shop", "seoul-1"],
        "display_name is empty",
    );
    refused(
        &["update", "--ref", "C9", "--name", "Nobody"],
        "no customer \"C9\"",
    );
    refused(&["delete", "--ref", "C9"], "no customer \"C9\"");
    let bad = shop.write(
        "bad.toml",
        &format!("database_url = {:?}\neid_days = 90\n", database.url()),
    );
    let output = run(
        "tastesync-cloud",
        &["customers", "--config", bad.to_str().unwrap(), "list"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("eid_days must be 1 to 60"));
    let customers = hq.ok(&["list"]);
    assert_eq!(customers.len(), 1);
    assert!(
        customers[0].get("eid_identity_key").is_none(),
        "never listed"
    );
    assert_eq!(
        database.query("SELECT shop_id, downlink_version FROM shops"),
        ["seoul-1|1"],
        "refused commands wrote no change"
    );
}

#[test]
fn cloud_sync_comes_back_after_a_broker_outage_with_changes_for_1100_shops_queued() {
    let shop = Shop::new();
    let mut broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let cloud = CloudSync::start(&shop, &database, &broker, "cloud-1");
    let hq = Hq::new(&shop, &database);
    broker.stop();
    // One customer for 1,100 shops: more changes to publish than the MQTT client queues
    // while the broker is away.
    let shops: Vec<String> = (0..1100).map(|i| format!("shop-{i}")).collect();
    let mut args = vec!["enroll", "--ref", "C1", "--name", "Chain Regular"];
    for s in &shops {
        args.extend(["--shop", s.as_str()]);
    }
    hq.ok(&args);
    std::thread::sleep(std::time::Duration::from_secs(2));
    broker.start_again();

    // The service still takes in a shop's events and answers it.
    let box_online = shop.run_online("shop-7", &format!("broker = {:?}", broker.address()));
    assert!(
        eventually(30, || box_cache(&shop).contains_key("C1")),
        "the box gets its change after the outage"
    );
    broker.publish(
        "tastesync/v1/shops/shop-8/events",
        r#"{"v":1,"shop_id":"shop-8","events":[{"seq":1,"event_id":"e1","type":"customer_arrived","at_ms":1,"body":{}}]}"#,
    );
    assert!(
        eventually(30, || database
            .query("SELECT acked_seq FROM streams WHERE shop_id = 'shop-8'")
            == ["1"]),
        "events are stored again"
    );
    drop(box_online);
    drop(cloud);
}
