//! The management API through the real binary: credentials and scopes, ETag / If-Match,
//! every change checked by the reload's compile and written through the policies folder, its
//! effect seen through the proxy on the next request, the audit log, and the OpenAPI file
//! matching the routes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use common::*;
use serde_json::{json, Value};

const Q: &str = "{ posts { id title } }";
const VIEWER: &str = "viewer-credential-0123456789";

/// The builder's gateway plus a read-scope credential and the HS256 signing key.
fn builder(origin: &MockOrigin) -> GatewayBuilder {
    GatewayBuilder::new(origin).extra(
        "\n[[admin.credential]]\nname = \"viewer\"\nscope = \"read\"\ntoken_file = \"viewer.token\"\n\n[auth.signing_key]\nkid = \"hs\"\n",
    )
}

async fn start(b: GatewayBuilder) -> TestGateway {
    let cfg = b.write();
    std::fs::write(cfg.path().join("viewer.token"), VIEWER).unwrap();
    cfg.start().await
}

struct Answer {
    status: u16,
    body: Value,
    etag: Option<String>,
}

async fn call(
    gw: &TestGateway,
    method: &str,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
    credential: Option<&str>,
) -> Answer {
    let mut req = gw
        .client
        .request(method.parse().unwrap(), gw.admin_url(path));
    if let Some(c) = credential {
        req = req.header("authorization", format!("Bearer {c}"));
    }
    if let Some(e) = if_match {
        req = req.header("if-match", format!("\"{e}\""));
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().trim_matches('"').to_string());
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, body, etag }
}

async fn get(gw: &TestGateway, path: &str) -> Answer {
    call(gw, "GET", path, None, None, Some(ADMIN_TOKEN)).await
}

/// A change with the current ETag (read first, as an editor would).
async fn change(gw: &TestGateway, method: &str, path: &str, body: Value) -> Answer {
    let etag = get(gw, "/admin/api/stages").await.etag.unwrap();
    call(gw, method, path, Some(body), Some(&etag), Some(ADMIN_TOKEN)).await
}

