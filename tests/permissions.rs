//! Content permissions through the real gateway: a grant lets the request reach the origin; a
//! missing grant is a 403 that names it, and the origin sees nothing. Every bypass is its own
//! test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use common::*;
use serde_json::json;

const READ_ALL: &str = "[[token.permission]]\naction = \"read\"\n";

fn perm(action: &str, extra: &str) -> String {
    format!("[[token.permission]]\naction = \"{action}\"\n{extra}")
}

async fn gateway(perms: &str) -> (MockOrigin, TestGateway) {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .tokens(&token_entry("jti-t", "tester", "PUBLISHED", perms))
        .start()
        .await;
    (origin, gw)
}

fn token() -> String {
    bearer(&es("jti-t"))
}

async fn allowed(gw: &TestGateway, origin: &MockOrigin, query: &str) {
    let before = origin.count();
    let resp = gw.query("/content", Some(&token()), query).await;
    let status = resp.status();
    assert_eq!(status, 200, "{query}: {}", resp.text().await.unwrap());
    assert_eq!(
        origin.count(),
        before + 1,
        "{query}: the origin saw the request"
    );
}

/// Asserts a 403 whose message contains every `expect` fragment, and an untouched origin.
async fn denied(gw: &TestGateway, origin: &MockOrigin, query: &str, expect: &[&str]) -> String {
    denied_with(gw, origin, query, &[], expect).await
}

