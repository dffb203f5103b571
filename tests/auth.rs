//! PAT authentication through the real gateway: every refusal is a 401 (400 for a malformed
//! request) with a stable reason, a Bearer challenge, no token echoed, and no upstream request.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use common::*;
use serde_json::json;

const Q: &str = "{ posts { id } }";

/// Asserts the refusal contract and that the origin was never called.
async fn assert_refused(
    gw: &TestGateway,
    origin: &MockOrigin,
    authorization: &str,
    status: u16,
    reason: &str,
) {
    let before = origin.count();
    let resp = gw.query("/content", Some(authorization), Q).await;
    assert_eq!(resp.status().as_u16(), status, "for {reason}");
    if status == 401 {
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }
    assert!(resp.headers().contains_key("x-request-id"));
    let body: serde_json::Value = resp.json().await.unwrap();
    let code = if status == 401 {
        "UNAUTHENTICATED"
    } else {
        "BAD_REQUEST"
    };
    assert_eq!(body["errors"][0]["extensions"]["code"], code, "{body}");
    assert!(body["data"].is_null());
    let message = body["errors"][0]["message"].as_str().unwrap();
    if status == 401 {
        assert!(
            message.contains(reason),
            "reason {reason} missing from {message:?}"
        );
    }
    // Never echo the token.
    let token = authorization
        .split_once(' ')
        .map(|(_, t)| t)
        .unwrap_or(authorization);
    if token.len() > 8 {
        assert!(!body.to_string().contains(token), "token echoed");
    }
    assert_eq!(
        origin.count(),
        before,
        "the origin must not be called for {reason}"
    );
    if status == 401 {
        let n = gw
            .metric(&format!(
                "contentgate_auth_results_total{{reason=\"{reason}\"}}"
            ))
            .await;
        assert!(n >= 1.0, "metric for {reason} is {n}");
    }
    assert!(
        !gw.log().contains(token) || token.len() <= 8,
        "token logged"
    );
}

async fn setup() -> (MockOrigin, TestGateway) {
    let origin = MockOrigin::start().await;
    let tokens = [
        token_entry(
            "jti-reader",
            "reader",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n",
        ),
        token_entry(
            "jti-revoked",
            "old",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n",
        ),
        token_entry(
            "jti-editor",
            "editor",
            "DRAFT",
            "[[token.permission]]\naction = \"read\"\n",
        ),
    ]
    .concat();
    let gw = GatewayBuilder::new(&origin)
        .tokens(&tokens)
        .revoked("# revoked\njti-revoked\n")
        .start()
        .await;
    (origin, gw)
}

#[tokio::test]
async fn it_accepts_a_valid_es256_pat_and_sends_the_service_token_upstream() {
    let (origin, gw) = setup().await;
    let jwt = es("jti-reader");
    let resp = gw.query("/content", Some(&bearer(&jwt)), Q).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cache"], "BYPASS");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"data":{"posts":[{"id":"p1","title":"Hello"}]}}"#
    );
    let seen = origin.last();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {SERVICE_TOKEN}").as_str())
    );
    assert_eq!(seen.uri.path(), "/v2/project/master");
    assert_eq!(seen.header("x-request-id"), Some(rid.as_str()));
    assert_eq!(seen.header("gcms-stage"), Some("PUBLISHED"));
    assert_eq!(
        gw.metric("contentgate_auth_results_total{reason=\"ok\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn it_accepts_every_configured_algorithm_family_and_a_case_insensitive_scheme() {
    let (origin, gw) = setup().await;
    for kid in ["es", "rs", "ps", "ed", "hs"] {
        let jwt = mint(kid, "jti-reader", "https://issuer.test", "contentgate");
        let resp = gw
            .query("/content", Some(&format!("bEaReR {jwt}")), Q)
            .await;
        assert_eq!(resp.status(), 200, "{kid}: {}", resp.text().await.unwrap());
    }
    assert_eq!(origin.count(), 5);
}

#[tokio::test]
async fn the_same_jti_under_a_new_audience_or_issuer_is_the_same_token_and_revocation_kills_both() {
    let (origin, gw) = setup().await;
    let old = mint("es", "jti-editor", "https://issuer.test", "contentgate");
    let new = mint(
        "rs",
        "jti-editor",
        "https://issuer-new.test",
        "contentgate-v2",
    );
    assert_ne!(old, new);
    for jwt in [&old, &new] {
        let resp = gw.query("/content", Some(&bearer(jwt)), Q).await;
        assert_eq!(resp.status(), 200);
        // Same token, same default stage.
        assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));
    }
    write_atomic(
        &gw.policies().join("revoked.txt"),
        "jti-revoked\njti-editor\n",
    );
    gw.signal("HUP");
    gw.wait_generation(2).await;
    for jwt in [&old, &new] {
        assert_refused(&gw, &origin, &bearer(jwt), 401, "revoked").await;
    }
}

