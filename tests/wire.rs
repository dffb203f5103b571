//! The request edge on the wire, through the real binary: the HTTP/1 header deadline is not
//! stopped by empty lines before the request line, the admin listener has the deadline too and
//! never waits for the body of a webhook it cannot verify, a repeated Content-Type is refused,
//! stale-while-revalidate refreshes take the origin budget (and back off after a failed fill),
//! and `check` refuses short JWKS `oct` secrets and `allow_credentials` with the origin `null`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::{exchange_async, read_all, Exchange};
use common::*;
use serde_json::json;

const QUERY: &str = r#"{"query":"{ posts { id } }"}"#;
/// `GET /content` with `{ posts { id } }` in the query string, closing after the answer.
const GET: &str = "GET /content?query=%7B%20posts%20%7B%20id%20%7D%20%7D HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";
/// Far below "never" (the trickled requests below take 10 s or more to arrive whole), far
/// above the 1 s header timeout on a loaded 2-core machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

fn strict(b: GatewayBuilder) -> GatewayBuilder {
    let mut b = b;
    b.limits = "\n[limits]\nclient_header_timeout = \"1s\"\n".into();
    b
}

/// Writes `first` at once, then `rest` one byte every `every` (stopping when a write fails),
/// while reading until the gateway closes the connection or `wait` passes.
async fn trickle(
    port: u16,
    first: &[u8],
    rest: &[u8],
    every: Duration,
    wait: Duration,
) -> Exchange {
    let (first, rest) = (first.to_vec(), rest.to_vec());
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(&first).unwrap();
        let mut w = s.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let writer = std::thread::spawn(move || {
            for b in rest {
                std::thread::sleep(every);
                if stopped.load(Ordering::SeqCst) || w.write_all(&[b]).is_err() {
                    break;
                }
            }
        });
        let x = read_all(&mut s, wait, started);
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        x
    })
    .await
    .unwrap()
}

/// The connection was closed by the header deadline: within [`CLOSED_WITHIN`], no request
/// served on it (a 408 or 400 before closing is fine).
fn assert_cut(x: &Exchange, what: &str) {
    assert!(
        x.closed,
        "{what}: still open after {:?}:\n{}",
        x.elapsed,
        x.text()
    );
    assert!(
        x.elapsed < CLOSED_WITHIN,
        "{what}: closed only after {:?}",
        x.elapsed
    );
    assert!(
        x.statuses().iter().all(|s| *s == 408 || *s == 400),
        "{what}: {}",
        x.text()
    );
}

