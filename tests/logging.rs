//! The log sink through the real binary: access lines are formatted on the request thread and
//! written by the log writer thread in batches (`[log] buffer_bytes`, `flush_interval`).
//! Every line arrives whole and once; the held lines are written at exit; and a stderr that
//! stops draining costs dropped lines (counted), never a stalled request.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const Q: &str = "{ posts { id title } }";

/// `n` POSTs of the same query to /cdn, `concurrency` at a time; the x-request-id of each answer.
async fn hits(gw: &TestGateway, n: usize, concurrency: usize) -> Vec<String> {
    let client = reqwest::Client::builder()
        // A stalled event loop fails the test here rather than at the harness's timeout.
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = gw.url("/cdn");
    let body = json!({ "query": Q }).to_string();
    let mut ids = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        if set.len() >= concurrency {
            ids.push(set.join_next().await.unwrap().unwrap());
        }
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        set.spawn(async move {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(r.status(), 200);
            r.headers()["x-request-id"].to_str().unwrap().to_string()
        });
    }
    while let Some(id) = set.join_next().await {
        ids.push(id.unwrap());
    }
    ids
}

/// Every line of `text` as JSON (a torn or interleaved line fails here); the /cdn access lines'
/// request ids, with how often each appears.
fn access_ids(text: &str) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not whole JSON ({e}): {line:?}"));
        if v["target"] == "access" && v["endpoint"] == "cdn" {
            *ids.entry(v["request_id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    ids
}

async fn wait_exit(gw: &mut TestGateway) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_default_buffer_every_access_line_arrives_whole_and_once() {
    let origin = MockOrigin::start().await;
    // The defaults: 4 MiB held, written every 100 ms.
    let gw = GatewayBuilder::new(&origin).log("").start().await;
    let ids = hits(&gw, 600, 32).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let seen = access_ids(&gw.log());
        if seen.len() >= ids.len() || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let want: HashSet<_> = ids.iter().cloned().collect();
    assert_eq!(want.len(), ids.len(), "request ids are unique");
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), want);
    assert!(seen.values().all(|&n| n == 1), "a line written twice");
    let metrics = gw.metrics().await;
    for cause in ["access_full", "full", "stderr"] {
        let series = format!("contentgate_log_lines_dropped_total{{cause=\"{cause}\"}} 0\n");
        assert!(metrics.contains(&series), "{series:?} missing");
    }
}

