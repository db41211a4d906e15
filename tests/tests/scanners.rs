//! Several scanners in one shop, each through its real path: the main box's own radio (the
//! mocked BlueZ), a second box in the scanner role (its own mocked BlueZ, paired with the
//! main box and posting over HTTP) and an ESPresense node (its MQTT reports through a real
//! Mosquitto that checks credentials). One visit per customer, the zone moves with them, the
//! moves reach PostgreSQL, and a scanner that goes away takes nothing else with it.

use std::time::{Duration, Instant};

use tastesync_e2e::ble::{Daemon, MockBluez};
use tastesync_e2e::cloud::{CloudSync, Database, Mosquitto, eventually};
use tastesync_e2e::pos::{CUSTOMERS, PosBox, UUID};
use tastesync_e2e::*;

const NODE: (&str, &str) = ("espresense-node", "node-secret-1");
const BOX_ON_LAN_BROKER: (&str, &str) = ("tastesync-box", "box-secret-1");

/// C1's tag (iBeacon minor 1) as a radio hears it.
fn c1_advert(rssi: i16) -> serde_json::Value {
    serde_json::json!({
        "cmd": "advertise", "mac": "c0:11:22:33:44:01", "rssi": rssi,
        "manufacturer_data": {"76": ibeacon_manufacturer_payload(UUID, 1, 1)}
    })
}

/// An ESPresense node's report of C1's tag from room `room`.
fn espresense_report(rssi: i16) -> String {
    format!(
        r#"{{"mac":"c01122334401","id":"iBeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e-1-1","idType":15,"rssi@1m":-59,"rssi":{rssi},"raw":1.2,"distance":1.2,"int":1000}}"#
    )
}

/// A box in the scanner role for `main`, its radio on its own mocked BlueZ, paired with a
/// code from the main box.
struct ScannerBox {
    _shop: Shop,
    mock: MockBluez,
    daemon: Option<Daemon>,
}

impl ScannerBox {
    fn start(main: &PosBox, zone: &str, role: &str) -> ScannerBox {
        let shop = Shop::new();
        let config = shop.write(
            "scanner.toml",
            &format!(
                "database = {:?}\n[scanner]\nsource = \"ble\"\nzone = {zone:?}\nrole = {role:?}\n\
                 main_box = {:?}\n[pos]\nlisten = \"\"\n",
                shop.db(),
                main.base
            ),
        );
        let paired = run(
            "tastesync-edge",
            &[
                "pair-scanner",
                &main.pairing_code(),
                "--name",
                "Door scanner",
                "-c",
                config.to_str().unwrap(),
            ],
        );
        assert!(paired.status.success(), "{}", stderr(&paired));
        let mut mock = MockBluez::start(&[]);
        let daemon = Daemon::start(&config, &mock.bus);
        daemon.wait_for_log("scanning for the main box");
        daemon.wait_for_log("BLE discovery started");
        mock.send(
            serde_json::json!({"cmd": "add_device", "mac": "c0:11:22:33:44:01", "name": "tag"}),
        );
        ScannerBox {
            _shop: shop,
            mock,
            daemon: Some(daemon),
        }
    }
}

impl Drop for ScannerBox {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.terminate();
        }
    }
}

