//! HQ's console API against the real service and PostgreSQL: who may do what, tokens
//! (refresh rotation and reuse, key rotation, an external OpenID provider, forged and
//! expired tokens), the sign-in failure budget, and schemathesis with an admin's token.

use std::io::{Read, Write};

use aws_lc_rs::encoding::AsDer;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tastesync_e2e::assert_schemathesis_passes;
use tastesync_e2e::console::Console;

const PASSWORD: &str = "a long enough password";

/// A chain of two shops, an admin, a manager of the first and an analyst.
fn chain() -> Console {
    let console = Console::start("");
    console.add_shop("seoul-1", "Seoul Station", "Asia/Seoul");
    console.add_shop("busan-1", "Busan Port", "Asia/Seoul");
    console.add_user("admin@example.com", "admin", &[], PASSWORD);
    console.add_user("manager@example.com", "manager", &["seoul-1"], PASSWORD);
    console.add_user("analyst@example.com", "analyst", &[], PASSWORD);
    console
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn every_route_wants_a_token_and_each_role_sees_only_its_part() {
    let console = chain();
    let admin = console.token("admin@example.com", PASSWORD);
    let manager = console.token("manager@example.com", PASSWORD);
    let analyst = console.token("analyst@example.com", PASSWORD);
    for (shop, name) in [("seoul-1", "Minji Kim"), ("busan-1", "Joon Park")] {
        let enrolled = console.call(
            "POST",
            "/api/v1/customers",
            Some(&admin),
            Some(
                json!({"customer_ref": format!("c-{shop}"), "display_name": name,
                        "notes": "allergic to peanuts", "shops": [shop]}),
            ),
        );
        assert_eq!(enrolled.status, StatusCode::CREATED, "{:?}", enrolled.body);
    }

    // No token, a token that is not one, a token for another audience: 401 with a challenge.
    let routes = [
        "/api/v1/shops",
        "/api/v1/customers",
        "/api/v1/customers/c-seoul-1",
        "/api/v1/customers/c-seoul-1/export",
        "/api/v1/erasures",
        "/api/v1/analytics",
        "/api/v1/feedback",
        "/api/v1/audit",
        "/api/v1/auth/me",
    ];
    for route in routes {
        for token in [None, Some("not-a-jwt"), Some("a.b.c")] {
            let answer = console.get(route, token);
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{route} {token:?}");
            assert!(answer.body["error"].as_str().is_some(), "{route}");
            assert_eq!(
                answer.headers["www-authenticate"],
                "Bearer realm=\"tastesync\""
            );
        }
    }

    // The analyst: chain analytics, nothing about people.
    for route in [
        "/api/v1/shops",
        "/api/v1/customers",
        "/api/v1/customers/c-seoul-1",
        "/api/v1/feedback",
        "/api/v1/audit",
        "/api/v1/erasures",
        "/api/v1/customers/c-seoul-1/export",
    ] {
        let answer = console.get(route, Some(&analyst));
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{route}: {:?}",
            answer.body
        );
    }
    let report = console.get("/api/v1/analytics", Some(&analyst));
    assert_eq!(report.status, StatusCode::OK);
    let text = report.body.to_string();
    assert!(!text.contains("Minji") && !text.contains("peanuts") && !text.contains("c-seoul-1"));

    // The manager: their shop's customers only; another shop's is not even found.
    let seen = console.get("/api/v1/customers", Some(&manager));
    let refs: Vec<&str> = seen
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer_ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["c-seoul-1"]);
    assert_eq!(
        console
            .get("/api/v1/customers/c-busan-1", Some(&manager))
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        console
            .get("/api/v1/customers?shop=busan-1", Some(&manager))
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        console
            .get("/api/v1/analytics?shop=busan-1", Some(&manager))
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        console
            .get("/api/v1/feedback?shop=busan-1", Some(&manager))
            .status,
        StatusCode::FORBIDDEN
    );
    let shops = console.get("/api/v1/shops", Some(&manager));
    assert_eq!(shops.body.as_array().unwrap().len(), 1);
    let outside = console.call(
        "POST",
        "/api/v1/customers",
        Some(&manager),
        Some(json!({"customer_ref": "c-new", "display_name": "New", "shops": ["busan-1"]})),
    );
    assert_eq!(outside.status, StatusCode::FORBIDDEN, "{:?}", outside.body);
    // An admin-only action.
    for (method, route) in [
        ("POST", "/api/v1/boxes/any-box/revoke"),
        ("POST", "/api/v1/shops"),
    ] {
        let answer = console.call(method, route, Some(&manager), Some(json!({"shop_id": "x"})));
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{route}");
    }
    // Moving a customer who is also in Busan keeps Busan; deleting them is an admin's call.
    let both = console.call(
        "PUT",
        "/api/v1/customers/c-busan-1",
        Some(&admin),
        Some(json!({"display_name": "Joon Park", "shops": ["busan-1", "seoul-1"]})),
    );
    assert_eq!(both.status, StatusCode::OK, "{:?}", both.body);
    let edited = console.call(
        "PUT",
        "/api/v1/customers/c-busan-1",
        Some(&manager),
        Some(json!({"display_name": "Joon P.", "shops": []})),
    );
    assert_eq!(edited.status, StatusCode::OK, "{:?}", edited.body);
    assert_eq!(edited.body["customer"]["shops"], json!(["busan-1"]));
    let both = console.call(
        "PUT",
        "/api/v1/customers/c-busan-1",
        Some(&admin),
        Some(json!({"display_name": "Joon Park", "shops": ["busan-1", "seoul-1"]})),
    );
    assert_eq!(both.status, StatusCode::OK);
    let deleted = console.call(
        "DELETE",
        "/api/v1/customers/c-busan-1",
        Some(&manager),
        None,
    );
    assert_eq!(deleted.status, StatusCode::FORBIDDEN, "{:?}", deleted.body);
    assert_eq!(
        console
            .call(
                "DELETE",
                "/api/v1/customers/c-seoul-1",
                Some(&manager),
                None
            )
            .status,
        StatusCode::NO_CONTENT
    );

    // Every change is in the audit log, which nobody can rewrite.
    let audit = console.get("/api/v1/audit", Some(&admin));
    let actions: Vec<(String, String)> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for expected in [
        ("admin@example.com", "customer_enrolled"),
        ("manager@example.com", "customer_updated"),
        ("manager@example.com", "customer_deleted"),
        ("analyst@example.com", "sign_in"),
    ] {
        assert!(
            actions.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} missing from {actions:?}"
        );
    }
    let error = console.database.query_err("DELETE FROM audit_log");
    assert!(error.contains("append-only"), "{error}");
    let error = console
        .database
        .query_err("UPDATE audit_log SET actor = 'nobody'");
    assert!(error.contains("append-only"), "{error}");
}

