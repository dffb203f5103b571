//! Operations through the real binary: rate limits (per token, per IP, the origin budget
//! guard), CORS at the edge, client-address allow/deny lists behind trusted proxies, metrics
//! after traffic, and graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const Q: &str = "{ posts { id title } }";

fn limited_token() -> String {
    token_entry("jti-slow", "slow", "PUBLISHED", "rate_limit = { requests_per_second = 1, burst = 2 }\n[[token.permission]]\naction = \"read\"\n")
}

#[tokio::test]
async fn a_token_over_its_rate_limit_gets_429_with_retry_after() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .tokens(&limited_token())
        .start()
        .await;
    let jwt = bearer(&es("jti-slow"));
    for _ in 0..2 {
        assert_eq!(gw.query("/content", Some(&jwt), Q).await.status(), 200);
    }
    let resp = gw.query("/content", Some(&jwt), Q).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert_eq!(origin.count(), 2);
    assert_eq!(
        gw.metric("contentgate_rate_limit_rejections_total{scope=\"token\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn public_requests_are_limited_per_client_address() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .extra("\n[rate_limits]\npublic_per_ip = { requests_per_second = 1, burst = 1 }\n")
        .start()
        .await;
    assert_eq!(gw.query("/content", None, Q).await.status(), 200);
    assert_eq!(gw.query("/content", None, Q).await.status(), 429);
    // Tokens are not limited by the per-IP limit (no default token limit configured).
    assert_eq!(
        gw.query("/content", Some(&bearer(&es("jti-reader"))), Q)
            .await
            .status(),
        200
    );
    assert_eq!(
        gw.metric("contentgate_rate_limit_rejections_total{scope=\"ip\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn the_origin_budget_guard_limits_only_uncached_traffic() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .extra("\n[rate_limits]\norigin_requests_per_second = 1\norigin_burst = 1\n\n[cache]\ndefault_ttl = \"60s\"\n")
        .start()
        .await;
    let get = |q: &'static str| gw.query("/cdn", None, q);
    assert_eq!(get(Q).await.headers()["x-cache"], "MISS");
    // Another miss in the same second: over the CMS budget, nothing stale to serve → 429.
    let resp = get("{ authors { id } }").await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // Cached answers are never limited.
    for _ in 0..5 {
        assert_eq!(get(Q).await.headers()["x-cache"], "HIT");
    }
    // Uncached content traffic counts against the budget too.
    assert_eq!(gw.query("/content", None, Q).await.status(), 429);
    assert_eq!(origin.count(), 1);
    assert!(
        gw.metric("contentgate_rate_limit_rejections_total{scope=\"origin\"}")
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn over_the_origin_budget_a_stale_entry_is_served() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .extra("\n[rate_limits]\norigin_requests_per_second = 1\norigin_burst = 1\n\n[cache]\ndefault_ttl = \"1s\"\nstale_while_revalidate = \"0s\"\nstale_if_error = \"60s\"\n")
        .start()
        .await;
    assert_eq!(gw.query("/cdn", None, Q).await.headers()["x-cache"], "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The bucket refilled: this refresh is allowed.
    assert_eq!(gw.query("/cdn", None, Q).await.headers()["x-cache"], "MISS");
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let _ = gw.query("/cdn", None, "{ authors { id } }").await; // spends the budget
    let resp = gw.query("/cdn", None, Q).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cache"], "STALE");
}

#[tokio::test]
async fn cors_preflights_are_answered_at_the_edge() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .cdn("cors = { allowed_origins = [\"https://site.example\"], max_age = \"5m\" }")
        .start()
        .await;
    let preflight = |o: &str, m: &str| {
        gw.client
            .request(reqwest::Method::OPTIONS, gw.url("/cdn"))
            .header("origin", o)
            .header("access-control-request-method", m)
            .header(
                "access-control-request-headers",
                "content-type, authorization",
            )
            .send()
    };
    let resp = preflight("https://site.example", "POST").await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://site.example"
    );
    assert!(resp.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(resp.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    assert_eq!(resp.headers()["access-control-max-age"], "300");
    assert_eq!(
        preflight("https://evil.example", "POST")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        preflight("https://site.example", "DELETE")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(origin.count(), 0, "preflights never reach the origin");
    // Actual requests: the allowed origin is echoed, others get no CORS headers.
    let post = |o: &str| {
        gw.client
            .post(gw.url("/cdn"))
            .header("origin", o)
            .header("content-type", "application/json")
            .body(json!({"query": Q}).to_string())
            .send()
    };
    let ok = post("https://site.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://site.example"
    );
    assert!(ok.headers().get_all("vary").iter().any(|v| v == "Origin"));
    let hit = post("https://site.example").await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(
        hit.headers()["access-control-allow-origin"],
        "https://site.example"
    );
    let other = post("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn client_address_lists_apply_and_forwarded_for_is_believed_only_from_trusted_proxies() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .cdn("deny = [\"127.0.0.1/32\"]")
        .start()
        .await;
    let resp = gw.query("/cdn", None, Q).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        gw.query("/content", None, Q).await.status(),
        200,
        "other endpoints are unaffected"
    );
    drop(gw);

    let send = |gw: &TestGateway, xff: &str| {
        gw.client
            .post(gw.url("/cdn"))
            .header("x-forwarded-for", xff.to_string())
            .header("content-type", "application/json")
            .body(json!({"query": Q}).to_string())
            .send()
    };
    // Allow only 192.0.2.0/24; the peer (127.0.0.1) is a trusted proxy.
    let gw = GatewayBuilder::new(&origin)
        .cdn("allow = [\"192.0.2.0/24\"]")
        .extra("\n[network]\ntrusted_proxies = [\"127.0.0.1/32\"]\n")
        .start()
        .await;
    assert_eq!(send(&gw, "192.0.2.7").await.unwrap().status(), 200);
    assert_eq!(
        send(&gw, "192.0.2.7, 198.51.100.9").await.unwrap().status(),
        403,
        "the right-most untrusted hop counts"
    );
    drop(gw);
    // Without a trusted proxy, X-Forwarded-For is ignored.
    let gw = GatewayBuilder::new(&origin)
        .cdn("allow = [\"192.0.2.0/24\"]")
        .start()
        .await;
    assert_eq!(send(&gw, "192.0.2.7").await.unwrap().status(), 403);
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn metrics_after_traffic() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin).start().await;
    gw.query("/cdn", None, Q).await;
    gw.query("/cdn", None, Q).await;
    gw.query("/content", Some("Bearer nope"), Q).await;
    gw.query(
        "/content",
        Some(&bearer(&es("jti-reader"))),
        "{ secretField }",
    )
    .await;
    let text = gw.metrics().await;
    for series in [
        "contentgate_build_info{version=",
        "contentgate_requests_in_flight",
        "contentgate_request_duration_seconds_bucket{endpoint=\"cdn\",le=\"0.0001\"}",
        "contentgate_policy_generation 1",
        "contentgate_registry_tokens 1",
    ] {
        assert!(text.contains(series), "{series} missing");
    }
    assert_eq!(
        gw.wait_metric(
            "contentgate_requests_total{cache=\"HIT\",endpoint=\"cdn\",status_class=\"2xx\"}",
            1.0
        )
        .await,
        1.0
    );
    assert_eq!(
        gw.metric("contentgate_auth_results_total{reason=\"malformed_token\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("contentgate_permission_denials_total{action=\"read\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("contentgate_cache_lookups_total{result=\"hit\"}")
            .await,
        1.0
    );
    // No token, path or query text in any label.
    assert!(!text.contains("secretField") && !text.contains("nope") && !text.contains("/cdn"));
    // The text format is valid for promtool when it is installed (CI installs it).
    if let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn sigterm_fails_readiness_first_and_lets_in_flight_requests_finish() {
    let origin = MockOrigin::start().await;
    origin.reply_with(Reply {
        delay: Duration::from_millis(800),
        ..Reply::default()
    });
    let mut gw = GatewayBuilder::new(&origin).start().await;
    let client = gw.client.clone();
    let url = gw.url("/content");
    let jwt = bearer(&es("jti-reader"));
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .header("authorization", jwt)
            .header("content-type", "application/json")
            .body(json!({"query": Q}).to_string())
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    gw.signal("TERM");
    // Readiness fails while the process is still serving.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        // Not ready = 503, or the admin listener already stopped accepting (Pingora stops every
        // accept loop on SIGTERM; a probe that cannot connect fails just the same).
        let r = gw.client.get(gw.admin_url("/readyz")).send().await;
        if matches!(&r, Ok(r) if r.status() == 503) || matches!(&r, Err(e) if e.is_connect()) {
            break;
        }
        assert!(Instant::now() < deadline, "readiness never failed: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    // grace_period 1 s + shutdown_timeout 1 s in the test config.
    let exit_deadline = Instant::now() + Duration::from_secs(6);
    loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            assert!(status.success() || status.code().is_some(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < exit_deadline,
            "did not exit within the grace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn oversized_headers_uris_and_bodies_are_refused_before_anything_else() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin).start().await;
    let big = "x".repeat(40 * 1024);
    let resp = gw
        .client
        .post(gw.url("/cdn"))
        .header("x-big", big.as_str())
        .header("content-type", "application/json")
        .body(json!({"query": Q}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let resp = gw
        .client
        .get(format!(
            "{}?query={}",
            gw.url("/cdn"),
            "x".repeat(20 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 414);
    // A body over max_body_bytes is answered from its Content-Length, before it is sent.
    assert_eq!(
        raw::refused_by_length(gw.cfg.port, "/cdn", 3 * 1024 * 1024),
        "HTTP/1.1 413"
    );
    assert_eq!(origin.count(), 0);
    assert!(
        gw.metric("contentgate_graphql_rejections_total{reason=\"limit\"}")
            .await
            >= 3.0
    );
}
