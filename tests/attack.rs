//! Attack review of the enforcement core: one test per finding, through the real binary. Each
//! asserts the SECURE behaviour, so it fails while the finding stands.
//!
//! - resources: a request must not make the gateway allocate or compute far beyond what its
//!   bytes and the documented limits allow (the analysis runs before authorization, so every
//!   one of these needs no credential at all);
//! - soundness: what the recording sample CMS touched must be covered by the grants, or (with
//!   the MockOrigin) the origin must not get a request whose meaning differs from what was
//!   checked.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Peak resident memory of a process (VmHWM), KiB.
const PUBLIC_ALL: &str = "default_stage = \"PUBLISHED\"\n\
[[permission]]\naction = \"read\"\n[[permission]]\naction = \"read_versions\"\n";

async fn post_raw(gw: &TestGateway, body: String, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = gw
        .client
        .post(gw.url("/content"))
        .timeout(Duration::from_secs(120))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.body(body).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, format!("no answer: {e}")),
    }
}

/// What the sample CMS touched for a request id: (action, model, stage, locale).
async fn touched(
    cms: &SampleCms,
    client: &reqwest::Client,
    id: &str,
) -> Vec<(String, String, String, String)> {
    let v: Value = client
        .get(format!("{}?request_id={id}", cms.url("/__audit")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null);
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
            (s("action"), s("model"), s("stage"), s("locale"))
        })
        .collect()
}

/// A gateway in front of the sample CMS, with `tokens` as the registry.
async fn sample_pair(public: &str, tokens: &str) -> (SampleCms, TestGateway) {
    let cms = SampleCms::start(None);
    let gw = GatewayBuilder::with_upstream(&cms.url("/v2/sample/master"))
        .public(public)
        .tokens(tokens)
        .schema(Some(sample_sdl()))
        .start()
        .await;
    (cms, gw)
}

/// Sends `body` through the gateway and returns (status, request id, response body).
async fn through(
    gw: &TestGateway,
    auth: Option<&str>,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut req = gw
        .client
        .post(gw.url("/content"))
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.body(body.to_string()).send().await.unwrap();
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, id, r.text().await.unwrap_or_default())
}

/// The Hygraph-convention fixture (root `stage`/`locales` arguments default to DRAFT / [en]).
fn hygraph_sdl() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hygraph.graphql"
    ))
    .unwrap()
}

// ---------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------

/// FINDING R1. `args::Resolver::resolve` clones the whole variable value at every reference
/// (`cst::Value::Variable` → `v.clone()`), and `args::arguments` keeps the resolved value, before
/// the `input_nodes` budget is consulted (it only counts the typed walk, and not at all for an
/// argument the schema does not type). A list literal naming the same variable R times holds R
/// copies: a 64 KiB body becomes gigabytes. No credential is needed (analysis precedes
/// authorization). Here R = 250 copies of a 42 KB variable: the secure gateway refuses it
/// without growing past the resources.rs budget.
#[tokio::test]
async fn a_variable_referenced_many_times_is_not_copied_per_reference() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .public(PUBLIC_ALL)
        .start()
        .await;
    let pid = gw.child.id();
    let refs = vec!["$v"; 250].join(",");
    let items: Vec<Value> = (0..6000).map(|_| json!({"": 0})).collect();
    let body = json!({
        "query": format!("query($v: Json) {{ posts(first: 1, x: [{refs}]) {{ id }} }}"),
        "variables": {"v": items},
    })
    .to_string();
    assert!(body.len() < 64 * 1024, "{} bytes", body.len());
    let before = peak_kib(pid);
    let started = Instant::now();
    let (status, text) = post_raw(&gw, body, &[]).await;
    let took = started.elapsed();
    let peak = peak_kib(pid);
    eprintln!(
        "R1: status {status} in {took:?}; VmHWM {before} -> {peak} KiB; VmRSS now {}",
        rss_kib(pid)
    );
    assert!(
        peak < 384 * 1024,
        "one 42 KB request grew the gateway's peak RSS to {peak} KiB (status {status}: {text:.200})"
    );
}

