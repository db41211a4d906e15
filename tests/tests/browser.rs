//! A real browser: headless Chromium (Debian's) driven by Playwright (tests/browser/) through
//! the tablet and owner pages, while the box recognises a customer through the BLE path.
//! Screenshots land in target/test-artifacts/.

use tastesync_e2e::pos::PosBox;
use tastesync_e2e::{RunningFlow, browser_flow, now_ms};

#[test]
fn staff_see_an_arrival_within_a_second_and_handle_it_and_the_owner_sees_satisfaction() {
    let (mut flow, shots) = browser_flow("pos_flow.mjs");
    // Reached at the machine's LAN address, as a tablet on the shop's Wi-Fi reaches it: the
    // owner's first setup then needs the box's setup code.
    let mut pos = PosBox::start_on_lan("");
    let token = pos.pair("Browser tablet");
    let setup_code = pos.shop.edge_ok(&["setup-code", "--db", &pos.shop.db()]);
    let setup_code = setup_code.split_whitespace().nth(2).unwrap().to_string();

    let mut browser = RunningFlow::start(
        flow.env("BASE_URL", &pos.base)
            .env("DEVICE_TOKEN", &token)
            .env("CUSTOMER_NAME", "Minji Kim")
            .env("SETUP_CODE", &setup_code),
    );
    browser.expect("READY"); // the tablet page is live

    pos.customer_arrives(1); // the third sighting completes the arrival
    let injected = now_ms();
    let shown = browser.next_step();
    let shown: u64 = shown
        .strip_prefix("SHOWN ")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| browser.fail(&format!("the alert never appeared: {shown}")));
    let latency = shown.saturating_sub(injected);
    assert!(latency < 1000, "the alert took {latency} ms to appear");

    browser.expect("DONE");
    browser.finish();
    for shot in [
        "pos-alert.png",
        "pos-handled.png",
        "pos-korean.png",
        "owner-setup.png",
        "owner.png",
        "owner-claim.png",
        "owner-pin-changed.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot}");
    }
}
