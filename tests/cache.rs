//! The read path: hits, scope separation, never-store rules, coalescing, stale serving and
//! every invalidation path — through the real gateway and a recording origin.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const Q: &str = "{ posts { id title } }";

fn reader_tokens() -> String {
    [
        token_entry(
            "jti-a",
            "a",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n",
        ),
        token_entry(
            "jti-b",
            "b",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n",
        ),
        token_entry(
            "jti-narrow",
            "narrow",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\nmodels = [\"Post\"]\n",
        ),
        token_entry(
            "jti-draft",
            "draft",
            "DRAFT",
            "[[token.permission]]\naction = \"read\"\n",
        ),
        token_entry(
            "jti-writer",
            "writer",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n[[token.permission]]\naction = \"update\"\n",
        ),
    ]
    .concat()
}

async fn gateway_with(cache: &str) -> (MockOrigin, TestGateway) {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .tokens(&reader_tokens())
        .extra(&format!(
            "\n[cache]\n{cache}\n\n[webhooks]\nsecret_env = \"CG_TEST_WEBHOOK_SECRET\"\n"
        ))
        .start()
        .await;
    (origin, gw)
}

async fn gateway() -> (MockOrigin, TestGateway) {
    gateway_with("default_ttl = \"60s\"").await
}

async fn get(
    gw: &TestGateway,
    jti: Option<&str>,
    query: &str,
    headers: &[(&str, &str)],
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = gw
        .client
        .post(gw.url("/cdn"))
        .header("content-type", "application/json")
        .body(json!({ "query": query }).to_string());
    if let Some(j) = jti {
        req = req.header("authorization", bearer(&es(j)));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap(), headers)
}

fn x_cache(h: &reqwest::header::HeaderMap) -> &str {
    h.get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn a_repeat_is_a_hit_that_never_touches_the_origin() {
    let (origin, gw) = gateway().await;
    let (s1, b1, h1) = get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!((s1, x_cache(&h1)), (200, "MISS"));
    let (s2, b2, h2) = get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!((s2, x_cache(&h2)), (200, "HIT"));
    assert_eq!(b1, b2);
    assert!(h2.contains_key("age"));
    assert_eq!(h2["content-type"], "application/json");
    assert_ne!(h1["x-request-id"], h2["x-request-id"]);
    assert_eq!(origin.count(), 1);
    assert_eq!(
        gw.metric("contentgate_cache_lookups_total{result=\"hit\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("contentgate_cache_lookups_total{result=\"miss\"}")
            .await,
        1.0
    );
    assert!(gw.metric("contentgate_cache_entries").await >= 1.0);
    // GET is cached too, under its own key.
    let url = format!(
        "{}?query={}",
        gw.url("/cdn"),
        "%7B%20posts%20%7B%20id%20%7D%20%7D"
    );
    for expected in ["MISS", "HIT"] {
        let resp = gw.client.get(&url).send().await.unwrap();
        assert_eq!(resp.headers()["x-cache"], expected);
    }
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn identical_grants_share_entries_and_everything_in_the_key_separates_them() {
    let (origin, gw) = gateway().await;
    get(&gw, Some("jti-a"), Q, &[]).await;
    // Another token with identical grants: shared.
    assert_eq!(x_cache(&get(&gw, Some("jti-b"), Q, &[]).await.2), "HIT");
    // Different grants: separate.
    assert_eq!(
        x_cache(&get(&gw, Some("jti-narrow"), Q, &[]).await.2),
        "MISS"
    );
    // Different default stage (injected): separate, and the upstream got the injected stage.
    assert_eq!(
        x_cache(&get(&gw, Some("jti-draft"), Q, &[]).await.2),
        "MISS"
    );
    assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));
    // Explicit header stage equal to the default: same answer, same key as jti-a.
    assert_eq!(
        x_cache(
            &get(&gw, Some("jti-a"), Q, &[("gcms-stage", "PUBLISHED")])
                .await
                .2
        ),
        "HIT"
    );
    // Locales, in order.
    assert_eq!(
        x_cache(
            &get(&gw, Some("jti-a"), Q, &[("gcms-locales", "en,de")])
                .await
                .2
        ),
        "MISS"
    );
    assert_eq!(
        x_cache(
            &get(&gw, Some("jti-a"), Q, &[("gcms-locales", "de,en")])
                .await
                .2
        ),
        "MISS"
    );
    assert_eq!(
        x_cache(
            &get(&gw, Some("jti-a"), Q, &[("gcms-locales", "en,de")])
                .await
                .2
        ),
        "HIT"
    );
    // Public principal: its own grants.
    assert_eq!(x_cache(&get(&gw, None, Q, &[]).await.2), "MISS");
    assert_eq!(origin.count(), 6);
}

#[tokio::test]
async fn variables_are_keyed_canonically() {
    let (origin, gw) = gateway().await;
    let send = |vars: serde_json::Value| {
        let body = json!({ "query": "query($f: Int, $w: PostWhereInput) { posts(first: $f, where: $w) { id } }", "variables": vars }).to_string();
        gw.client
            .post(gw.url("/cdn"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cache = |r: reqwest::Response| r.headers()["x-cache"].to_str().unwrap().to_string();
    assert_eq!(
        cache(
            send(json!({"f": 1, "w": {"id": "a", "slug": "b"}}))
                .await
                .unwrap()
        ),
        "MISS"
    );
    assert_eq!(
        cache(
            send(json!({"w": {"slug": "b", "id": "a"}, "f": 1}))
                .await
                .unwrap()
        ),
        "HIT"
    );
    // `ID` takes both a string and a number: `1` and `"1"` are different keys.
    assert_eq!(
        cache(
            send(json!({"f": 1, "w": {"id": 1, "slug": "b"}}))
                .await
                .unwrap()
        ),
        "MISS"
    );
    assert_eq!(
        cache(
            send(json!({"f": 1, "w": {"id": "1", "slug": "b"}}))
                .await
                .unwrap()
        ),
        "MISS"
    );
    // A variable that does not coerce to its declared type never reaches the CMS.
    let refused = send(json!({"f": "1", "w": {"id": "a", "slug": "b"}}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(origin.count(), 3);
}

#[tokio::test]
async fn a_revoked_token_never_gets_a_cached_answer() {
    let (origin, gw) = gateway().await;
    get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "HIT");
    write_atomic(&gw.policies().join("revoked.txt"), "jti-a\n");
    gw.signal("HUP");
    gw.wait_generation(2).await;
    let (status, _, _) = get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!(status, 401);
    // The entry is still there for others with the same grants.
    assert_eq!(x_cache(&get(&gw, Some("jti-b"), Q, &[]).await.2), "HIT");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn narrowed_grants_after_a_reload_cannot_reach_old_entries() {
    let (origin, gw) = gateway().await;
    get(&gw, Some("jti-a"), Q, &[]).await;
    let narrowed = reader_tokens().replacen(
        "jti = \"jti-a\"\nname = \"a\"\ndefault_stage = \"PUBLISHED\"\n[[token.permission]]\naction = \"read\"\n",
        "jti = \"jti-a\"\nname = \"a\"\ndefault_stage = \"PUBLISHED\"\n[[token.permission]]\naction = \"read\"\nmodels = [\"Author\"]\n",
        1,
    );
    write_atomic(&gw.policies().join("tokens.toml"), narrowed);
    gw.signal("HUP");
    gw.wait_generation(2).await;
    assert_eq!(get(&gw, Some("jti-a"), Q, &[]).await.0, 403);
    assert_eq!(origin.count(), 1);
}

async fn assert_not_stored(reply: Reply, what: &str) {
    let (origin, gw) = gateway().await;
    origin.reply_with(reply);
    let (_, b1, h1) = get(&gw, Some("jti-a"), Q, &[]).await;
    let (_, b2, h2) = get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!(b1, b2, "{what}: both clients got the upstream's answer");
    assert_ne!(x_cache(&h2), "HIT", "{what} was stored: {h1:?}");
    assert_eq!(
        origin.count(),
        2,
        "{what}: the second request went upstream"
    );
}

#[tokio::test]
async fn errors_partial_data_and_non_200_are_never_stored() {
    assert_not_stored(
        Reply {
            status: 500,
            body: "{\"errors\":[{\"message\":\"x\"}]}".into(),
            ..Reply::default()
        },
        "a 500",
    )
    .await;
    assert_not_stored(
        Reply {
            status: 404,
            body: "{\"data\":null}".into(),
            ..Reply::default()
        },
        "a 404",
    )
    .await;
    assert_not_stored(
        Reply {
            body: "{\"errors\":[{\"message\":\"x\"}],\"data\":null}".into(),
            ..Reply::default()
        },
        "errors",
    )
    .await;
    assert_not_stored(
        Reply {
            body: "{\"data\":{\"posts\":[]},\"errors\":[{\"message\":\"partial\"}]}".into(),
            ..Reply::default()
        },
        "partial data",
    )
    .await;
}

#[tokio::test]
async fn cookies_no_store_private_and_non_json_are_never_stored() {
    let with = |h: &[(&str, &str)]| {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(h.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Reply {
            headers,
            ..Reply::default()
        }
    };
    assert_not_stored(with(&[("set-cookie", "session=1")]), "set-cookie").await;
    assert_not_stored(with(&[("cache-control", "no-store")]), "no-store").await;
    assert_not_stored(with(&[("cache-control", "private, max-age=60")]), "private").await;
    assert_not_stored(
        Reply {
            headers: vec![("content-type".into(), "text/html".into())],
            body: "<html>".into(),
            ..Reply::default()
        },
        "html",
    )
    .await;
    assert_not_stored(
        Reply {
            body: "{\"data\": {\"posts\": [".into(),
            ..Reply::default()
        },
        "truncated JSON",
    )
    .await;
}

#[tokio::test]
async fn a_body_over_the_entry_limit_is_served_but_not_stored() {
    let (origin, gw) = gateway_with("max_entry_bytes = 100").await;
    let big = format!(
        "{{\"data\":{{\"posts\":[{{\"id\":\"{}\"}}]}}}}",
        "x".repeat(500)
    );
    origin.reply_with(Reply {
        body: big.clone(),
        ..Reply::default()
    });
    assert_eq!(get(&gw, Some("jti-a"), Q, &[]).await.1, big);
    assert_eq!(get(&gw, Some("jti-a"), Q, &[]).await.1, big);
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn upstream_max_age_is_honored() {
    let (origin, gw) = gateway().await;
    origin.reply_with(Reply {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "max-age=1".into()),
        ],
        ..Reply::default()
    });
    get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!(
        x_cache(
            &get(
                &gw,
                Some("jti-a"),
                Q,
                &[("hyg-stale-while-revalidate", "0")]
            )
            .await
            .2
        ),
        "HIT"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        x_cache(
            &get(
                &gw,
                Some("jti-a"),
                Q,
                &[("hyg-stale-while-revalidate", "0")]
            )
            .await
            .2
        ),
        "MISS"
    );
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn hits_replay_only_content_headers_and_fills_forward_only_keyed_headers() {
    let (origin, gw) = gateway().await;
    origin.reply_with(Reply {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-upstream-internal".into(), "secret".into()),
        ],
        ..Reply::default()
    });
    let poison = [
        ("x-forwarded-host", "evil.example"),
        ("accept-language", "fr"),
        ("x-original-url", "/admin"),
        ("gcms-stagee", "DRAFT"),
    ];
    let (_, _, miss) = get(&gw, Some("jti-a"), Q, &poison).await;
    let seen = origin.last();
    for (h, _) in poison {
        assert_eq!(seen.header(h), None, "{h} reached the origin on a fill");
    }
    assert!(!miss.contains_key("x-upstream-internal"));
    let (_, _, hit) = get(&gw, Some("jti-b"), Q, &[]).await;
    assert_eq!(x_cache(&hit), "HIT");
    assert!(!hit.contains_key("x-upstream-internal"));
    assert!(!hit.contains_key("set-cookie"));
}

#[tokio::test]
async fn two_hundred_concurrent_identical_misses_make_one_upstream_request() {
    let (origin, gw) = gateway().await;
    origin.reply_with(Reply {
        delay: Duration::from_millis(400),
        ..Reply::default()
    });
    let gw = Arc::new(gw);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            get(&gw, Some("jti-a"), Q, &[]).await
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let (status, body, _) = t.await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(origin.count(), 1);
    let coalesced = gw
        .metric("contentgate_cache_lookups_total{result=\"coalesced\"}")
        .await;
    let hits = gw
        .metric("contentgate_cache_lookups_total{result=\"hit\"}")
        .await;
    assert_eq!(coalesced + hits, 199.0);
}

/// `[server] work_stealing = false` runs one single-threaded runtime per thread, each with its
/// own connections: a fill spawned on one runtime must still wake the followers waiting on the
/// other, and the pass-through pool must work from both.
#[tokio::test]
async fn without_work_stealing_misses_from_every_runtime_still_coalesce() {
    let origin = MockOrigin::start().await;
    let cfg = GatewayBuilder::new(&origin)
        .tokens(&reader_tokens())
        .extra("\n[cache]\ndefault_ttl = \"60s\"\n")
        .write();
    let text = std::fs::read_to_string(cfg.config()).unwrap();
    assert!(text.contains("threads = 2\n"));
    std::fs::write(
        cfg.config(),
        text.replacen("threads = 2\n", "threads = 2\nwork_stealing = false\n", 1),
    )
    .unwrap();
    let gw = Arc::new(cfg.start().await);
    origin.reply_with(Reply {
        delay: Duration::from_millis(400),
        ..Reply::default()
    });
    // Each request on its own connection, so both runtimes get some of them.
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let res = client
                .post(gw.url("/cdn"))
                .header("content-type", "application/json")
                .body(json!({ "query": Q }).to_string())
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("Hello"), "{body}");
    }
    assert_eq!(
        origin.count(),
        1,
        "64 identical misses, one upstream request"
    );
    origin.reply_with(Reply::default());
    for i in 0..8 {
        let res = gw
            .query(
                "/content",
                Some(&bearer(&es("jti-a"))),
                &format!("{{ posts(first: {i}) {{ id }} }}"),
            )
            .await;
        assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
    }
    assert_eq!(
        origin.count(),
        9,
        "the pass-through reached the origin from the pool"
    );
}

#[tokio::test]
async fn a_leader_that_disconnects_does_not_fail_its_followers() {
    let (origin, gw) = gateway().await;
    origin.reply_with(Reply {
        delay: Duration::from_millis(500),
        ..Reply::default()
    });
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let leader = impatient
        .post(gw.url("/cdn"))
        .header("content-type", "application/json")
        .body(json!({ "query": Q }).to_string())
        .send()
        .await;
    assert!(leader.is_err(), "the leader gave up");
    let (status, body, _) = get(&gw, None, Q, &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("Hello"));
    assert_eq!(origin.count(), 1, "the follower joined the leader's fill");
}

#[tokio::test]
async fn a_fill_past_the_fetch_deadline_is_a_504() {
    let (origin, gw) = gateway_with("fetch_deadline = \"500ms\"").await;
    origin.reply_with(Reply {
        delay: Duration::from_secs(2),
        ..Reply::default()
    });
    let started = Instant::now();
    let (status, body, _) = get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!(status, 504);
    assert!(body.contains("UPSTREAM_TIMEOUT"));
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_refreshes_once() {
    let (origin, gw) = gateway_with("default_ttl = \"1s\"\nstale_while_revalidate = \"30s\"").await;
    get(&gw, Some("jti-a"), Q, &[]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    origin.reply_with(Reply {
        delay: Duration::from_millis(300),
        body: r#"{"data":{"posts":[{"id":"p1","title":"Refreshed"}]}}"#.into(),
        ..Reply::default()
    });
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body, h) = get(&gw, Some("jti-a"), Q, &[]).await;
        assert_eq!((status, x_cache(&h)), (200, "STALE"));
        assert!(body.contains("Hello"));
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "served without waiting for the refresh"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(origin.count(), 2, "exactly one background refresh");
    let (_, body, h) = get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!(x_cache(&h), "HIT");
    assert!(body.contains("Refreshed"));
    // A client may ask for no stale window at all.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, _, h) = get(
        &gw,
        Some("jti-a"),
        Q,
        &[("hyg-stale-while-revalidate", "0")],
    )
    .await;
    assert_eq!(x_cache(&h), "MISS");
}

async fn stale_if_error_case(reply: Option<Reply>, what: &str) -> TestGateway {
    let (origin, gw) = gateway_with(
        "default_ttl = \"1s\"\nstale_while_revalidate = \"0s\"\nstale_if_error = \"60s\"",
    )
    .await;
    let (_, fresh, _) = get(&gw, Some("jti-a"), Q, &[]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    match reply {
        Some(r) => origin.reply_with(r),
        None => {
            drop(origin);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (status, body, h) = get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!((status, x_cache(&h)), (200, "STALE"), "{what}");
    assert_eq!(body, fresh, "{what}");
    gw
}

#[tokio::test]
async fn stale_if_error_covers_500_429_and_a_dead_upstream() {
    stale_if_error_case(
        Some(Reply {
            status: 500,
            body: "{}".into(),
            ..Reply::default()
        }),
        "500",
    )
    .await;
    let gw = stale_if_error_case(
        Some(Reply {
            status: 429,
            body: "{}".into(),
            headers: vec![("retry-after".into(), "30".into())],
            ..Reply::default()
        }),
        "429",
    )
    .await;
    assert_eq!(
        gw.metric("contentgate_cache_stale_served_on_429_total")
            .await,
        1.0
    );
    stale_if_error_case(None, "connection refused").await;
}

#[tokio::test]
async fn without_a_stale_entry_an_upstream_429_passes_through_with_retry_after() {
    let (origin, gw) = gateway().await;
    origin.reply_with(Reply {
        status: 429,
        body: "{\"errors\":[{\"message\":\"slow down\"}]}".into(),
        headers: vec![("retry-after".into(), "7".into())],
        ..Reply::default()
    });
    let (status, _, h) = get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!(status, 429);
    assert_eq!(h["retry-after"], "7");
}

#[tokio::test]
async fn a_mutation_through_the_content_endpoint_purges_what_read_its_model() {
    let (origin, gw) = gateway().await;
    get(&gw, Some("jti-a"), Q, &[]).await;
    get(&gw, Some("jti-a"), "{ authors { id } }", &[]).await;
    let resp = gw
        .query(
            "/content",
            Some(&bearer(&es("jti-writer"))),
            "mutation { updatePost(where: {id: \"p1\"}, data: {title: \"New\"}) { id } }",
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2),
        "MISS",
        "the Post entry was purged"
    );
    assert_eq!(
        x_cache(&get(&gw, Some("jti-a"), "{ authors { id } }", &[]).await.2),
        "HIT",
        "the Author entry was not"
    );
    assert_eq!(
        gw.metric("contentgate_cache_purges_total{source=\"mutation\"}")
            .await,
        1.0
    );
    assert_eq!(origin.count(), 4);
}

fn authors_reply() -> Reply {
    Reply {
        body: r#"{"data":{"authors":[{"id":"a1"}]}}"#.into(),
        ..Reply::default()
    }
}

#[tokio::test]
async fn a_signed_webhook_purges_by_typename_id_and_stage() {
    let (origin, gw) = gateway().await;
    get(&gw, Some("jti-a"), Q, &[]).await;
    origin.reply_with(authors_reply());
    get(&gw, Some("jti-a"), "{ authors { id } }", &[]).await;
    let body =
        r#"{"operation":"publish","data":{"__typename":"Post","id":"p1","stage":"PUBLISHED"}}"#;
    let hook = |sig: String, body: &'static str| {
        gw.client
            .post(gw.admin_url("/webhooks/cms"))
            .header("gcms-signature", sig)
            .body(body)
            .send()
    };
    // Refusals first: nothing purged.
    assert_eq!(
        hook(
            contentgate::admin::sign_webhook(body, "master", now_ms(), b"wrong"),
            body
        )
        .await
        .unwrap()
        .status(),
        401
    );
    let replay = contentgate::admin::sign_webhook(
        body,
        "master",
        now_ms() - 3_600_000,
        WEBHOOK_SECRET.as_bytes(),
    );
    assert_eq!(hook(replay, body).await.unwrap().status(), 401);
    assert_eq!(
        gw.client
            .post(gw.admin_url("/webhooks/cms"))
            .body(body)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "HIT");
    assert!(
        gw.metric("contentgate_webhook_rejections_total{reason=\"bad signature\"}")
            .await
            >= 1.0
    );
    // A valid one purges the Post entries at once.
    let ok = contentgate::admin::sign_webhook(body, "master", now_ms(), WEBHOOK_SECRET.as_bytes());
    assert_eq!(hook(ok, body).await.unwrap().status(), 200);
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "MISS");
    assert_eq!(
        x_cache(&get(&gw, Some("jti-a"), "{ authors { id } }", &[]).await.2),
        "HIT"
    );
    assert_eq!(
        gw.metric("contentgate_cache_purges_total{source=\"webhook\"}")
            .await,
        1.0
    );
    assert_eq!(origin.count(), 3);
}

#[tokio::test]
async fn the_admin_purge_api_purges_by_model_id_or_all_with_a_token() {
    let (origin, gw) = gateway().await;
    let purge = |token: &str, body: serde_json::Value| {
        gw.client
            .post(gw.admin_url("/admin/purge"))
            .header("authorization", format!("Bearer {token}"))
            .body(body.to_string())
            .send()
    };
    get(&gw, Some("jti-a"), Q, &[]).await;
    origin.reply_with(authors_reply());
    get(&gw, Some("jti-a"), "{ authors { id } }", &[]).await;
    assert_eq!(
        purge("wrong", json!({"all": true})).await.unwrap().status(),
        401
    );
    assert_eq!(purge(ADMIN_TOKEN, json!({})).await.unwrap().status(), 400);
    // A purge is logged and broadcast in a cluster: names are bounded before anything is done.
    assert_eq!(
        purge(ADMIN_TOKEN, json!({"model": "P".repeat(300)}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "HIT");
    // By entry id (the origin's answer contains "p1").
    assert_eq!(
        purge(ADMIN_TOKEN, json!({"id": "p1"}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "MISS");
    assert_eq!(
        x_cache(&get(&gw, Some("jti-a"), "{ authors { id } }", &[]).await.2),
        "HIT",
        "another entry stays"
    );
    // By model.
    assert_eq!(
        purge(ADMIN_TOKEN, json!({"model": "Author"}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        x_cache(&get(&gw, Some("jti-a"), "{ authors { id } }", &[]).await.2),
        "MISS"
    );
    // Everything.
    assert_eq!(
        purge(ADMIN_TOKEN, json!({"all": true}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "MISS");
    assert_eq!(
        gw.metric("contentgate_cache_purges_total{source=\"admin\"}")
            .await,
        3.0
    );
    assert_eq!(origin.count(), 5);
}

#[tokio::test]
async fn a_webhook_delivery_replayed_inside_the_window_is_not_acted_on_again() {
    let (_origin, gw) = gateway().await;
    let body = r#"{"operation":"update","data":{"__typename":"Post","id":"p1","stage":"DRAFT"}}"#;
    let sig = contentgate::admin::sign_webhook(body, "master", now_ms(), WEBHOOK_SECRET.as_bytes());
    let send = |sig: String| {
        gw.client
            .post(gw.admin_url("/webhooks/cms"))
            .header("gcms-signature", sig)
            .body(body)
            .send()
    };
    let first: serde_json::Value = send(sig.clone()).await.unwrap().json().await.unwrap();
    assert!(first.get("purged").is_some(), "{first}");
    get(&gw, Some("jti-a"), Q, &[]).await;
    let again = send(sig.clone()).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["duplicate"],
        true
    );
    // The same delivery spelled differently (parts reversed, spaces, an extra part) still
    // verifies, and is still the same delivery.
    let mut parts: Vec<&str> = sig.split(',').map(str::trim).collect();
    parts.reverse();
    let respelled = format!("x=1 ,  {}", parts.join(" , "));
    let third = send(respelled).await.unwrap();
    assert_eq!(third.status(), 200);
    assert_eq!(
        third.json::<serde_json::Value>().await.unwrap()["duplicate"],
        true
    );
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "HIT");
    assert_eq!(
        gw.metric("contentgate_cache_purges_total{source=\"webhook\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_mutation_the_cms_answered_with_errors_purges_nothing() {
    let (origin, gw) = gateway().await;
    get(&gw, Some("jti-a"), Q, &[]).await;
    origin.reply_with(Reply {
        body: r#"{"data":{"updatePost":null},"errors":[{"message":"not allowed"}]}"#.into(),
        ..Reply::default()
    });
    let resp = gw
        .query(
            "/content",
            Some(&bearer(&es("jti-writer"))),
            "mutation { updatePost(where: {id: \"p1\"}, data: {title: \"New\"}) { id } }",
        )
        .await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    origin.reply_with(Reply::default());
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "HIT");
}

#[tokio::test]
async fn forward_mode_keys_answers_by_credential() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .credential("credential = { mode = \"forward\" }")
        .tokens(&reader_tokens())
        .extra("\n[cache]\ndefault_ttl = \"60s\"\n")
        .start()
        .await;
    // jti-a and jti-b have identical grants; the CMS answers for each one's own credential.
    // Each token is minted once: the key is the credential string, and a token minted again in
    // the next second (a new iat) is another credential.
    let (a, b) = (bearer(&es("jti-a")), bearer(&es("jti-b")));
    let as_a = [("authorization", a.as_str())];
    let as_b = [("authorization", b.as_str())];
    assert_eq!(x_cache(&get(&gw, None, Q, &as_a).await.2), "MISS");
    assert_eq!(x_cache(&get(&gw, None, Q, &as_b).await.2), "MISS");
    assert_eq!(x_cache(&get(&gw, None, Q, &as_a).await.2), "HIT");
    let seen = origin.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].header("authorization").is_some());
    assert_ne!(
        seen[0].header("authorization"),
        seen[1].header("authorization")
    );
}

#[tokio::test]
async fn cache_fills_share_a_bounded_buffer_budget() {
    let (origin, gw) = gateway_with("default_ttl = \"60s\"\nfill_buffer_bytes = 4096").await;
    origin.reply_with(Reply {
        body: format!(
            r#"{{"data":{{"posts":[{{"id":"p1","title":"{}"}}]}}}}"#,
            "x".repeat(20_000)
        ),
        ..Reply::default()
    });
    // One answer larger than every fill may buffer together: refused, not buffered whole.
    let (status, body, _) = get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("FILL_BUDGET_EXHAUSTED"), "{body}");
    // A small one fits.
    origin.reply_with(Reply::default());
    let (status, _, h) = get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!((status, x_cache(&h)), (200, "MISS"));
}

/// A mutation whose client goes away before the answer may still have run: it purges what read
/// its model as if it had succeeded (a miss too many, never a stale read).
#[tokio::test]
async fn a_mutation_whose_client_left_still_purges() {
    let (origin, gw) = gateway().await;
    get(&gw, Some("jti-a"), Q, &[]).await;
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "HIT");
    origin.reply_with(Reply {
        delay: std::time::Duration::from_millis(800),
        ..Reply::default()
    });
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let gone = impatient
        .post(gw.url("/content"))
        .header("authorization", bearer(&es("jti-writer")))
        .header("content-type", "application/json")
        .body(json!({ "query": "mutation { updatePost(where: {id: \"p1\"}, data: {title: \"New\"}) { id } }" }).to_string())
        .send()
        .await;
    assert!(gone.is_err(), "the client was meant to give up");
    origin.reply_with(Reply::default());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while gw
        .metric("contentgate_cache_purges_total{source=\"mutation\"}")
        .await
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no purge after the client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "MISS");
    // The upstream's own failure after the mutation was sent is as unknown (a client that left
    // may still have been written to; an upstream that times out was not answered at all):
    // cached again, then a mutation whose answer outlasts read_timeout (2 s) gets 504 and purges.
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "HIT");
    origin.reply_with(Reply {
        delay: std::time::Duration::from_millis(2500),
        ..Reply::default()
    });
    let resp = gw
        .query(
            "/content",
            Some(&bearer(&es("jti-writer"))),
            "mutation { updatePost(where: {id: \"p1\"}, data: {title: \"Newer\"}) { id } }",
        )
        .await;
    assert_eq!(resp.status(), 504);
    origin.reply_with(Reply::default());
    assert_eq!(
        gw.metric("contentgate_cache_purges_total{source=\"mutation\"}")
            .await,
        2.0
    );
    assert_eq!(x_cache(&get(&gw, Some("jti-a"), Q, &[]).await.2), "MISS");
}