#[test]
fn refresh_tokens_rotate_and_a_reused_one_ends_the_session() {
    let console = chain();
    let login = console.login("manager@example.com", PASSWORD);
    let first = login.body["refresh_token"].as_str().unwrap().to_string();
    let refresh = |token: &str| {
        console.call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": token})),
        )
    };
    let next = refresh(&first);
    assert_eq!(next.status, StatusCode::OK, "{:?}", next.body);
    let second = next.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let access = next.body["access_token"].as_str().unwrap();
    assert_eq!(
        console.get("/api/v1/auth/me", Some(access)).body["email"],
        "manager@example.com"
    );

    // The spent token again: a copy. The whole family ends, the live token too.
    let reused = refresh(&first);
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
    assert!(
        reused.body["error"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    assert_eq!(refresh(&second).status, StatusCode::UNAUTHORIZED);
    let admin = console.token("admin@example.com", PASSWORD);
    let audit = console.get("/api/v1/audit?action=refresh_token_reused", Some(&admin));
    assert_eq!(audit.body.as_array().unwrap().len(), 1, "{:?}", audit.body);

    // Another session of the same user is untouched; signing out ends it.
    let other = console.login("manager@example.com", PASSWORD).body["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let other = refresh(&other).body["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        console
            .call(
                "POST",
                "/api/v1/auth/logout",
                None,
                Some(json!({"refresh_token": other}))
            )
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(refresh(&other).status, StatusCode::UNAUTHORIZED);
    assert_eq!(refresh("made-up").status, StatusCode::UNAUTHORIZED);

    // A disabled user's sessions end.
    let session = console.login("analyst@example.com", PASSWORD).body["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    console.command(&["users", "disable", "--email", "analyst@example.com"], "");
    assert_eq!(refresh(&session).status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        console.login("analyst@example.com", PASSWORD).status,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn rotating_the_signing_key_signs_nobody_out_and_forged_tokens_are_refused() {
    let console = chain();
    let before = console.token("admin@example.com", PASSWORD);
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let rotated: Value =
        serde_json::from_str(console.command(&["keys", "rotate"], "").trim()).unwrap();
    let new_kid = rotated["kid"].as_str().unwrap();
    assert_ne!(kid(&before), new_kid);
    // A token from before the rotation still works; new ones carry the new key, which an
    // instance picks up for signing within its reload interval.
    assert_eq!(
        console.get("/api/v1/auth/me", Some(&before)).status,
        StatusCode::OK
    );
    let picked_up = tastesync_e2e::cloud::eventually(40, || {
        kid(&console.token("manager@example.com", PASSWORD)) == new_kid
    });
    assert!(picked_up, "new tokens are not signed with the new key");
    let jwks: JwkSet =
        serde_json::from_value(console.get("/.well-known/jwks.json", None).body).unwrap();
    let kids: Vec<&str> = jwks
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.as_deref())
        .collect();
    assert!(
        kids.contains(&kid(&before).as_str()) && kids.contains(&new_kid),
        "{kids:?}"
    );

    // Forged: our key id with another key; our key but expired; our key, another audience;
    // an unsigned token; HS256 with the public key as the secret.
    let pem = console
        .database
        .query(&format!(
            "SELECT private_key_pem FROM signing_keys WHERE kid = '{new_kid}'"
        ))
        .join("\n");
    let ours = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let (_, other_pem) = rsa_key();
    let other = EncodingKey::from_rsa_pem(other_pem.as_bytes()).unwrap();
    let claims = |exp: u64, aud: &str| {
        json!({"iss": "tastesync-cloud", "aud": aud, "sub": "1", "email": "admin@example.com",
               "role": "admin", "shops": [], "iat": now_s(), "exp": exp})
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(new_kid.to_string());
    let sign =
        |key: &EncodingKey, claims: Value| jsonwebtoken::encode(&header, &claims, key).unwrap();
    let valid = sign(&ours, claims(now_s() + 300, "tastesync-console"));
    assert_eq!(
        console.get("/api/v1/auth/me", Some(&valid)).status,
        StatusCode::OK
    );
    for (what, token) in [
        (
            "another key",
            sign(&other, claims(now_s() + 300, "tastesync-console")),
        ),
        (
            "expired",
            sign(&ours, claims(now_s() - 120, "tastesync-console")),
        ),
        (
            "another audience",
            sign(&ours, claims(now_s() + 300, "somebody-else")),
        ),
        ("unsigned", {
            let parts: Vec<&str> = valid.split('.').collect();
            let none = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!(r#"{{"alg":"none","kid":"{new_kid}"}}"#));
            format!("{none}.{}.", parts[1])
        }),
        ("HS256", {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(new_kid.to_string());
            jsonwebtoken::encode(
                &header,
                &claims(now_s() + 300, "tastesync-console"),
                &EncodingKey::from_secret(pem.as_bytes()).unwrap(),
            )
            .unwrap()
        }),
    ] {
        let answer = console.get("/api/v1/auth/me", Some(&token));
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {:?}",
            answer.body
        );
    }
    let expired = console.get(
        "/api/v1/auth/me",
        Some(&sign(&ours, claims(now_s() - 120, "tastesync-console"))),
    );
    assert!(expired.body["error"].as_str().unwrap().contains("expired"));
}

#[test]
fn an_external_providers_token_signs_in_a_console_user_it_names() {
    let (provider_kid, provider_pem) = rsa_key();
    let provider = EncodingKey::from_rsa_pem(provider_pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&provider, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(provider_kid.clone());
    let jwks_port = serve_forever(serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap());
    let console = Console::start(&format!(
        "[console.oidc]\nissuer = \"https://id.example.test\"\n\
         jwks_url = \"http://127.0.0.1:{jwks_port}/jwks\"\naudience = \"tastesync-hq\"\n"
    ));
    console.add_shop("seoul-1", "Seoul Station", "Asia/Seoul");
    let token = |email: &str, aud: &str, exp: u64, kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        let claims = json!({"iss": "https://id.example.test", "aud": aud, "sub": "ext-1",
                            "email": email, "email_verified": true, "exp": exp, "iat": now_s()});
        jsonwebtoken::encode(&header, &claims, &provider).unwrap()
    };
    let good = token(
        "Ext@Example.com",
        "tastesync-hq",
        now_s() + 300,
        &provider_kid,
    );
    // Signed in with the provider, but not a console user yet.
    let answer = console.get("/api/v1/auth/me", Some(&good));
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{:?}", answer.body);
    console.command(
        &[
            "users",
            "add",
            "--email",
            "ext@example.com",
            "--role",
            "manager",
            "--shop",
            "seoul-1",
            "--external",
        ],
        "",
    );
    let me = console.get("/api/v1/auth/me", Some(&good));
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body["role"], "manager");
    assert_eq!(me.body["has_password"], false);
    assert_eq!(
        console.get("/api/v1/customers", Some(&good)).status,
        StatusCode::OK
    );
    assert_eq!(
        console.get("/api/v1/audit", Some(&good)).status,
        StatusCode::FORBIDDEN
    );
    for (what, bad) in [
        (
            "another audience",
            token(
                "ext@example.com",
                "someone-else",
                now_s() + 300,
                &provider_kid,
            ),
        ),
        (
            "expired",
            token(
                "ext@example.com",
                "tastesync-hq",
                now_s() - 300,
                &provider_kid,
            ),
        ),
        (
            "an unknown key",
            token(
                "ext@example.com",
                "tastesync-hq",
                now_s() + 300,
                "no-such-key",
            ),
        ),
    ] {
        let answer = console.get("/api/v1/auth/me", Some(&bad));
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {:?}",
            answer.body
        );
    }
    // No password to sign in with.
    assert_eq!(
        console.login("ext@example.com", "").status,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn failed_sign_ins_are_budgeted_per_account_whatever_the_password() {
    let console = chain();
    for attempt in 0..10 {
        let answer = console.login("manager@example.com", "wrong password!");
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        assert_eq!(answer.body["error"], "wrong email or password");
    }
    // The budget is spent: even the right password waits.
    let refused = console.login("manager@example.com", PASSWORD);
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        refused.body
    );
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    // Another account from the same address still signs in; an unknown one is told the same
    // as a wrong password.
    assert_eq!(
        console.login("admin@example.com", PASSWORD).status,
        StatusCode::OK
    );
    assert_eq!(
        console.login("nobody@example.com", PASSWORD).status,
        StatusCode::UNAUTHORIZED
    );
    // Bad requests say why.
    let bad = console.call(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"email": 1})),
    );
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body["error"]
            .as_str()
            .unwrap()
            .contains("invalid JSON body")
    );
    let admin = console.token("admin@example.com", PASSWORD);
    let refusals = console.get("/api/v1/audit?action=sign_in_refused", Some(&admin));
    assert_eq!(refusals.body.as_array().unwrap().len(), 11);
}

