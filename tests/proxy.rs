//! Forwarding: request shape checks, default stage injection, upstream rewriting, and upstream
//! failures mapped to GraphQL-shaped 502/504 within the configured timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const Q: &str = "{ posts { id } }";

fn reader() -> String {
    bearer(&es("jti-reader"))
}

#[tokio::test]
async fn public_requests_get_the_public_default_stage_injected() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin).start().await;
    let resp = gw.query("/cdn", None, Q).await;
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(seen.header("gcms-stage"), Some("PUBLISHED"));
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {SERVICE_TOKEN}").as_str())
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&seen.body).unwrap()["query"],
        Q
    );
    assert_eq!(
        gw.metric("contentgate_stage_injections_total{principal=\"public\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_named_stage_is_never_overridden() {
    let origin = MockOrigin::start().await;
    let tokens = token_entry(
        "jti-reader",
        "reader",
        "DRAFT",
        "[[token.permission]]\naction = \"read\"\n",
    );
    let gw = GatewayBuilder::new(&origin).tokens(&tokens).start().await;
    // The token's default.
    gw.query("/content", Some(&reader()), Q).await;
    assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));
    // A stage argument on every root field wins at the CMS; the checked fallback is still
    // sent, so no field the CMS reads differently can fall to its own default.
    gw.query(
        "/content",
        Some(&reader()),
        "{ posts(stage: PUBLISHED) { id } }",
    )
    .await;
    assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));
    // A stage argument through a variable default.
    gw.query(
        "/content",
        Some(&reader()),
        "query($s: Stage = PUBLISHED) { posts(stage: $s) { id } }",
    )
    .await;
    assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));
    // One root field without an argument: the default is injected for it.
    gw.query(
        "/content",
        Some(&reader()),
        "{ posts(stage: PUBLISHED) { id } authors { id } }",
    )
    .await;
    assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));
    // The client's header wins over the default and is passed on as checked (canonical).
    let resp = gw
        .client
        .post(gw.url("/content"))
        .header("authorization", reader())
        .header("content-type", "application/json")
        .header("gcms-stage", "PUBLISHED")
        .header("gcms-locales", "de, en")
        .body(json!({ "query": Q }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(seen.header("gcms-stage"), Some("PUBLISHED"));
    assert_eq!(seen.header("gcms-locales"), Some("de,en"));
}

#[tokio::test]
async fn unknown_stages_and_locales_are_refused_before_the_upstream() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin).start().await;
    let resp = gw
        .client
        .post(gw.url("/cdn"))
        .header("content-type", "application/json")
        .header("gcms-stage", "QA")
        .body(json!({ "query": Q }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        gw.query("/cdn", None, "{ posts(stage: STAGING) { id } }")
            .await
            .status(),
        400
    );
    let resp = gw
        .query("/cdn", None, "{ posts(locales: [en, fr]) { id } }")
        .await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn get_requests_are_forwarded_with_their_parameters() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin).start().await;
    let url = format!(
        "{}?query={}&operationName=Q",
        gw.url("/cdn"),
        urlencode("query Q { posts { id } }")
    );
    let resp = gw.client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri.path(), "/v2/project/master");
    assert!(seen.uri.query().unwrap().contains("operationName=Q"));
    assert_eq!(seen.header("gcms-stage"), Some("PUBLISHED"));
}

fn urlencode(s: &str) -> String {
    url_escape(s)
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn request_shape_errors_never_reach_the_upstream() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin).start().await;
    let post = |ct: Option<&str>, body: String| {
        let mut r = gw.client.post(gw.url("/content")).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    let q = json!({ "query": Q }).to_string();
    // CSRF guard: only application/json.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        assert_eq!(post(ct, q.clone()).await.unwrap().status(), 415, "{ct:?}");
    }
    assert_eq!(
        post(Some("application/json; charset=utf-8"), q.clone())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(Some("application/json"), "{nope".into())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(Some("application/json"), r#"{"qeury":"{ a }"}"#.into())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(
            Some("application/json"),
            r#"{"query":"{ a }","variables":[7]}"#.into()
        )
        .await
        .unwrap()
        .status(),
        400
    );
    assert_eq!(
        post(Some("application/json"), format!("[{q}]"))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(
            Some("application/json"),
            r#"{"query":"{ posts { id "}"#.into()
        )
        .await
        .unwrap()
        .status(),
        400
    );
    assert_eq!(
        post(
            Some("application/json"),
            r#"{"query":"query A { a } query B { b }"}"#.into()
        )
        .await
        .unwrap()
        .status(),
        400
    );
    // Oversized body: answered from its Content-Length, before the client has sent it (a client
    // still uploading may see the connection close instead of the answer).
    assert_eq!(
        raw::refused_by_length(gw.cfg.port, "/content", 3 * 1024 * 1024),
        "HTTP/1.1 413"
    );
    // Mutations: not over GET, not on the cdn endpoint.
    let m = "mutation { deletePost(where: {id: \"1\"}) { id } }";
    let resp = gw
        .client
        .get(format!("{}?query={}", gw.url("/content"), url_escape(m)))
        .header("authorization", reader())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = gw.query("/cdn", Some(&reader()), m).await;
    assert_eq!(resp.status(), 405);
    // Other methods and paths.
    assert_eq!(
        gw.client
            .put(gw.url("/content"))
            .body(q.clone())
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        gw.client
            .post(gw.url("/elsewhere"))
            .header("content-type", "application/json")
            .body(q)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        origin.count(),
        1,
        "only the one valid request reached the origin"
    );
    assert!(
        gw.metric("contentgate_graphql_rejections_total{reason=\"content_type\"}")
            .await
            >= 4.0
    );
    assert!(
        gw.metric("contentgate_graphql_rejections_total{reason=\"method\"}")
            .await
            >= 3.0
    );
}

