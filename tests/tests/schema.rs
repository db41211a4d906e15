//! schemathesis against `/api/openapi.json` with a paired tablet's token: generated requests
//! (valid and invalid) never get a 5xx, and every response matches the documented schema,
//! status codes and content types.

use std::process::Command;

use tastesync_e2e::pos::PosBox;
use tastesync_e2e::{schemathesis, stderr, stdout};

#[test]
fn the_api_matches_its_openapi_document_under_generated_requests() {
    let mut pos = PosBox::start();
    let token = pos.pair("Schema tablet");
    pos.customer_arrives(1);
    pos.wait_present(&token, 1);
    let output = Command::new(schemathesis())
        .args([
            "run",
            &pos.url("/api/openapi.json"),
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--exclude-path",
            "/api/stream", // an endless event stream, tested in pos_api.rs
            "--max-examples",
            "30",
            "--seed",
            "1",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let report = stdout(&output);
    assert!(output.status.success(), "{report}\n{}", stderr(&output));
    // e.g. "654 generated, 654 passed"
    let cases = report
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        cases.contains(" passed") && !cases.contains("fail"),
        "{cases}"
    );
}
