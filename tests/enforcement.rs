//! Regression tests for the enforcement review ("Enforcement you can trust"): each finding,
//! through the real binary, against a recording origin — the request is refused and the origin
//! untouched, or it is allowed and the origin receives exactly what was checked.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use common::*;
use serde_json::{json, Value};

/// The Hygraph-convention fixture: root `stage`/`locales` arguments default to DRAFT / [en].
fn hygraph_sdl(root_default: &str) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hygraph.graphql"
    ))
    .unwrap()
    .replace(
        "stage: Stage! = DRAFT",
        &format!("stage: Stage! = {root_default}"),
    )
}

fn token() -> String {
    bearer(&es("jti-t"))
}

async fn gateway_with(public: &str, perms: &str, default_stage: &str) -> (MockOrigin, TestGateway) {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .schema(Some(hygraph_sdl("DRAFT")))
        .public(public)
        .tokens(&token_entry("jti-t", "tester", default_stage, perms))
        .start()
        .await;
    (origin, gw)
}

/// POSTs `body` (a JSON value) with optional token and headers.
async fn post(
    gw: &TestGateway,
    path: &str,
    auth: Option<&str>,
    body: &Value,
    headers: &[(&str, &[u8])],
) -> (u16, Value) {
    let mut req = gw
        .client
        .post(gw.url(path))
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    for (k, v) in headers {
        req = req.header(*k, reqwest::header::HeaderValue::from_bytes(v).unwrap());
    }
    let resp = req.body(body.to_string()).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn expect(
    gw: &TestGateway,
    origin: &MockOrigin,
    auth: Option<&str>,
    query: &str,
    headers: &[(&str, &[u8])],
    status: u16,
) -> Value {
    let before = origin.count();
    let (got, body) = post(gw, "/content", auth, &json!({ "query": query }), headers).await;
    assert_eq!(got, status, "{query}: {body}");
    let reached = origin.count() - before;
    assert_eq!(
        reached,
        usize::from(status == 200),
        "{query}: the origin must be called only for an allowed request"
    );
    body
}

const DE_ONLY_PUBLIC: &str = "default_stage = \"PUBLISHED\"\n\
[[permission]]\naction = \"read\"\nstages = [\"PUBLISHED\"]\nlocales = [\"de\"]\n";

#[tokio::test]
async fn an_empty_locales_list_is_checked_as_the_locale_the_cms_will_serve() {
    let (origin, gw) = gateway_with(DE_ONLY_PUBLIC, "", "PUBLISHED").await;
    expect(
        &gw,
        &origin,
        None,
        "{ posts(locales: []) { title } }",
        &[],
        403,
    )
    .await;
    expect(
        &gw,
        &origin,
        None,
        "query Q($l: [Locale!]! = []) { posts(locales: $l) { title } }",
        &[],
        403,
    )
    .await;
    // The same empty list with a `de` fallback header: the CMS serves `de`.
    expect(
        &gw,
        &origin,
        None,
        "{ posts(locales: []) { title } }",
        &[("gcms-locales", b"de")],
        200,
    )
    .await;
    assert_eq!(origin.last().header("gcms-locales"), Some("de"));
    // No locale anywhere: the CMS default (en) is what is checked, and what is sent.
    expect(&gw, &origin, None, "{ posts { title } }", &[], 403).await;
    expect(
        &gw,
        &origin,
        None,
        "{ posts(locales: [de]) { title } }",
        &[],
        200,
    )
    .await;
    assert_eq!(origin.last().header("gcms-locales"), Some("en"));
}

#[tokio::test]
async fn header_values_are_exact_ascii_and_forwarded_as_checked() {
    let (origin, gw) = gateway_with(DE_ONLY_PUBLIC, "", "PUBLISHED").await;
    for (name, value) in [
        ("gcms-locales", &b"de\xc2\xa0"[..]),
        ("gcms-locales", b"\xc2\xa0de"),
        ("gcms-stage", b"PUBLISHED\xc2\xa0"),
        ("gcms-locales", b"de,,en"),
    ] {
        let before = origin.count();
        let (status, body) = post(
            &gw,
            "/content",
            None,
            &json!({"query": "{ posts { title } }"}),
            &[(name, value)],
        )
        .await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(origin.count(), before);
    }
    // ASCII spaces around list items are fine; the canonical value goes upstream.
    expect(
        &gw,
        &origin,
        None,
        "{ posts { title } }",
        &[("gcms-locales", b" de "), ("gcms-stage", b"PUBLISHED")],
        200,
    )
    .await;
    let seen = origin.last();
    assert_eq!(seen.header("gcms-locales"), Some("de"));
    assert_eq!(seen.header("gcms-stage"), Some("PUBLISHED"));
}

#[tokio::test]
async fn a_schema_root_default_never_decides_the_stage() {
    for root_default in ["DRAFT", "PUBLISHED"] {
        let origin = MockOrigin::start().await;
        let tokens = token_entry(
            "jti-t",
            "drafter",
            "DRAFT",
            "[[token.permission]]\naction = \"read\"\nstages = [\"DRAFT\"]\n",
        );
        let gw = GatewayBuilder::new(&origin)
            .schema(Some(hygraph_sdl(root_default)))
            .tokens(&tokens)
            .start()
            .await;
        // Public (default PUBLISHED, read PUBLISHED): allowed, and told PUBLISHED.
        expect(&gw, &origin, None, "{ posts { title } }", &[], 200).await;
        assert_eq!(origin.last().header("gcms-stage"), Some("PUBLISHED"));
        // The token's own default reaches the CMS whatever the schema says.
        expect(
            &gw,
            &origin,
            Some(&token()),
            "{ posts { title } }",
            &[],
            200,
        )
        .await;
        assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));
        // Public may not read drafts, named or defaulted by the schema.
        expect(
            &gw,
            &origin,
            None,
            "{ posts(stage: DRAFT) { title } }",
            &[],
            403,
        )
        .await;
        // Nested context arguments keep their schema defaults: documentInStages reads both.
        expect(
            &gw,
            &origin,
            None,
            "{ posts { documentInStages(inheritLocale: true) { title } } }",
            &[],
            403,
        )
        .await;
    }
}