#[tokio::test]
async fn a_get_with_a_body_is_a_bad_request() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin).start().await;
    let resp = gw
        .client
        .get(format!("{}?query={}", gw.url("/cdn"), url_escape(Q)))
        .body("smuggled")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forward_mode_passes_the_token() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .credential("credential = { mode = \"forward\" }")
        .start()
        .await;
    let jwt = reader();
    let resp = gw
        .client
        .post(gw.url("/content"))
        .header("authorization", &jwt)
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-secret-hop")
        .header("x-secret-hop", "1")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .body(json!({ "query": Q }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(seen.header("authorization"), Some(jwt.as_str()));
    for h in ["x-secret-hop", "te", "proxy-authorization"] {
        assert_eq!(seen.header(h), None, "{h} forwarded");
    }
    assert_eq!(seen.header("host"), Some(origin.addr.to_string().as_str()));
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_graphql_shaped_502() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = GatewayBuilder::with_upstream(&format!("http://127.0.0.1:{port}/graphql"))
        .start()
        .await;
    let resp = gw.query("/content", Some(&reader()), Q).await;
    assert_eq!(resp.status(), 502);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "UPSTREAM_ERROR");
    assert!(
        gw.metric("contentgate_upstream_errors_total{kind=\"connect\"}")
            .await
            >= 1.0
    );
    // The gateway stays healthy.
    assert_eq!(
        gw.client
            .get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_within_the_read_timeout() {
    let origin = MockOrigin::start().await;
    origin.reply_with(Reply {
        delay: Duration::from_secs(5),
        ..Reply::default()
    });
    let writer =
        "[[token.permission]]\naction = \"read\"\n[[token.permission]]\naction = \"create\"\n";
    let gw = GatewayBuilder::new(&origin)
        .tokens(&token_entry("jti-reader", "reader", "PUBLISHED", writer))
        .start()
        .await;
    let started = Instant::now();
    let resp = gw.query("/content", Some(&reader()), Q).await;
    let took = started.elapsed();
    assert_eq!(resp.status(), 504);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "UPSTREAM_TIMEOUT");
    // read_timeout is 2 s in the test config; the origin would take 5 s.
    assert!(took < Duration::from_millis(4500), "took {took:?}");
    assert!(
        gw.metric("contentgate_upstream_errors_total{kind=\"timeout\"}")
            .await
            >= 1.0
    );
    // A mutation is not retried after a timeout.
    let before = origin.count();
    let resp = gw
        .query(
            "/content",
            Some(&reader()),
            "mutation { createPost(data: {}) { id } }",
        )
        .await;
    assert_eq!(resp.status(), 504);
    assert_eq!(
        origin.count(),
        before + 1,
        "the mutation was sent exactly once"
    );
}

#[tokio::test]
async fn upstream_errors_and_headers_pass_through_with_the_request_id() {
    let origin = MockOrigin::start().await;
    origin.reply_with(Reply {
        status: 500,
        body: r#"{"errors":[{"message":"boom"}]}"#.into(),
        ..Reply::default()
    });
    let gw = GatewayBuilder::new(&origin).start().await;
    let resp = gw.query("/content", Some(&reader()), Q).await;
    assert_eq!(resp.status(), 500);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"errors":[{"message":"boom"}]}"#
    );
    assert_eq!(gw.wait_metric("contentgate_requests_total{cache=\"BYPASS\",endpoint=\"content\",status_class=\"5xx\"}", 1.0).await, 1.0);
}