fn code(a: &Answer) -> &str {
    a.body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn credentials_and_scopes() {
    let origin = MockOrigin::start().await;
    let gw = start(builder(&origin)).await;
    let none = call(&gw, "GET", "/admin/api/tokens", None, None, None).await;
    assert_eq!((none.status, code(&none)), (401, "UNAUTHENTICATED"));
    let wrong = call(
        &gw,
        "GET",
        "/admin/api/tokens",
        None,
        None,
        Some("nope-nope-nope-nope"),
    )
    .await;
    assert_eq!(wrong.status, 401);
    let read = call(&gw, "GET", "/admin/api/tokens", None, None, Some(VIEWER)).await;
    assert_eq!(read.status, 200, "{}", read.body);
    let etag = read.etag.clone().unwrap();
    let who = call(&gw, "GET", "/admin/api/whoami", None, None, Some(VIEWER)).await;
    assert_eq!(who.body["scope"], "read");
    assert_eq!(who.body["writable"], false);
    // A read-scope credential cannot change anything, even with the right ETag.
    let refused = call(
        &gw,
        "PUT",
        "/admin/api/stages/default",
        Some(json!({"stage": "DRAFT"})),
        Some(&etag),
        Some(VIEWER),
    )
    .await;
    assert_eq!((refused.status, code(&refused)), (403, "FORBIDDEN"));
    // Nor purge (which needs write).
    let purge = gw
        .client
        .post(gw.admin_url("/admin/purge"))
        .header("authorization", format!("Bearer {VIEWER}"))
        .body(r#"{"all":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 401);
    let unknown = get(&gw, "/admin/api/nothing").await;
    assert_eq!((unknown.status, code(&unknown)), (404, "NOT_FOUND"));
    let method = call(
        &gw,
        "DELETE",
        "/admin/api/stages",
        None,
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(method.status, 405);
    let m = gw
        .client
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("contentgate_admin_api_requests_total{op=\"write\",result=\"FORBIDDEN\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn the_default_public_stage_applies_to_the_next_request() {
    let origin = MockOrigin::start().await;
    let gw = start(
        builder(&origin)
            .public("default_stage = \"PUBLISHED\"\n[[permission]]\naction = \"read\"\n"),
    )
    .await;
    assert_eq!(gw.query("/content", None, Q).await.status(), 200);
    assert_eq!(origin.last().header("gcms-stage"), Some("PUBLISHED"));
    let stages = get(&gw, "/admin/api/stages").await;
    assert_eq!(stages.body["stages"], json!(["DRAFT", "PUBLISHED"]));
    assert_eq!(stages.body["public_default_stage"], "PUBLISHED");
    let etag = stages.etag.unwrap();
    // Without If-Match: refused, nothing written.
    let bare = call(
        &gw,
        "PUT",
        "/admin/api/stages/default",
        Some(json!({"stage": "DRAFT"})),
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!((bare.status, code(&bare)), (428, "PRECONDITION_REQUIRED"));
    // A stage that is not configured: 422.
    let bad = call(
        &gw,
        "PUT",
        "/admin/api/stages/default",
        Some(json!({"stage": "ARCHIVE"})),
        Some(&etag),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!((bad.status, code(&bad)), (422, "INVALID"), "{}", bad.body);
    let ok = call(
        &gw,
        "PUT",
        "/admin/api/stages/default",
        Some(json!({"stage": "DRAFT"})),
        Some(&etag),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let new_etag = ok.etag.clone().unwrap();
    assert_ne!(new_etag, etag);
    assert_eq!(ok.body["etag"], json!(new_etag));
    // The very next public request reaches the CMS with the new stage.
    assert_eq!(gw.query("/content", None, Q).await.status(), 200);
    assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));
    // A second editor still holding the old ETag cannot overwrite it.
    let stale = call(
        &gw,
        "PUT",
        "/admin/api/stages/default",
        Some(json!({"stage": "PUBLISHED"})),
        Some(&etag),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!((stale.status, code(&stale)), (412, "PRECONDITION_FAILED"));
    let text = std::fs::read_to_string(gw.policies().join("public.toml")).unwrap();
    assert!(text.starts_with("default_stage = \"DRAFT\"\n"), "{text}");
    // Audited: who, what, before and after.
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("policy_change") && l.contains("set_default_stage"))
        .unwrap_or_else(|| panic!("no audit line:\n{log}"));
    assert!(line.contains("\"who\":\"admin\""), "{line}");
    assert!(
        line.contains("PUBLISHED") && line.contains("DRAFT"),
        "{line}"
    );
}

#[tokio::test]
async fn public_permissions_add_edit_delete_filter_and_sort() {
    let origin = MockOrigin::start().await;
    let gw = start(builder(&origin).public(
        "# public reads of posts\ndefault_stage = \"PUBLISHED\"\n\n# posts, published\n[[permission]]\naction = \"read\"\nmodels = [\"Post\"]\nstages = [\"PUBLISHED\"]\n",
    ))
    .await;
    let authors = "{ authors { id name } }";
    assert_eq!(gw.query("/content", None, authors).await.status(), 403);
    // Unknown model: the compile's precise error, nothing written.
    let before = std::fs::read_to_string(gw.policies().join("public.toml")).unwrap();
    let bad = change(
        &gw,
        "POST",
        "/admin/api/public/permissions",
        json!({"action": "read", "models": ["Nope"]}),
    )
    .await;
    assert_eq!((bad.status, code(&bad)), (422, "INVALID"), "{}", bad.body);
    let msg = bad.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("Nope") && msg.contains("Author"), "{msg}");
    // A stage the [cms] does not have: the compile's error, naming the file.
    let bad = change(
        &gw,
        "POST",
        "/admin/api/public/permissions",
        json!({"action": "read", "stages": ["ARCHIVE"]}),
    )
    .await;
    assert_eq!((bad.status, code(&bad)), (422, "INVALID"), "{}", bad.body);
    let msg = bad.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("public.toml")
            && msg.contains("ARCHIVE")
            && msg.contains("nothing was written"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(gw.policies().join("public.toml")).unwrap(),
        before
    );
    let bad_action = change(
        &gw,
        "POST",
        "/admin/api/public/permissions",
        json!({"action": "drop"}),
    )
    .await;
    assert_eq!(bad_action.status, 400);
    let unknown_field = change(
        &gw,
        "POST",
        "/admin/api/public/permissions",
        json!({"action": "read", "model": ["Author"]}),
    )
    .await;
    assert_eq!(unknown_field.status, 400, "{}", unknown_field.body);

    let added = change(
        &gw,
        "POST",
        "/admin/api/public/permissions",
        json!({"action": "read", "models": ["Author"], "stages": ["PUBLISHED"], "locales": ["en"]}),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(added.body["permission"]["id"], 1);
    // The refused query now passes, on the next request.
    assert_eq!(gw.query("/content", None, authors).await.status(), 200);
    let created = change(
        &gw,
        "POST",
        "/admin/api/public/permissions",
        json!({"action": "create", "models": ["Post"]}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let notes = created.body["notes"].to_string();
    assert!(notes.contains("needs read on DRAFT"), "{notes}");
    // The untouched entry keeps its comment; the file stays one a person would write.
    let text = std::fs::read_to_string(gw.policies().join("public.toml")).unwrap();
    assert!(
        text.starts_with("# public reads of posts\ndefault_stage"),
        "{text}"
    );
    assert!(
        text.contains("# posts, published\n[[permission]]\naction = \"read\"\nmodels = [\"Post\"]"),
        "{text}"
    );
    assert!(text.contains("[[permission]]\naction = \"read\"\nmodels = [\"Author\"]\nlocales = [\"en\"]\nstages = [\"PUBLISHED\"]\n"), "{text}");

    // Filters combine; sort orders.
    let ids = |a: &Answer| -> Vec<u64> {
        a.body["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        ids(&get(&gw, "/admin/api/public/permissions").await),
        [0, 1, 2]
    );
    assert_eq!(
        ids(&get(&gw, "/admin/api/public/permissions?action=read").await),
        [0, 1]
    );
    assert_eq!(
        ids(&get(&gw, "/admin/api/public/permissions?model=Post").await),
        [0, 2]
    );
    assert_eq!(
        ids(&get(
            &gw,
            "/admin/api/public/permissions?model=Post&action=create"
        )
        .await),
        [2]
    );
    assert_eq!(
        ids(&get(&gw, "/admin/api/public/permissions?locale=de").await),
        [0, 2]
    );
    assert_eq!(
        ids(&get(&gw, "/admin/api/public/permissions?stage=DRAFT").await),
        [2]
    );
    assert_eq!(
        ids(&get(&gw, "/admin/api/public/permissions?sort=model").await),
        [1, 0, 2]
    );
    assert_eq!(
        ids(&get(&gw, "/admin/api/public/permissions?sort=model:desc").await),
        [2, 0, 1]
    );
    assert_eq!(
        ids(&get(&gw, "/admin/api/public/permissions?sort=action").await),
        [1, 0, 2]
    );
    assert_eq!(
        ids(&get(&gw, "/admin/api/public/permissions?sort=action:desc").await),
        [2, 0, 1]
    );
    assert_eq!(
        get(&gw, "/admin/api/public/permissions?sort=name")
            .await
            .status,
        400
    );

    // Edit: narrow the Author grant to German only; English reads are refused again.
    let edited = change(
        &gw,
        "PATCH",
        "/admin/api/public/permissions/1",
        json!({"locales": ["de"]}),
    )
    .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    let en = "{ authors(locales: [en]) { id name } }";
    assert_eq!(gw.query("/content", None, en).await.status(), 403);
    let widened = change(
        &gw,
        "PATCH",
        "/admin/api/public/permissions/1",
        json!({"locales": null}),
    )
    .await;
    assert_eq!(widened.status, 200);
    assert_eq!(gw.query("/content", None, en).await.status(), 200);
    // Delete.
    let gone = change(&gw, "DELETE", "/admin/api/public/permissions/1", json!({})).await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert_eq!(gone.body["deleted"]["models"], json!(["Author"]));
    assert_eq!(gw.query("/content", None, authors).await.status(), 403);
    let missing = change(&gw, "DELETE", "/admin/api/public/permissions/9", json!({})).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn tokens_add_use_edit_check_delete() {
    let origin = MockOrigin::start().await;
    let gw = start(builder(&origin).tokens(
        "# the reader of the docs site\n[[token]]\njti = \"jti-reader\"\nname = \"reader\"\ndefault_stage = \"PUBLISHED\"\n[[token.permission]]\naction = \"read\"\n",
    ))
    .await;
    let added = change(
        &gw,
        "POST",
        "/admin/api/tokens",
        json!({"name": "site", "description": "the web site"}),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let jwt = added.body["jwt"].as_str().unwrap().to_string();
    let t = &added.body["token"];
    let jti = t["jti"].as_str().unwrap().to_string();
    assert_eq!(t["default_stage"], "PUBLISHED");
    assert_eq!(t["permissions"][0]["action"], "read");
    assert_eq!(t["permissions"][0]["models"], Value::Null);
    assert_eq!(t["permissions"][0]["locales"], Value::Null);
    assert_eq!(t["management"], json!(["ENVIRONMENT_READ", "PROJECT_READ"]));
    assert!(t["created"].as_str().unwrap().ends_with('Z'));
    // The string works at once, and is stored nowhere.
    assert_eq!(gw.query("/cdn", Some(&bearer(&jwt)), Q).await.status(), 200);
    assert_eq!(origin.last().header("gcms-stage"), Some("PUBLISHED"));
    let registry = std::fs::read_to_string(gw.policies().join("tokens.toml")).unwrap();
    assert!(!registry.contains(&jwt) && !gw.log().contains(&jwt));
    assert!(
        registry.starts_with("# the reader of the docs site\n[[token]]"),
        "{registry}"
    );
    let dup = change(&gw, "POST", "/admin/api/tokens", json!({"name": "site"})).await;
    assert_eq!((dup.status, code(&dup)), (409, "CONFLICT"));

    // Edit the default stage: the same string now reads DRAFT by default.
    let path = format!("/admin/api/tokens/{jti}");
    let edited = change(
        &gw,
        "PATCH",
        &path,
        json!({"default_stage": "DRAFT", "description": "preview"}),
    )
    .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    assert_eq!(edited.body["token"]["default_stage"], "DRAFT");
    // Its read grant covers PUBLISHED only: a token defaulting to DRAFT is refused until granted.
    assert_eq!(gw.query("/cdn", Some(&bearer(&jwt)), Q).await.status(), 403);
    let grant = change(
        &gw,
        "POST",
        &format!("{path}/permissions"),
        json!({"action": "read", "stages": ["DRAFT"]}),
    )
    .await;
    assert_eq!(grant.status, 201, "{}", grant.body);
    assert_eq!(gw.query("/cdn", Some(&bearer(&jwt)), Q).await.status(), 200);
    assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));

    // Management switches.
    let m = get(&gw, &format!("{path}/management")).await;
    let all = m.body["permissions"].as_array().unwrap();
    assert!(all
        .iter()
        .any(|p| p["name"] == "MODEL_CREATE" && p["enabled"] == false));
    assert!(all
        .iter()
        .any(|p| p["name"] == "PROJECT_READ" && p["enabled"] == true));
    let m = change(
        &gw,
        "PATCH",
        &format!("{path}/management"),
        json!({"enable": ["MODEL_CREATE"], "disable": ["PROJECT_READ"]}),
    )
    .await;
    assert_eq!(m.status, 200, "{}", m.body);
    let enabled: Vec<&str> = m.body["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["enabled"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(enabled, ["ENVIRONMENT_READ", "MODEL_CREATE"]);
    let bogus = change(
        &gw,
        "PATCH",
        &format!("{path}/management"),
        json!({"enable": ["ROOT"]}),
    )
    .await;
    assert_eq!(bogus.status, 400);

    // "Can't find your token?": a re-issued string is the same token.
    let again = call(
        &gw,
        "POST",
        &format!("{path}/reissue"),
        None,
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    let second = again.body["jwt"].as_str().unwrap().to_string();
    let check = call(
        &gw,
        "POST",
        "/admin/api/token-check",
        Some(json!({"jwt": second})),
        None,
        Some(VIEWER),
    )
    .await;
    assert_eq!(check.status, 200);
    assert_eq!(check.body["status"], "active");
    assert_eq!(check.body["verified"], true);
    assert_eq!(check.body["jti"], json!(jti));
    assert_eq!(check.body["token"]["name"], "site");
    let forged = format!("{}x", &second[..second.len() - 1]);
    let check = call(
        &gw,
        "POST",
        "/admin/api/token-check",
        Some(json!({"jwt": forged})),
        None,
        Some(VIEWER),
    )
    .await;
    assert_eq!(check.body["status"], "invalid", "{}", check.body);
    let check = call(
        &gw,
        "POST",
        "/admin/api/token-check",
        Some(json!({"jwt": "garbage"})),
        None,
        Some(VIEWER),
    )
    .await;
    assert_eq!(check.body["status"], "invalid");
    assert!(!gw.log().contains(&second));

    // Delete: both strings are refused from the next request, the jti is revoked.
    let deleted = change(&gw, "DELETE", &path, json!({})).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    for s in [&jwt, &second] {
        assert_eq!(gw.query("/cdn", Some(&bearer(s)), Q).await.status(), 401);
    }
    let revoked = std::fs::read_to_string(gw.policies().join("revoked.txt")).unwrap();
    assert!(revoked.lines().any(|l| l == jti), "{revoked}");
    assert!(revoked.contains("deleted by admin"), "{revoked}");
    let check = call(
        &gw,
        "POST",
        "/admin/api/token-check",
        Some(json!({"jwt": jwt})),
        None,
        Some(VIEWER),
    )
    .await;
    assert_eq!(check.body["status"], "revoked");
    let reissue = call(
        &gw,
        "POST",
        &format!("{path}/reissue"),
        None,
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(reissue.status, 409, "{}", reissue.body);
    assert_eq!(get(&gw, &path).await.status, 404);
    // The other token and the file's comment are untouched.
    let registry = std::fs::read_to_string(gw.policies().join("tokens.toml")).unwrap();
    assert!(
        registry.starts_with("# the reader of the docs site\n[[token]]\njti = \"jti-reader\""),
        "{registry}"
    );
    assert_eq!(
        gw.query("/cdn", Some(&bearer(&es("jti-reader"))), Q)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn read_only_sources_refuse_changes_and_say_why() {
    let origin = MockOrigin::start().await;
    let cfg = builder(&origin).write();
    std::fs::write(cfg.path().join("viewer.token"), VIEWER).unwrap();
    let text = std::fs::read_to_string(cfg.config()).unwrap();
    std::fs::write(
        cfg.config(),
        text.replace(
            "token_env = \"CG_TEST_ADMIN_TOKEN\"",
            "token_env = \"CG_TEST_ADMIN_TOKEN\"\nread_only = true",
        ),
    )
    .unwrap();
    let gw = cfg.start().await;
    let who = get(&gw, "/admin/api/whoami").await;
    assert_eq!(who.body["writable"], false);
    assert!(who.body["read_only_reason"]
        .as_str()
        .unwrap()
        .contains("read_only"));
    let r = change(
        &gw,
        "PUT",
        "/admin/api/stages/default",
        json!({"stage": "DRAFT"}),
    )
    .await;
    assert_eq!((r.status, code(&r)), (409, "READ_ONLY"));
}

#[test]
fn openapi_describes_every_route_and_nothing_else() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert!(
                op["responses"].is_object(),
                "{method} {path} has no responses"
            );
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: std::collections::BTreeSet<(String, String)> = contentgate::admin::api::ROUTES
        .iter()
        .map(|(m, p, _, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, routed,
        "docs/openapi.json and admin::api::ROUTES differ"
    );
}

/// What the attacker's review of the management API found, held.
#[tokio::test]
async fn review_findings_stay_fixed() {
    let origin = MockOrigin::start().await;
    let cfg = builder(&origin).write();
    std::fs::write(cfg.path().join("viewer.token"), VIEWER).unwrap();
    let gw = cfg.start().await;
    let etag = get(&gw, "/admin/api/stages").await.etag.unwrap();
    // Only the strong current tag: `*` and weak tags would apply a change made on another version.
    for tag in ["*", &format!("W/\"{etag}\"")] {
        let r = gw
            .client
            .put(gw.admin_url("/admin/api/stages/default"))
            .bearer_auth(ADMIN_TOKEN)
            .header("if-match", tag)
            .body(r#"{"stage":"DRAFT"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 412, "If-Match: {tag}");
    }
    // `*` inside a list means all to the compile: stored, shown and filtered as all.
    let added = change(
        &gw,
        "POST",
        "/admin/api/public/permissions",
        json!({"action": "read", "models": ["Author"], "stages": ["PUBLISHED", "*"]}),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(added.body["permission"]["stages"], Value::Null);
    let listed = get(
        &gw,
        "/admin/api/public/permissions?stage=DRAFT&model=Author",
    )
    .await;
    assert_eq!(
        listed.body["permissions"].as_array().unwrap().len(),
        1,
        "{}",
        listed.body
    );
    let text = std::fs::read_to_string(gw.policies().join("public.toml")).unwrap();
    assert!(!text.contains("\"*\""), "{text}");
    // The token list says what is enforced: a hand-edited revocation that did not compile is
    // not in force, and the list does not claim it is.
    std::fs::write(gw.policies().join("revoked.txt"), "jti-reader\nnot a jti\n").unwrap();
    gw.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        gw.query("/cdn", Some(&bearer(&es("jti-reader"))), Q)
            .await
            .status(),
        200
    );
    let t = get(&gw, "/admin/api/tokens/jti-reader").await;
    assert_eq!(t.body["token"]["revoked"], false, "{}", t.body);
    std::fs::write(gw.policies().join("revoked.txt"), "").unwrap();
    // Logging out ends the session, even without the CSRF token.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = no_redirects
        .post(gw.admin_url("/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("credential={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("cg_session="))
        .expect("a session cookie");
    let whoami = |c: String| {
        gw.client
            .get(gw.admin_url("/admin/api/whoami"))
            .header("cookie", c)
            .send()
    };
    assert_eq!(whoami(cookie.clone()).await.unwrap().status(), 200);
    let out = no_redirects
        .post(gw.admin_url("/console/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(whoami(cookie).await.unwrap().status(), 401);
}

#[tokio::test]
async fn a_short_purge_token_purges_but_is_no_management_credential() {
    let origin = MockOrigin::start().await;
    let cfg = GatewayBuilder::new(&origin).write();
    std::fs::write(cfg.path().join("short.token"), "ab").unwrap();
    let text = std::fs::read_to_string(cfg.config()).unwrap();
    std::fs::write(
        cfg.config(),
        text.replace(
            "token_env = \"CG_TEST_ADMIN_TOKEN\"",
            "token_file = \"short.token\"",
        ),
    )
    .unwrap();
    let gw = cfg.start().await;
    let r = call(&gw, "GET", "/admin/api/tokens", None, None, Some("ab")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let purge = gw
        .client
        .post(gw.admin_url("/admin/purge"))
        .bearer_auth("ab")
        .body(r#"{"all":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
}