#[test]
fn schemathesis_finds_no_server_error_in_the_console_api_with_an_admins_token() {
    let console = chain();
    let admin = console.token("admin@example.com", PASSWORD);
    let enrolled = console.call(
        "POST",
        "/api/v1/customers",
        Some(&admin),
        Some(json!({"customer_ref": "c-1", "display_name": "Minji", "shops": ["seoul-1"]})),
    );
    assert_eq!(enrolled.status, StatusCode::CREATED);
    assert_schemathesis_passes(
        &console.url("/api/v1/openapi.json"),
        &["--header", &format!("Authorization: Bearer {admin}")],
    );
}

#[test]
fn a_request_refused_before_its_body_is_read_still_gets_its_answer() {
    // A client without a token sends a large body slowly: it must read its 401, not find
    // the connection closed under it while it is still sending.
    let console = Console::start("");
    let address = console.base.trim_start_matches("http://").to_string();
    let body = vec![b'a'; 1 << 20];
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        socket,
        "POST /api/v1/customers/c-1/erasure HTTP/1.1\r\nHost: console\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    for chunk in body.chunks(64 << 10) {
        socket
            .write_all(chunk)
            .expect("the server reads the whole request");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");

    // Just past the limit: a clear 413.
    let big = vec![b'a'; (2 << 20) + 1];
    let answer = tastesync_e2e::http()
        .post(console.url("/api/v1/customers"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// A new RSA-2048 key: an id and its PKCS#8 PEM.
fn rsa_key() -> (String, String) {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = pair.as_der().unwrap();
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    let mut id = [0u8; 4];
    aws_lc_rs::rand::fill(&mut id).unwrap();
    (
        format!("test-{}", hex::encode(id)),
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        ),
    )
}

/// Answers every HTTP request on a loopback port with `body` (JSON); the port.
fn serve_forever(body: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}