/// FINDING R2. The stage and locale names found inside a root field's argument values are added
/// to the context (`ctx.stages.add(&found.stages)` in `RootCtx::root_field`), and that context
/// is cloned for every field of the selection (`Walk::field`: `outer.clone()`) and again into
/// every `Access` (`Walk::access`), then compared name by name on insertion into the
/// `BTreeSet`. Unknown names are refused only later, by `authorize`. A variable with thousands
/// of distinct "stage" strings (declared as a custom scalar so `check_variables` does not look
/// inside) times a fragment-expanded selection of 8192 fields is ~10^8 string copies per
/// request, on the request thread, before any permission check.
#[tokio::test]
async fn stage_names_inside_arguments_do_not_multiply_with_the_selection() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .schema(Some(hygraph_sdl()))
        .public(PUBLIC_ALL)
        .start()
        .await;
    let names: Vec<String> = (0..4000).map(|i| format!("S{i}")).collect();
    let mut q = String::from(
        "query($w: Json) { posts(where: {documentInStages_some: {stage: $w}}) { ...F12 } }\n\
         fragment F0 on Post { author { id } }\n",
    );
    for i in 1..=12 {
        q.push_str(&format!(
            "fragment F{i} on Post {{ ...F{p} ...F{p} }}\n",
            p = i - 1
        ));
    }
    let body = json!({ "query": q, "variables": { "w": names } }).to_string();
    assert!(body.len() < 64 * 1024);
    let started = Instant::now();
    let (status, text) = post_raw(&gw, body, &[]).await;
    let took = started.elapsed();
    eprintln!("R2: status {status} in {took:?}: {text:.200}");
    assert_eq!(origin.count(), 0);
    assert!(
        took < Duration::from_secs(2),
        "one request kept a gateway thread busy for {took:?}"
    );
}

// ---------------------------------------------------------------------------
// Soundness
// ---------------------------------------------------------------------------

/// FINDING S1 (verified against the recording sample CMS). A nested `connect` in a create or
/// update payload makes the CMS look the related document up in DRAFT *in the default locale*
/// (`apply_relation` → `Touched::commit` records `read <target> DRAFT en`), but the gateway
/// records the `…WhereUniqueInput` filter read in the mutation's context, whose locales are the
/// request's (`Ctx::root` → `Locales { field: true }` → `FieldScope::locales` = the
/// `gcms-locales` header). With `gcms-locales: de`, a token that may read Author only in `de`
/// makes the CMS read Author in `en` (and learns from success or failure whether it exists).
#[tokio::test]
async fn a_nested_connect_is_checked_in_the_locale_the_cms_looks_it_up_in() {
    let perms = "[[token.permission]]\naction = \"create\"\nmodels = [\"Post\"]\n\
                 [[token.permission]]\naction = \"read\"\nmodels = [\"Post\"]\n\
                 [[token.permission]]\naction = \"read\"\nmodels = [\"Author\"]\nlocales = [\"de\"]\n";
    let (cms, gw) = sample_pair(
        PUBLIC_NOTHING,
        &token_entry("jti-s1", "connector", "DRAFT", perms),
    )
    .await;
    let auth = bearer(&es("jti-s1"));
    let body = json!({"query": "mutation { createPost(data: {title: \"t\", slug: \"attack-s1\", \
        author: {connect: {id: \"clseedauthorada0000000001\"}}}) { id } }"});
    let (status, id, text) = through(&gw, Some(&auth), &body, &[("gcms-locales", "de")]).await;
    let touched = touched(&cms, &gw.client, &id).await;
    eprintln!("S1: {status} {text:.200}\n    CMS touched {touched:?}");
    let uncovered: Vec<_> = touched
        .iter()
        .filter(|(a, m, _, l)| a == "read" && m == "Author" && l != "de")
        .collect();
    assert!(
        uncovered.is_empty(),
        "the CMS read Author outside the token's locales: {uncovered:?} (status {status})"
    );
}

/// FINDING S2 (MockOrigin; GraphQL spec, CoerceArgumentValues). A root `stage:`/`locales:`
/// argument given as a variable the request does not provide, with no variable default, is
/// treated by the gateway as absent (`Resolver::resolve` → `Null` → `RootField::stage = None`),
/// so the header / principal default is checked and sent. But the argument IS in the document:
/// a spec-compliant CMS coerces it to the argument's *schema default* (`stage: Stage! = DRAFT`
/// in Hygraph's generated schema, the very default the gateway documents it must never let
/// decide) — the `gcms-stage` header only applies to arguments the document leaves out. A
/// nullable variable is valid in that position because the argument has a default (spec
/// 5.8.5). Public (Read PUBLISHED only) thus reads DRAFT.
#[tokio::test]
async fn an_unprovided_variable_on_a_root_stage_argument_is_not_the_header_stage() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .schema(Some(hygraph_sdl()))
        .public(PUBLIC_READ)
        .start()
        .await;
    for (query, headers) in [
        ("query Q($s: Stage) { posts(stage: $s) { title } }", vec![]),
        (
            "query Q($s: Stage) { post(where: {slug: \"x\"}, stage: $s) { title } }",
            vec![],
        ),
    ] {
        let before = origin.count();
        let (status, _, text) = through(&gw, None, &json!({ "query": query }), &headers).await;
        eprintln!("S2: {query}: {status} {text:.120}");
        assert!(
            status != 200 && origin.count() == before,
            "{query}: forwarded (status {status}) although the CMS applies the schema default DRAFT"
        );
    }
}

