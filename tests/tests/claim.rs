//! Plugging in a blank box: HQ adds the shop and gives the owner a claim code; the box,
//! claimed with it (on the owner page or by command), gets broker credentials of its own that
//! a real Mosquitto enforces through its dynamic-security plugin, syncs its events and
//! receives HQ's customers. Another box's credentials reach nothing of it; a revoked box is
//! refused; bad codes change nothing and guessing is rate-limited.

use std::time::Duration;

use tastesync_e2e::cloud::eventually;
use tastesync_e2e::provisioning::{ADMIN, BlankBox, Cloud};
use tastesync_e2e::*;

const TAG: &str = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:7";

fn failed(output: &std::process::Output) -> (i32, String) {
    (output.status.code().unwrap_or(-1), stderr(output))
}

#[test]
fn a_blank_box_is_claimed_then_syncs_its_events_and_gets_its_customers() {
    let cloud = Cloud::start();
    let hq = cloud.hq();
    hq.shops(&["add", "seoul-1", "--name", "Seoul Station"]);
    hq.ok(&[
        "enroll",
        "--ref",
        "M1",
        "--name",
        "Minji Kim",
        "--notes",
        "peanuts",
        "--shop",
        "seoul-1",
        "--tag",
        TAG,
    ]);
    let mut blank = BlankBox::new(&cloud).run();
    assert_eq!(blank.owner_status()["box"]["standing"], "setup");
    assert_eq!(blank.standing(), "setup");

    let code = cloud.claim_code("seoul-1");
    let claimed = blank.claim(&code);
    assert!(claimed.status.success(), "{}", stderr(&claimed));
    assert!(stdout(&claimed).contains("Claimed for shop seoul-1"));
    assert!(
        eventually(5, || blank.owner_status()["box"]["shop_id"] == "seoul-1"),
        "the running box took the claim made by another process"
    );

    // The box connects with its own credentials, resyncs and has HQ's customer.
    let box_id = blank.box_id();
    assert!(
        eventually(20, || blank
            .shop
            .edge_ok(&["customers", "list", "--db", &blank.shop.db()])
            .contains("Minji Kim")),
        "HQ's customer reached the claimed box"
    );
    assert_eq!(blank.credentials().0, box_id, "its own broker user");
    // She walks in: her arrival reaches PostgreSQL from this box.
    blank.regular_walks_in();
    assert!(
        eventually(20, || cloud.database.query(&format!(
            "SELECT count(*) FROM events WHERE kind = 'customer_arrived' \
             AND body->>'customer_ref' = 'M1' AND box_id = '{box_id}'"
        )) == ["1"]),
        "her arrival is stored"
    );
    let listed = hq.shops(&["list", "--shop", "seoul-1"]);
    let boxes = &listed[0]["boxes"];
    assert_eq!(boxes[0]["box_id"], box_id.as_str(), "{listed:?}");
    assert_eq!(boxes[0]["online"], true);
    assert!(boxes[0]["claimed_at"].is_string());
    assert!(boxes[0]["last_event"].is_string());
}

