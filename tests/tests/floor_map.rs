//! The owner's floor map: in a real browser (tests/browser/floor_flow.mjs) the owner uploads a
//! plan, places zones and the box's radio on it, and sees a customer at the counter, then at
//! the door once a paired scanner box there hears them best; the API's refusals, and its
//! OpenAPI document under generated requests with the owner's session. Screenshots
//! land in target/test-artifacts/.

use std::time::{Duration, Instant};

use tastesync_e2e::cloud::eventually;
use tastesync_e2e::pos::{PosBox, UUID};
use tastesync_e2e::{
    RunningFlow, assert_schemathesis_passes, browser_flow, ibeacon_manufacturer_payload,
};

const PIN: &str = "246813";

/// The start of a PNG file: the box checks an image's first bytes, not the whole of it.
fn png(len: usize) -> Vec<u8> {
    let mut image = b"\x89PNG\r\n\x1a\n".to_vec();
    image.resize(len.max(image.len()), 0);
    image
}

/// For `seconds`, twice a second: a scanner box by the door (paired as `scanner`) hears C1
/// loud while the box's own radio by the counter hears them faintly.
fn c1_at_the_door_for(seconds: u64, pos: &mut PosBox, scanner: &str) {
    let data = format!("0201061aff4c00{}", ibeacon_manufacturer_payload(UUID, 1, 1));
    let batch = serde_json::json!({"zone": "door", "role": "door", "sightings": [
        {"age_ms": 0, "address": "c0:11:22:33:44:01", "rssi": -50, "data": data}
    ]});
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        let sent = pos
            .http
            .post(pos.url("/api/scanners/sightings"))
            .bearer_auth(scanner)
            .json(&batch)
            .send()
            .unwrap();
        assert_eq!(sent.status(), 202);
        pos.mock.send(serde_json::json!({
            "cmd": "advertise", "mac": "c0:11:22:33:44:01", "rssi": -90,
            "manufacturer_data": {"76": ibeacon_manufacturer_payload(UUID, 1, 1)}
        }));
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_owner_places_zones_on_the_plan_and_sees_a_customer_move_from_counter_to_door() {
    let (mut flow, shots) = browser_flow("floor_flow.mjs");
    let mut pos = PosBox::start();
    let owner = pos.owner_session(PIN);
    let scanner = pos.pair_scanner("Door scanner");
    let tablet = pos.pair("Counter tablet");
    // The box's radio hears something (a tag of no customer), so the page offers it.
    pos.mock.send(serde_json::json!({
        "cmd": "advertise", "mac": "c0:11:22:33:44:04", "rssi": -70,
        "manufacturer_data": {"76": ibeacon_manufacturer_payload(UUID, 1, 4)}
    }));
    assert!(
        eventually(10, || pos.overview(&owner)["health"]["scanners"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "local"))),
        "the box's radio is listed: {}",
        pos.overview(&owner)["health"]
    );

    let mut browser = RunningFlow::start(
        flow.env("BASE_URL", &pos.base)
            .env("OWNER_PIN", PIN)
            .env("DEVICE_TOKEN", &tablet)
            .env("CUSTOMER_NAME", "Minji Kim"),
    );
    browser.expect("READY");
    let marks = floor(&pos, &owner)["marks"].clone();
    assert_eq!(
        marks
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!(
                "{}:{}",
                m["kind"].as_str().unwrap(),
                m["name"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        ["zone:counter", "zone:door", "scanner:local"],
        "{marks}"
    );

    pos.customer_arrives(1);
    browser.expect("AT_COUNTER");

    c1_at_the_door_for(8, &mut pos, &scanner);
    browser.expect("DONE");
    browser.finish();

    // What the page showed, as the API says it.
    let zones = floor(&pos, &owner)["zones"].clone();
    let zone = |name: &str| {
        zones
            .as_array()
            .unwrap()
            .iter()
            .find(|z| z["zone"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {zones}"))
    };
    assert_eq!(zone("door")["present"][0]["display_name"], "Minji Kim");
    assert_eq!(zone("door")["visits_today"], 1);
    assert_eq!(zone("counter")["visits_today"], 1);
    assert!(zone("counter")["present"].as_array().unwrap().is_empty());
    assert!(zone("counter")["average_dwell_s"].as_f64().unwrap() > 1.0);
    for shot in [
        "floor-placed.png",
        "floor-counter.png",
        "floor-door.png",
        "floor-korean.png",
        "floor-tablet-door.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot}");
    }
}

fn floor(pos: &PosBox, owner: &str) -> serde_json::Value {
    let response = pos
        .http
        .get(pos.url("/api/owner/floor"))
        .bearer_auth(owner)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().unwrap()
}

#[test]
fn the_floor_api_is_the_owners_and_refuses_what_is_not_a_plan_or_a_place() {
    let pos = PosBox::start();
    let owner = pos.owner_session(PIN);
    let tablet = pos.pair("Counter tablet");
    let plan_url = pos.url("/api/owner/floor/plan");
    let put_plan = |token: Option<&str>, content_type: &str, image: Vec<u8>| {
        let mut request = pos
            .http
            .put(&plan_url)
            .header("Content-Type", content_type)
            .body(image);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().unwrap_or_default();
        (
            status,
            body["error"].as_str().unwrap_or_default().to_string(),
        )
    };

    // Only the owner: no token, or a tablet's.
    assert_eq!(put_plan(None, "image/png", png(100)).0, 401);
    assert_eq!(put_plan(Some(&tablet), "image/png", png(100)).0, 401);
    for path in ["/api/owner/floor", "/api/owner/floor/plan"] {
        let response = pos.http.get(pos.url(path)).send().unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let anonymous_mark = pos
        .http
        .put(pos.url("/api/owner/floor/marks/zone/counter"))
        .json(&serde_json::json!({"x": 0.5, "y": 0.5}))
        .send()
        .unwrap();
    assert_eq!(anonymous_mark.status(), 401);

    // Not an image type the page can show, an image that is not what it says, too large.
    let (status, error) = put_plan(Some(&owner), "image/gif", b"GIF89a....".to_vec());
    assert_eq!(status, 415);
    assert!(error.contains("PNG, JPEG or WebP"), "{error}");
    let (status, _) = put_plan(Some(&owner), "text/html", b"<script>".to_vec());
    assert_eq!(status, 415);
    let (status, error) = put_plan(Some(&owner), "image/png", b"<svg onload=alert(1)>".to_vec());
    assert_eq!(status, 400);
    assert!(error.contains("not a image/png image"), "{error}");
    let (status, error) = put_plan(Some(&owner), "image/png", png((2 << 20) + 1));
    assert_eq!(status, 413);
    assert!(error.contains("2 MB"), "{error}");
    let missing = pos.http.get(&plan_url).bearer_auth(&owner).send().unwrap();
    assert_eq!(missing.status(), 404);

    // Just within the limit: kept, and given back as it came.
    let image = png(2 << 20);
    assert_eq!(put_plan(Some(&owner), "image/png", image.clone()).0, 204);
    let back = pos.http.get(&plan_url).bearer_auth(&owner).send().unwrap();
    assert_eq!(back.status(), 200);
    assert_eq!(back.headers()["content-type"], "image/png");
    assert_eq!(back.headers()["x-content-type-options"], "nosniff");
    assert_eq!(back.bytes().unwrap().as_ref(), image.as_slice());
    assert_eq!(floor(&pos, &owner)["has_plan"], true);

    // Marks: fractions of the plan, a known kind, a sensible name.
    let mark = |kind: &str, name: &str, body: serde_json::Value| {
        pos.http
            .put(pos.url(&format!("/api/owner/floor/marks/{kind}/{name}")))
            .bearer_auth(&owner)
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let at = |x: f64, y: f64| serde_json::json!({"x": x, "y": y});
    let long = "x".repeat(41);
    assert_eq!(mark("zone", "counter", at(0.2, 0.3)), 204);
    assert_eq!(mark("zone", "counter", at(1.0, 0.0)), 204, "moved");
    assert_eq!(mark("scanner", "box%3A1", at(0.0, 1.0)), 204);
    for (kind, name, body) in [
        ("zone", "counter", at(1.5, 0.5)),
        ("zone", "counter", at(0.5, -0.1)),
        (
            "zone",
            "counter",
            serde_json::json!({"x": "left", "y": 0.5}),
        ),
        ("zone", "counter", serde_json::json!({"x": 0.5})),
        ("table", "counter", at(0.5, 0.5)),
        ("zone", long.as_str(), at(0.5, 0.5)),
        ("zone", "%20%20", at(0.5, 0.5)),
        ("zone", "bar%0A", at(0.5, 0.5)),
    ] {
        assert_eq!(mark(kind, name, body.clone()), 400, "{kind} {name} {body}");
    }
    let infinite = pos
        .http
        .put(pos.url("/api/owner/floor/marks/zone/counter"))
        .bearer_auth(&owner)
        .header("Content-Type", "application/json")
        .body(r#"{"x": 1e400, "y": 0.5}"#)
        .send()
        .unwrap();
    assert_eq!(infinite.status(), 400);
    let listed = floor(&pos, &owner);
    assert_eq!(
        listed["marks"],
        serde_json::json!([
            {"kind": "zone", "name": "counter", "x": 1.0, "y": 0.0},
            {"kind": "scanner", "name": "box:1", "x": 0.0, "y": 1.0},
        ])
    );
    assert_eq!(
        listed["zones"],
        serde_json::json!([
            {"zone": "counter", "visits_today": 0, "average_dwell_s": null, "present": []}
        ]),
        "a zone marked but not visited yet"
    );
    let delete = |path: &str| {
        pos.http
            .delete(pos.url(path))
            .bearer_auth(&owner)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(delete("/api/owner/floor/marks/zone/counter"), 204);
    assert_eq!(delete("/api/owner/floor/marks/zone/counter"), 404);
    assert_eq!(delete("/api/owner/floor/plan"), 204);
    assert_eq!(delete("/api/owner/floor/plan"), 404);
    assert_eq!(floor(&pos, &owner)["has_plan"], false);
}

#[test]
fn the_floor_routes_match_their_openapi_document_under_generated_requests_as_the_owner() {
    let pos = PosBox::start();
    let owner = pos.owner_session(PIN);
    assert_schemathesis_passes(
        &pos.url("/api/openapi.json"),
        &[
            "--header",
            &format!("Authorization: Bearer {owner}"),
            "--include-path-regex",
            "^/api/owner/floor",
        ],
    );
}
