//! The request edge ("The request edge" review): client addresses on dual-stack listeners and
//! behind proxies, per-prefix IPv6 limits, and the refusal budget per address.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use common::*;
use serde_json::json;

const Q: &str = "{ posts { id } }";

async fn post_to(gw: &TestGateway, url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = gw
        .client
        .post(url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(json!({ "query": Q }).to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn ipv4_rules_hold_on_a_dual_stack_listener() {
    let origin = MockOrigin::start().await;
    let dual = free_port();
    let gw = GatewayBuilder::new(&origin)
        .cdn("deny = [\"127.0.0.1/32\"]")
        .extra(&format!("\n[[listener]]\naddress = \"[::]:{dual}\"\n"))
        .start()
        .await;
    // An IPv4 client on `[::]` is `::ffff:127.0.0.1` to the socket: still 127.0.0.1 to the rules.
    let url = format!("http://127.0.0.1:{dual}/cdn");
    let mut ready = false;
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", dual)).is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "dual-stack listener up");
    assert_eq!(post_to(&gw, &url, &[]).await, 403);
    assert_eq!(
        post_to(&gw, &format!("http://127.0.0.1:{dual}/content"), &[]).await,
        200
    );
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn forwarded_addresses_are_canonical_and_walked_from_the_right() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .cdn("deny = [\"9.9.9.9/32\"]")
        .extra("\n[network]\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n")
        .start()
        .await;
    let cdn = gw.url("/cdn");
    // The mapped form of a denied address is the denied address.
    assert_eq!(
        post_to(&gw, &cdn, &[("x-forwarded-for", "::ffff:9.9.9.9")]).await,
        403
    );
    assert_eq!(
        post_to(&gw, &cdn, &[("x-forwarded-for", "9.9.9.9:5678")]).await,
        403
    );
    // Trusted hops are skipped from the right; the first untrusted one is the client.
    assert_eq!(
        post_to(&gw, &cdn, &[("x-forwarded-for", "9.9.9.9, 10.1.2.3")]).await,
        403
    );
    // An entry that does not parse ends the walk at the peer, never at what the client wrote
    // to its left.
    for xff in ["9.9.9.9, unknown", "1.1.1.1, unknown", "9.9.9.9, [nope]"] {
        assert_eq!(
            post_to(&gw, &cdn, &[("x-forwarded-for", xff)]).await,
            200,
            "{xff}"
        );
    }
    assert_eq!(
        post_to(&gw, &cdn, &[("x-forwarded-for", "[2001:db8::7]:443")]).await,
        200
    );
}

#[tokio::test]
async fn ipv6_clients_share_a_limit_per_prefix() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .extra(
            "\n[rate_limits]\npublic_per_ip = { requests_per_second = 1, burst = 2 }\n\
             \n[network]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        )
        .start()
        .await;
    let content = gw.url("/content");
    let mut statuses = Vec::new();
    // Eight neighbours in one /64: one subscriber, one bucket.
    for i in 1..=8 {
        let xff = format!("2001:db8:1:2::{i:x}");
        statuses.push(post_to(&gw, &content, &[("x-forwarded-for", &xff)]).await);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    // Another /64 has its own.
    assert_eq!(
        post_to(&gw, &content, &[("x-forwarded-for", "2001:db8:1:3::1")]).await,
        200
    );
}

#[tokio::test]
async fn an_address_over_its_refusal_budget_is_refused_before_authentication() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .extra("\n[rate_limits]\nrefused_per_ip = { requests_per_second = 1, burst = 5 }\n")
        .start()
        .await;
    let content = gw.url("/content");
    let bogus = bearer(&format!(
        "{}.{}.{}",
        seg(&json!({"alg": "ES256", "kid": "es"})),
        seg(&json!({"jti": "jti-reader", "iss": "https://issuer.test", "aud": "contentgate"})),
        seg_raw("not-a-signature")
    ));
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(post_to(&gw, &content, &[("authorization", &bogus)]).await);
    }
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[7], 429, "{statuses:?}");
    // While blocked, even a valid token from that address waits.
    let valid = bearer(&es("jti-reader"));
    assert_eq!(
        post_to(&gw, &content, &[("authorization", &valid)]).await,
        429
    );
    assert!(
        gw.metric("contentgate_rate_limit_rejections_total{scope=\"refused\"}")
            .await
            >= 1.0
    );
    assert_eq!(origin.count(), 0);
    // The bucket refills: served again.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_eq!(
        post_to(&gw, &content, &[("authorization", &valid)]).await,
        200
    );
}
