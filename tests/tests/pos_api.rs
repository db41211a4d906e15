//! The POS API against the real server on a random port, with a real SQLite file and
//! arrivals coming through the real BLE path (mocked BlueZ).

use std::time::Duration;

use serde_json::{Value, json};
use tastesync_e2e::pos::PosBox;

fn error_of(response: reqwest::blocking::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap_or(Value::Null);
    (status, body["error"].as_str().unwrap_or("").to_string())
}

#[test]
fn tablets_must_be_paired_and_revoked_tablets_are_refused() {
    let pos = PosBox::start();
    let present = |token: Option<&str>| {
        let mut request = pos.http.get(pos.url("/api/present"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().unwrap()
    };
    let (status, message) = error_of(present(None));
    assert_eq!(
        (status, message.as_str()),
        (401, "pair this tablet first: no device token")
    );
    assert_eq!(error_of(present(Some("0123"))).0, 401);
    // Pages are public, personal data is not.
    let page = pos.http.get(pos.url("/pos")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("TasteSync POS"));

    let token = pos.pair("Counter tablet");
    assert_eq!(present(Some(&token)).status(), 200);

    // A code works once.
    let code = pos.pairing_code();
    let pair = |code: &str| {
        pos.http
            .post(pos.url("/api/pair"))
            .json(&json!({"code": code, "name": "Terrace tablet"}))
            .send()
            .unwrap()
    };
    let second: Value = pair(&code).json().unwrap();
    let (status, message) = error_of(pair(&code));
    assert_eq!(status, 401, "{message}");
    assert!(message.contains("wrong or expired pairing code"));
    let (status, message) = error_of(pair("12ab"));
    assert_eq!((status, message.contains("8 digits")), (400, true));

    // The owner sets a PIN, lists tablets and revokes one: its token now gets 403.
    let owner = pos.owner_session("135790");
    let again = pos
        .http
        .post(pos.url("/api/owner/setup"))
        .json(&json!({"pin": "000000"}))
        .send()
        .unwrap();
    assert_eq!(again.status(), 409, "the PIN is set once");
    let overview = pos.overview(&owner);
    let devices = overview["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    let terrace = second["device"]["id"].as_i64().unwrap();
    let revoked = pos
        .http
        .delete(pos.url(&format!("/api/owner/devices/{terrace}")))
        .bearer_auth(&owner)
        .send()
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let (status, message) = error_of(present(Some(second["token"].as_str().unwrap())));
    assert_eq!(status, 403);
    assert!(message.contains("unpaired by the owner"));
    assert_eq!(
        present(Some(&token)).status(),
        200,
        "the other tablet still works"
    );
    // Owner routes need the owner's session, not a tablet token.
    let as_tablet = pos
        .http
        .get(pos.url("/api/owner/overview"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(as_tablet.status(), 401);

    // Guessing codes is rate limited: after 5 wrong codes, 429 with Retry-After.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(pair("00000000").status().as_u16());
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 429, 429],
        "one wrong code was spent above"
    );
    let limited = pair(&pos.pairing_code());
    assert_eq!(limited.status(), 429, "even a right code waits");
    assert!(limited.headers().get("retry-after").is_some());
}

#[test]
fn staff_actions_are_validated_and_idempotent() {
    let mut pos = PosBox::start();
    let token = pos.pair("Counter tablet");
    pos.customer_arrives(1);
    let present = pos.wait_present(&token, 1);
    let visit = present[0]["visit_id"].as_str().unwrap().to_string();
    assert_eq!(present[0]["display_name"], "Minji Kim");
    assert_eq!(present[0]["notes"], "allergic to peanuts");
    let post = |path: &str, body: Value| {
        pos.http
            .post(pos.url(&format!("/api/visits/{visit}{path}")))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .unwrap()
    };

    let first = post("/ack", json!({}));
    assert_eq!(first.status(), 201);
    let again = post("/ack", json!({}));
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<Value>().unwrap()["acknowledged_by"],
        "Counter tablet"
    );

    let order = json!({"action_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "items": ["oat latte", "scone"]});
    assert_eq!(post("/orders", order.clone()).status(), 201);
    assert_eq!(
        post("/orders", order).status(),
        200,
        "a retry records nothing new"
    );
    let reused = json!({"action_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "items": ["tea"]});
    assert_eq!(post("/orders", reused).status(), 409);

    for (body, says) in [
        (
            json!({"action_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "score": 0}),
            "score must be",
        ),
        (
            json!({"action_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "score": 6}),
            "score must be",
        ),
        (
            json!({"action_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "score": 4, "comment": "x".repeat(1501)}),
            "at most 1500 bytes",
        ),
        (
            // 501 Korean letters: 1,503 bytes.
            json!({"action_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "score": 4, "comment": "맛".repeat(501)}),
            "at most 1500 bytes",
        ),
        (
            json!({"action_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "score": 4, "comment": "rude\u{1b}[2J"}),
            "control characters",
        ),
        (
            json!({"action_id": "not-a-uuid", "score": 4}),
            "action_id must be a UUID",
        ),
        (json!({"score": 4}), "invalid JSON body"),
    ] {
        let (status, message) = error_of(post("/feedback", body.clone()));
        assert_eq!(status, 400, "{body}");
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, message) = error_of(post(
        "/orders",
        json!({"action_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "items": []}),
    ));
    assert_eq!((status, message.contains("1 to 20 items")), (400, true));
    for items in [
        json!(["tea\u{0}"]),
        json!(["x".repeat(121)]),
        json!(["라떼".repeat(21)]),
    ] {
        let (status, message) = error_of(post(
            "/orders",
            json!({"action_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "items": items}),
        ));
        assert_eq!(status, 400, "{items}");
        assert!(
            message.contains("control characters") || message.contains("1 to 120 bytes"),
            "{message}"
        );
    }
    let feedback = json!({"action_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "score": 5, "comment": "great\nwill come back"});
    assert_eq!(post("/feedback", feedback.clone()).status(), 201);
    assert_eq!(post("/feedback", feedback).status(), 200);
    let unknown = pos
        .http
        .post(pos.url("/api/visits/0190e6b2-0000-7000-8000-000000000000/ack"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // The owner sees one feedback, 100 % satisfied; the next alert shows the usual order.
    let overview = pos.overview(&pos.owner_session("135790"));
    assert_eq!(overview["summary"]["feedback_count"], 1);
    assert_eq!(overview["summary"]["satisfaction_pct"], 100.0);
    assert_eq!(
        pos.present(&token)["present"][0]["usual_order"],
        json!(["oat latte", "scone"])
    );
}

#[test]
fn a_tablet_that_reconnects_gets_exactly_what_it_missed_in_order() {
    let mut pos = PosBox::start();
    let token = pos.pair("Counter tablet");
    let stream = pos.stream(&token, None);
    pos.customer_arrives(1);
    let first = stream
        .recv_timeout(Duration::from_secs(10))
        .expect("live arrival");
    assert_eq!(
        (first.kind.as_str(), first.data["customer_ref"].as_str()),
        ("arrival", Some("C1"))
    );
    drop(stream); // the tablet drops off the Wi-Fi

    // Meanwhile: two arrivals and an acknowledgement from another tablet.
    let other = pos.pair("Terrace tablet");
    pos.customer_arrives(2);
    pos.wait_present(&other, 2);
    let visit = first.data["visit_id"].as_str().unwrap();
    let ack = pos
        .http
        .post(pos.url(&format!("/api/visits/{visit}/ack")))
        .bearer_auth(&other)
        .send()
        .unwrap();
    assert_eq!(ack.status(), 201);
    pos.customer_arrives(3);
    pos.wait_present(&other, 3);

    let resumed = pos.stream(&token, Some(first.id));
    let mut missed = Vec::new();
    while let Ok(event) = resumed.recv_timeout(Duration::from_millis(1500)) {
        missed.push(event);
    }
    let summary: Vec<(String, String)> = missed
        .iter()
        .map(|e| {
            (
                e.kind.clone(),
                e.data["customer_ref"]
                    .as_str()
                    .or(e.data["acknowledged_by"].as_str())
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("arrival".to_string(), "C2".to_string()),
            ("ack".to_string(), "Terrace tablet".to_string()),
            ("arrival".to_string(), "C3".to_string()),
        ]
    );
    let ids: Vec<i64> = missed.iter().map(|e| e.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && ids[0] > first.id,
        "{ids:?}"
    );

    // And the live feed continues after the catch-up, once.
    let ack = pos
        .http
        .post(pos.url(&format!(
            "/api/visits/{}/ack",
            missed[0].data["visit_id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(ack.status(), 201);
    let live = resumed
        .recv_timeout(Duration::from_secs(5))
        .expect("live after catch-up");
    assert_eq!((live.kind.as_str(), live.id), ("ack", ids[2] + 1));
    assert!(
        resumed.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing twice"
    );
    let daemon = pos.daemon.take().unwrap();
    assert!(
        daemon.terminate(),
        "SIGTERM stops the box cleanly while a tablet is connected"
    );
}
