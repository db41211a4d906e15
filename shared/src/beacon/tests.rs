//! Decoder tests written from the published frame specifications.

use super::*;
use crate::hexfmt::parse;

fn bytes(text: &str) -> Vec<u8> {
    parse(&text.replace(' ', "")).expect("test hex")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::to_value(decode_any(&bytes(text))).unwrap()
}

#[test]
fn ibeacon_in_full_advertisement_with_padding() {
    // flags, then manufacturer data: Apple, type 0x02, length 0x15, UUID, major 1, minor 2,
    // measured power -59 dBm (0xc5); zero padding follows as in a 31-byte legacy PDU.
    let ad = "02 01 06 1a ff 4c 00 02 15 f7826da64fa24e988024bc5b71e0893e 0001 0002 c5 0000";
    let beacon = decode_advertisement(&bytes(ad)).unwrap().unwrap();
    assert_eq!(
        beacon,
        Beacon::IBeacon {
            uuid: crate::hexfmt::parse_fixed("f7826da64fa24e988024bc5b71e0893e").unwrap(),
            major: 1,
            minor: 2,
            tx_power: -59,
        }
    );
    let v = json(ad);
    assert_eq!(v["format"], "ibeacon");
    assert_eq!(v["uuid"], "f7826da6-4fa2-4e98-8024-bc5b71e0893e");
    assert_eq!(v["major"], 1);
    assert_eq!(v["minor"], 2);
    assert_eq!(v["tx_power"], -59);
    assert_eq!(v["manufacturer_id"], 76);
    assert_eq!(
        v["tag_id"],
        "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2"
    );
}

#[test]
fn ibeacon_from_manufacturer_data_alone_big_endian_major_minor() {
    let v = json("4c00 0215 e2c56db5dffb48d2b060d0f5a71096e0 ff01 8000 bf");
    assert_eq!(v["format"], "ibeacon");
    assert_eq!(v["major"], 0xff01);
    assert_eq!(v["minor"], 0x8000);
    assert_eq!(v["tx_power"], -65);
}

#[test]
fn ibeacon_needs_apple_company_id() {
    let v = json("4d00 0215 e2c56db5dffb48d2b060d0f5a71096e0 0001 0001 bf");
    assert_eq!(v["format"], "unknown");
}

#[test]
fn altbeacon_under_any_manufacturer() {
    // Radius Networks (0x0118) and an arbitrary company: same frame layout.
    for company in ["1801", "ffff"] {
        let ad = format!("1b ff {company} beac 2f234454cf6d4a0fadf2f4911ba9ffa6 0001 0002 c5 2a");
        let v = json(&ad);
        assert_eq!(v["format"], "altbeacon", "{ad}");
        assert_eq!(
            v["manufacturer_id"],
            u16::from_le_bytes(bytes(company).try_into().unwrap())
        );
        assert_eq!(v["beacon_id"], "2f234454cf6d4a0fadf2f4911ba9ffa600010002");
        assert_eq!(v["uuid"], "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6");
        assert_eq!(v["major"], 1);
        assert_eq!(v["minor"], 2);
        assert_eq!(v["tx_power"], -59);
        assert_eq!(v["mfg_reserved"], 42);
        assert_eq!(
            v["tag_id"],
            "altbeacon:2f234454cf6d4a0fadf2f4911ba9ffa600010002"
        );
    }
}

#[test]
fn eddystone_uid_with_and_without_rfu() {
    let with_rfu = "02 01 06 03 03 aafe 17 16 aafe 00 e7 00010203040506070809 0a0b0c0d0e0f 0000";
    let v = json(with_rfu);
    assert_eq!(v["format"], "eddystone-uid");
    assert_eq!(v["namespace"], "00010203040506070809");
    assert_eq!(v["instance"], "0a0b0c0d0e0f");
    assert_eq!(v["tx_power"], -25);
    assert_eq!(
        v["tag_id"],
        "eddystone-uid:00010203040506070809:0a0b0c0d0e0f"
    );
    let service_data_alone = "aafe 00 e7 00010203040506070809 0a0b0c0d0e0f";
    assert_eq!(json(service_data_alone)["instance"], "0a0b0c0d0e0f");
}

#[test]
fn eddystone_url_schemes_and_expansions() {
    // https://www. + "goo" + ".gl/" is not an expansion: spelled out; then ".com/" code 0x00.
    let cases = [
        ("aafe 10 eb 01 676f6f676c65 07", "https://www.google.com"),
        (
            "aafe 10 eb 03 6578616d706c65 00 61",
            "https://example.com/a",
        ),
        (
            "aafe 10 eb 00 74617374657379 6e63 08",
            "http://www.tastesync.org",
        ),
        ("aafe 10 eb 02 61 0d", "http://a.gov"),
        ("aafe 10 eb 02 61 05 62", "http://a.biz/b"),
    ];
    for (frame, url) in cases {
        let v = json(frame);
        assert_eq!(v["format"], "eddystone-url", "{frame}");
        assert_eq!(v["url"], url, "{frame}");
        assert_eq!(v["tx_power"], -21);
    }
    // Reserved scheme byte and reserved code points are not URL frames.
    assert_eq!(json("aafe 10 eb 04 61")["format"], "unknown");
    assert_eq!(json("aafe 10 eb 02 61 20")["format"], "unknown");
    assert_eq!(json("aafe 10 eb 02 61 7f")["format"], "unknown");
}