/// FINDING S2b: the same for `locales:`. Public may read only `de`; with `gcms-locales: de` the
/// gateway checks `de`, but the CMS coerces the unprovided `$l` to the schema default `[en]`.
#[tokio::test]
async fn an_unprovided_variable_on_a_root_locales_argument_is_not_the_header_locales() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .schema(Some(hygraph_sdl()))
        .public(
            "default_stage = \"PUBLISHED\"\n[[permission]]\naction = \"read\"\n\
             stages = [\"PUBLISHED\"]\nlocales = [\"de\"]\n",
        )
        .start()
        .await;
    let query = "query Q($l: [Locale!]) { posts(locales: $l) { title } }";
    let (status, _, text) = through(
        &gw,
        None,
        &json!({ "query": query }),
        &[("gcms-locales", "de"), ("gcms-stage", "PUBLISHED")],
    )
    .await;
    eprintln!("S2b: {status} {text:.120}");
    assert!(
        status != 200 && origin.count() == 0,
        "forwarded (status {status}) although the CMS serves the schema default [en]"
    );
}

/// FINDING S3 (MockOrigin). A field selected on an abstract type is typed by the FIRST possible
/// type that has it (`Walk::set`: `possible.iter().find_map(...)`), not by every possible type.
/// With an interface field whose return type is covariant per implementation (valid GraphQL;
/// here `Node.documentInStages: [Node!]!`, `Post.documentInStages: [Post!]!`), the walk only
/// checks the alphabetically first implementation (Asset): `node(id:)` of a Post then reads
/// that Post in DRAFT with only "Read Asset in DRAFT" checked.
#[tokio::test]
async fn an_interface_field_is_checked_for_every_implementation() {
    let sdl = hygraph_sdl()
        .replace(
            "interface Node { id: ID! stage: Stage! }",
            "interface Node { id: ID! stage: Stage! documentInStages(stages: [Stage!]! = [PUBLISHED, DRAFT], includeCurrent: Boolean! = false, inheritLocale: Boolean! = false): [Node!]! }",
        )
        .replace(
            "type User implements Node & Entity { id: ID! stage: Stage! name: String! }",
            "type User implements Node & Entity { id: ID! stage: Stage! name: String! documentInStages(stages: [Stage!]! = [PUBLISHED, DRAFT], includeCurrent: Boolean! = false, inheritLocale: Boolean! = false): [User!]! }",
        )
        .replace(
            "  url: String! fileName: String!\n",
            "  url: String! fileName: String!\n  documentInStages(stages: [Stage!]! = [PUBLISHED, DRAFT], includeCurrent: Boolean! = false, inheritLocale: Boolean! = false): [Asset!]!\n",
        );
    assert_eq!(
        sdl.matches("documentInStages(stages").count(),
        5,
        "fixture changed"
    );
    let origin = MockOrigin::start().await;
    let perms = "[[token.permission]]\naction = \"read\"\nstages = [\"PUBLISHED\"]\n\
                 [[token.permission]]\naction = \"read\"\nmodels = [\"Asset\"]\n";
    let gw = GatewayBuilder::new(&origin)
        .schema(Some(sdl))
        .public(PUBLIC_NOTHING)
        .tokens(&token_entry(
            "jti-s3",
            "published-reader",
            "PUBLISHED",
            perms,
        ))
        .start()
        .await;
    let auth = bearer(&es("jti-s3"));
    let query = "{ node(id: \"clseedposthello0000000001\") { documentInStages(stages: [DRAFT]) { id stage } } }";
    let (status, _, text) = through(&gw, Some(&auth), &json!({ "query": query }), &[]).await;
    eprintln!("S3: {status} {text:.200}");
    assert!(
        status == 403 && origin.count() == 0,
        "forwarded (status {status}): a Post's DRAFT version is read with only Asset's DRAFT grant checked"
    );
}
