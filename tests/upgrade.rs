//! Zero-downtime binary upgrade with Pingora's mechanism: a new process started with
//! `serve --upgrade` receives the listening sockets from the old one (SIGQUIT), which then
//! drains and exits. Clients opening new connections throughout see no refusal and no error.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn an_upgrade_hands_over_the_sockets_without_refusing_a_connection() {
    let origin = MockOrigin::start().await;
    let old = GatewayBuilder::new(&origin).start().await;
    let url = old.url("/content");
    let stop = Arc::new(AtomicBool::new(false));
    // refused: connect errors (the contract); closed: a connection the old process accepted and
    // dropped unread when it stopped (Pingora drops idle unread sessions at shutdown: the request
    // was never processed, which HTTP clients retry safely).
    let (ok, failed, closed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut load = Vec::new();
    for _ in 0..4 {
        let (url, stop, ok, failed, closed) = (
            url.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            closed.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A new connection per request: every request exercises accept().
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(r#"{"query":"{ posts { id } }"}"#)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if !e.is_connect() && e.is_request() => {
                        closed.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new binary waits for the sockets on the upgrade socket in the shared runtime_dir…
    let new = Command::new(env!("CARGO_BIN_EXE_contentgate"))
        .args(["serve", "--upgrade", "--config"])
        .arg(old.cfg.config())
        .env("CG_TEST_SERVICE_TOKEN", SERVICE_TOKEN)
        .env("CG_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(old.cfg.path().join("new.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    // Killed on drop, even when an assertion below fails.
    let mut new = KillOnDrop(new);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // …and the old one hands them over on SIGQUIT, then drains and exits.
    old.signal("QUIT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut old = old;
    while old.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the old process did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let new_log = std::fs::read_to_string(old.cfg.path().join("new.log")).unwrap_or_default();
    assert!(
        new.0.try_wait().unwrap().is_none(),
        "the new process is serving; its log:\n{new_log}"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "refused or failed requests across the upgrade; new log:\n{new_log}"
    );
    let (ok, closed) = (ok.load(Ordering::Relaxed), closed.load(Ordering::Relaxed));
    assert!(ok > 20);
    assert!(
        closed * 50 <= ok,
        "{closed} connections closed unread for {ok} answered"
    );
    eprintln!("upgrade: {ok} answered, 0 refused, {closed} closed unread by the old process");
    // The new process answers on the same ports, admin included.
    let r = reqwest::get(old.admin_url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