#[tokio::test]
async fn answers_speak_graphql_response_json_to_clients_that_ask_for_it() {
    const GQL: &str = "application/graphql-response+json; charset=utf-8";
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .extra("\n[cache]\ndefault_ttl = \"60s\"\n")
        .start()
        .await;
    let post = |path: &'static str, accept: &'static str, query: &'static str| {
        gw.client
            .post(gw.url(path))
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(json!({ "query": query }).to_string())
            .send()
    };
    let ct = |r: &reqwest::Response| r.headers()["content-type"].to_str().unwrap().to_string();
    let modern = "application/graphql-response+json, application/json;q=0.9";
    // Cache miss and hit (an error-free result): relabelled, body untouched, Vary: Accept. A
    // pass-through keeps the CMS's type: the CMS got the Accept header and decides.
    for (path, x_cache, media) in [
        ("/content", "BYPASS", "application/json"),
        ("/cdn", "MISS", GQL),
        ("/cdn", "HIT", GQL),
    ] {
        let r = post(path, modern, Q).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(ct(&r), media, "{path} {x_cache}");
        if path == "/content" {
            assert_eq!(origin.last().header("accept"), Some(modern));
        } else {
            assert_eq!(
                origin.last().header("accept"),
                None,
                "a fill sends only keyed headers"
            );
        }
        assert_eq!(r.headers()["x-cache"], x_cache);
        assert!(r
            .headers()
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Accept")));
        assert_eq!(r.text().await.unwrap(), Reply::default().body);
    }
    // A legacy client, and one that ranks application/json higher, get application/json.
    for accept in [
        "application/json",
        "*/*",
        "application/json, application/graphql-response+json;q=0.5",
    ] {
        let r = post("/cdn", accept, Q).await.unwrap();
        assert_eq!(ct(&r), "application/json", "{accept}");
    }
    // The gateway's own errors: the negotiated type, and no `data` (nothing was executed).
    let r = post("/content", modern, "{ posts { id ").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(ct(&r), GQL);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_PARSE_FAILED"
    );
    // A 200 with errors is not relabelled (nor stored): its `data: null` would mean a 4xx
    // under graphql-response+json.
    origin.reply_with(Reply {
        body: r#"{"data":null,"errors":[{"message":"bad variable"}]}"#.into(),
        ..Reply::default()
    });
    let r = post("/cdn", modern, "{ authors { id } }").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ct(&r), "application/json");
    assert_eq!(origin.count(), 3);
}

/// Bodies up to `limits.max_body_bytes` (2 MiB by default) are read once, checked and sent: a
/// 1 MiB mutation reaches the CMS whole; a 20 MiB one is refused from its Content-Length alone,
/// before a byte of it is read, and one without a length as soon as it passes the limit.
#[tokio::test]
async fn a_one_mebibyte_mutation_passes_and_a_twenty_mebibyte_one_is_refused_unread() {
    use std::io::{Read, Write};
    let origin = MockOrigin::start().await;
    origin.reply_with(Reply {
        body: r#"{"data":{"createPost":{"id":"p9"}}}"#.into(),
        ..Reply::default()
    });
    let gw = GatewayBuilder::new(&origin)
        .public("default_stage = \"PUBLISHED\"\n[[permission]]\naction = \"read\"\n[[permission]]\naction = \"create\"\n")
        .start()
        .await;
    let title = "t".repeat(1024 * 1024);
    let body = json!({
        "query": "mutation ($t: String!) { createPost(data: {title: $t}) { id } }",
        "variables": { "t": title },
    })
    .to_string();
    let resp = gw.post_json("/content", None, body).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(origin.count(), 1);
    let seen = origin.last();
    assert!(
        seen.body.len() > 1024 * 1024,
        "{} bytes upstream",
        seen.body.len()
    );
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        sent["variables"]["t"].as_str().map(str::len),
        Some(1024 * 1024)
    );
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string().as_str())
    );

    // 20 MiB declared: the answer comes before the body is sent at all.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.cfg.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        s,
        "POST /content HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        20 * 1024 * 1024
    )
    .unwrap();
    let mut answer = [0u8; 12];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    // Chunked, no length: refused once past the limit, never held beyond it.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.cfg.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        s,
        "POST /content HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b' '; 256 * 1024];
    let mut refused = false;
    for _ in 0..80 {
        if write!(s, "{:x}\r\n", chunk.len()).is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            refused = true;
            break;
        }
    }
    let mut head = [0u8; 12];
    let got = s.read_exact(&mut head);
    assert!(
        got.is_ok() || refused,
        "no answer to an oversized chunked body"
    );
    if got.is_ok() {
        assert_eq!(&head, b"HTTP/1.1 413");
    }
    assert_eq!(origin.count(), 1);
    assert_eq!(gw.metric("contentgate_request_body_bytes").await, 0.0);
}