#[test]
fn a_box_reaches_only_its_own_topics_and_a_revoked_box_is_refused_within_seconds() {
    let cloud = Cloud::start();
    let hq = cloud.hq();
    hq.shops(&["add", "seoul-1"]);
    hq.shops(&["add", "busan-2"]);
    let seoul = BlankBox::new(&cloud).run();
    assert!(seoul.claim(&cloud.claim_code("seoul-1")).status.success());

    // The other box is claimed on its owner page.
    let busan = BlankBox::new(&cloud).run();
    let pos = http();
    let session: serde_json::Value = pos
        .post(format!("{}/api/owner/setup", busan.pos))
        .json(&serde_json::json!({"pin": "246813"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let claim = |code: &str| {
        pos.post(format!("{}/api/owner/claim", busan.pos))
            .bearer_auth(session["token"].as_str().unwrap())
            .json(&serde_json::json!({ "code": code }))
            .send()
            .unwrap()
    };
    let answer = claim("WRNG-CODE-0000");
    assert_eq!(answer.status(), 404, "a wrong code from the owner page");
    let answer = claim(&cloud.claim_code("busan-2"));
    assert_eq!(answer.status(), 201);
    let overview: serde_json::Value = pos
        .get(format!("{}/api/owner/overview", busan.pos))
        .bearer_auth(session["token"].as_str().unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(overview["box"]["standing"], "claimed");
    assert_eq!(overview["box"]["shop_id"], "busan-2");
    let online = |shop: &str| {
        cloud.database.query(&format!(
            "SELECT count(*) FROM boxes WHERE shop_id = '{shop}' AND online"
        )) == ["1"]
    };
    assert!(eventually(20, || online("seoul-1") && online("busan-2")));

    // Busan's credentials reach none of Seoul's topics, nor its own shop's downlink as a
    // publisher: the broker enforces it.
    let (user, password) = busan.credentials();
    let busan_user = Some((user.as_str(), password.as_str()));
    let seoul_topics = tastesync_shared::wire::BoxTopics::new("seoul-1", &seoul.box_id());
    let spy_changes = cloud
        .broker
        .subscribe_as(busan_user, &seoul_topics.changes, 4);
    let spy_acks = cloud.broker.subscribe_as(busan_user, &seoul_topics.ack, 4);
    let watcher = cloud
        .broker
        .subscribe_as(Some(ADMIN), "tastesync/v1/shops/busan-2/changes", 4);
    hq.ok(&[
        "enroll",
        "--ref",
        "S1",
        "--name",
        "Seoul Regular",
        "--shop",
        "seoul-1",
    ]);
    let forged = format!(
        r#"{{"v":2,"shop_id":"seoul-1","box_id":"{}","stream_id":"0190e6b2-0000-7000-8000-000000000001","low_water":0,"events":[{{"seq":1,"event_id":"forged","type":"customer_arrived","at_ms":1,"body":{{}}}}]}}"#,
        seoul.box_id()
    );
    cloud
        .broker
        .publish_as(busan_user, &seoul_topics.events, &forged);
    cloud.broker.publish_as(
        busan_user,
        "tastesync/v1/shops/busan-2/changes",
        r#"{"v":1,"shop_id":"busan-2","from_version":0,"to_version":1,"changes":[{"version":1,"customer_ref":"FAKE","customer":{"display_name":"Fake"}}]}"#,
    );
    let read = |child: std::process::Child| {
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    };
    assert_eq!(
        read(spy_changes),
        "",
        "busan's box must not read seoul's customers"
    );
    assert_eq!(read(spy_acks), "", "nor seoul's acknowledgements");
    assert_eq!(
        read(watcher),
        "",
        "nor publish customers to its own shop's boxes"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        cloud
            .database
            .query("SELECT count(*) FROM events WHERE event_id = 'forged'"),
        ["0"],
        "nor write seoul's events"
    );

    // HQ revokes seoul's box: the broker refuses it within seconds; it says so on its owner
    // page and keeps serving the shop offline.
    let (user, password) = seoul.credentials();
    assert!(!cloud.broker.refuses((&user, &password)));
    let revoked = hq.shops(&["revoke", &seoul.box_id()]);
    assert_eq!(revoked[0]["revoked"], true);
    assert!(
        cloud.broker.refuses((&user, &password)),
        "the broker refuses the revoked box"
    );
    assert!(
        eventually(10, || seoul.owner_status()["box"]["standing"] == "revoked"),
        "the box knows it was revoked"
    );
    let health = http()
        .get(format!("{}/api/health", seoul.pos))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200, "the POS still serves the shop");
    let listed = hq.shops(&["list", "--shop", "seoul-1"]);
    assert_eq!(listed[0]["boxes"][0]["revoked"], true);
    let retained = cloud
        .broker
        .subscribe_as(Some(ADMIN), &seoul_topics.status, 2);
    let retained = read(retained);
    assert!(
        retained.contains(r#""online":false"#),
        "its retained status says offline (a disabled user's last will is not sent): {retained}"
    );
    assert!(
        eventually(10, || hq.shops(&["list", "--shop", "seoul-1"])[0]["boxes"]
            [0]["online"]
            == false),
        "HQ sees it offline"
    );
}

#[test]
fn bad_claim_codes_are_explained_change_nothing_and_guessing_is_rate_limited() {
    let cloud = Cloud::start();
    let hq = cloud.hq();
    hq.shops(&["add", "seoul-1"]);
    let unknown_shop = hq.shops_output(&["claim-code", "nowhere"]);
    assert!(stderr(&unknown_shop).contains("no shop \"nowhere\""));
    let first = BlankBox::new(&cloud);
    let second = BlankBox::new(&cloud);

    let (code, said) = failed(&first.claim("ABC"));
    assert_eq!(code, 2);
    assert!(said.contains("12 letters and digits"), "{said}");
    let (code, said) = failed(&first.claim("ZZZZ-ZZZZ-ZZZZ"));
    assert_eq!(code, 2);
    assert!(said.contains("no such claim code"), "{said}");

    let code = cloud.claim_code("seoul-1");
    assert!(second.claim(&code).status.success());
    let (_, said) = failed(&first.claim(&code));
    assert!(said.contains("already used by another box"), "{said}");
    let (_, said) = failed(&second.claim(&code));
    assert!(
        said.contains("already claimed"),
        "a claimed box is not claimed twice: {said}"
    );

    let late = cloud.claim_code("seoul-1");
    cloud.database.query(
        "UPDATE claim_codes SET expires_at = now() - interval '1 minute' WHERE used_at IS NULL",
    );
    let (_, said) = failed(&first.claim(&late));
    assert!(said.contains("expired"), "{said}");
    assert_eq!(first.standing(), "setup", "refused claims changed nothing");
    assert_eq!(
        cloud.database.query("SELECT count(*) FROM boxes"),
        ["1"],
        "only the claimed box"
    );

    // Guessing: wrong codes from one address are refused for a while after ten failures,
    // even a right one, and the right one stays unused.
    let fresh = cloud.claim_code("seoul-1");
    let mut said = String::new();
    for attempt in 0..10 {
        said = failed(&first.claim(&format!("ZZZZ-ZZZZ-{attempt:04}"))).1;
        if said.contains("too many") {
            break;
        }
    }
    assert!(said.contains("too many wrong claim codes"), "{said}");
    let (_, said) = failed(&first.claim(&fresh));
    assert!(said.contains("try again in"), "{said}");
    let answer = cloud
        .https()
        .post(cloud.url("/api/v1/claims"))
        .json(&serde_json::json!({"code": fresh, "box_id": first.box_id()}))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 429);
    let retry_after: u64 = answer.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    assert_eq!(first.standing(), "setup");
    assert_eq!(
        cloud
            .database
            .query("SELECT count(*) FROM claim_codes WHERE used_at IS NULL AND expires_at > now()"),
        ["1"],
        "the right code is still unused"
    );

    // Malformed requests to the API: clear 400s.
    for body in [
        serde_json::json!({"code": "7KQM-X3PA-9RTD", "box_id": "a/b"}),
        serde_json::json!({"code": "7KQM-X3PA-9RTD"}),
        serde_json::json!({"code": "7KQM", "box_id": "tsb-1"}),
    ] {
        let answer = cloud
            .https()
            .post(cloud.url("/api/v1/claims"))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(answer.status(), 400, "{body}");
        let error: serde_json::Value = answer.json().unwrap();
        assert!(error["error"].is_string());
    }
}

#[test]
fn the_provisioning_api_matches_its_openapi_document_under_generated_requests() {
    let cloud = Cloud::start();
    cloud.hq().shops(&["add", "seoul-1"]);
    assert_schemathesis_passes(
        &cloud.url("/api/v1/openapi.json"),
        &["--tls-verify", &cloud.ca()],
    );
}
