//! HQ's console in a real browser (Debian's headless Chromium, driven by
//! tests/browser/console_flow.mjs) beside a real box (the BLE path against a mocked BlueZ,
//! its POS with a paired tablet, syncing through Mosquitto): sign in, the box online, enroll a
//! customer the box then identifies, her arrival in the analytics and the tablet's feedback
//! on the feedback page, export and erase her (done once the box applied it), the box offline
//! once stopped. Screenshots land in target/test-artifacts/.

use tastesync_e2e::cloud::eventually;
use tastesync_e2e::console::Console;
use tastesync_e2e::pos::PosBox;
use tastesync_e2e::{RunningFlow, browser_flow};

const PASSWORD: &str = "a long enough password";

#[test]
fn hq_runs_the_chain_from_the_console_in_a_browser() {
    let (mut flow, shots) = browser_flow("console_flow.mjs");
    let console = Console::start("");
    console.add_shop("seoul-1", "Seoul Station", "Asia/Seoul");
    console.add_user("admin@example.com", "admin", &[], PASSWORD);
    let mut pos = PosBox::start_synced("seoul-1", &console.broker.address());
    let tablet = pos.pair("Counter tablet");
    assert!(
        eventually(20, || console.database.query("SELECT online FROM boxes")
            == ["t"]),
        "the box connects"
    );

    let mut browser = RunningFlow::start(
        flow.env("BASE_URL", &console.base)
            .env("EMAIL", "admin@example.com")
            .env("PASSWORD", PASSWORD),
    );
    browser.expect("ONLINE");
    browser.expect("ENROLLED");

    // The enrollment reaches the box, which then recognises her tag.
    let box_knows = |shop: &tastesync_e2e::Shop| {
        shop.edge_ok(&["customers", "list", "--json", "--db", &shop.db()])
            .contains("\"M7\"")
    };
    assert!(
        eventually(15, || box_knows(&pos.shop)),
        "the enrollment reaches the box"
    );
    pos.customer_arrives(4);
    let arrived = eventually(15, || {
        console.database.query(
            "SELECT count(*) FROM events WHERE kind = 'customer_arrived' AND body->>'customer_ref' = 'M7'",
        ) == ["1"]
    });
    assert!(arrived, "her arrival reaches the cloud");
    // The tablet records her private feedback.
    let present = pos.wait_present(&tablet, 1);
    let visit = present[0]["visit_id"].as_str().unwrap().to_string();
    let recorded = pos
        .http
        .post(pos.url(&format!("/api/visits/{visit}/feedback")))
        .bearer_auth(&tablet)
        .json(
            &serde_json::json!({"action_id": "0190e6b2-0000-7000-8000-00000000f00d",
                                  "score": 5, "comment": "Minji loved the new blend"}),
        )
        .send()
        .unwrap();
    assert!(recorded.status().is_success(), "{:?}", recorded.text());
    assert!(eventually(15, || console.database.query(
        "SELECT count(*) FROM events WHERE kind = 'feedback_recorded'"
    ) == ["1"]));
    browser.tell("ARRIVED");
    browser.expect("SEEN");
    browser.expect("ERASED");
    assert!(!box_knows(&pos.shop), "the box deleted her");

    // The box stops: its status turns offline.
    assert!(
        pos.daemon.take().unwrap().terminate(),
        "the box stops cleanly"
    );
    browser.tell("STOPPED");
    browser.expect("OFFLINE");
    browser.expect("DONE");
    browser.finish();
    for shot in [
        "console-signin.png",
        "console-shops-online.png",
        "console-enroll.png",
        "console-analytics.png",
        "console-feedback.png",
        "console-erased.png",
        "console-shops-ko.png",
        "console-shops-offline.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot}");
    }
}
