//! A bad day upstream and downstream, through the real binary: an origin that is down, silent,
//! slow, resets mid-answer, fails with 5xx/429 or answers HTML; clients that send slowly or
//! never read. Expected: the documented status within the configured timeouts, stale answers
//! where the windows allow, nothing partial cached, no mutation sent twice, and a gateway that
//! is healthy and fast for the next request.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::raw::{exchange_async, read_all, Mode, RawOrigin, JSON_OK};
use common::*;

/// Timeouts of the test gateway (see `GatewayBuilder::write`): connect 1 s, read 2 s, total 3 s.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

const MUTATION: &str = r#"mutation { deletePost(where: {id: "p1"}) { id } }"#;

async fn gateway(origin_url: &str, cache: &str) -> TestGateway {
    GatewayBuilder::with_upstream(origin_url)
        .public(PUBLIC_READ_DELETE)
        .extra(&format!("\n[cache]\n{cache}\n"))
        .start()
        .await
}

async fn cdn(gw: &TestGateway, q: &str) -> (u16, String, String, Duration) {
    let started = Instant::now();
    let r = gw
        .client
        .get(gw.url("/cdn"))
        .query(&[("query", q)])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let x_cache = r
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = r.text().await.unwrap_or_default();
    (status, x_cache, body, started.elapsed())
}

async fn content(gw: &TestGateway, q: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let r = gw.query("/content", None, q).await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    (status, body, started.elapsed())
}

/// The gateway still answers at once and its health endpoints are green.
async fn assert_healthy(gw: &TestGateway, origin: &RawOrigin) {
    origin.set_mode(Mode::Ok);
    let (status, _, elapsed) = content(gw, "{ posts { id } }").await;
    assert_eq!(status, 200, "log:\n{}", gw.log());
    // Not stuck behind the fault (a hang check with room for a loaded machine, not a speed test).
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    for path in ["/healthz", "/readyz"] {
        let r = gw.client.get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Nothing left in flight (the gauge drops just after each response is sent).
    let deadline = Instant::now() + Duration::from_secs(3);
    while gw.metric("contentgate_requests_in_flight").await > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.metric("contentgate_requests_in_flight").await, 0.0);
}

#[tokio::test]
async fn a_down_upstream_is_a_fast_502_and_a_silent_one_a_504_at_the_read_timeout() {
    // Nothing listens: connection refused.
    let gw = gateway(
        &format!("http://127.0.0.1:{}/v2/project/master", free_port()),
        "default_ttl = \"60s\"",
    )
    .await;
    let (status, body, elapsed) = content(&gw, "{ posts { id } }").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("UPSTREAM_ERROR"), "{body}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    let (status, _, _, elapsed) = cdn(&gw, "{ posts { id } }").await;
    assert_eq!(status, 502);
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    drop(gw);

    // Accepts, reads, never answers (blackholed): 504 once the read timeout passes.
    let origin = RawOrigin::start(Mode::Hang).await;
    let gw = gateway(&origin.url(), "default_ttl = \"60s\"").await;
    for (status, body, elapsed) in [
        content(&gw, "{ posts { id } }").await,
        content(&gw, MUTATION).await,
    ] {
        assert_eq!(status, 504, "{body}");
        assert!(body.contains("UPSTREAM_TIMEOUT"), "{body}");
        assert!(
            elapsed >= READ_TIMEOUT && elapsed < READ_TIMEOUT + Duration::from_millis(1500),
            "{elapsed:?}"
        );
    }
    let (status, _, _, elapsed) = cdn(&gw, "{ posts { id } }").await;
    assert_eq!(status, 504);
    assert!(elapsed < READ_TIMEOUT + Duration::from_millis(1500));
    // The mutation was sent once: a timed-out mutation is never retried.
    let mutations = origin
        .requests()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("deletePost"))
        .count();
    assert_eq!(mutations, 1, "{:?}", origin.requests());
    // Nothing was cached: the next read goes to the (now healthy) origin.
    origin.set_mode(Mode::Ok);
    let before = origin.count();
    let (status, x_cache, body, _) = cdn(&gw, "{ posts { id } }").await;
    assert_eq!(
        (status, x_cache.as_str(), body.as_str()),
        (200, "MISS", JSON_OK)
    );
    assert_eq!(origin.count(), before + 1);
    assert_healthy(&gw, &origin).await;
    assert!(
        gw.metric("contentgate_upstream_errors_total{kind=\"timeout\"}")
            .await
            >= 3.0
    );
}