/// Empty lines before the request line are skipped by HTTP parsers (RFC 9112 §2.2): they must
/// not count as the blank line that ends a header and stop the deadline. A client that sends
/// `\r\n\r\n` and then trickles its request is cut at the header timeout, and never served.
#[tokio::test]
async fn leading_empty_lines_do_not_stop_the_header_deadline() {
    let origin = MockOrigin::start().await;
    let gw = strict(GatewayBuilder::new(&origin)).start().await;
    let port = gw.cfg.port;

    // Control: the same request sent promptly behind leading empty lines is served.
    for lead in ["\r\n", "\r\n\r\n"] {
        let x = exchange_async(
            port,
            format!("{lead}{GET}").into_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(x.statuses(), vec![200], "lead {lead:?}: {}", x.text());
    }
    assert_eq!(origin.count(), 2);

    let every = Duration::from_millis(300);
    let wait = Duration::from_secs(8);
    let (crlf, lf) = tokio::join!(
        trickle(port, b"\r\n\r\n", GET.as_bytes(), every, wait),
        trickle(port, b"\n\n", GET.as_bytes(), every, wait),
    );
    assert_cut(&crlf, "CRLF CRLF, then a trickled request");
    assert_cut(&lf, "LF LF, then a trickled request");
    assert_eq!(origin.count(), 2, "{:?}", origin.requests());
}

/// The admin listener (metrics, purge, webhooks) is under the same whole-header deadline, and
/// an unsigned webhook delivery is refused without waiting for the body it announces.
#[tokio::test]
async fn the_admin_listener_has_the_header_deadline_and_reads_no_unsigned_webhook_body() {
    let origin = MockOrigin::start().await;
    let gw = strict(
        GatewayBuilder::new(&origin)
            .extra("\n[webhooks]\nsecret_env = \"CG_TEST_WEBHOOK_SECRET\"\n"),
    )
    .start()
    .await;
    let admin = gw.cfg.admin;

    // Control: a prompt request is served.
    let x = exchange_async(
        admin,
        b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".to_vec(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(x.statuses(), vec![200], "{}", x.text());

    let slow = tokio::spawn(trickle(
        admin,
        b"GET /readyz HTTP/1.1\r\n",
        b"Host: admin\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n",
        Duration::from_millis(300),
        Duration::from_secs(8),
    ));

    // A delivery without `gcms-signature` announcing a body that never comes: refused at once
    // (the body deadline is 10 s; before, the body was awaited first, without any deadline).
    let unsigned = exchange_async(
        admin,
        b"POST /webhooks/cms HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"operation\":".to_vec(),
        Duration::from_secs(3),
    )
    .await;

    let x = slow.await.unwrap();
    assert_cut(&x, "admin: a trickled header");
    assert!(!x.text().contains("ready"), "{}", x.text());
    assert_eq!(
        unsigned.statuses(),
        vec![401],
        "after {:?}: {}",
        unsigned.elapsed,
        unsigned.text()
    );
    assert!(
        unsigned.text().contains("missing gcms-signature"),
        "{}",
        unsigned.text()
    );
}

fn post(content_types: &[&str]) -> Vec<u8> {
    let mut head = "POST /content HTTP/1.1\r\nHost: gw\r\n".to_string();
    for ct in content_types {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    format!("{head}Content-Length: {}\r\n\r\n{QUERY}", QUERY.len()).into_bytes()
}

/// Two Content-Type headers are two readings of one body: refused with 400 and the connection
/// closed, nothing sent upstream — even when both say the same thing.
#[tokio::test]
async fn a_repeated_content_type_is_refused_before_the_origin() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin).start().await;
    let port = gw.cfg.port;
    let wait = Duration::from_secs(3);
    for types in [
        &["application/json", "application/json"][..],
        &["application/json", "text/plain"],
        &["text/plain", "application/json"],
        &["application/json", "application/graphql"],
    ] {
        let x = exchange_async(port, post(types), wait).await;
        assert_eq!(x.statuses(), vec![400], "{types:?}: {}", x.text());
        assert!(
            x.text().contains("Content-Type is repeated"),
            "{}",
            x.text()
        );
        assert!(x.closed, "{types:?}: the connection stayed open");
    }
    assert_eq!(origin.count(), 0, "{:?}", origin.requests());
    // Control: one Content-Type is served.
    let x = exchange_async(port, post(&["application/json"]), wait).await;
    assert_eq!(x.statuses(), vec![200], "{}", x.text());
    assert_eq!(origin.count(), 1);
}

/// A stale-while-revalidate hit that refreshes sends a request to the CMS: it takes the
/// origin budget, and a key whose refresh failed (429) is not refreshed again at once. Sixty
/// stale hits in about a second on one key, with a budget of 1/s and an origin answering 429,
/// cost the origin the first fill and one or two refreshes (it was about thirty).
#[tokio::test]
async fn stale_refreshes_take_the_origin_budget_and_back_off_after_a_failed_fill() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .extra(
            "\n[cache]\ndefault_ttl = \"1s\"\nstale_while_revalidate = \"60s\"\n\
             \n[rate_limits]\norigin_requests_per_second = 1\norigin_burst = 1\n",
        )
        .start()
        .await;
    let get = || async {
        let resp = gw
            .client
            .post(gw.url("/cdn"))
            .header("content-type", "application/json")
            .body(QUERY)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let cache = resp
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, cache, resp.text().await.unwrap())
    };
    let (status, cache, body) = get().await;
    assert_eq!((status, cache.as_str()), (200, "MISS"), "{body}");
    assert_eq!(origin.count(), 1);

    // The entry goes stale; the CMS is now over its own rate limit.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    origin.reply_with(Reply {
        status: 429,
        body: r#"{"errors":[{"message":"too many requests"}]}"#.into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("retry-after".into(), "1".into()),
        ],
        ..Reply::default()
    });
    let started = Instant::now();
    for i in 0..60 {
        let (status, cache, body) = get().await;
        assert_eq!((status, cache.as_str()), (200, "STALE"), "hit {i}: {body}");
        assert!(body.contains("Hello"), "hit {i}: {body}");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let spent = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let upstream = origin.count();
    assert!(
        (2..=3).contains(&upstream),
        "60 stale hits in {spent:?} sent {} refreshes upstream (first fill excluded)",
        upstream as i64 - 1
    );
}