#[test]
fn eddystone_tlm_plain_fixed_point_and_units() {
    // VBATT 3000 mV, TEMP 0xfe80 = -1.5 °C (signed 8.8), ADV_CNT 1000, SEC_CNT 12345 = 1234.5 s
    let v = json("aafe 20 00 0bb8 fe80 000003e8 00003039");
    assert_eq!(v["format"], "eddystone-tlm");
    assert_eq!(v["encrypted"], false);
    assert_eq!(v["battery_mv"], 3000);
    assert_eq!(v["temperature_c"], -1.5);
    assert_eq!(v["adv_count"], 1000);
    assert_eq!(v["uptime_s"], 1234.5);

    let v = json("aafe 20 00 0000 8000 00000001 00000000");
    assert!(v["battery_mv"].is_null(), "0 mV means not supported");
    assert!(v["temperature_c"].is_null(), "0x8000 means not supported");

    let v = json("aafe 20 00 0c80 1980 00000001 00000000");
    assert_eq!(v["temperature_c"], 25.5);
}

#[test]
fn eddystone_tlm_encrypted_is_recognised() {
    let v = json("aafe 20 01 000102030405060708090a0b 1234 abcd");
    assert_eq!(v["format"], "eddystone-tlm");
    assert_eq!(v["encrypted"], true);
    assert_eq!(v["etlm"], "000102030405060708090a0b");
    assert_eq!(v["salt"], "1234");
    assert_eq!(v["mic"], "abcd");
}

#[test]
fn eddystone_eid() {
    let v = json("02 01 06 03 03 aafe 0d 16 aafe 30 f6 5fc145abb9b102a7");
    assert_eq!(v["format"], "eddystone-eid");
    assert_eq!(v["eid"], "5fc145abb9b102a7");
    assert_eq!(v["tx_power"], -10);
    assert!(v.get("tag_id").is_none(), "an EID is not a static tag");
}

#[test]
fn malformed_and_foreign_data_is_unknown_with_a_reason() {
    for text in [
        "ff",                      // length runs past the end
        "02 01 06 00 05",          // garbage after the end marker
        "02 01 06 03 03 aafe",     // well-formed, no beacon
        "1a ff 4c00 0215 0011",    // truncated iBeacon
        "aafe 40 00",              // reserved Eddystone frame type
        "aafe 30 f6 5fc145abb9b1", // EID too short
    ] {
        let decoded = decode_any(&bytes(text));
        assert!(decoded.beacon.is_none(), "{text}");
        assert!(decoded.reason.is_some(), "{text}");
        assert_eq!(json(text)["format"], "unknown");
    }
    assert_eq!(decode_advertisement(&[]), Err(AdError::Empty));
    assert_eq!(
        decode_advertisement(&bytes("02 01 06 05 ff 4c")),
        Err(AdError::Truncated {
            offset: 3,
            declared: 5,
            available: 2
        })
    );
}

#[test]
fn tag_ids_round_trip() {
    for text in [
        "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:65535",
        "altbeacon:2f234454cf6d4a0fadf2f4911ba9ffa600010002",
        "eddystone-uid:00010203040506070809:0a0b0c0d0e0f",
    ] {
        let tag: TagId = text.parse().unwrap();
        assert_eq!(tag.to_string(), text);
    }
    for bad in [
        "ibeacon:f7826da6:1:2",
        "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:65536",
        "altbeacon:00",
        "eddystone-uid:0001:02",
        "qr:123",
    ] {
        let err = bad.parse::<TagId>().unwrap_err();
        assert!(
            err.to_string().contains("expected ibeacon:"),
            "{bad}: {err}"
        );
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_advertisement(&data);
            let decoded = decode_any(&data);
            let _ = serde_json::to_string(&decoded).unwrap();
        }

        #[test]
        fn any_ibeacon_round_trips(uuid in any::<[u8; 16]>(), major in any::<u16>(),
                                   minor in any::<u16>(), tx in any::<i8>(), pad in 0usize..4) {
            let mut ad = vec![0x02, 0x01, 0x06, 0x1a, 0xff, 0x4c, 0x00, 0x02, 0x15];
            ad.extend_from_slice(&uuid);
            ad.extend_from_slice(&major.to_be_bytes());
            ad.extend_from_slice(&minor.to_be_bytes());
            ad.push(tx as u8);
            ad.extend(std::iter::repeat_n(0, pad));
            let beacon = decode_advertisement(&ad).unwrap().unwrap();
            prop_assert_eq!(beacon, Beacon::IBeacon { uuid, major, minor, tx_power: tx });
        }

        #[test]
        fn structures_inside_valid_framing_never_error(
            records in proptest::collection::vec((1u8..=255, proptest::collection::vec(any::<u8>(), 0..8)), 1..4)
        ) {
            let mut ad = Vec::new();
            for (ad_type, data) in &records {
                ad.push(data.len() as u8 + 1);
                ad.push(*ad_type);
                ad.extend_from_slice(data);
            }
            prop_assert!(decode_advertisement(&ad).is_ok());
        }
    }
}