#[tokio::test]
async fn slow_headers_within_the_read_timeout_are_waited_for() {
    let origin = RawOrigin::start(Mode::SlowHeaders(Duration::from_millis(1200))).await;
    let gw = gateway(&origin.url(), "default_ttl = \"60s\"").await;
    let (status, body, elapsed) = content(&gw, "{ posts { id } }").await;
    assert_eq!((status, body.as_str()), (200, JSON_OK));
    assert!(elapsed >= Duration::from_millis(1200));
    assert_healthy(&gw, &origin).await;
}

#[tokio::test]
async fn broken_answers_are_never_cached_and_never_replayed_as_complete() {
    for mode in [
        Mode::SlowBody(Duration::from_millis(3500)),
        Mode::ResetAfterHeaders,
        Mode::ResetMidBody,
    ] {
        let origin = RawOrigin::start(mode.clone()).await;
        let gw = gateway(&origin.url(), "default_ttl = \"60s\"").await;
        // A cache fill reads the whole answer before anyone sees it: an error, not a torso.
        let (status, x_cache, body, elapsed) = cdn(&gw, "{ posts { id } }").await;
        assert!(
            status == 502 || status == 504,
            "{mode:?}: {status} {x_cache} {body}"
        );
        assert!(elapsed < Duration::from_secs(4), "{mode:?}: {elapsed:?}");
        // A pass-through streams: either an error status, or a response the client can tell
        // is incomplete (the connection ends before Content-Length is reached).
        let q = serde_json::json!({ "query": "{ posts { id } }" }).to_string();
        let x = exchange_async(
            gw.cfg.port,
            format!(
                "POST /content HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{q}",
                q.len()
            )
            .into_bytes(),
            Duration::from_secs(5),
        )
        .await;
        let text = x.text();
        match x.statuses().as_slice() {
            [502] | [504] => {}
            [200] => {
                // Only the upstream's own bytes, cut short: never the gateway's error JSON
                // spliced in as the rest of the answer.
                assert!(x.closed, "{mode:?}: {text}");
                let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
                assert!(
                    body.len() < JSON_OK.len() && JSON_OK.starts_with(body),
                    "{mode:?}: {text}"
                );
            }
            other => panic!("{mode:?}: {other:?} {text}"),
        }
        // Nothing partial was stored: a healthy origin is asked again.
        origin.set_mode(Mode::Ok);
        let before = origin.count();
        let (status, x_cache, body, _) = cdn(&gw, "{ posts { id } }").await;
        assert_eq!(
            (status, x_cache.as_str(), body.as_str()),
            (200, "MISS", JSON_OK),
            "{mode:?}"
        );
        assert_eq!(origin.count(), before + 1, "{mode:?}");
        assert_healthy(&gw, &origin).await;
    }
}