fn contentgate_check(config: &std::path::Path) -> std::process::Output {
    contentgate(&["check", "--config", config.to_str().unwrap()])
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWKS `oct` key is a shared HMAC secret: held to the same minimum as a secret file (the
/// hash output, RFC 7518 §3.2), and `check` names it.
#[tokio::test]
async fn check_refuses_a_jwks_oct_key_shorter_than_the_hmac_minimum() {
    let origin = MockOrigin::start().await;
    let mut b = GatewayBuilder::new(&origin);
    b.auth = default_auth().replacen(
        "leeway = \"5s\"\n",
        "leeway = \"5s\"\njwks_file = \"jwks.json\"\n",
        1,
    );
    let cfg = b.write();
    for (alg, len, refused) in [
        ("HS256", 16, Some(32)),
        ("HS256", 31, Some(32)),
        ("HS512", 48, Some(64)),
        ("HS256", 32, None),
        ("HS512", 64, None),
    ] {
        let jwks = json!({ "keys": [{
            "kty": "oct",
            "kid": "jwks-hmac",
            "alg": alg,
            "k": b64url(&vec![7u8; len]),
        }]});
        std::fs::write(cfg.path().join("jwks.json"), jwks.to_string()).unwrap();
        let out = contentgate_check(&cfg.config());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        match refused {
            Some(min) => {
                assert!(
                    !out.status.success(),
                    "{alg} with {len} bytes accepted:\n{stdout}{stderr}"
                );
                assert!(
                    stderr.contains(&format!("at least {min} bytes"))
                        && stderr.contains("jwks-hmac"),
                    "{alg} with {len} bytes: {stderr}"
                );
            }
            None => assert!(
                out.status.success(),
                "{alg} with {len} bytes refused:\n{stdout}{stderr}"
            ),
        }
    }
}

/// `Origin: null` is sent by sandboxed iframes and `data:`/`file:` pages — any page can
/// produce it — so `allow_credentials` with the origin `null` is as open as with `*`.
#[tokio::test]
async fn check_refuses_allow_credentials_with_the_origin_null() {
    let origin = MockOrigin::start().await;
    for (origins, refused) in [
        (r#"["null"]"#, true),
        (r#"["https://site.example", "Null"]"#, true),
        (r#"["https://site.example"]"#, false),
    ] {
        let cfg = GatewayBuilder::new(&origin)
            .cdn(&format!(
                "cors = {{ allowed_origins = {origins}, allow_credentials = true }}"
            ))
            .write();
        let out = contentgate_check(&cfg.config());
        let stderr = String::from_utf8_lossy(&out.stderr);
        if refused {
            assert!(!out.status.success(), "{origins} accepted: {stderr}");
            assert!(
                stderr.contains("allow_credentials") && stderr.contains("\"null\""),
                "{origins}: {stderr}"
            );
        } else {
            assert!(out.status.success(), "{origins} refused: {stderr}");
        }
    }
    // Without credentials, `null` stays a configurable origin.
    let cfg = GatewayBuilder::new(&origin)
        .cdn("cors = { allowed_origins = [\"null\"] }")
        .write();
    let out = contentgate_check(&cfg.config());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