#[tokio::test]
async fn the_held_lines_are_written_when_the_process_exits() {
    let origin = MockOrigin::start().await;
    // Nothing is written before exit: 10 s between writes, and 40 lines stay far below the
    // 64 KiB that wakes the writer early.
    let mut gw = GatewayBuilder::new(&origin)
        .log("flush_interval = \"10s\"")
        .start()
        .await;
    let ids = hits(&gw, 40, 4).await;
    let before = std::fs::read_to_string(gw.cfg.path().join("gateway.log")).unwrap();
    assert!(
        access_ids(&before).is_empty(),
        "lines were written before the interval; the exit flush is not what this test sees"
    );
    gw.signal("TERM");
    wait_exit(&mut gw).await;
    let seen = access_ids(&gw.log());
    assert_eq!(
        seen.keys().cloned().collect::<HashSet<_>>(),
        ids.into_iter().collect::<HashSet<_>>(),
        "every held line was written at exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_that_stops_draining_drops_whole_lines_and_stalls_nothing() {
    let origin = MockOrigin::start().await;
    // stderr is a pipe nobody reads yet: it fills at 64 KiB, the writer thread blocks in
    // write(), access lines fill three quarters of the 64 KiB buffer behind it, and further
    // access lines are dropped.
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut gw = GatewayBuilder::new(&origin)
        .log("buffer_bytes = 65536\nflush_interval = \"10ms\"")
        .write()
        .start_with_stderr(writer.into())
        .await;
    // ~1 MB of access lines, about 8 times what the pipe and the buffer hold. Each request is
    // answered within the client's 5 s timeout: the request threads never wait for the pipe.
    let mut ids = hits(&gw, 2_500, 16).await;
    let access_full = "contentgate_log_lines_dropped_total{cause=\"access_full\"}";
    assert!(
        gw.metric(access_full).await > 0.0,
        "nothing dropped: the pipe did not fill?"
    );
    // Held: the buffer (at most 3/4 of 64 KiB of access lines) and the batch stuck in write().
    assert!(gw.metric("contentgate_log_buffered_bytes").await <= 2.0 * 65_536.0);
    // The flood has not taken the audit line of a refused credential: the last quarter of the
    // buffer is kept for lines other than access lines.
    let refused = gw
        .client
        .post(gw.admin_url("/admin/purge"))
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        gw.metric("contentgate_log_lines_dropped_total{cause=\"full\"}")
            .await,
        0.0
    );

    // Once the pipe drains, lines flow again.
    let drain = std::thread::spawn(move || {
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.metric("contentgate_log_buffered_bytes").await > 0.0 {
        assert!(Instant::now() < deadline, "the buffer did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ids.extend(hits(&gw, 50, 4).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dropped = gw.metric(access_full).await as usize;
    gw.signal("TERM");
    wait_exit(&mut gw).await;
    let text = drain.join().unwrap();

    assert!(
        text.contains("\"event\":\"purge_refused\""),
        "the audit line was lost in the flood"
    );
    let seen = access_ids(&text);
    let want: HashSet<_> = ids.iter().cloned().collect();
    assert!(seen.values().all(|&n| n == 1), "a line written twice");
    assert!(
        seen.keys().all(|id| want.contains(id)),
        "a line of no request"
    );
    // What was not written was counted: every dropped line is a whole line, and the ones that
    // arrived plus the ones counted cover every request.
    assert!(
        seen.len() + dropped >= ids.len(),
        "{} lines arrived, {dropped} counted dropped, {} requests",
        seen.len(),
        ids.len()
    );
    assert!(seen.len() < ids.len(), "nothing was dropped after all");
    // The last 50, sent once the buffer had drained, are all there.
    let tail = &ids[ids.len() - 50..];
    assert!(tail.iter().all(|id| seen.contains_key(id)));
}

#[tokio::test]
async fn log_settings_out_of_range_fail_start_up_naming_the_line_and_field() {
    let origin = MockOrigin::start().await;
    let cfg = GatewayBuilder::new(&origin)
        .log("buffer_bytes = 1000\nflush_interval = \"0ms\"")
        .write();
    let out = contentgate(&["check", "--config", cfg.config().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(cfg.config()).unwrap();
    let line = |key: &str| 1 + text.lines().position(|l| l.starts_with(key)).unwrap();
    assert!(
        stderr.contains(&format!(
            "gateway.toml:{}: log.buffer_bytes: 1000 is outside 65536..",
            line("buffer_bytes")
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "gateway.toml:{}: log.flush_interval: \"0ms\" is outside 1ms..10s",
            line("flush_interval")
        )),
        "{stderr}"
    );
}

/// The access line's `upstream_ms` of a pass-through is the wait for the upstream's answer
/// header; relaying a slow body to the client is in `duration_ms`, not in it.
#[tokio::test]
async fn upstream_ms_is_the_wait_for_the_answer_not_the_relay() {
    use common::raw::{Mode, RawOrigin};
    let origin = RawOrigin::start(Mode::SlowHeaders(Duration::from_millis(600))).await;
    let gw = GatewayBuilder::with_upstream(&origin.url()).start().await;
    // The n-th access line (from 1). The line is written after the answer's last byte, so a
    // client that has read the answer may look before it is there: wait for it.
    async fn line(gw: &TestGateway, n: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = gw.log();
            let mut lines = log.lines().filter(|l| l.contains("\"target\":\"access\""));
            if let Some(l) = lines.nth(n - 1) {
                return serde_json::from_str(l).unwrap();
            }
            assert!(Instant::now() < deadline, "no access line {n}:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let r = gw.query("/content", None, Q).await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    let slow_header = line(&gw, 1).await;
    assert!(
        slow_header["upstream_ms"].as_f64().unwrap() >= 600.0,
        "{slow_header}"
    );

    origin.set_mode(Mode::SlowBody(Duration::from_millis(600)));
    let r = gw.query("/content", None, Q).await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    let slow_body = line(&gw, 2).await;
    let (up, total) = (
        slow_body["upstream_ms"].as_f64().unwrap(),
        slow_body["duration_ms"].as_f64().unwrap(),
    );
    assert!(total >= 600.0, "{slow_body}");
    assert!(
        up < 300.0,
        "the relay counted as upstream time: {slow_body}"
    );
}
