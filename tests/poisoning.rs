//! Cache poisoning and deception: inputs the cache key does not hold never reach the origin and
//! never change a stored answer; URLs that look like something else answer nothing; a token's
//! answers are marked private for any shared cache in front of the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use common::*;

const Q: &str = "{ posts { id } }";

fn editor_tokens() -> String {
    token_entry(
        "jti-editor",
        "editor",
        "DRAFT",
        "[[token.permission]]\naction = \"read\"\nstages = [\"DRAFT\", \"PUBLISHED\"]\n",
    )
}

async fn gateway() -> (MockOrigin, TestGateway) {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .tokens(&editor_tokens())
        .extra("\n[cache]\ndefault_ttl = \"60s\"\n")
        .start()
        .await;
    (origin, gw)
}

async fn get(
    gw: &TestGateway,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = gw.client.get(gw.url(path_and_query));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.bytes().await.unwrap().to_vec())
}

fn cdn_url(q: &str) -> String {
    format!("/cdn?query={}", urlencode(q))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

const UNKEYED: &[(&str, &str)] = &[
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-proto", "http"),
    ("x-forwarded-for", "10.9.8.7"),
    ("forwarded", "for=10.9.8.7;host=evil.example;proto=http"),
    ("x-original-url", "/admin"),
    ("x-rewrite-url", "/admin"),
    ("x-http-method-override", "DELETE"),
    ("accept-encoding", "gzip, br"),
    ("accept-language", "de-DE"),
    ("origin", "https://evil.example"),
    ("cookie", "session=attacker"),
    ("gcms-stagee", "DRAFT"),
    ("gcms-stages", "DRAFT"),
    ("hyg-stage", "DRAFT"),
    ("x-gcms-stage", "DRAFT"),
    ("gcms-locale", "de"),
];

#[tokio::test]
async fn unkeyed_headers_never_reach_the_origin_nor_change_a_stored_answer() {
    let (origin, gw) = gateway().await;
    // A request carrying every unkeyed header fills the entry...
    let (status, h, poisoned_try) = get(&gw, &cdn_url(Q), UNKEYED).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-cache"], "MISS");
    let fill = origin.last();
    for (name, _) in UNKEYED {
        assert!(
            fill.header(name).is_none(),
            "{name} reached the origin: {:?}",
            fill.headers
        );
    }
    assert_eq!(fill.header("gcms-stage"), Some("PUBLISHED"));
    // ... and a clean request gets exactly those bytes, as does every unkeyed variation after.
    origin.reply_with(Reply {
        body: r#"{"data":{"posts":[{"id":"SHOULD-NOT-BE-SEEN"}]}}"#.into(),
        ..Reply::default()
    });
    let (status, h, clean) = get(&gw, &cdn_url(Q), &[]).await;
    assert_eq!((status, &h["x-cache"]), (200, &"HIT".parse().unwrap()));
    assert_eq!(clean, poisoned_try);
    for header in UNKEYED {
        let (status, h, body) = get(&gw, &cdn_url(Q), &[*header]).await;
        assert_eq!(status, 200, "{header:?}");
        assert_eq!(h["x-cache"], "HIT", "{header:?}");
        assert_eq!(body, clean, "{header:?}");
        assert!(h.get("content-encoding").is_none());
        assert!(h.get("set-cookie").is_none());
    }
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn unknown_query_parameters_are_neither_keyed_nor_forwarded() {
    let (origin, gw) = gateway().await;
    let url = format!(
        "{}&callback=evil&_=1&extensions=%7B%7D&debug=true",
        cdn_url(Q)
    );
    let (status, h, first) = get(&gw, &url, &[]).await;
    assert_eq!((status, &h["x-cache"]), (200, &"MISS".parse().unwrap()));
    let seen = origin.last();
    let query = seen.uri.query().unwrap();
    assert_eq!(query, format!("query={}", urlencode(Q)), "{query}");
    // The same GraphQL request, spelled without the extras, shares the entry.
    let (status, h, clean) = get(&gw, &cdn_url(Q), &[]).await;
    assert_eq!((status, &h["x-cache"]), (200, &"HIT".parse().unwrap()));
    assert_eq!(clean, first);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn path_variants_answer_nothing_and_reach_nothing() {
    let (origin, gw) = gateway().await;
    let token = bearer(&es("jti-editor"));
    let q = format!("?query={}", urlencode(Q));
    for path in [
        "/cdn/x.css",
        "/cdn/static/app.js",
        "/cdn;a.js",
        "/cdn;/x.css",
        "/cdn/%2F..",
        "/cdn%2Fx.css",
        "/cdn/..;/x.js",
        "/CDN",
        "/Cdn",
        "/cdn.css",
        "/cdn//",
        "/content/x.css",
        "/content.js",
    ] {
        for auth in [Some(token.as_str()), None] {
            let mut headers = vec![];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            let (status, _, body) = get(&gw, &format!("{path}{q}"), &headers).await;
            assert_eq!(
                status,
                404,
                "{path} (auth: {}): {}",
                auth.is_some(),
                String::from_utf8_lossy(&body)
            );
        }
    }
    assert_eq!(origin.count(), 0, "{:?}", origin.requests());
}

#[tokio::test]
async fn a_tokens_answers_are_private_and_keyed_apart_on_every_accepted_spelling() {
    let (origin, gw) = gateway().await;
    let token = bearer(&es("jti-editor"));
    for path in [cdn_url(Q), format!("/cdn/?query={}", urlencode(Q))] {
        let (status, h, _) = get(&gw, &path, &[("authorization", token.as_str())]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            h.get("cache-control").map(|v| v.to_str().unwrap()),
            Some("private, no-store"),
            "{path}"
        );
        assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));
    }
    // The token's stage-DRAFT answer is one entry; the public request is another.
    let before = origin.count();
    let (status, h, _) = get(&gw, &format!("/cdn/?query={}", urlencode(Q)), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        h["x-cache"], "MISS",
        "public must not reach the token's entry"
    );
    assert_eq!(origin.count(), before + 1);
    assert_eq!(origin.last().header("gcms-stage"), Some("PUBLISHED"));
    assert!(h.get("cache-control").is_none());
    // The token's hit is private too, and so is a pass-through.
    let (_, h, _) = get(&gw, &cdn_url(Q), &[("authorization", token.as_str())]).await;
    assert_eq!(h["x-cache"], "HIT");
    assert_eq!(h["cache-control"], "private, no-store");
    let r = gw.query("/content", Some(&token), Q).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "private, no-store");
}

#[tokio::test]
async fn a_fat_get_cannot_poison_the_url_keyed_entry() {
    let (origin, gw) = gateway().await;
    let url = gw.url(&cdn_url(Q));
    let fat = || {
        gw.client
            .get(&url)
            .header("content-type", "application/json")
            .body(r#"{"query":"{ posts(stage: DRAFT) { id title } }"}"#)
            .send()
    };
    let r = fat().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(origin.count(), 0);
    let (status, h, clean) = get(&gw, &cdn_url(Q), &[]).await;
    assert_eq!((status, &h["x-cache"]), (200, &"MISS".parse().unwrap()));
    let r = fat().await.unwrap();
    assert_eq!(r.status(), 400);
    let (status, h, again) = get(&gw, &cdn_url(Q), &[]).await;
    assert_eq!((status, &h["x-cache"]), (200, &"HIT".parse().unwrap()));
    assert_eq!(again, clean);
    assert_eq!(origin.count(), 1);
    assert!(!String::from_utf8_lossy(&origin.last().body).contains("DRAFT"));
}
