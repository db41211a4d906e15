//! `tastesync-edge demo`, as a newcomer runs it: seeded customers show up in the terminal.

use tastesync_e2e::*;

#[test]
fn the_demo_shows_arrivals_with_what_staff_need_to_know() {
    let shop = Shop::new();
    let output = run(
        "tastesync-edge",
        &[
            "demo",
            "--duration",
            "20",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &shop.db(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("▶ Minji Kim is here (gold): 14th visit, last 3 days ago · usually oat latte · careful: allergic to peanuts"),
        "{text}"
    );
    assert!(
        text.contains("▶ Joon Park is here (silver): 5th visit"),
        "{text}"
    );
    assert!(!text.contains("cannot describe"), "{text}");
    assert!(text.contains("advertisements heard"), "{text}");
    assert!(
        text.contains("POS page (a paired demo tablet): http://127.0.0.1:"),
        "{text}"
    );
}
