//! N concurrent identical requests, for `benches/side_by_side.sh` scenario (e).
//!
//! Opens N keep-alive connections first (N concurrent GETs of `--warm-url`, a cached hit),
//! waits until every task holds a connection, then fires N identical POSTs of one fresh GraphQL
//! query (a unique comment makes it a cold miss) at `--url` at once. Prints one summary line:
//!
//! ```text
//! burst n=1000 ok=1000 status=200:1000 x-cache=HIT:999,MISS:1 wall_ms=212 p50_ms=205.1 p99_ms=210.3 max_ms=211.0
//! ```
//!
//! ```sh
//! cargo run --release --example burst -- --url http://127.0.0.1:8480/burst/cdn \
//!     --warm-url 'http://127.0.0.1:8480/cdn?query=%7B__typename%7D' --n 1000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench tool: a panic is its report

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn usage() -> ! {
    eprintln!(
        "usage: burst --url URL [--warm-url URL] [--n N] [--nonce S] [--header 'Name: value']... \
         [--timeout-s S]"
    );
    std::process::exit(2)
}

fn main() {
    let mut url = None;
    let mut warm_url = None;
    let mut n: usize = 1000;
    let mut nonce = None;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut timeout_s: u64 = 30;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--url" => url = Some(val()),
            "--warm-url" => warm_url = Some(val()),
            "--n" => n = val().parse().unwrap_or_else(|_| usage()),
            "--nonce" => nonce = Some(val()),
            "--timeout-s" => timeout_s = val().parse().unwrap_or_else(|_| usage()),
            "--header" => {
                let h = val();
                let (k, v) = h.split_once(':').unwrap_or_else(|| usage());
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            _ => usage(),
        }
    }
    let url = url.unwrap_or_else(|| usage());
    let nonce = nonce.unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}-{}", t.as_nanos(), std::process::id())
    });
    let query = format!("# burst {nonce}\n{{ posts {{ id title slug body }} }}");
    let body = serde_json::to_vec(&serde_json::json!({ "query": query })).expect("json");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(run(url, warm_url, n, body, headers, timeout_s));
    std::process::exit(code);
}

struct Outcome {
    status: Option<u16>,
    x_cache: String,
    elapsed: Duration,
}

async fn run(
    url: String,
    warm_url: Option<String>,
    n: usize,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    timeout_s: u64,
) -> i32 {
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(n)
        .pool_idle_timeout(Duration::from_secs(120))
        .timeout(Duration::from_secs(timeout_s))
        .build()
        .expect("client");
    let body = bytes::Bytes::from(body);
    let warm_ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Every task warms its own connection, meets the others at the barrier, then fires.
    let warm_barrier = Arc::new(tokio::sync::Barrier::new(n));
    let fire_barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let client = client.clone();
        let url = url.clone();
        let warm_url = warm_url.clone();
        let body = body.clone();
        let headers = headers.clone();
        let warm_ok = warm_ok.clone();
        let warm_barrier = warm_barrier.clone();
        let fire_barrier = fire_barrier.clone();
        tasks.push(tokio::spawn(async move {
            if let Some(w) = &warm_url {
                let mut rq = client.get(w);
                for (k, v) in &headers {
                    rq = rq.header(k, v);
                }
                if let Ok(r) = rq.send().await {
                    // Read to the end so the connection goes back to the pool.
                    let ok = r.status().is_success();
                    if r.bytes().await.is_ok() && ok {
                        warm_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                // Hold the connection until all are open, so each task gets its own.
                warm_barrier.wait().await;
            }
            fire_barrier.wait().await;
            let mut rq = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body);
            for (k, v) in &headers {
                rq = rq.header(k, v);
            }
            let start = Instant::now();
            match rq.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let x_cache = r
                        .headers()
                        .get("x-cache")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    let ok = r.bytes().await.is_ok();
                    Outcome {
                        status: ok.then_some(status),
                        x_cache,
                        elapsed: start.elapsed(),
                    }
                }
                Err(e) => {
                    eprintln!("burst: request failed: {e}");
                    Outcome {
                        status: None,
                        x_cache: "-".into(),
                        elapsed: start.elapsed(),
                    }
                }
            }
        }));
    }
    fire_barrier.wait().await;
    let wall = Instant::now();
    let mut outcomes = Vec::with_capacity(n);
    for t in tasks {
        match t.await {
            Ok(o) => outcomes.push(o),
            Err(e) => eprintln!("burst: task failed: {e}"),
        }
    }
    let wall = wall.elapsed();

    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut caches: BTreeMap<String, usize> = BTreeMap::new();
    let mut lat: Vec<f64> = Vec::with_capacity(n);
    let mut ok = 0;
    for o in &outcomes {
        let s = o.status.map_or("error".to_string(), |s| s.to_string());
        if o.status == Some(200) {
            ok += 1;
        }
        *statuses.entry(s).or_default() += 1;
        *caches.entry(o.x_cache.clone()).or_default() += 1;
        lat.push(o.elapsed.as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i]
    };
    let join = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "burst n={n} ok={ok} warm_ok={} status={} x-cache={} wall_ms={:.0} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        warm_ok.load(std::sync::atomic::Ordering::Relaxed),
        join(&statuses),
        join(&caches),
        wall.as_secs_f64() * 1000.0,
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
    if ok == n {
        0
    } else {
        1
    }
}
