//! The attack suite: someone on the shop's Wi-Fi (customers share it) against the real POS
//! server on a real socket, reached at this machine's LAN address. Each attack fails with its
//! documented status, a refused request writes nothing, and paired tablets keep getting
//! their alerts throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tastesync_e2e::pos::{PosBox, lan_address};
use tastesync_e2e::*;

fn status_and_error(response: reqwest::blocking::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap_or(Value::Null);
    (status, body["error"].as_str().unwrap_or("").to_string())
}

/// Counts in the box's store (read beside the running daemon).
fn count(pos: &PosBox, table: &str) -> i64 {
    let db = rusqlite::Connection::open(pos.shop.db()).unwrap();
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn setup_code(pos: &PosBox) -> String {
    let out = pos.shop.edge_ok(&["setup-code", "--db", &pos.shop.db()]);
    out.split_whitespace().nth(2).expect("the code").to_string()
}

/// Runs `requests` requests from `threads` threads at once; returns each status.
fn flood(
    threads: usize,
    requests: usize,
    request: impl Fn(&reqwest::blocking::Client, usize) -> u16 + Send + Sync + 'static,
) -> Vec<u16> {
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (request, next) = (request.clone(), next.clone());
            std::thread::spawn(move || {
                let client = http();
                let mut statuses = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= requests {
                        return statuses;
                    }
                    statuses.push(request(&client, i));
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn tally(statuses: &[u16]) -> std::collections::BTreeMap<u16, usize> {
    let mut tally = std::collections::BTreeMap::new();
    for status in statuses {
        *tally.entry(*status).or_default() += 1;
    }
    tally
}

#[test]
fn taking_over_a_fresh_box_from_the_wifi_needs_its_setup_code() {
    let pos = PosBox::start_on_lan("");
    let status: Value = pos
        .http
        .get(pos.url("/api/owner/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["pin_set"], false);
    assert_eq!(status["setup_code_required"], true, "asked from the LAN");
    let setup = |body: Value| {
        status_and_error(
            pos.http
                .post(pos.url("/api/owner/setup"))
                .json(&body)
                .send()
                .unwrap(),
        )
    };
    let (code, message) = setup(json!({"pin": "482915"}));
    assert_eq!(code, 401);
    assert!(message.contains("setup code"), "{message}");
    let (code, _) = setup(json!({"pin": "482915", "setup_code": "AAAA-AAAA"}));
    assert_eq!(code, 401, "a wrong setup code");
    assert_eq!(count(&pos, "owner"), 0, "nothing written");

    // The owner, with the code from the box's label: a weak PIN is refused with the reason.
    let right = setup_code(&pos);
    let (code, message) = setup(json!({"pin": "123456", "setup_code": right}));
    assert_eq!(code, 400);
    assert!(message.contains("run of digits"), "{message}");
    let (code, _) = setup(json!({"pin": "482915", "setup_code": right.to_lowercase()}));
    assert_eq!(code, 201);
    assert_eq!(count(&pos, "owner"), 1);
    // Set once; the code is spent.
    assert_eq!(setup(json!({"pin": "777777", "setup_code": right})).0, 409);
    assert!(
        pos.shop
            .edge_ok(&["setup-code", "--db", &pos.shop.db()])
            .contains("PIN is set")
    );

    // Guessing the code on another fresh box: refused for a while after five wrong codes,
    // even the right one.
    let fresh = PosBox::start_on_lan("");
    let statuses = flood(8, 40, {
        let url = fresh.url("/api/owner/setup");
        move |client, i| {
            client
                .post(&url)
                .json(&json!({"pin": "482915", "setup_code": format!("ZZZZ-{i:04}")}))
                .send()
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let tally = tally(&statuses);
    assert_eq!(
        tally.get(&401),
        Some(&5),
        "counted before checking: {tally:?}"
    );
    assert_eq!(tally.get(&429), Some(&35), "{tally:?}");
    let response = fresh
        .http
        .post(fresh.url("/api/owner/setup"))
        .json(&json!({"pin": "482915", "setup_code": setup_code(&fresh)}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(count(&fresh, "owner"), 0);
}

#[test]
fn five_hundred_guesses_at_once_get_nowhere_and_tablets_keep_their_alerts() {
    let mut pos = PosBox::start_on_lan("");
    // The owner sets the PIN at the box; a tablet is paired and listening.
    let owner = PosBox::owner_session_at(&format!("http://127.0.0.1:{}", pos.port()), "482915");
    let token = pos.pair("Counter tablet");
    let stream = pos.stream(&token, None);
    let devices = count(&pos, "pos_devices");

    let pairing = {
        let url = pos.url("/api/pair");
        std::thread::spawn(move || {
            flood(25, 500, move |client, i| {
                client
                    .post(&url)
                    .json(&json!({"code": format!("{:08}", 10_000_000 + i), "name": "Intruder"}))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
    };
    let pins = {
        let url = pos.url("/api/owner/login");
        std::thread::spawn(move || {
            flood(25, 500, move |client, i| {
                client
                    .post(&url)
                    .json(&json!({"pin": format!("{:06}", 100_000 + i)}))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
    };
    // Meanwhile a regular walks in: the tablet hears it.
    pos.customer_arrives(1);
    let arrival = stream
        .recv_timeout(Duration::from_secs(20))
        .expect("the alert arrived during the attack");
    assert_eq!(arrival.kind, "arrival");
    assert_eq!(arrival.data["display_name"], "Minji Kim");

    for (what, statuses) in [
        ("pairing", pairing.join().unwrap()),
        ("PIN", pins.join().unwrap()),
    ] {
        let tally = tally(&statuses);
        assert_eq!(statuses.len(), 500);
        // Charged before they were checked: no more wrong answers were tried than the budget
        // allows, however many were in flight.
        assert_eq!(tally.get(&401), Some(&5), "{what}: {tally:?}");
        assert_eq!(tally.get(&429), Some(&495), "{what}: {tally:?}");
    }
    assert_eq!(count(&pos, "pos_devices"), devices, "no tablet paired");
    // The owner's session still works; the owner at the box is not locked out.
    assert_eq!(pos.overview(&owner)["devices"].as_array().unwrap().len(), 1);
}

#[test]
fn a_setup_flood_hashes_nothing_and_twenty_tablets_carry_on() {
    let pos = PosBox::start_on_lan("");
    PosBox::owner_session_at(&format!("http://127.0.0.1:{}", pos.port()), "482915");
    let tokens: Vec<String> = (0..20).map(|i| pos.pair(&format!("Tablet {i}"))).collect();
    let flooding = {
        let url = pos.url("/api/owner/setup");
        std::thread::spawn(move || {
            flood(16, 1000, move |client, _| {
                client
                    .post(&url)
                    .json(&json!({"pin": "918273", "setup_code": "AAAA-AAAA"}))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
    };
    let tablets = {
        let url = pos.url("/api/present");
        flood(20, 400, move |client, i| {
            client
                .get(&url)
                .bearer_auth(&tokens[i % tokens.len()])
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let flood = flooding.join().unwrap();
    assert_eq!(
        tally(&flood),
        [(409, 1000)].into(),
        "refused at once: a PIN is set"
    );
    assert_eq!(tally(&tablets), [(200, 400)].into(), "every tablet served");
}

#[test]
fn rebinding_cross_origin_writes_and_oversize_bodies_are_refused() {
    let mut pos = PosBox::start_on_lan("");
    let token = pos.pair("Counter tablet");
    pos.customer_arrives(1);
    let visit = pos.wait_present(&token, 1)[0]["visit_id"]
        .as_str()
        .unwrap()
        .to_string();
    let present = |host: &str| {
        pos.http
            .get(pos.url("/api/present"))
            .bearer_auth(&token)
            .header("Host", host)
            .send()
            .unwrap()
    };
    let port = pos.port();
    // A page whose name was rebound to the box's address sends its own name.
    let (status, message) = status_and_error(present(&format!("evil.example:{port}")));
    assert_eq!(status, 403);
    assert!(message.contains("evil.example"), "{message}");
    assert_eq!(present(&format!("{}:{port}", lan_address())).status(), 200);
    let own_name = format!(
        "tastesync-{}.local:{port}",
        pos.shop.identity()["box_id"].as_str().unwrap()
    );
    assert_eq!(present(&own_name).status(), 200, "its mDNS name");

    // Another site's page cannot make a staff browser write.
    let ack = |headers: &[(&str, &str)]| {
        let mut request = pos
            .http
            .post(pos.url(&format!("/api/visits/{visit}/ack")))
            .bearer_auth(&token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().unwrap()
    };
    assert_eq!(ack(&[("Origin", "http://evil.example")]).status(), 403);
    assert_eq!(ack(&[("Sec-Fetch-Site", "cross-site")]).status(), 403);
    assert_eq!(ack(&[("Origin", "null")]).status(), 403);
    assert_eq!(count(&pos, "alert_acks"), 0, "nothing written");
    let own_origin = pos.base.to_string();
    assert_eq!(ack(&[("Origin", own_origin.as_str())]).status(), 201);

    // Oversize bodies.
    let huge = json!({"code": "12345678", "name": "x".repeat(2_000_000)});
    let response = pos
        .http
        .post(pos.url("/api/pair"))
        .json(&huge)
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
    let large = json!({"action_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "score": 5, "comment": "x".repeat(100_000)});
    let response = pos
        .http
        .post(pos.url(&format!("/api/visits/{visit}/feedback")))
        .bearer_auth(&token)
        .json(&large)
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(count(&pos, "feedback"), 0);
}

#[test]
fn streams_are_bounded_and_tokens_never_ride_in_urls_and_expire() {
    let pos = PosBox::start_on_lan("device_idle_days = 1");
    let token = pos.pair("Counter tablet");
    let ticket = |token: &str| {
        let body: Value = pos
            .http
            .post(pos.url("/api/stream-tickets"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        body["ticket"].as_str().unwrap().to_string()
    };
    let open_stream = |ticket: &str| {
        pos.http
            .get(pos.url(&format!("/api/stream?ticket={ticket}")))
            .send()
            .unwrap()
    };
    let open: Vec<_> = (0..3).map(|_| open_stream(&ticket(&token))).collect();
    assert!(open.iter().all(|r| r.status() == 200));
    let (status, message) = status_and_error(open_stream(&ticket(&token)));
    assert_eq!(status, 429, "a fourth stream of one tablet: {message}");
    drop(open); // the connections close
    let mut fourth = None;
    for _ in 0..50 {
        let response = open_stream(&ticket(&token));
        if response.status() == 200 {
            fourth = Some(response);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(fourth.is_some(), "a closed stream frees its place");
    let t = ticket(&token);
    drop(fourth);
    let used = open_stream(&t);
    assert_eq!(used.status(), 200);
    assert_eq!(open_stream(&t).status(), 401, "a ticket works once");
    drop(used);
    let in_url = pos
        .http
        .get(pos.url(&format!("/api/stream?token={token}")))
        .send()
        .unwrap();
    assert_eq!(in_url.status(), 401, "a token in the URL is not taken");

    // Rotating keeps the pairing and retires the old token.
    let rotated: Value = pos
        .http
        .post(pos.url("/api/devices/rotate"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let new_token = rotated["token"].as_str().unwrap().to_string();
    let present = |token: &str| {
        status_and_error(
            pos.http
                .get(pos.url("/api/present"))
                .bearer_auth(token)
                .send()
                .unwrap(),
        )
    };
    assert_eq!(present(&token).0, 401);
    assert_eq!(present(&new_token).0, 200);

    // An unpaired tablet gets nothing, not even a stream ticket.
    let owner = PosBox::owner_session_at(&format!("http://127.0.0.1:{}", pos.port()), "482915");
    let other = pos.pair("Terrace tablet");
    let terrace = pos.overview(&owner)["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "Terrace tablet")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let other_ticket = ticket(&other);
    let unpaired = pos
        .http
        .delete(pos.url(&format!("/api/owner/devices/{terrace}")))
        .bearer_auth(&owner)
        .send()
        .unwrap();
    assert_eq!(unpaired.status(), 204);
    assert_eq!(present(&other).0, 403);
    let refused = pos
        .http
        .post(pos.url("/api/stream-tickets"))
        .bearer_auth(&other)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(
        open_stream(&other_ticket).status(),
        403,
        "a ticket issued before unpairing opens nothing"
    );

    // A tablet unused past pos.device_idle_days must pair again.
    let db = rusqlite::Connection::open(pos.shop.db()).unwrap();
    db.execute(
        "UPDATE pos_devices SET last_used_ms = ?1",
        [now_ms() as i64 - 2 * 86_400_000],
    )
    .unwrap();
    let (status, message) = present(&new_token);
    assert_eq!(status, 401);
    assert!(message.contains("not used for a long time"), "{message}");
}

#[test]
fn the_owner_changes_and_resets_the_pin_and_old_sessions_end() {
    let pos = PosBox::start_on_lan("");
    let local = format!("http://127.0.0.1:{}", pos.port());
    let first = PosBox::owner_session_at(&local, "482915");
    let change = |session: &str, current: &str, new: &str| {
        status_and_error(
            pos.http
                .post(pos.url("/api/owner/pin"))
                .bearer_auth(session)
                .json(&json!({"current_pin": current, "new_pin": new}))
                .send()
                .unwrap(),
        )
    };
    assert_eq!(
        change(&first, "000001", "918273").0,
        403,
        "a wrong current PIN"
    );
    let (status, message) = change(&first, "482915", "111111");
    assert_eq!(status, 400);
    assert!(message.contains("repeats"), "{message}");
    let changed: Value = pos
        .http
        .post(pos.url("/api/owner/pin"))
        .bearer_auth(&first)
        .json(&json!({"current_pin": "482915", "new_pin": "918273"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let second = changed["token"].as_str().unwrap().to_string();
    let overview = |session: &str| {
        pos.http
            .get(pos.url("/api/owner/overview"))
            .bearer_auth(session)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        overview(&first),
        401,
        "the old session ended with the old PIN"
    );
    assert_eq!(overview(&second), 200);
    let login = |pin: &str| {
        pos.http
            .post(pos.url("/api/owner/login"))
            .json(&json!({"pin": pin}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(login("482915"), 401);
    assert_eq!(login("918273"), 200);

    // A forgotten PIN: reset on the box; every session ends, a new setup code is printed.
    let out = pos
        .shop
        .edge_ok(&["owner", "reset-pin", "--db", &pos.shop.db()]);
    assert!(out.contains("setup code"), "{out}");
    assert_eq!(overview(&second), 401);
    let code = setup_code(&pos);
    let set = pos
        .http
        .post(pos.url("/api/owner/setup"))
        .json(&json!({"pin": "564738", "setup_code": code}))
        .send()
        .unwrap();
    assert_eq!(set.status(), 201);
}