#[tokio::test]
async fn deleting_the_registry_entry_refuses_every_jwt_of_that_jti() {
    let (origin, gw) = setup().await;
    let jwt = es("jti-editor");
    assert_eq!(
        gw.query("/content", Some(&bearer(&jwt)), Q).await.status(),
        200
    );
    write_atomic(
        &gw.policies().join("tokens.toml"),
        token_entry(
            "jti-reader",
            "reader",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n",
        ),
    );
    gw.signal("HUP");
    gw.wait_generation(2).await;
    assert_refused(&gw, &origin, &bearer(&jwt), 401, "unknown_jti").await;
}

#[tokio::test]
async fn it_refuses_other_schemes_and_empty_bearers() {
    let (origin, gw) = setup().await;
    assert_refused(
        &gw,
        &origin,
        "Basic dXNlcjpwYXNz",
        401,
        "unsupported_scheme",
    )
    .await;
    assert_refused(&gw, &origin, "Bearer", 401, "missing_token").await;
    assert_refused(&gw, &origin, "Bearer    ", 401, "missing_token").await;
    assert_refused(
        &gw,
        &origin,
        &format!("Bearer-abc {}", es("jti-reader")),
        401,
        "unsupported_scheme",
    )
    .await;
}

#[tokio::test]
async fn it_refuses_alg_none() {
    let (origin, gw) = setup().await;
    for alg in ["none", "None", "NONE"] {
        let t = format!(
            "{}.{}.",
            seg(&json!({"alg": alg, "kid": "hs"})),
            seg(&json!({"jti": "jti-reader"}))
        );
        assert_refused(&gw, &origin, &bearer(&t), 401, "alg_none").await;
    }
}

#[tokio::test]
async fn it_refuses_algorithm_confusion_hs256_signed_with_the_rsa_public_key() {
    let (origin, gw) = setup().await;
    let public_pem = std::fs::read(format!("{KEYS}/rsa.pub.pem")).unwrap();
    contentgate::install_crypto_provider();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rs".into());
    let claims = json!({"jti": "jti-reader", "iss": "https://issuer.test", "aud": "contentgate"});
    let t = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_refused(&gw, &origin, &bearer(&t), 401, "alg_mismatch").await;
}

#[tokio::test]
async fn it_refuses_unknown_and_hostile_kids() {
    let (origin, gw) = setup().await;
    for kid in ["nope", "../../etc/passwd", &"k".repeat(5_000)] {
        let t = hs_raw(
            &json!({"alg": "HS256", "kid": kid}).to_string(),
            &json!({"jti": "jti-reader", "iss": "https://issuer.test", "aud": "contentgate"})
                .to_string(),
        );
        assert_refused(&gw, &origin, &bearer(&t), 401, "unknown_key").await;
    }
    let huge = hs_raw(
        &json!({"alg": "HS256", "kid": "k".repeat(10_000)}).to_string(),
        r#"{"jti":"jti-reader"}"#,
    );
    assert_refused(&gw, &origin, &bearer(&huge), 401, "token_too_large").await;
}

#[tokio::test]
async fn it_never_fetches_jku_x5u_or_embedded_jwk_keys() {
    let (origin, gw) = setup().await;
    let claims = json!({"jti": "jti-reader", "iss": "https://issuer.test", "aud": "contentgate"})
        .to_string();
    for extra in [
        json!({"jku": "http://127.0.0.1:1/jwks"}),
        json!({"x5u": "http://127.0.0.1:1/cert"}),
        json!({"jwk": {"kty": "oct", "k": "AAAA"}}),
    ] {
        let mut h = json!({"alg": "HS256", "kid": "hs"});
        h.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        assert_refused(
            &gw,
            &origin,
            &bearer(&hs_raw(&h.to_string(), &claims)),
            401,
            "key_reference",
        )
        .await;
    }
}

#[tokio::test]
async fn it_refuses_a_flipped_signature_bit() {
    let (origin, gw) = setup().await;
    let jwt = es("jti-reader");
    let (head, sig) = jwt.rsplit_once('.').unwrap();
    let mut bytes = sig.as_bytes().to_vec();
    bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{head}.{}", String::from_utf8(bytes).unwrap());
    assert_refused(&gw, &origin, &bearer(&tampered), 401, "bad_signature").await;
    let hs = mint("hs", "jti-reader", "https://issuer.test", "contentgate");
    let (head, sig) = hs.rsplit_once('.').unwrap();
    let flipped = format!(
        "{head}.{}{}",
        if sig.starts_with('A') { 'B' } else { 'A' },
        &sig[1..]
    );
    assert_refused(&gw, &origin, &bearer(&flipped), 401, "bad_signature").await;
}