#[tokio::test]
async fn write_grants_are_limited_to_their_locales() {
    let translator = "[[token.permission]]\naction = \"read\"\n\
[[token.permission]]\naction = \"update\"\nlocales = [\"de\"]\n\
[[token.permission]]\naction = \"create\"\nlocales = [\"de\"]\n\
[[token.permission]]\naction = \"publish\"\nlocales = [\"de\"]\n";
    let (origin, gw) = gateway_with(PUBLIC_NOTHING, translator, "PUBLISHED").await;
    let t = token();
    let t = Some(t.as_str());
    // Plain fields write the default locale (en).
    expect(
        &gw,
        &origin,
        t,
        r#"mutation { updatePost(where: {id: "p"}, data: {title: "x"}) { id } }"#,
        &[],
        403,
    )
    .await;
    expect(
        &gw,
        &origin,
        t,
        r#"mutation { createPost(data: {title: "x", slug: "x"}) { id } }"#,
        &[],
        403,
    )
    .await;
    // Localizations name the locales written.
    expect(
        &gw,
        &origin,
        t,
        r#"mutation { updatePost(where: {id: "p"}, data: {localizations: {update: [{locale: de, data: {title: "x"}}]}}) { id } }"#,
        &[],
        200,
    )
    .await;
    expect(
        &gw,
        &origin,
        t,
        r#"mutation { updatePost(where: {id: "p"}, data: {localizations: {upsert: [{locale: en, create: {title: "x"}, update: {title: "x"}}]}}) { id } }"#,
        &[],
        403,
    )
    .await;
    // Through a variable too.
    let before = origin.count();
    let (status, _) = post(
        &gw,
        "/content",
        t,
        &json!({
            "query": "mutation U($d: PostUpdateInput!) { updatePost(where: {id: \"p\"}, data: $d) { id } }",
            "variables": {"d": {"localizations": {"delete": ["en"]}}}
        }),
        &[],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(origin.count(), before);
    // Publish without `locales:` acts on every locale; with it, Hygraph adds the default locale.
    expect(
        &gw,
        &origin,
        t,
        r#"mutation { publishPost(where: {id: "p"}) { id } }"#,
        &[],
        403,
    )
    .await;
    expect(
        &gw,
        &origin,
        t,
        r#"mutation { publishPost(where: {id: "p"}, locales: [de]) { id } }"#,
        &[],
        403,
    )
    .await;
    expect(
        &gw,
        &origin,
        t,
        r#"mutation { publishPost(where: {id: "p"}, locales: [de], withDefaultLocale: false) { id } }"#,
        &[],
        200,
    )
    .await;
    // A nested relation payload needs its own action on the related model.
    expect(
        &gw,
        &origin,
        t,
        r#"mutation { updatePost(where: {id: "p"}, data: {localizations: {update: [{locale: de, data: {title: "x"}}]}, author: {create: {name: "n"}}}) { id } }"#,
        &[],
        403,
    )
    .await;
}

#[tokio::test]
async fn document_in_stages_without_inherit_locale_reads_the_default_locale() {
    let perms = "[[token.permission]]\naction = \"read\"\nlocales = [\"de\"]\n";
    let (origin, gw) = gateway_with(PUBLIC_NOTHING, perms, "PUBLISHED").await;
    let t = token();
    let t = Some(t.as_str());
    expect(
        &gw,
        &origin,
        t,
        "{ posts(locales: [de]) { documentInStages { title } } }",
        &[],
        403,
    )
    .await;
    expect(
        &gw,
        &origin,
        t,
        "{ posts(locales: [de]) { documentInStages(inheritLocale: true) { title } } }",
        &[],
        200,
    )
    .await;
}

#[tokio::test]
async fn relation_filters_read_the_related_model() {
    let perms = "[[token.permission]]\naction = \"read\"\nmodels = [\"Post\"]\n";
    let (origin, gw) = gateway_with(PUBLIC_NOTHING, perms, "PUBLISHED").await;
    let t = token();
    let t = Some(t.as_str());
    expect(
        &gw,
        &origin,
        t,
        r#"{ posts(where: {title_contains: "a"}) { title } }"#,
        &[],
        200,
    )
    .await;
    for q in [
        r#"{ posts(where: { author: { bio_starts_with: "E" } }) { title } }"#,
        r#"{ posts(where: { OR: [{ title: "x" }, { author: { name: "A" } }] }) { title } }"#,
        r#"{ postsConnection(where: { AND: [{ author: { posts_some: { title: "x" } } }] }) { aggregate { count } } }"#,
    ] {
        expect(&gw, &origin, t, q, &[], 403).await;
    }
    let before = origin.count();
    let (status, _) = post(
        &gw,
        "/content",
        t,
        &json!({
            "query": "query Q($w: PostWhereInput) { posts(where: $w) { title } }",
            "variables": {"w": {"author": {"name_starts_with": "A"}}}
        }),
        &[],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(origin.count(), before);
}

#[tokio::test]
async fn versions_and_stages_inside_inputs_are_checked() {
    let perms = "[[token.permission]]\naction = \"read\"\nstages = [\"PUBLISHED\"]\n";
    let (origin, gw) = gateway_with(PUBLIC_NOTHING, perms, "PUBLISHED").await;
    let t = token();
    let t = Some(t.as_str());
    // Nested version history needs read_versions.
    expect(
        &gw,
        &origin,
        t,
        "{ posts { history { id revision } } }",
        &[],
        403,
    )
    .await;
    // A stage inside an input object is a stage read.
    expect(
        &gw,
        &origin,
        t,
        r#"{ entities(where: [{id: "x", typename: Post, stage: DRAFT}]) { id ... on Post { title } } }"#,
        &[],
        403,
    )
    .await;
    expect(
        &gw,
        &origin,
        t,
        r#"{ entities(where: [{id: "x", typename: Post, stage: PUBLISHED}]) { id ... on Post { title } } }"#,
        &[],
        200,
    )
    .await;
    expect(
        &gw,
        &origin,
        t,
        "{ posts(where: {documentInStages_some: {stage: DRAFT}}) { title } }",
        &[],
        403,
    )
    .await;
}

#[tokio::test]
async fn a_delete_grant_is_limited_to_its_stages() {
    let perms = "[[token.permission]]\naction = \"read\"\n\
[[token.permission]]\naction = \"unpublish\"\n\
[[token.permission]]\naction = \"delete\"\nstages = [\"DRAFT\"]\n";
    let (origin, gw) = gateway_with(PUBLIC_NOTHING, perms, "PUBLISHED").await;
    let t = token();
    expect(
        &gw,
        &origin,
        Some(&t),
        r#"mutation { deletePost(where: {id: "p"}) { id } }"#,
        &[],
        403,
    )
    .await;
}

#[tokio::test]
async fn the_body_upstream_is_the_checked_one_re_serialized() {
    let (origin, gw) = gateway_with(PUBLIC_READ, "", "PUBLISHED").await;
    // A repeated key: the gateway cannot know which copy the CMS would run.
    for raw in [
        r#"{"query":"{ posts { title } }","query":"mutation { deletePost(where: {id: \"p\"}) { id } }"}"#,
        r#"{"query":"query Q($w: PostWhereInput) { posts(where: $w) { title } }","variables":{"w":{"id":"a","id":"b"}}}"#,
    ] {
        let resp = gw
            .client
            .post(gw.url("/content"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{raw}");
    }
    // Charsets other than UTF-8 (and unknown parameters) are refused.
    for ct in [
        "application/json; charset=utf-7",
        "application/json; charset=iso-8859-1",
        "application/json; boundary=x",
    ] {
        let resp = gw
            .client
            .post(gw.url("/content"))
            .header("content-type", ct)
            .body(json!({"query": "{ posts { title } }"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 415, "{ct}");
    }
    assert_eq!(origin.count(), 0);
    let resp = gw
        .client
        .post(gw.url("/content"))
        .header("content-type", "application/json; charset=\"UTF-8\"")
        .body(
            r#"  {"extensions":{"persistedQuery":{"sha256Hash":"x"}},"query":"{ posts { title } }", "variables": {"unused": 1}}  "#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        r#"{"query":"{ posts { title } }","variables":{"unused":1}}"#
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.headers.get_all("content-type").iter().count(), 1);
}

#[tokio::test]
async fn variables_that_do_not_coerce_never_reach_the_cms() {
    let (origin, gw) = gateway_with(PUBLIC_READ, "", "PUBLISHED").await;
    for (query, vars) in [
        (
            "query Q($n: Int) { posts(first: $n) { title } }",
            json!({"n": "ten"}),
        ),
        (
            "query Q($n: Int) { posts(first: $n) { title } }",
            json!({"n": 1.5}),
        ),
        (
            "query Q($n: Int!) { posts(first: $n) { title } }",
            json!({}),
        ),
        (
            "query Q($s: Stage) { posts(stage: $s) { title } }",
            json!({"s": "LIVE"}),
        ),
        (
            "query Q($w: PostWhereInput) { posts(where: $w) { title } }",
            json!({"w": {"nope": 1}}),
        ),
        (
            "query Q($w: PostWhereInput) { posts(where: $w) { title } }",
            json!({"w": "title"}),
        ),
    ] {
        let (status, body) = post(
            &gw,
            "/content",
            None,
            &json!({"query": query, "variables": vars}),
            &[("accept", b"application/graphql-response+json")],
        )
        .await;
        assert_eq!(status, 400, "{query} {vars}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn a_fragment_chain_cannot_crash_the_gateway() {
    // A generous token limit, so the depth across spreads is what refuses it (the default
    // token limit of 15 000 would refuse this document on its own).
    let origin = MockOrigin::start().await;
    let mut b = GatewayBuilder::new(&origin)
        .schema(Some(hygraph_sdl("DRAFT")))
        .public(PUBLIC_READ);
    b.limits = "\n[limits]\nmax_query_tokens = 1000000\nmax_expanded_fields = 1000000\n".into();
    let gw = b.start().await;
    // The review's request: 76 fragments, each nesting 30 `author { posts {` and spreading the
    // next (≈ 36 KB). It used to overflow the proxy thread's stack.
    let q = fragment_chain(76, 30);
    assert!(q.len() > 30_000, "{}", q.len());
    for path in ["/cdn", "/content"] {
        let (status, body) = post(&gw, path, None, &json!({ "query": q }), &[]).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED");
    }
    // Still up, still answering.
    expect(&gw, &origin, None, "{ posts { title } }", &[], 200).await;
    assert!(gw.log().contains("request"));
}

#[tokio::test]
async fn refused_requests_retain_nothing() {
    let authors_only = "default_stage = \"PUBLISHED\"\n\
[[permission]]\naction = \"read\"\nmodels = [\"Author\"]\n";
    let (origin, gw) = gateway_with(authors_only, "", "PUBLISHED").await;
    let pid = gw.child.id();
    // Warm up allocator arenas with a few refusals first.
    let body = |i: usize| {
        json!({
            "query": format!("query Q{i}($v: Json) {{ posts {{ title }} }}"),
            "variables": {"v": "x".repeat(60_000)}
        })
    };
    for i in 0..20 {
        assert_eq!(post(&gw, "/cdn", None, &body(i), &[]).await.0, 403);
    }
    let before = rss_kib(pid);
    // 1 000 distinct 60 KB refused requests: 60 MB if each were kept, as the document cache did.
    for i in 20..1_020 {
        assert_eq!(post(&gw, "/cdn", None, &body(i), &[]).await.0, 403);
    }
    let after = rss_kib(pid);
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_not_valid_yet() {
    let (origin, gw) = gateway_with(
        PUBLIC_NOTHING,
        "[[token.permission]]\naction = \"read\"\n",
        "PUBLISHED",
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (iat, status) in [
        (now + 10 * 365 * 86_400, 401),
        (now + 2, 200),
        (now - 60, 200),
    ] {
        let jwt = hs_raw(
            r#"{"alg":"HS256","kid":"hs"}"#,
            &format!(
                r#"{{"jti":"jti-t","iss":"https://issuer.test","aud":"contentgate","iat":{iat}}}"#
            ),
        );
        let (got, body) = post(
            &gw,
            "/content",
            Some(&bearer(&jwt)),
            &json!({"query": "{ posts { title } }"}),
            &[],
        )
        .await;
        assert_eq!(got, status, "iat {iat}: {body}");
    }
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn an_unsigned_token_cannot_probe_whether_a_jti_is_revoked() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .schema(Some(hygraph_sdl("DRAFT")))
        .tokens(&token_entry("jti-t", "tester", "PUBLISHED", ""))
        .revoked("jti-t\njti-gone\n")
        .start()
        .await;
    let forged = |jti: &str| {
        format!(
            "{}.{}.{}",
            seg(&json!({"alg": "ES256", "kid": "unknown-kid"})),
            seg(&json!({"jti": jti})),
            seg_raw("sig")
        )
    };
    let mut reasons = Vec::new();
    for jti in ["jti-t", "jti-gone", "jti-never"] {
        let (status, body) = post(
            &gw,
            "/content",
            Some(&bearer(&forged(jti))),
            &json!({"query": "{ posts { title } }"}),
            &[],
        )
        .await;
        assert_eq!(status, 401);
        reasons.push(body["errors"][0]["message"].clone());
    }
    assert_eq!(reasons[0], reasons[1]);
    assert_eq!(reasons[1], reasons[2]);
    assert_eq!(origin.count(), 0);
}

#[test]
fn an_empty_secret_is_a_start_up_error() {
    let origin_url = "http://127.0.0.1:9";
    for (section, file) in [
        (
            "[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = \"empty\"\n",
            "empty",
        ),
        ("[webhooks]\nsecret_file = \"blank\"\n", "blank"),
    ] {
        let cfg = GatewayBuilder::with_upstream(origin_url).write();
        let path = cfg.config();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if section.starts_with("[admin]") {
            let start = text.find("[admin]").unwrap();
            let end = start + text[start..].find("\n\n").unwrap();
            text.replace_range(start..end, section.trim_end());
        } else {
            text.push_str(section);
        }
        std::fs::write(&path, text).unwrap();
        std::fs::write(
            cfg.path().join(file),
            if file == "blank" { " \n\t\n" } else { "" },
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_contentgate"))
            .args(["check", "--config"])
            .arg(&path)
            .env("CG_TEST_SERVICE_TOKEN", "service")
            .env("CG_TEST_ADMIN_TOKEN", "admin")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{section}: {stderr}");
        assert!(stderr.contains("is empty"), "{section}: {stderr}");
    }
}

#[tokio::test]
async fn a_connection_header_cannot_remove_a_checked_header() {
    let (origin, gw) = gateway_with(DE_ONLY_PUBLIC, "", "PUBLISHED").await;
    for nominated in [
        "gcms-locales",
        "gcms-stage",
        "Authorization",
        "content-type, gcms-locales",
    ] {
        let (status, body) = post(
            &gw,
            "/content",
            None,
            &json!({"query": "{ posts { title } }"}),
            &[
                ("gcms-locales", b"de"),
                ("connection", nominated.as_bytes()),
            ],
        )
        .await;
        assert_eq!(status, 400, "{nominated}: {body}");
    }
    assert_eq!(origin.count(), 0);
    // A hop-by-hop nomination of something the gateway does not use is still fine.
    expect(
        &gw,
        &origin,
        None,
        "{ posts { title } }",
        &[
            ("gcms-locales", b"de"),
            ("connection", b"keep-alive, x-hop"),
            ("x-hop", b"1"),
        ],
        200,
    )
    .await;
    let seen = origin.last();
    assert_eq!(seen.header("gcms-locales"), Some("de"));
    assert_eq!(seen.header("x-hop"), None);
}

#[tokio::test]
async fn answers_vary_by_the_headers_that_change_them() {
    let (_origin, gw) = gateway_with(PUBLIC_READ, "", "PUBLISHED").await;
    for path in ["/content", "/cdn"] {
        let resp = gw.query(path, None, "{ posts { title } }").await;
        let vary: Vec<String> = resp
            .headers()
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .collect();
        let vary = vary.join(", ");
        for h in [
            "accept",
            "gcms-stage",
            "gcms-locales",
            "hyg-stale-while-revalidate",
            "hyg-stale-if-error",
        ] {
            assert!(vary.contains(h), "{path}: {vary}");
        }
    }
}

/// A guard, not a regression test: the deepest document the configuration allows runs to
/// completion — every walk's stack at `max_depth = 128` (the largest accepted) fits a worker
/// thread, in the debug build too.
#[tokio::test]
async fn the_deepest_allowed_document_fits_the_stack() {
    let origin = MockOrigin::start().await;
    let mut b = GatewayBuilder::new(&origin)
        .schema(Some(hygraph_sdl("DRAFT")))
        .public(PUBLIC_READ);
    b.limits = "\n[limits]\nmax_depth = 128\nmax_expanded_fields = 100000\n".into();
    let gw = b.start().await;
    // 124 levels across 4 fragments, each nesting 15 `author { posts {` pairs.
    let q = fragment_chain(4, 15);
    let (status, body) = post(&gw, "/content", None, &json!({ "query": q }), &[]).await;
    assert_eq!(status, 200, "{body}");
    // A value nested as deep as serde_json allows (128), through a variable.
    let mut v = json!({ "title": "x" });
    for _ in 0..60 {
        v = json!({ "AND": [v] });
    }
    let (status, body) = post(
        &gw,
        "/content",
        None,
        &json!({"query": "query Q($w: PostWhereInput) { posts(where: $w) { title } }", "variables": {"w": v}}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn management_reads_of_credentials_under_viewer_need_the_wildcard() {
    let origin = MockOrigin::start().await;
    let tokens = [
        token_entry(
            "jti-t",
            "reader",
            "DRAFT",
            "management = [\"PROJECT_READ\"]\n",
        ),
        token_entry("jti-all", "owner", "DRAFT", "management = [\"*\"]\n"),
    ]
    .concat();
    let gw = GatewayBuilder::new(&origin)
        .tokens(&tokens)
        .extra("\n[[endpoint]]\npath = \"/management\"\nkind = \"management\"\n")
        .start()
        .await;
    let reader = token();
    let structure = "{ viewer { project(id: \"p\") { environment(name: \"master\") { contentModel { models { apiId } } } } } }";
    assert_eq!(
        gw.query("/management", Some(&reader), structure)
            .await
            .status(),
        200
    );
    for q in [
        "{ viewer { project(id: \"p\") { environment(name: \"master\") { permanentAuthTokens { id token } } } } }",
        "query { viewer { ...P } } fragment P on Viewer { project(id: \"p\") { webhooks { secretKey } } }",
    ] {
        let resp = gw.query("/management", Some(&reader), q).await;
        assert_eq!(resp.status(), 403, "{q}");
    }
    let owner = bearer(&es("jti-all"));
    assert_eq!(
        gw.query(
            "/management",
            Some(&owner),
            "{ viewer { project(id: \"p\") { environment(name: \"master\") { permanentAuthTokens { id } } } } }"
        )
        .await
        .status(),
        200
    );
    assert_eq!(origin.count(), 2);
}

/// A union whose members share a union-typed field is walked once per member at every level:
/// without a bound on field visits, 40 levels cost 2^40 steps from a few hundred bytes
/// (found in review). The walk has a budget checked at every field.
#[tokio::test]
async fn a_union_field_shared_by_its_members_cannot_multiply_the_walk() {
    let origin = MockOrigin::start().await;
    let sdl = hygraph_sdl("DRAFT")
        .replace(
            "  name: String! bio: String\n",
            "  name: String! bio: String\n  related(locales: [Locale!]): [PostRelated!]!\n",
        )
        .replace(
            "  url: String! fileName: String!\n",
            "  url: String! fileName: String!\n  related(locales: [Locale!]): [PostRelated!]!\n",
        );
    assert_eq!(sdl.matches("related(locales").count(), 3, "fixture changed");
    let gw = GatewayBuilder::new(&origin)
        .schema(Some(sdl))
        .public(PUBLIC_READ)
        .start()
        .await;
    let q = format!(
        "{{ posts {{ {} id {} }} }}",
        "related { ".repeat(40),
        "} ".repeat(40)
    );
    let started = std::time::Instant::now();
    let (status, body) = post(&gw, "/content", None, &json!({ "query": q }), &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(origin.count(), 0);
    // A few levels are an ordinary document.
    let q = "{ posts { related { ... on Author { name related { ... on Asset { url } } } } } }";
    expect(&gw, &origin, None, q, &[], 200).await;
}
