//! A fast GraphQL-shaped origin for `benches/side_by_side.sh`.
//!
//! Answers every GET and POST (any path but `/count`) with the same ~2 KB
//! `{"data":{"posts":[...]}}` JSON body, 200, `content-type: application/json`, keep-alive,
//! after an optional artificial delay. `GET /count` returns how many content requests it has
//! answered so far (plain text), so a harness can tell how many requests reached the upstream.
//!
//! ```sh
//! cargo run --release --example bench_origin -- --port 4100 --delay-ms 20
//! ```
//!
//! One current-thread Tokio runtime: pin it with `taskset` and it uses exactly one core.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench tool: a panic is its report

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct State {
    body: Bytes,
    delay: Option<Duration>,
    count: AtomicU64,
}

fn usage() -> ! {
    eprintln!("usage: bench_origin [--port PORT] [--delay-ms MS] [--address IP]");
    std::process::exit(2)
}

/// About 2 KB of posts, shaped like the sample API's `{ posts { id title slug body } }`.
fn make_body() -> Bytes {
    let posts: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            serde_json::json!({
                "id": format!("ckpost{i:020}"),
                "title": format!("Benchmark post number {i}"),
                "slug": format!("benchmark-post-{i}"),
                "body": "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
                         tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim.",
            })
        })
        .collect();
    let v = serde_json::json!({ "data": { "posts": posts } });
    Bytes::from(serde_json::to_vec(&v).expect("serialize"))
}

async fn content(state: Arc<State>, _body: Bytes) -> Response {
    state.count.fetch_add(1, Ordering::Relaxed);
    if let Some(d) = state.delay {
        tokio::time::sleep(d).await;
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.body.clone(),
    )
        .into_response()
}

fn main() {
    let mut port: u16 = 4100;
    let mut delay_ms: u64 = 0;
    let mut address = String::from("127.0.0.1");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--port" => port = val().parse().unwrap_or_else(|_| usage()),
            "--delay-ms" => delay_ms = val().parse().unwrap_or_else(|_| usage()),
            "--address" => address = val(),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let state = Arc::new(State {
        body: make_body(),
        delay: (delay_ms > 0).then(|| Duration::from_millis(delay_ms)),
        count: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let s1 = state.clone();
        let s2 = state.clone();
        let app = Router::new()
            .route(
                "/count",
                get(move || {
                    let s = s1.clone();
                    async move { s.count.load(Ordering::Relaxed).to_string() }
                }),
            )
            .fallback(move |body: Bytes| content(s2.clone(), body));
        let listener = tokio::net::TcpListener::bind((address.as_str(), port))
            .await
            .unwrap_or_else(|e| {
                eprintln!("bench_origin: cannot listen on {address}:{port}: {e}");
                std::process::exit(1)
            });
        eprintln!(
            "bench_origin: listening on {} (delay {delay_ms} ms, body {} bytes)",
            listener.local_addr().expect("addr"),
            state.body.len()
        );
        axum::serve(listener, app).await.expect("serve");
    });
}
