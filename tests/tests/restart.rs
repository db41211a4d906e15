//! A restart (an upgrade, a watchdog's restart) while customers are in the shop: their
//! visits go on and staff are not told again that they are here. A visit whose customer is
//! not heard again after the restart ends as if the box had stayed up.

use std::time::Duration;

use tastesync_e2e::pos::PosBox;

#[test]
fn customers_in_the_shop_are_not_announced_again_after_a_restart() {
    let mut pos = PosBox::start();
    let token = pos.pair("counter");
    pos.customer_arrives(1);
    pos.wait_present(&token, 1);
    let first = pos.shop.visits();
    assert_eq!(first.len(), 1, "{first:?}");

    pos.restart();
    // Minji is still at the counter; the tablet reconnects from its last event.
    let stream = pos.stream(&token, Some(0));
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        pos.customer_arrives(1);
        std::thread::sleep(Duration::from_millis(500));
    }
    let arrivals: Vec<_> = std::iter::from_fn(|| stream.recv_timeout(Duration::from_secs(2)).ok())
        .filter(|e| e.kind == "arrival")
        .collect();
    assert_eq!(
        arrivals.len(),
        1,
        "only the first arrival, replayed from the log: {arrivals:?}"
    );
    let visits = pos.shop.visits();
    assert_eq!(visits.len(), 1, "one visit across the restart: {visits:?}");
    assert_eq!(visits[0]["visit_id"], first[0]["visit_id"]);
    assert!(visits[0]["left_at_ms"].is_null(), "still open: {visits:?}");
    let present = pos.present(&token)["present"].as_array().unwrap().len();
    assert_eq!(present, 1);
}