/// For `seconds`, twice a second: each radio hears C1 at its level, the ESPresense node
/// reports it from its room (if given a level).
fn hear_c1_for(
    seconds: u64,
    main: &mut PosBox,
    main_rssi: i16,
    scanner: &mut ScannerBox,
    scanner_rssi: i16,
    node: Option<(&Mosquitto, &str, i16)>,
) {
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        main.mock.send(c1_advert(main_rssi));
        scanner.mock.send(c1_advert(scanner_rssi));
        if let Some((broker, room, rssi)) = node {
            broker.publish_as(
                Some(NODE),
                &format!("espresense/devices/iBeacon:x-1-1/{room}"),
                &espresense_report(rssi),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The zone of C1's visit as a tablet sees it.
fn c1_zone(main: &PosBox, tablet: &str) -> Option<String> {
    main.present(tablet)["present"]
        .as_array()?
        .iter()
        .find(|a| a["customer_ref"] == "C1")
        .map(|a| a["zone"].as_str().unwrap_or_default().to_string())
}

#[test]
fn three_kinds_of_scanner_make_one_visit_whose_zone_moves_and_reaches_postgres() {
    assert!(CUSTOMERS.contains("C1,Minji Kim"));
    // The cloud, and the shop's own broker that its ESPresense nodes publish to: each user
    // may only do its part.
    let cloud_broker = Mosquitto::start("allow_anonymous true");
    let lan_broker = Mosquitto::with_users(
        &[NODE, BOX_ON_LAN_BROKER],
        &format!(
            "user {}\ntopic write espresense/#\n\nuser {}\ntopic read espresense/#\n",
            NODE.0, BOX_ON_LAN_BROKER.0
        ),
    );
    let database = Database::create();
    let mut main = PosBox::start_custom(
        Shop::new(),
        "shop_id = \"cafe-zones\"\n",
        &format!(
            "[uplink]\nbroker = {:?}\n[espresense]\nbroker = {:?}\nusername = {:?}\n\
             password = {:?}\n[espresense.rooms.garden]\nzone = \"terrace\"\n",
            cloud_broker.address(),
            lan_broker.address(),
            BOX_ON_LAN_BROKER.0,
            BOX_ON_LAN_BROKER.1
        ),
        Vec::new(),
    );
    let _cloud = CloudSync::start(&main.shop, &database, &cloud_broker, "cloud-zones");
    let tablet = main.pair("Counter tablet");
    let mut door = ScannerBox::start(&main, "door", "door");

    // C1 walks in past the door scanner: announced at once, in the door zone, although the
    // main box by the till hears them only faintly.
    let started = Instant::now();
    hear_c1_for(2, &mut main, -90, &mut door, -55, None);
    assert!(
        eventually(5, || c1_zone(&main, &tablet).as_deref() == Some("door")),
        "announced at the door: {:?}",
        main.present(&tablet)
    );
    let announced_after = started.elapsed();

    // At the counter: the main box hears them loud, the door scanner faintly. The zone
    // moves to the counter after the zone dwell.
    hear_c1_for(8, &mut main, -55, &mut door, -85, None);
    assert!(
        eventually(5, || c1_zone(&main, &tablet).as_deref() == Some("counter")),
        "moved to the counter: {:?}",
        main.present(&tablet)
    );

    // Out on the terrace, where only the ESPresense node in room "garden" hears them well.
    hear_c1_for(
        8,
        &mut main,
        -84,
        &mut door,
        -92,
        Some((&lan_broker, "garden", -52)),
    );
    assert!(
        eventually(5, || c1_zone(&main, &tablet).as_deref() == Some("terrace")),
        "moved to the terrace: {:?}",
        main.present(&tablet)
    );

    // One visit throughout, and its moves are events that reach PostgreSQL.
    let visits = main.shop.visits_all();
    assert_eq!(visits.len(), 1, "one visit: {visits:?}");
    let synced = eventually(30, || {
        database.query(
            "SELECT count(*) FROM events WHERE shop_id = 'cafe-zones' AND kind = 'zone_changed'",
        ) == ["2"]
    });
    let moves = database.query(
        "SELECT body->>'from_zone' || '>' || (body->>'zone') FROM events \
         WHERE shop_id = 'cafe-zones' AND kind = 'zone_changed' ORDER BY seq",
    );
    assert!(synced, "two moves in PostgreSQL: {moves:?}");
    assert_eq!(moves, ["door>counter", "counter>terrace"]);
    assert_eq!(
        database.query(
            "SELECT count(*) FROM events WHERE shop_id = 'cafe-zones' AND kind = 'customer_arrived'"
        ),
        ["1"],
        "one arrival, whichever scanner heard them"
    );
    assert!(
        announced_after < Duration::from_secs(5),
        "the door scanner announced within seconds: {announced_after:?}"
    );

    // The scanner box goes away (unplugged), then the ESPresense broker: the main box goes
    // on with its own radio, and the next customer is announced as usual.
    let unplugged = door.daemon.take().unwrap();
    assert!(unplugged.terminate(), "the scanner box stops cleanly");
    drop(lan_broker);
    main.customer_arrives(2);
    assert!(
        eventually(10, || main.present(&tablet)["present"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["customer_ref"] == "C2" && a["zone"] == "counter")),
        "C2 announced by the main box alone: {:?}",
        main.present(&tablet)
    );
    assert_eq!(
        c1_zone(&main, &tablet).as_deref(),
        Some("terrace"),
        "C1's visit goes on where it was"
    );
}

#[test]
fn only_a_paired_scanner_box_may_send_sightings_and_may_do_nothing_else() {
    let main = PosBox::start();
    let url = main.url("/api/scanners/sightings");
    let batch = serde_json::json!({"zone": "door", "role": "door", "sightings": [
        {"age_ms": 100, "address": "c0:11:22:33:44:01", "rssi": -55,
         "data": format!("0201061aff4c00{}", ibeacon_manufacturer_payload(UUID, 1, 1))}
    ]});
    let anonymous = main.http.post(&url).json(&batch).send().unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous
            .text()
            .unwrap()
            .contains("pair this scanner box first"),
        "a scanner box without a token is told how to pair"
    );
    let forged = main
        .http
        .post(&url)
        .bearer_auth("not-a-token")
        .json(&batch)
        .send()
        .unwrap();
    assert_eq!(forged.status(), 401);
    // A tablet's token sends no sightings, and a scanner box's reads nobody's data.
    let tablet = main.pair("Counter tablet");
    let as_tablet = main
        .http
        .post(&url)
        .bearer_auth(&tablet)
        .json(&batch)
        .send()
        .unwrap();
    assert_eq!(as_tablet.status(), 403);
    let token = main.pair_scanner("Door scanner");
    for path in ["/api/present", "/api/stream"] {
        let read = main
            .http
            .get(main.url(path))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(read.status(), 403, "{path}");
    }
    let ticket = main
        .http
        .post(main.url("/api/stream-tickets"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(ticket.status(), 403);
    let bad = serde_json::json!({"zone": "door", "sightings": [
        {"age_ms": 100, "address": "nonsense", "rssi": -55, "data": "02"}
    ]});
    let refused = main
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&bad)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    let why: serde_json::Value = refused.json().unwrap();
    assert!(why["error"].as_str().unwrap().contains("address"), "{why}");
    let taken = main
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&batch)
        .send()
        .unwrap();
    assert_eq!(taken.status(), 202);
    let body: serde_json::Value = taken.json().unwrap();
    assert_eq!(body["taken"], 1);
}
