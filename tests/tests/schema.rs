//! schemathesis against `/api/openapi.json` with a paired tablet's token: generated requests
//! (valid and invalid) never get a 5xx, and every response matches the documented schema,
//! status codes and content types.

use tastesync_e2e::assert_schemathesis_passes;
use tastesync_e2e::pos::PosBox;

#[test]
fn the_api_matches_its_openapi_document_under_generated_requests() {
    let mut pos = PosBox::start();
    let token = pos.pair("Schema tablet");
    pos.customer_arrives(1);
    pos.wait_present(&token, 1);
    assert_schemathesis_passes(
        &pos.url("/api/openapi.json"),
        &[
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--exclude-path",
            "/api/stream", // an endless event stream, tested in pos_api.rs
        ],
    );
}
