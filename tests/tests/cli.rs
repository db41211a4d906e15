//! The command-line contract other programs rely on (README, "Interfaces").

use tastesync_e2e::*;

fn decode(hex: &str) -> (i32, serde_json::Value, String) {
    let output = run("tastesync-edge", &["decode", hex]);
    let json = serde_json::from_str(&stdout(&output)).unwrap_or(serde_json::Value::Null);
    (output.status.code().unwrap(), json, stderr(&output))
}

#[test]
fn decode_prints_one_json_object_per_format() {
    let cases = [
        (
            "0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00010002c5",
            "ibeacon",
            "uuid",
            "f7826da6-4fa2-4e98-8024-bc5b71e0893e",
        ),
        (
            "4c000215F7826DA64FA24E988024BC5B71E0893E00010002C5",
            "ibeacon",
            "uuid",
            "f7826da6-4fa2-4e98-8024-bc5b71e0893e",
        ),
        (
            "1bff1801beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c500",
            "altbeacon",
            "beacon_id",
            "2f234454cf6d4a0fadf2f4911ba9ffa600010002",
        ),
        (
            "0303aafe1516aafe00e700010203040506070809aabbccddeeff",
            "eddystone-uid",
            "instance",
            "aabbccddeeff",
        ),
        (
            "aafe10eb03676f6f676c6507",
            "eddystone-url",
            "url",
            "https://google.com",
        ),
        (
            "aafe30f65fc145abb9b102a7",
            "eddystone-eid",
            "eid",
            "5fc145abb9b102a7",
        ),
        (
            "02 01 06 03 03 aa fe 11 16 aa fe 20 00 0b b8 17 00 00 00 00 0a 00 00 00 64 00 00 00",
            "eddystone-tlm",
            "battery_mv",
            "3000",
        ),
        ("020106", "unknown", "format", "unknown"),
    ];
    for (hex, format, field, value) in cases {
        let (code, json, err) = decode(hex);
        assert_eq!(code, 0, "{hex}: {err}");
        assert_eq!(json["format"], format, "{hex}: {json}");
        let got = match &json[field] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(got, value, "{hex}: {json}");
    }
    let (_, tlm, _) = decode(
        "aafe20000bb81700000000 0a00000064"
            .replace(' ', "")
            .as_str(),
    );
    assert_eq!(tlm["temperature_c"], 23.0);
    assert_eq!(tlm["uptime_s"], 10.0);
}

#[test]
fn decode_rejects_bad_hex_with_exit_code_2() {
    for (bad, says) in [
        ("0201zz", "not a hex digit"),
        ("020", "odd number"),
        ("", "no bytes"),
    ] {
        let (code, json, err) = decode(bad);
        assert_eq!(code, 2, "{bad:?}");
        assert!(json.is_null(), "nothing on stdout for {bad:?}");
        assert!(err.contains(says), "{bad:?}: {err}");
    }
}

#[test]
fn eid_command_matches_the_specification_vector() {
    let output = run(
        "tastesync-edge",
        &[
            "eid",
            "--identity-key",
            "00112233445566778899aabbccddeeff",
            "--exponent",
            "10",
            "--time",
            "305419896",
        ],
    );
    assert!(output.status.success());
    assert_eq!(stdout(&output).trim(), "5fc145abb9b102a7");
    let bad = run(
        "tastesync-edge",
        &[
            "eid",
            "--identity-key",
            "0011",
            "--exponent",
            "10",
            "--time",
            "1",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("32 hex digits"));
    let bad = run(
        "tastesync-edge",
        &[
            "eid",
            "--identity-key",
            "00112233445566778899aabbccddeeff",
            "--exponent",
            "16",
            "--time",
            "1",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn owner_imports_lists_and_removes_customers() {
    let shop = Shop::new();
    let tag = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:14";
    shop.import_customers(&format!(
        "customer_ref,display_name,tier,notes,preferences,tag_ids\nC1,Minji Kim,gold,allergic to peanuts,oat latte,{tag}\n"
    ));
    let list = shop.edge_ok(&["customers", "list", "--db", &shop.db()]);
    assert!(
        list.contains("C1\tMinji Kim\tgold\t") && list.contains(tag),
        "{list}"
    );

    let bad = shop.write(
        "bad.csv",
        "customer_ref,display_name,tag_ids\nC2,Joon,\nC3,,\nC4,Bora,ibeacon:x\n",
    );
    let output = run(
        "tastesync-edge",
        &[
            "customers",
            "import",
            "--db",
            &shop.db(),
            bad.to_str().unwrap(),
        ],
    );
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("line 3: display_name is empty"), "{err}");
    assert!(err.contains("line 4: invalid tag id"), "{err}");
    let list = shop.edge_ok(&["customers", "list", "--db", &shop.db()]);
    assert!(!list.contains("C2"), "nothing half-imported: {list}");

    shop.edge_ok(&["customers", "remove", "--db", &shop.db(), "C1"]);
    assert_eq!(shop.edge_ok(&["customers", "list", "--db", &shop.db()]), "");
    let again = run(
        "tastesync-edge",
        &["customers", "remove", "--db", &shop.db(), "C1"],
    );
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn a_bad_config_file_is_explained() {
    let shop = Shop::new();
    let config = shop.write("edge.toml", "[presence]\narrive_rssi = \"loud\"\n");
    let output = run(
        "tastesync-edge",
        &["run", "--config", config.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("invalid configuration") && err.contains("arrive_rssi"),
        "{err}"
    );
}