async fn denied_with(
    gw: &TestGateway,
    origin: &MockOrigin,
    query: &str,
    headers: &[(&str, &str)],
    expect: &[&str],
) -> String {
    let before = origin.count();
    let mut req = gw
        .client
        .post(gw.url("/content"))
        .header("authorization", token())
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .body(json!({ "query": query }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "{query}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert!(body["data"].is_null());
    let message = body["errors"][0]["message"].as_str().unwrap().to_string();
    for e in expect {
        assert!(message.contains(e), "{query}: {message:?} lacks {e:?}");
    }
    assert_eq!(
        origin.count(),
        before,
        "{query}: the origin must not be called"
    );
    message
}

// ---- the matrix: each action with and without its grant ----

#[tokio::test]
async fn read_needs_read_on_the_model_in_the_stage() {
    let (origin, gw) = gateway(&perm(
        "read",
        "models = [\"Post\"]\nstages = [\"PUBLISHED\"]\n",
    ))
    .await;
    allowed(&gw, &origin, "{ posts { id title } }").await;
    denied(
        &gw,
        &origin,
        "{ posts(stage: DRAFT) { id } }",
        &["read", "Post", "DRAFT"],
    )
    .await;
    assert!(
        gw.metric("contentgate_permission_denials_total{action=\"read\"}")
            .await
            >= 1.0
    );
    assert!(gw.log().contains("permission_denied"));
}

#[tokio::test]
async fn read_versions_needs_its_own_grant() {
    let q = "{ postVersion(where: {id: \"p\", stage: PUBLISHED, revision: 1}) { id revision } }";
    let (origin, gw) = gateway(READ_ALL).await;
    denied(&gw, &origin, q, &["read_versions", "Post"]).await;
    let (origin, gw) = gateway(&perm("read_versions", "models = [\"Post\"]\n")).await;
    allowed(&gw, &origin, q).await;
}

#[tokio::test]
async fn create_needs_create_and_read_on_draft() {
    let q = "mutation { createPost(data: {title: \"x\"}) { id } }";
    let (origin, gw) = gateway(READ_ALL).await;
    denied(&gw, &origin, q, &["create", "Post"]).await;
    let (origin, gw) = gateway(&perm("create", "models = [\"Post\"]\n")).await;
    denied(&gw, &origin, q, &["read", "DRAFT"]).await;
    let (origin, gw) = gateway(&format!(
        "{}{}",
        perm("create", "models = [\"Post\"]\n"),
        perm("read", "stages = [\"DRAFT\"]\n")
    ))
    .await;
    allowed(&gw, &origin, q).await;
}

#[tokio::test]
async fn update_and_upsert() {
    let update = "mutation { updatePost(where: {id: \"p\"}, data: {title: \"y\"}) { id } }";
    let upsert = "mutation { upsertPost(where: {id: \"p\"}, upsert: {create: {title: \"a\"}, update: {title: \"b\"}}) { id } }";
    let (origin, gw) = gateway(&format!(
        "{READ_ALL}{}",
        perm("update", "models = [\"Post\"]\n")
    ))
    .await;
    allowed(&gw, &origin, update).await;
    denied(&gw, &origin, upsert, &["create", "Post"]).await;
    let (origin, gw) = gateway(&format!(
        "{READ_ALL}{}{}",
        perm("update", ""),
        perm("create", "")
    ))
    .await;
    allowed(&gw, &origin, upsert).await;
}

#[tokio::test]
async fn delete_needs_read_on_all_stages_and_unpublish_on_published() {
    let q = "mutation { deletePost(where: {id: \"p\"}) { id } }";
    let (origin, gw) = gateway(&format!("{READ_ALL}{}", perm("delete", ""))).await;
    denied(&gw, &origin, q, &["unpublish", "PUBLISHED"]).await;
    let (origin, gw) = gateway(&format!(
        "{}{}{}",
        perm("read", "stages = [\"DRAFT\"]\n"),
        perm("delete", ""),
        perm("unpublish", "")
    ))
    .await;
    denied(&gw, &origin, q, &["read", "PUBLISHED"]).await;
    let (origin, gw) = gateway(&format!(
        "{READ_ALL}{}{}",
        perm("delete", ""),
        perm("unpublish", "")
    ))
    .await;
    allowed(&gw, &origin, q).await;
}

#[tokio::test]
async fn publish_is_checked_per_target_stage_including_the_schema_default() {
    let (origin, gw) = gateway(&format!(
        "{READ_ALL}{}",
        perm(
            "publish",
            "from_stages = [\"DRAFT\"]\nto_stages = [\"PUBLISHED\"]\n"
        )
    ))
    .await;
    allowed(
        &gw,
        &origin,
        "mutation { publishPost(where: {id: \"p\"}) { id } }",
    )
    .await;
    allowed(
        &gw,
        &origin,
        "mutation { publishPost(where: {id: \"p\"}, to: [PUBLISHED]) { id } }",
    )
    .await;
    denied(
        &gw,
        &origin,
        "mutation { publishPost(where: {id: \"p\"}, to: [DRAFT]) { id } }",
        &["publish", "DRAFT"],
    )
    .await;
    let (origin, gw) = gateway(READ_ALL).await;
    denied(
        &gw,
        &origin,
        "mutation { publishManyPostsConnection(to: [PUBLISHED]) { edges { node { id } } } }",
        &["publish"],
    )
    .await;
}

#[tokio::test]
async fn unpublish_needs_unpublish_from_each_stage_and_read_everywhere() {
    let q = "mutation { unpublishPost(where: {id: \"p\"}, from: [PUBLISHED]) { id } }";
    let (origin, gw) = gateway(&format!(
        "{READ_ALL}{}",
        perm("unpublish", "stages = [\"PUBLISHED\"]\n")
    ))
    .await;
    allowed(&gw, &origin, q).await;
    let (origin, gw) = gateway(&format!(
        "{}{}",
        perm("read", "stages = [\"PUBLISHED\"]\n"),
        perm("unpublish", "")
    ))
    .await;
    denied(&gw, &origin, q, &["read", "DRAFT"]).await;
}

#[tokio::test]
async fn many_and_schedule_forms_map_to_the_same_actions() {
    let (origin, gw) = gateway(READ_ALL).await;
    for q in [
        "mutation { updateManyPostsConnection(data: {title: \"x\"}) { aggregate { count } } }",
        "mutation { deleteManyPosts { count } }",
        "mutation { schedulePublishPost(where: {id: \"p\"}, releaseAt: \"2030-01-01T00:00:00Z\") { id } }",
    ] {
        denied(&gw, &origin, q, &["Post"]).await;
    }
    let (origin, gw) = gateway(&format!(
        "{READ_ALL}{}{}",
        perm("update", ""),
        perm("delete", "")
    ))
    .await;
    allowed(
        &gw,
        &origin,
        "mutation { updateManyPostsConnection(data: {title: \"x\"}) { aggregate { count } } }",
    )
    .await;
}

// ---- bypasses ----

#[tokio::test]
async fn an_alias_is_checked_by_field_name_not_response_key() {
    let (origin, gw) = gateway(&perm("read", "models = [\"Post\"]\n")).await;
    let m = denied(&gw, &origin, "{ posts: authors { name } }", &["read"]).await;
    // The token cannot read Author at all: the denial does not name it.
    assert!(!m.contains("Author"), "{m}");
    assert!(m.contains("cannot read"));
}

#[tokio::test]
async fn fragments_spread_at_the_root_are_checked() {
    let (origin, gw) = gateway(&perm("read", "models = [\"Post\"]\n")).await;
    denied(
        &gw,
        &origin,
        "query { ...F } fragment F on Query { authors { id } }",
        &["read"],
    )
    .await;
    allowed(
        &gw,
        &origin,
        "query { ...F } fragment F on Query { posts { id } }",
    )
    .await;
}

#[tokio::test]
async fn an_inline_fragment_on_query_is_checked() {
    let (origin, gw) = gateway(&perm("read", "models = [\"Post\"]\n")).await;
    denied(
        &gw,
        &origin,
        "{ posts { id } ... on Query { authors { id } } }",
        &["read"],
    )
    .await;
}

#[tokio::test]
async fn a_nested_relation_needs_read_on_the_related_model() {
    let (origin, gw) = gateway(&perm("read", "models = [\"Post\"]\n")).await;
    denied(
        &gw,
        &origin,
        "{ posts { title author { name } } }",
        &["read"],
    )
    .await;
    denied(
        &gw,
        &origin,
        "{ postsConnection { edges { node { author { name } } } } }",
        &["read"],
    )
    .await;
    denied(
        &gw,
        &origin,
        "{ posts { ...A } } fragment A on Post { author { ... on Author { name } } }",
        &["read"],
    )
    .await;
    let (origin, gw) = gateway(&perm("read", "models = [\"Post\", \"Author\"]\n")).await;
    allowed(&gw, &origin, "{ posts { title author { name } } }").await;
}

#[tokio::test]
async fn node_is_checked_through_its_type_conditions() {
    let (origin, gw) = gateway(&perm("read", "models = [\"Post\"]\n")).await;
    // The CMS loads whatever document the id names: `{}` for an Author under `... on Post`
    // tells it apart from "no such id" (`null`), so node reads every model behind Node.
    denied(
        &gw,
        &origin,
        "{ node(id: \"p\") { ... on Post { title } } }",
        &["read"],
    )
    .await;
    let (origin, gw) = gateway(&perm("read", "models = [\"Post\", \"Author\"]\n")).await;
    allowed(
        &gw,
        &origin,
        "{ node(id: \"p\") { ... on Post { title } } }",
    )
    .await;
    let (origin, gw) = gateway(&perm("read", "models = [\"Post\"]\n")).await;
    denied(
        &gw,
        &origin,
        "{ node(id: \"a\") { ... on Author { name } } }",
        &["read"],
    )
    .await;
    // Fields on the interface itself read every model behind it.
    denied(&gw, &origin, "{ node(id: \"a\") { id } }", &["read"]).await;
    denied(
        &gw,
        &origin,
        "{ node(id: \"a\") { __typename } }",
        &["read"],
    )
    .await;
}

#[tokio::test]
async fn a_connection_without_nodes_still_reads_the_model() {
    let (origin, gw) = gateway(&perm("read", "models = [\"Author\"]\n")).await;
    denied(
        &gw,
        &origin,
        "{ postsConnection { aggregate { count } } }",
        &["read"],
    )
    .await;
}

#[tokio::test]
async fn a_stage_from_a_variable_default_is_checked() {
    let (origin, gw) = gateway(&perm("read", "stages = [\"PUBLISHED\"]\n")).await;
    denied(
        &gw,
        &origin,
        "query Q($s: Stage = DRAFT) { posts(stage: $s) { id } }",
        &["DRAFT"],
    )
    .await;
    let resp = gw
        .client
        .post(gw.url("/content"))
        .header("authorization", token())
        .header("content-type", "application/json")
        .body(json!({"query": "query Q($s: Stage = DRAFT) { posts(stage: $s) { id } }", "variables": {"s": "PUBLISHED"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the variable's value wins over its default"
    );
}

#[tokio::test]
async fn a_stage_or_locale_from_headers_is_checked() {
    let (origin, gw) = gateway(&perm(
        "read",
        "stages = [\"PUBLISHED\"]\nlocales = [\"en\"]\n",
    ))
    .await;
    denied_with(
        &gw,
        &origin,
        "{ posts { id } }",
        &[("gcms-locales", "de")],
        &["locale de"],
    )
    .await;
    denied_with(
        &gw,
        &origin,
        "{ posts { id } }",
        &[("gcms-stage", "DRAFT")],
        &["DRAFT"],
    )
    .await;
    denied(&gw, &origin, "{ posts(locales: [en, de]) { id } }", &["de"]).await;
    allowed(&gw, &origin, "{ posts(locales: [en]) { id } }").await;
}

#[tokio::test]
async fn nested_stage_and_locale_arguments_and_their_schema_defaults_are_checked() {
    let (origin, gw) = gateway(&perm(
        "read",
        "stages = [\"PUBLISHED\"]\nlocales = [\"en\"]\n",
    ))
    .await;
    // documentInStages defaults to [DRAFT, PUBLISHED] in the schema.
    denied(
        &gw,
        &origin,
        "{ posts { documentInStages { id } } }",
        &["DRAFT"],
    )
    .await;
    denied(
        &gw,
        &origin,
        "{ posts { documentInStages(stages: [DRAFT]) { id } } }",
        &["DRAFT"],
    )
    .await;
    allowed(
        &gw,
        &origin,
        "{ posts { documentInStages(stages: [PUBLISHED]) { id } } }",
    )
    .await;
    denied(
        &gw,
        &origin,
        "{ posts { localizations(locales: [de]) { title } } }",
        &["de"],
    )
    .await;
}

#[tokio::test]
async fn skip_and_include_do_not_hide_a_field_from_the_check() {
    let (origin, gw) = gateway(&perm("read", "models = [\"Post\"]\n")).await;
    denied(
        &gw,
        &origin,
        "{ posts { id } authors @skip(if: true) { id } }",
        &["read"],
    )
    .await;
    denied(
        &gw,
        &origin,
        "query($no: Boolean = false) { posts { id author @include(if: $no) { name } } }",
        &["read"],
    )
    .await;
}

#[tokio::test]
async fn every_operation_of_a_document_is_authorized() {
    let (origin, gw) = gateway(&perm("read", "models = [\"Post\"]\n")).await;
    let resp = gw
        .client
        .post(gw.url("/content"))
        .header("authorization", token())
        .header("content-type", "application/json")
        .body(json!({"query": "query A { posts { id } } query B { authors { id } }", "operationName": "A"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn a_field_the_schema_map_cannot_resolve_is_denied() {
    let (origin, gw) = gateway(READ_ALL).await;
    denied(&gw, &origin, "{ secretThings { id } }", &["secretThings"]).await;
    denied(
        &gw,
        &origin,
        "{ posts { id passwordHash } }",
        &["Post.passwordHash"],
    )
    .await;
    denied(
        &gw,
        &origin,
        "mutation { dropDatabase { id } }",
        &["dropDatabase"],
    )
    .await;
}

#[tokio::test]
async fn typename_alone_needs_nothing_and_introspection_needs_the_policy() {
    let (origin, gw) = gateway("").await;
    allowed(&gw, &origin, "{ __typename }").await;
    denied(
        &gw,
        &origin,
        "{ __schema { types { name } } }",
        &["introspection"],
    )
    .await;
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .tokens(&token_entry(
            "jti-t",
            "tester",
            "PUBLISHED",
            "introspection = true\n",
        ))
        .start()
        .await;
    allowed(&gw, &origin, "{ __schema { types { name } } }").await;
}

#[tokio::test]
async fn the_selection_set_of_a_mutation_is_a_read() {
    let (origin, gw) = gateway(&format!(
        "{}{}",
        perm("create", ""),
        perm("read", "models = [\"Post\"]\n")
    ))
    .await;
    allowed(
        &gw,
        &origin,
        "mutation { createPost(data: {title: \"x\"}) { id title } }",
    )
    .await;
    denied(
        &gw,
        &origin,
        "mutation { createPost(data: {title: \"x\"}) { id author { name } } }",
        &["read"],
    )
    .await;
}

#[tokio::test]
async fn the_public_principal_follows_the_public_policy() {
    let origin = MockOrigin::start().await;
    let public = "default_stage = \"PUBLISHED\"\n[[permission]]\naction = \"read\"\nmodels = [\"Post\"]\nstages = [\"PUBLISHED\"]\n";
    let gw = GatewayBuilder::new(&origin).public(public).start().await;
    assert_eq!(
        gw.query("/cdn", None, "{ posts { title } }").await.status(),
        200
    );
    for q in [
        "{ posts(stage: DRAFT) { id } }",
        "{ authors { name } }",
        "{ posts { author { name } } }",
    ] {
        let resp = gw.query("/cdn", None, q).await;
        assert_eq!(resp.status(), 403, "{q}");
    }
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn two_tokens_with_the_same_grants_behave_the_same() {
    let origin = MockOrigin::start().await;
    let tokens = [
        token_entry(
            "jti-x",
            "x",
            "PUBLISHED",
            &perm("read", "models = [\"Post\"]\n"),
        ),
        token_entry(
            "jti-y",
            "y",
            "PUBLISHED",
            &perm("read", "models = [\"Post\"]\n"),
        ),
    ]
    .concat();
    let gw = GatewayBuilder::new(&origin).tokens(&tokens).start().await;
    for jti in ["jti-x", "jti-y"] {
        assert_eq!(
            gw.query("/content", Some(&bearer(&es(jti))), "{ posts { id } }")
                .await
                .status(),
            200
        );
        assert_eq!(
            gw.query("/content", Some(&bearer(&es(jti))), "{ authors { id } }")
                .await
                .status(),
            403
        );
    }
}

// ---- limits ----

#[tokio::test]
async fn a_fragment_that_doubles_itself_is_refused_without_expansion() {
    let (origin, gw) = gateway(READ_ALL).await;
    let mut q = String::from("query { posts { ...F30 } } fragment F0 on Post { id title }");
    for i in 1..=30 {
        q.push_str(&format!(
            " fragment F{i} on Post {{ ...F{} ...F{} }}",
            i - 1,
            i - 1
        ));
    }
    let started = std::time::Instant::now();
    let resp = gw.query("/content", Some(&token()), &q).await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(origin.count(), 0);
    assert!(
        gw.metric("contentgate_graphql_rejections_total{reason=\"limit\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn deep_nesting_many_aliases_and_many_root_fields_are_refused() {
    let (origin, gw) = gateway(READ_ALL).await;
    let deep = format!("{}{}", "{ posts ".repeat(3000), "}".repeat(3000));
    assert_eq!(
        gw.query("/content", Some(&token()), &deep).await.status(),
        400
    );
    let aliases: String = (0..150).map(|i| format!("a{i}: posts {{ id }} ")).collect();
    assert_eq!(
        gw.query("/content", Some(&token()), &format!("{{ {aliases} }}"))
            .await
            .status(),
        400
    );
    let roots: String = (0..40).map(|_| "posts { id } ").collect();
    assert_eq!(
        gw.query("/content", Some(&token()), &format!("{{ {roots} }}"))
            .await
            .status(),
        400
    );
    assert_eq!(origin.count(), 0);
}

// ---- management endpoint ----

#[tokio::test]
async fn the_management_endpoint_checks_management_permissions() {
    let origin = MockOrigin::start().await;
    let tokens = [
        token_entry(
            "jti-admin",
            "admin",
            "DRAFT",
            "management = [\"MODEL_CREATE\"]\n",
        ),
        token_entry("jti-reader", "reader", "PUBLISHED", READ_ALL),
    ]
    .concat();
    let gw = GatewayBuilder::new(&origin)
        .tokens(&tokens)
        .extra("\n[[endpoint]]\npath = \"/management\"\nkind = \"management\"\n")
        .start()
        .await;
    let admin = bearer(&es("jti-admin"));
    let q = "mutation { createModel(data: {apiId: \"Page\"}) { id } }";
    assert_eq!(gw.query("/management", Some(&admin), q).await.status(), 200);
    let resp = gw
        .query(
            "/management",
            Some(&admin),
            "mutation { deleteModel(data: {id: \"x\"}) { id } }",
        )
        .await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("MODEL_DELETE"));
    assert_eq!(
        gw.query(
            "/management",
            Some(&admin),
            "mutation { dropEverything { id } }"
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        gw.query("/management", Some(&bearer(&es("jti-reader"))), q)
            .await
            .status(),
        403
    );
    assert_eq!(origin.count(), 1);
    assert!(
        gw.metric("contentgate_permission_denials_total{action=\"management\"}")
            .await
            >= 3.0
    );
}

#[tokio::test]
async fn without_an_sdl_file_the_schema_map_is_built_by_introspecting_the_upstream() {
    let origin = MockOrigin::start().await;
    let api = contentgate::demo::content_api::SampleContentApi::new();
    let introspection = api
        .execute(
            contentgate::demo::content_api::async_graphql::Request::new(
                contentgate::schema::INTROSPECTION_QUERY,
            ),
            None,
            None,
        )
        .await;
    origin.reply_with(Reply {
        body: serde_json::to_string(&introspection).unwrap(),
        ..Reply::default()
    });
    let gw = GatewayBuilder::new(&origin)
        .schema(None)
        .tokens(&token_entry(
            "jti-t",
            "tester",
            "PUBLISHED",
            &perm("read", "models = [\"Post\"]\n"),
        ))
        .start()
        .await;
    let first = origin.requests().remove(0);
    assert!(String::from_utf8_lossy(&first.body).contains("__schema"));
    assert_eq!(
        first.header("authorization"),
        Some(format!("Bearer {SERVICE_TOKEN}").as_str())
    );
    allowed(&gw, &origin, "{ posts { id } }").await;
    denied(&gw, &origin, "{ authors { id } }", &["read"]).await;
    // The deprecated …Many… mutations are in the map too (introspected with includeDeprecated).
    denied(
        &gw,
        &origin,
        "mutation { deleteManyPosts { count } }",
        &["delete"],
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_upstream_without_an_sdl_file_fails_start_up_with_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = GatewayBuilder::with_upstream(&format!("http://127.0.0.1:{port}/graphql"))
        .schema(None)
        .write();
    let out = contentgate(&["serve", "--config", cfg.config().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("schema.graphql") && stderr.contains("introspecting upstream"),
        "{stderr}"
    );
}