#[tokio::test]
async fn it_refuses_malformed_tokens() {
    let (origin, gw) = setup().await;
    let jwt = es("jti-reader");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_refused(
        &gw,
        &origin,
        &bearer(&format!("{}.{}", parts[0], parts[1])),
        401,
        "malformed_token",
    )
    .await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&format!("{jwt}.extra")),
        401,
        "malformed_token",
    )
    .await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&format!("!!!.{}.{}", parts[1], parts[2])),
        401,
        "malformed_token",
    )
    .await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&format!(
            "{}.{}.{}",
            seg_raw("{not json"),
            parts[1],
            parts[2]
        )),
        401,
        "malformed_token",
    )
    .await;
    let bad_claims = hs_raw(r#"{"alg":"HS256","kid":"hs"}"#, "[1,2]");
    assert_refused(&gw, &origin, &bearer(&bad_claims), 401, "malformed_claims").await;
}

#[tokio::test]
async fn it_refuses_any_crit_header() {
    let (origin, gw) = setup().await;
    let t = hs_raw(
        r#"{"alg":"HS256","kid":"hs","crit":["exp"]}"#,
        &json!({"jti": "jti-reader", "iss": "https://issuer.test", "aud": "contentgate"})
            .to_string(),
    );
    assert_refused(&gw, &origin, &bearer(&t), 401, "crit_header").await;
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs_claims(c: serde_json::Value) -> String {
    hs_raw(r#"{"alg":"HS256","kid":"hs"}"#, &c.to_string())
}

#[tokio::test]
async fn it_refuses_expired_and_not_yet_valid_tokens_but_accepts_tokens_without_exp() {
    let (origin, gw) = setup().await;
    let base = |extra: serde_json::Value| {
        let mut c =
            json!({"jti": "jti-reader", "iss": "https://issuer.test", "aud": "contentgate"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        hs_claims(c)
    };
    assert_refused(
        &gw,
        &origin,
        &bearer(&base(json!({"exp": now() - 60}))),
        401,
        "expired",
    )
    .await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&base(json!({"nbf": now() + 3600}))),
        401,
        "not_yet_valid",
    )
    .await;
    // Inside the 5 s leeway, and permanent (no exp) tokens.
    for ok in [
        base(json!({"exp": now() + 3600})),
        base(json!({"exp": now() - 2})),
        base(json!({})),
    ] {
        assert_eq!(
            gw.query("/content", Some(&bearer(&ok)), Q).await.status(),
            200
        );
    }
}

#[tokio::test]
async fn it_refuses_wrong_or_wrong_typed_issuers_and_audiences() {
    let (origin, gw) = setup().await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&hs_claims(
            json!({"jti": "jti-reader", "iss": "https://evil.test", "aud": "contentgate"}),
        )),
        401,
        "bad_issuer",
    )
    .await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&hs_claims(
            json!({"jti": "jti-reader", "iss": 5, "aud": "contentgate"}),
        )),
        401,
        "bad_issuer",
    )
    .await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&hs_claims(
            json!({"jti": "jti-reader", "aud": "contentgate"}),
        )),
        401,
        "bad_issuer",
    )
    .await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&hs_claims(
            json!({"jti": "jti-reader", "iss": "https://issuer.test", "aud": "other"}),
        )),
        401,
        "bad_audience",
    )
    .await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&hs_claims(
            json!({"jti": "jti-reader", "iss": "https://issuer.test", "aud": 7}),
        )),
        401,
        "bad_audience",
    )
    .await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&hs_claims(
            json!({"jti": "jti-reader", "iss": "https://issuer.test"}),
        )),
        401,
        "bad_audience",
    )
    .await;
    let ok = hs_claims(
        json!({"jti": "jti-reader", "iss": "https://issuer-new.test", "aud": ["x", "contentgate-v2"]}),
    );
    assert_eq!(
        gw.query("/content", Some(&bearer(&ok)), Q).await.status(),
        200
    );
}