/// The pass-through streams a chunked answer through intact and keeps the upstream connection
/// for the next request (one keep-alive pool for the pass-through and the fills).
#[tokio::test]
async fn a_chunked_answer_streams_through_and_the_upstream_connection_is_reused() {
    use std::io::{BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let (a, s) = (accepted.clone(), served.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            a.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                while read_request(&mut r) {
                    s.fetch_add(1, Ordering::SeqCst);
                    let parts = [
                        r#"{"data":{"posts":["#,
                        r#"{"id":"p1","title":"one"},"#,
                        r#"{"id":"p2","title":"two"}]}}"#,
                    ];
                    let mut out = String::from("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n");
                    for p in parts {
                        out.push_str(&format!("{:x}\r\n{p}\r\n", p.len()));
                    }
                    out.push_str("0\r\n\r\n");
                    w.write_all(out.as_bytes()).unwrap();
                }
            });
        }
    });
    let gw = GatewayBuilder::with_upstream(&format!("http://127.0.0.1:{port}/graphql"))
        .start()
        .await;
    for _ in 0..3 {
        let r = gw.query("/content", None, "{ posts { id title } }").await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["data"]["posts"][1]["title"], "two");
    }
    assert_eq!(served.load(Ordering::SeqCst), 3);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the upstream connection was not reused"
    );
}

/// An idle upstream connection is kept for reuse (the gauge counts it) and closed once it
/// idled for the upstream's `idle_timeout`: the upstream sees it end, and the next request
/// opens a new one.
#[tokio::test]
async fn idle_upstream_connections_are_counted_and_closed_after_the_idle_timeout() {
    use std::io::{BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, e) = (accepted.clone(), ended.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            a.fetch_add(1, Ordering::SeqCst);
            let e = e.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                while read_request(&mut r) {
                    let body = r#"{"data":{"posts":[]}}"#;
                    let _ = write!(
                        w,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
                e.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let gw = GatewayBuilder::with_upstream(&format!("http://127.0.0.1:{port}/graphql"))
        .credential(
            "credential = { mode = \"replace\", token_env = \"CG_TEST_SERVICE_TOKEN\" }\nidle_timeout = \"4s\"",
        )
        .start()
        .await;
    let r = gw.query("/content", None, "{ posts { id } }").await;
    assert_eq!(r.status(), 200);
    let used = std::time::Instant::now();
    assert_eq!(
        gw.wait_metric("contentgate_upstream_idle_connections", 1.0)
            .await,
        1.0,
        "the connection is kept after a clean exchange"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ended.load(Ordering::SeqCst) < accepted.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle connection was never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    while gw.metric("contentgate_upstream_idle_connections").await != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the gauge still counts it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        used.elapsed() >= std::time::Duration::from_secs(3),
        "closed before its idle_timeout ({:?})",
        used.elapsed()
    );
    let after_close = accepted.load(Ordering::SeqCst);
    let r = gw.query("/content", None, "{ posts { id } }").await;
    assert_eq!(r.status(), 200);
    assert!(
        accepted.load(Ordering::SeqCst) > after_close,
        "a new connection after the close"
    );
}

/// A raw origin answering every connection with `answer`, then closing it.
fn raw_origin(answer: &'static [u8]) -> u16 {
    use std::io::{BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                if read_request(&mut r) {
                    let _ = w.write_all(answer);
                }
            });
        }
    });
    port
}

/// What the old proxy loop did for odd upstream answers, the gateway's own path does too: an
/// answer delimited by the upstream closing reaches the client framed (chunked HTTP/1.1), and
/// an unasked 101 is a broken upstream (502), never bytes of its header served as a body.
#[tokio::test]
async fn odd_upstream_answers_are_framed_or_refused() {
    let port = raw_origin(
        b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"data\":{\"posts\":[]}}",
    );
    let gw = GatewayBuilder::with_upstream(&format!("http://127.0.0.1:{port}/graphql"))
        .start()
        .await;
    let r = gw.query("/content", None, "{ posts { id } }").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(
        r.headers()
            .get("transfer-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("chunked")
    );
    assert_eq!(r.text().await.unwrap(), "{\"data\":{\"posts\":[]}}");

    let port = raw_origin(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 16\r\n\r\n{\"data\":{}}     ");
    let gw = GatewayBuilder::with_upstream(&format!("http://127.0.0.1:{port}/graphql"))
        .start()
        .await;
    let r = gw.query("/content", None, "{ posts { id } }").await;
    assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());
}

/// Reads one request (header, and a Content-Length body) off a raw origin's connection; `false`
/// once the client closed it.
fn read_request(r: &mut std::io::BufReader<std::net::TcpStream>) -> bool {
    use std::io::{BufRead, Read};
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).is_ok()
}
