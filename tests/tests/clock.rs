//! A box that boots with its clock years off (a Raspberry Pi without network time; the
//! clock is faked with libfaketime) and whose clock is stepped to the right time mid-visit,
//! as NTP does once it is reached: no visit ends, no alert repeats (across a restart too),
//! nothing reaches the cloud with a wrong time, and the times stored on the box and in
//! PostgreSQL are the real ones.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tastesync_e2e::Shop;
use tastesync_e2e::cloud::{CloudSync, Database, Mosquitto, eventually};
use tastesync_e2e::pos::{PosBox, SseEvent};

fn real_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// libfaketime, reading its offset from `file` at every call, the monotonic clocks left real.
fn faked_clock(file: &Path) -> Vec<(String, String)> {
    let library = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.exists())
        .expect("libfaketime (scripts/install-test-tools.sh installs it)");
    [
        ("LD_PRELOAD", library.display().to_string()),
        ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Minji's tag keeps advertising at the counter for `seconds`.
fn stays(pos: &mut PosBox, seconds: u64) {
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        pos.customer_arrives(1);
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn arrivals(stream: &std::sync::mpsc::Receiver<SseEvent>) -> Vec<SseEvent> {
    stream.try_iter().filter(|e| e.kind == "arrival").collect()
}

#[test]
fn a_clock_stepped_from_2020_to_now_mid_visit_keeps_the_visit_and_stores_the_real_times() {
    let shop = Shop::new();
    let offset = shop.write("faketime", "-2500d\n"); // about 2020
    let synchronised: PathBuf = shop.dir.path().join("clock-synchronised");
    let broker = Mosquitto::start("allow_anonymous true");
    let database = Database::create();
    let _cloud = CloudSync::start(&shop, &database, &broker, "cloud-clock");
    let env = faked_clock(&offset);
    let sections = format!(
        "[uplink]\nbroker = {:?}\n[clock]\ntrusted_when = {:?}\n",
        broker.address(),
        synchronised.display().to_string()
    );
    let started = real_ms();
    let mut pos = PosBox::start_custom(shop, "shop_id = \"clock-1\"\n", &sections, env);
    let token = pos.pair("counter");
    let owner = pos.owner_session("482915");
    let health = pos.overview(&owner)["health"].clone();
    assert!(
        health["clock"]
            .as_str()
            .unwrap()
            .starts_with("not synchronised"),
        "the owner page says the clock is not right yet: {health}"
    );

    // Minji comes in while the box believes it is 2020.
    let stream = pos.stream(&token, None);
    let arrived = real_ms();
    pos.customer_arrives(1);
    pos.wait_present(&token, 1);
    let connected = eventually(10, || {
        pos.overview(&owner)["health"]["cloud_sync"]
            .as_str()
            .is_some_and(|s| s.starts_with("connected"))
    });
    assert!(
        connected,
        "the uplink is up: only the clock holds the events back"
    );
    stays(&mut pos, 3);
    let provisional = pos.shop.visits()[0]["arrived_at_ms"].as_i64().unwrap();
    assert!(
        provisional > real_ms() - 400 * 86_400_000,
        "never a time of 2020, even provisionally: {provisional}"
    );
    assert!(
        database.stored("clock-1").is_empty(),
        "nothing reaches the cloud with a time the box cannot trust: {:?}",
        database.stored("clock-1")
    );

    // An upgrade restarts the box, clock still wrong: Minji is not announced again.
    let before_restart: Vec<SseEvent> = stream.try_iter().collect();
    let last_id = before_restart.iter().map(|e| e.id).max().unwrap();
    pos.restart();
    let stream_after_restart = pos.stream(&token, Some(last_id));
    stays(&mut pos, 3);

    // Network time arrives: the clock steps by years, mid-visit.
    std::fs::write(pos.shop.dir.path().join("faketime"), "+0\n").unwrap();
    std::fs::write(&synchronised, "").unwrap();
    pos.daemon
        .as_ref()
        .unwrap()
        .wait_for_log("provisional times corrected");
    stays(&mut pos, 3);

    let seen: Vec<_> = before_restart
        .into_iter()
        .filter(|e| e.kind == "arrival")
        .chain(arrivals(&stream_after_restart))
        .collect();
    assert_eq!(seen.len(), 1, "one alert, at the arrival: {seen:?}");
    let visits = pos.shop.visits();
    assert_eq!(
        visits.len(),
        1,
        "one visit through the restart and the step: {visits:?}"
    );
    assert!(visits[0]["left_at_ms"].is_null(), "still open: {visits:?}");
    let at = visits[0]["arrived_at_ms"].as_i64().unwrap();
    assert!(
        (at - arrived).abs() < 5_000,
        "the visit's stored time is the real one: {at} vs {arrived}"
    );
    let owner = pos.owner_login("482915");
    assert_eq!(pos.overview(&owner)["health"]["clock"], "synchronised");

    // The cloud gets every event, with the real times.
    let sent = eventually(30, || pos.shop.outbox_is_empty());
    assert!(sent, "the held events go out once the clock is right");
    let stored = database
        .query("SELECT kind || '|' || at_ms FROM events WHERE shop_id = 'clock-1' ORDER BY seq");
    let kinds: Vec<&str> = stored
        .iter()
        .map(|r| r.split('|').next().unwrap())
        .collect();
    assert!(
        kinds.contains(&"customer_arrived") && kinds.contains(&"box_health"),
        "{stored:?}"
    );
    let now = real_ms();
    for row in &stored {
        let at: i64 = row.rsplit('|').next().unwrap().parse().unwrap();
        assert!(
            (started - 2_000..=now).contains(&at),
            "{row}: a real time, between {started} and {now}"
        );
    }
}