#[tokio::test]
async fn upstream_errors_pass_through_uncached_html_and_invalid_json_included() {
    let origin = RawOrigin::start(Mode::Ok).await;
    let gw = gateway(&origin.url(), "default_ttl = \"60s\"").await;
    let replies = [
        (
            500,
            "application/json",
            r#"{"errors":[{"message":"boom"}]}"#,
        ),
        (502, "text/html", "<html><body>Bad gateway</body></html>"),
        (
            503,
            "application/json",
            r#"{"errors":[{"message":"maintenance"}]}"#,
        ),
        (
            429,
            "application/json",
            r#"{"errors":[{"message":"slow down"}]}"#,
        ),
        (200, "text/html", "<html>login</html>"),
        (200, "application/json", r#"{"data":{"posts":[{"id":"#),
    ];
    for (i, (code, ctype, body)) in replies.iter().enumerate() {
        origin.set_mode(Mode::Reply {
            status: *code,
            headers: vec![
                ("content-type".into(), ctype.to_string()),
                ("retry-after".into(), "7".into()),
            ],
            body: body.to_string(),
        });
        // Pass-through: the CMS's answer, status and Retry-After as sent.
        let r = gw.query("/content", None, "{ posts { id } }").await;
        assert_eq!(r.status().as_u16(), *code, "{body}");
        assert_eq!(
            r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
            Some("7")
        );
        assert_eq!(r.text().await.unwrap(), *body);
        // Cache fill: the same answer, never stored (each query is new, then repeated).
        let q = format!("{{ posts(first: {}) {{ id }} }}", i + 1);
        for _ in 0..2 {
            let before = origin.count();
            let (status, x_cache, got, _) = cdn(&gw, &q).await;
            assert_eq!(x_cache, "MISS", "{code} {ctype}");
            assert_eq!(origin.count(), before + 1, "{code} {ctype} was stored");
            assert_eq!((status, got.as_str()), (*code, *body), "{code} {ctype}");
        }
    }
    assert_healthy(&gw, &origin).await;
}

#[tokio::test]
async fn stale_answers_cover_a_silent_or_resetting_origin_within_the_window() {
    let origin = RawOrigin::start(Mode::Ok).await;
    let gw = gateway(
        &origin.url(),
        "default_ttl = \"1s\"\nstale_while_revalidate = \"0s\"\nstale_if_error = \"60s\"",
    )
    .await;
    let (status, x_cache, _, _) = cdn(&gw, "{ posts { id } }").await;
    assert_eq!((status, x_cache.as_str()), (200, "MISS"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for mode in [Mode::Hang, Mode::ResetMidBody, Mode::ResetAfterHeaders] {
        origin.set_mode(mode.clone());
        let (status, x_cache, body, elapsed) = cdn(&gw, "{ posts { id } }").await;
        assert_eq!(
            (status, x_cache.as_str(), body.as_str()),
            (200, "STALE", JSON_OK),
            "{mode:?}"
        );
        assert!(
            elapsed < READ_TIMEOUT + Duration::from_millis(1500),
            "{mode:?}: {elapsed:?}"
        );
    }
    assert_healthy(&gw, &origin).await;
}

#[tokio::test]
async fn a_mutation_is_sent_once_whatever_the_pooled_connection_does() {
    // The origin closes every connection right after answering, without saying so: the
    // gateway must not write the next mutation into the dead pooled connection and then
    // "retry" it, nor fail it.
    let origin = RawOrigin::start(Mode::CloseAfterResponse).await;
    let gw = gateway(&origin.url(), "default_ttl = \"60s\"").await;
    for i in 0..5 {
        let (status, body, _) = content(&gw, MUTATION).await;
        assert_eq!(status, 200, "mutation {i}: {body}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = origin.requests();
    assert_eq!(seen.len(), 5, "each mutation exactly once: {seen:?}");
    // A reset after the request was sent: the mutation may have run; it is not sent again.
    origin.set_mode(Mode::ResetAfterHeaders);
    let r = gw.query("/content", None, MUTATION).await;
    let status = r.status().as_u16();
    let body = r.text().await;
    // The header had arrived: either the gateway's 502 or a visibly truncated 200.
    assert!(
        status == 502 || (status == 200 && body.is_err()),
        "{status} {body:?}"
    );
    assert_eq!(origin.count(), 6, "{:?}", origin.requests());
    assert_healthy(&gw, &origin).await;
}

/// A gateway whose client deadlines are short enough to test.
async fn strict_client_gateway(origin: &RawOrigin) -> TestGateway {
    let mut b = GatewayBuilder::with_upstream(&origin.url()).public(PUBLIC_READ_DELETE);
    b.limits = "\n[limits]\nclient_header_timeout = \"1s\"\nclient_body_timeout = \"1s\"\nclient_send_timeout = \"1s\"\n".into();
    b.start().await
}

#[tokio::test]
async fn slowloris_headers_and_a_slow_body_are_cut_at_whole_request_deadlines() {
    let origin = RawOrigin::start(Mode::Ok).await;
    let gw = strict_client_gateway(&origin).await;
    let port = gw.cfg.port;
    // One header line every 300 ms, forever: each read is quick, the header never ends.
    let x = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /cdn?query=%7Bposts%7Bid%7D%7D HTTP/1.1\r\nHost: gw\r\n")
            .unwrap();
        for i in 0..20 {
            std::thread::sleep(Duration::from_millis(300));
            if s.write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .is_err()
            {
                break;
            }
        }
        read_all(&mut s, Duration::from_secs(8), started)
    })
    .await
    .unwrap();
    assert!(x.closed, "{}", x.text());
    assert!(x.statuses().is_empty(), "{}", x.text());
    assert!(x.elapsed < Duration::from_secs(7), "{:?}", x.elapsed);

    // A body that trickles in: 408 at the body deadline, connection closed.
    let x = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"POST /content HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"query\":")
            .unwrap();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(200));
            if s.write_all(b" ").is_err() {
                break;
            }
        }
        read_all(&mut s, Duration::from_secs(6), started)
    })
    .await
    .unwrap();
    assert_eq!(x.statuses(), vec![408], "{}", x.text());
    assert!(x.text().contains("REQUEST_TIMEOUT"));
    assert!(x.closed);
    assert!(x.elapsed < Duration::from_secs(3), "{:?}", x.elapsed);
    assert_eq!(origin.count(), 0);
    assert_healthy(&gw, &origin).await;
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn hundreds_of_half_sent_headers_cost_little_memory_and_are_all_closed() {
    let origin = RawOrigin::start(Mode::Ok).await;
    let gw = strict_client_gateway(&origin).await;
    let pid = gw.child.id();
    let port = gw.cfg.port;
    // Warm up the worker threads and pools first.
    for _ in 0..20 {
        content(&gw, "{ posts { id } }").await;
    }
    let (fds0, rss0) = (open_fds(pid), rss_kib(pid));
    const N: usize = 400;
    let conns = tokio::task::spawn_blocking(move || {
        (0..N)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.write_all(b"GET /cdn HTTP/1.1\r\nHost: gw\r\nX-Pad: ")
                    .unwrap();
                s
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds1, rss1) = (open_fds(pid), rss_kib(pid));
    assert!(fds1 >= fds0 + N * 9 / 10, "{fds0} -> {fds1}");
    let per_conn = (rss1.saturating_sub(rss0)) * 1024 / N as u64;
    eprintln!("{N} half-sent headers: RSS {rss0} -> {rss1} KiB, {per_conn} bytes each");
    assert!(
        per_conn < 80 * 1024,
        "{per_conn} bytes per half-open connection ({rss0} -> {rss1} KiB)"
    );
    // All of them are cut at the header deadline.
    let deadline = Instant::now() + Duration::from_secs(6);
    while open_fds(pid) > fds0 + 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(open_fds(pid) <= fds0 + 5, "{fds0} -> {}", open_fds(pid));
    drop(conns);
    assert_healthy(&gw, &origin).await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_at_the_send_timeout() {
    // An answer far bigger than the socket buffers.
    let big = format!(
        r#"{{"data":{{"posts":[{{"id":"p1","title":"{}"}}]}}}}"#,
        "x".repeat(64 << 20)
    );
    let origin = RawOrigin::start(Mode::Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: big.clone(),
    })
    .await;
    let gw = strict_client_gateway(&origin).await;
    let port = gw.cfg.port;
    let q = serde_json::json!({ "query": "{ posts { id title } }" }).to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // A small receive window so the gateway's writes block quickly.
    s.write_all(
        format!(
            "POST /content HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{q}",
            q.len()
        )
        .as_bytes(),
    )
    .unwrap();
    // Never read for a while: the gateway gives up on the write and lets go of the request.
    let deadline = Instant::now() + Duration::from_secs(8);
    tokio::time::sleep(Duration::from_millis(500)).await;
    while gw.metric("contentgate_requests_in_flight").await > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        gw.metric("contentgate_requests_in_flight").await,
        0.0,
        "the stuck write was not abandoned"
    );
    // What the client can still read is cut short of the whole answer.
    let x = tokio::task::spawn_blocking(move || {
        read_all(&mut s, Duration::from_secs(5), Instant::now())
    })
    .await
    .unwrap();
    assert!(x.closed);
    assert!(x.bytes.len() < big.len(), "{} bytes", x.bytes.len());
    assert_healthy(&gw, &origin).await;
}
