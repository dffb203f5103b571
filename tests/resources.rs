//! Input shapes that must never take the gateway down: each is sent a few times to a real
//! `contentgate serve` process; the process must still be running and healthy afterwards,
//! every request must get an HTTP answer, and its resident memory (VmRSS) stays bounded.
//! The RSS before and after each shape is printed (`cargo test --test resources -- --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use common::*;
use serde_json::json;

const RSS_LIMIT_KIB: u64 = 768 * 1024;

const PUBLIC_ALL: &str = "default_stage = \"PUBLISHED\"\nintrospection = true\n\
[[permission]]\naction = \"read\"\n[[permission]]\naction = \"read_versions\"\n";

/// Sends `body` (a JSON request) `times` times and asserts the gateway survived.
async fn survives(shape: &str, body: String, times: usize) {
    let origin = MockOrigin::start().await;
    let mut gw = GatewayBuilder::new(&origin)
        .public(PUBLIC_ALL)
        .start()
        .await;
    let pid = gw.child.id();
    let before = rss_kib(pid);
    let mut statuses = Vec::new();
    for _ in 0..times {
        let sent = gw
            .client
            .post(gw.url("/content"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) => statuses.push(r.status().as_u16()),
            Err(e) => {
                let exited = gw.child.try_wait().ok().flatten();
                panic!(
                    "{shape}: no HTTP answer ({e}); gateway exit status {exited:?}; log tail:\n{}",
                    tail(&gw.log())
                );
            }
        }
    }
    let after = rss_kib(pid);
    eprintln!(
        "{shape}: {} bytes, statuses {statuses:?}, VmRSS {before} -> {after} KiB",
        body.len()
    );
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "{shape}: the gateway process died; log tail:\n{}",
        tail(&gw.log())
    );
    let health = gw
        .client
        .get(gw.admin_url("/healthz"))
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(health.status(), 200, "{shape}: unhealthy afterwards");
    // A small request still works.
    let ok = gw.query("/content", None, "{ posts { id } }").await;
    assert!(
        ok.status().is_success(),
        "{shape}: a plain query fails afterwards"
    );
    assert!(
        after < RSS_LIMIT_KIB,
        "{shape}: VmRSS {after} KiB exceeds {RSS_LIMIT_KIB} KiB"
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn q(query: String) -> String {
    json!({ "query": query }).to_string()
}

#[tokio::test]
async fn a_chain_of_fragments_each_nesting_deeply_does_not_crash_the_gateway() {
    // `{posts{...f0}}` + 76 fragments, each nesting 30 `author{posts{` and spreading the next:
    // the depth only shows across spreads (76 × 60 levels).
    let mut doc = String::from("{posts{...f0}}");
    for i in 0..76 {
        doc.push_str(&format!("fragment f{i} on Post{{"));
        doc.push_str(&"author{posts{".repeat(30));
        if i < 75 {
            doc.push_str(&format!("...f{}", i + 1));
        } else {
            doc.push_str("id");
        }
        doc.push_str(&"}}".repeat(30));
        doc.push('}');
    }
    survives("fragment chain 76x30", q(doc), 3).await;
}

#[tokio::test]
async fn fragments_that_fan_out_exponentially_do_not_crash_the_gateway() {
    // Each fragment spreads the next twice: 2^40 fields if expanded.
    let mut doc = String::from("{posts{...g0}}");
    for i in 0..40 {
        doc.push_str(&format!(
            "fragment g{i} on Post{{a:author{{posts{{...g{n}}}}} b:author{{posts{{...g{n}}}}}}}",
            n = i + 1
        ));
    }
    doc.push_str("fragment g40 on Post{id}");
    survives("fan-out 2^40", q(doc), 3).await;
}

#[tokio::test]
async fn a_fragment_spreading_itself_does_not_crash_the_gateway() {
    let doc = "{posts{...c0}} fragment c0 on Post{author{posts{...c1}}} \
               fragment c1 on Post{author{posts{...c0}}}"
        .to_string();
    survives("fragment cycle", q(doc), 3).await;
}

#[tokio::test]
async fn wide_aliases_do_not_crash_the_gateway() {
    let doc: String = (0..4000).map(|i| format!("a{i}:posts{{id}} ")).collect();
    survives("4000 aliases", q(format!("{{{doc}}}")), 3).await;
}

#[tokio::test]
async fn deeply_nested_selections_do_not_crash_the_gateway() {
    let doc = format!("{}id{}", "{posts".repeat(8_000), "}".repeat(8_000));
    survives("8000-deep selection", q(doc), 3).await;
}

#[tokio::test]
async fn deeply_nested_argument_values_do_not_crash_the_gateway() {
    let value = format!("{}1{}", "[".repeat(20_000), "]".repeat(20_000));
    let doc = format!("{{posts(first: {value}){{id}}}}");
    survives("20000-deep list literal", q(doc), 3).await;
    let value = format!("{}1{}", "{a:".repeat(12_000), "}".repeat(12_000));
    let doc = format!("{{posts(where: {value}){{id}}}}");
    survives("12000-deep object literal", q(doc), 3).await;
}

#[tokio::test]
async fn big_and_deep_variables_do_not_crash_the_gateway() {
    let deep = format!("{}1{}", "[".repeat(25_000), "]".repeat(25_000));
    let body = format!(
        r#"{{"query":"query($w: PostWhereInput){{posts(where: $w){{id}}}}","variables":{{"w":{{"title_in":{deep}}}}}}}"#
    );
    survives("25000-deep variable", body, 3).await;
    let wide: Vec<String> = (0..6000).map(|i| format!("t{i}")).collect();
    let body = json!({
        "query": "query($w: PostWhereInput){posts(where: $w){id}}",
        "variables": { "w": { "title_in": wide } },
    })
    .to_string();
    survives("6000-item variable", body, 3).await;
}

#[tokio::test]
async fn long_strings_do_not_crash_the_gateway() {
    let long = "x".repeat(60_000);
    let doc = format!("{{posts(where: {{title: \"{long}\"}}){{id}}}}");
    survives("60 KB string literal", q(doc), 3).await;
    let doc = format!("# {long}\n{{posts{{id}}}}");
    survives("60 KB comment", q(doc), 3).await;
    let escapes = "\\u00e9".repeat(9_000);
    let doc = format!("{{posts(where: {{title: \"{escapes}\"}}){{id}}}}");
    survives("9000 unicode escapes", q(doc), 3).await;
}

/// Many slow uploads cannot hold more than `limits.max_buffered_body_bytes`: a body that the
/// budget cannot cover is refused with 503 before it is read, the bytes held show in
/// `contentgate_request_body_bytes`, and they are given back when the request ends.
#[tokio::test]
async fn buffered_bodies_share_one_budget() {
    use std::io::Write;
    let origin = MockOrigin::start().await;
    let mut b = GatewayBuilder::new(&origin);
    b.limits = "\n[limits]\nmax_body_bytes = 60000\nmax_buffered_body_bytes = 100000\nclient_body_timeout = \"5s\"\n".into();
    let gw = b.start().await;
    // Headers alone hold nothing: a declared length reserves no budget.
    let mut idle = Vec::new();
    for _ in 0..5 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", gw.cfg.port)).unwrap();
        write!(c, "POST /content HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n").unwrap();
        idle.push(c);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(gw.metric("contentgate_request_body_bytes").await, 0.0);
    // A slow upload declares 60 000 bytes, sends 50 000 and stalls: those are held.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", gw.cfg.port)).unwrap();
    write!(
        slow,
        "POST /content HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{{\"query\":\"{}",
        " ".repeat(50_000 - 10)
    )
    .unwrap();
    slow.flush().unwrap();
    let held = std::time::Instant::now();
    while gw.metric("contentgate_request_body_bytes").await < 50000.0 {
        assert!(
            held.elapsed() < std::time::Duration::from_secs(5),
            "the slow body is not counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Another 59 000-byte body does not fit in the 50 000 left: refused once it passes them.
    let big = format!(
        "{{\"query\":\"{{ posts {{ id }} }}{}\"}}",
        " ".repeat(59_000)
    );
    let r = gw.post_json("/content", None, big.clone()).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.text().await.unwrap().contains("BODY_BUDGET_EXHAUSTED"));
    // A small one still fits.
    assert_eq!(
        gw.query("/content", None, "{ posts { id } }")
            .await
            .status(),
        200
    );
    // The slow upload ends: its share comes back, and the big body passes.
    drop(slow);
    drop(idle);
    let freed = std::time::Instant::now();
    while gw.metric("contentgate_request_body_bytes").await > 0.0 {
        assert!(
            freed.elapsed() < std::time::Duration::from_secs(5),
            "the budget was not given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = gw.post_json("/content", None, big).await;
    assert_ne!(r.status(), 503, "{}", r.text().await.unwrap());
    assert_eq!(origin.count(), 2);
}