#[tokio::test]
async fn it_refuses_missing_empty_non_string_or_duplicated_jti() {
    let (origin, gw) = setup().await;
    let iss_aud = r#""iss":"https://issuer.test","aud":"contentgate""#;
    assert_refused(
        &gw,
        &origin,
        &bearer(&hs_raw(
            r#"{"alg":"HS256","kid":"hs"}"#,
            &format!("{{{iss_aud}}}"),
        )),
        401,
        "missing_jti",
    )
    .await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&hs_raw(
            r#"{"alg":"HS256","kid":"hs"}"#,
            &format!(r#"{{"jti":"",{iss_aud}}}"#),
        )),
        401,
        "missing_jti",
    )
    .await;
    assert_refused(
        &gw,
        &origin,
        &bearer(&hs_raw(
            r#"{"alg":"HS256","kid":"hs"}"#,
            &format!(r#"{{"jti":42,{iss_aud}}}"#),
        )),
        401,
        "malformed_claims",
    )
    .await;
    let dup = format!(r#"{{"jti":"jti-nobody","jti":"jti-reader",{iss_aud}}}"#);
    assert_refused(
        &gw,
        &origin,
        &bearer(&hs_raw(r#"{"alg":"HS256","kid":"hs"}"#, &dup)),
        401,
        "malformed_claims",
    )
    .await;
}

#[tokio::test]
async fn it_refuses_unknown_and_revoked_jtis() {
    let (origin, gw) = setup().await;
    assert_refused(&gw, &origin, &bearer(&es("jti-nobody")), 401, "unknown_jti").await;
    assert_refused(&gw, &origin, &bearer(&es("jti-revoked")), 401, "revoked").await;
    let log = gw.log();
    assert!(log.contains("token_refused"), "audit event missing");
}

#[tokio::test]
async fn it_refuses_tokens_over_8_kib_before_decoding() {
    let (origin, gw) = setup().await;
    let big = format!("{}.{}.sig", seg(&json!({"alg": "HS256"})), "A".repeat(9000));
    assert_refused(&gw, &origin, &bearer(&big), 401, "token_too_large").await;
}

#[tokio::test]
async fn two_authorization_headers_are_a_bad_request() {
    let (origin, gw) = setup().await;
    let jwt = es("jti-reader");
    let resp = gw
        .client
        .post(gw.url("/content"))
        .header("content-type", "application/json")
        .header("authorization", bearer(&jwt))
        .header("authorization", bearer(&jwt))
        .body(json!({"query": Q}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(origin.count(), 0);
    assert_eq!(
        gw.metric("contentgate_auth_results_total{reason=\"duplicate_header\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_token_in_the_query_string_or_a_cookie_is_ignored() {
    let (origin, gw) = setup().await;
    let jwt = es("jti-editor");
    let resp = gw
        .client
        .post(gw.url(&format!("/content?access_token={jwt}")))
        .header("content-type", "application/json")
        .header("cookie", format!("token={jwt}"))
        .body(json!({"query": Q}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Treated as the public principal: public default stage, not the editor's DRAFT.
    assert_eq!(origin.last().header("gcms-stage"), Some("PUBLISHED"));
    assert_eq!(
        gw.metric("contentgate_auth_results_total{reason=\"public\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn without_credentials_a_public_policy_that_grants_nothing_is_a_401() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .public(PUBLIC_NOTHING)
        .start()
        .await;
    let resp = gw.query("/cdn", None, Q).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(origin.count(), 0);
    assert_eq!(
        gw.metric("contentgate_auth_results_total{reason=\"missing_credentials\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_pinned_digest_stands_in_for_the_signature_of_a_cms_issued_token() {
    let origin = MockOrigin::start().await;
    // Signed with a key the gateway does not have (think: the CMS's own PAT).
    let cms_key = std::fs::read(format!("{KEYS}/other-es256.key.pem")).unwrap();
    contentgate::install_crypto_provider();
    let cms_token = contentgate::token::mint(&contentgate::token::MintRequest {
        algorithm: "ES256",
        key: &cms_key,
        kid: Some("cms-key"),
        jti: Some("jti-cms"),
        issuer: Some("https://cms.example"),
        audiences: &["https://cms.example/content".to_string()],
        subject: None,
        expires_in: None,
    })
    .unwrap()
    .0;
    let digest = contentgate::auth::token_digest_hex(&cms_token);
    let tokens = token_entry(
        "jti-cms",
        "cms-pat",
        "DRAFT",
        &format!("pinned_sha256 = [\"{digest}\"]\n[[token.permission]]\naction = \"read\"\n"),
    );
    let gw = GatewayBuilder::new(&origin).tokens(&tokens).start().await;
    let resp = gw.query("/content", Some(&bearer(&cms_token)), Q).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));
    // Another string for the same jti, not pinned and not verifiable: refused.
    let other = contentgate::token::mint(&contentgate::token::MintRequest {
        algorithm: "ES256",
        key: &cms_key,
        kid: Some("cms-key"),
        jti: Some("jti-cms"),
        issuer: Some("https://cms.example"),
        audiences: &[],
        subject: Some("x"),
        expires_in: None,
    })
    .unwrap()
    .0;
    assert_refused(&gw, &origin, &bearer(&other), 401, "unknown_key").await;
}
