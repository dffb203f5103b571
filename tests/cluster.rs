//! Many replicas, one truth: three real gateway processes sharing one real `redis-server`
//! (a unix socket in a temp dir). Revocations, purges and webhook replays reach every replica;
//! an invalid or empty set never replaces a good snapshot; a Redis that hangs or dies makes
//! token requests fail closed after `max_staleness` while public reads go on; rate limits are
//! the cluster's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;

const Q: &str = "{ posts { id title } }";

/// `cache_extra`: more keys of the `[cache]` table.
fn cluster_section(redis: &RedisServer, cache_extra: &str) -> String {
    format!(
        "\n[cluster]\nredis = \"{}\"\nprefix = \"t\"\npoll_interval = \"200ms\"\nmax_staleness = \"2s\"\ncommand_timeout = \"150ms\"\nexpected_replicas = 3\n\n[cache]\ncontent_reads = true\n{cache_extra}\n\n[webhooks]\nsecret_env = \"CG_TEST_WEBHOOK_SECRET\"\n",
        redis.url()
    )
}

fn cli(args: &[&str], config: &std::path::Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_contentgate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Replicas {
    gws: Vec<TestGateway>,
    /// The folder pushed first (a copy of the first replica's policies).
    origin: MockOrigin,
}

impl Replicas {
    fn config(&self) -> std::path::PathBuf {
        self.gws[0].cfg.config()
    }

    fn policies(&self) -> std::path::PathBuf {
        self.gws[0].policies()
    }
}

/// Pushes `builder`'s folder into Redis, then starts `n` replicas on it.
async fn replicas(_redis: &RedisServer, n: usize, builder: GatewayBuilder) -> Replicas {
    let mut dirs: Vec<ConfigDir> = (0..n).map(|_| builder.write()).collect();
    let first = &dirs[0];
    ok(&cli(
        &[
            "policy",
            "push",
            first.path().join("policies").to_str().unwrap(),
        ],
        &first.config(),
    ));
    let mut gws = Vec::new();
    for d in dirs.drain(..) {
        gws.push(d.start().await);
    }
    Replicas {
        gws,
        origin: MockOrigin::start().await,
    }
}

async fn builder(redis: &RedisServer, cache_extra: &str) -> (MockOrigin, GatewayBuilder) {
    let origin = MockOrigin::start().await;
    origin.reply_with(Reply {
        body: r#"{"data":{"posts":[{"id":"p1","title":"t"}]}}"#.into(),
        ..Reply::default()
    });
    let b = GatewayBuilder::new(&origin).extra(&cluster_section(redis, cache_extra));
    (origin, b)
}

async fn status_of(gw: &TestGateway, path: &str, auth: Option<&str>) -> (u16, String, String) {
    let r = gw.query(path, auth, Q).await;
    let s = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (s, cache, r.text().await.unwrap())
}

/// `POST /admin/purge` on `gw`'s admin listener; the status.
async fn admin_purge(gw: &TestGateway, body: &'static str) -> u16 {
    gw.client
        .post(gw.admin_url("/admin/purge"))
        .bearer_auth(ADMIN_TOKEN)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `path` on `gw` every 10 ms until `done` holds for the answer (status, x-cache,
/// body); fails naming `what`, with the replica's log, once `within` has passed since `since`.
async fn until(
    gw: &TestGateway,
    path: &str,
    auth: Option<&str>,
    (since, within): (Instant, Duration),
    what: &str,
    done: impl Fn(&(u16, String, String)) -> bool,
) -> (u16, String, String) {
    loop {
        let answer = status_of(gw, path, auth).await;
        if done(&answer) {
            return answer;
        }
        assert!(
            since.elapsed() < within,
            "{what}: not within {within:?}; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_revocation_is_refused_on_every_replica_within_a_second() {
    let redis = RedisServer::start(false);
    let (_o, b) = builder(&redis, "").await;
    let r = replicas(&redis, 3, b).await;
    let jwt = bearer(&es("jti-reader"));
    for gw in &r.gws {
        assert_eq!(status_of(gw, "/content", Some(&jwt)).await.0, 200);
    }
    let out = ok(&cli(&["token", "revoke", "jti-reader"], &r.config()));
    assert!(out.contains("revoked 1 new jti"), "{out}");
    let written = Instant::now();
    let mut lag = Vec::new();
    for gw in &r.gws {
        let (_, _, body) = until(
            gw,
            "/content",
            Some(&jwt),
            (written, Duration::from_secs(1)),
            "a revoked jti refused",
            |a| a.0 == 401,
        )
        .await;
        assert!(body.contains("revoked"), "{body}");
        lag.push(written.elapsed());
    }
    // Every replica applied it from Redis, counted, and says which version it runs.
    for gw in &r.gws {
        assert_eq!(gw.metric("contentgate_cluster_policy_version").await, 2.0);
        assert_eq!(gw.metric("contentgate_registry_revoked_jtis").await, 1.0);
    }
    // Revoking again is a no-op that writes nothing.
    let out = ok(&cli(&["token", "revoke", "jti-reader"], &r.config()));
    assert!(out.contains("revoked 0 new jti"), "{out}");
    assert_eq!(redis.cli(&["HGET", "{t}:policy", "version"]).trim(), "2");
    eprintln!("revocation lag per replica: {lag:?}");
}

#[tokio::test]
async fn a_purge_on_one_replica_is_a_miss_on_the_others() {
    let redis = RedisServer::start(false);
    let (origin, b) = builder(&redis, "").await;
    let b = b.tokens(&token_entry(
        "jti-writer",
        "writer",
        "PUBLISHED",
        "[[token.permission]]\naction = \"read\"\n[[token.permission]]\naction = \"update\"\n",
    ));
    let r = replicas(&redis, 3, b).await;
    for gw in &r.gws {
        assert_eq!(status_of(gw, "/cdn", None).await.1, "MISS");
        assert_eq!(status_of(gw, "/cdn", None).await.1, "HIT");
    }
    let before = origin.count();
    let body =
        r#"{"operation":"publish","data":{"__typename":"Post","id":"p1","stage":"PUBLISHED"}}"#;
    let sig = contentgate::admin::sign_webhook(body, "master", now_ms(), WEBHOOK_SECRET.as_bytes());
    let hook = |gw: &TestGateway| {
        gw.client
            .post(gw.admin_url("/webhooks/cms"))
            .header("gcms-signature", sig.clone())
            .body(body)
            .send()
    };
    let resp = hook(&r.gws[0]).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("purged"));
    // The replay of that delivery to another replica is refused there (remembered in Redis).
    let replay = hook(&r.gws[1]).await.unwrap();
    assert_eq!(replay.status(), 200);
    assert!(replay.text().await.unwrap().contains("duplicate"));
    let sent = Instant::now();
    for gw in &r.gws[1..] {
        until(
            gw,
            "/cdn",
            None,
            (sent, Duration::from_secs(1)),
            "purge applied",
            |a| a.1 == "MISS",
        )
        .await;
        // By the message, or by the poll when it read the new sequence first.
        let applied = gw
            .metric("contentgate_cluster_purges_total{direction=\"received\"}")
            .await
            + gw.metric("contentgate_cluster_purges_total{direction=\"caught_up\"}")
                .await;
        assert!(applied >= 1.0);
    }
    assert_eq!(status_of(&r.gws[0], "/cdn", None).await.1, "MISS");
    assert_eq!(origin.count(), before + 3);
    // A mutation through one replica's content endpoint purges on all of them.
    for gw in &r.gws {
        status_of(gw, "/cdn", None).await;
        assert_eq!(status_of(gw, "/cdn", None).await.1, "HIT");
    }
    origin.reply_with(Reply {
        body: r#"{"data":{"updatePost":{"id":"p1"}}}"#.into(),
        ..Reply::default()
    });
    let reader = bearer(&es("jti-writer"));
    let m = r.gws[2]
        .query(
            "/content",
            Some(&reader),
            r#"mutation { updatePost(where: { id: "p1" }, data: { title: "x" }) { id } }"#,
        )
        .await;
    assert_eq!(m.status(), 200, "{}", m.text().await.unwrap());
    let sent = Instant::now();
    for gw in &r.gws[..2] {
        until(
            gw,
            "/cdn",
            None,
            (sent, Duration::from_secs(1)),
            "mutation purge not broadcast",
            |a| a.1 == "MISS",
        )
        .await;
    }
    drop(r.origin);
}

#[tokio::test]
async fn a_replica_that_missed_a_purge_message_catches_up_from_the_log() {
    let redis = RedisServer::start(false);
    let (_origin, b) = builder(&redis, "").await;
    let r = replicas(&redis, 2, b).await;
    for gw in &r.gws {
        status_of(gw, "/cdn", None).await;
        assert_eq!(status_of(gw, "/cdn", None).await.1, "HIT");
    }
    // A purge whose message every subscriber missed (pub/sub drops what is published while a
    // subscriber reconnects): logged under the next sequence number, never published.
    redis.cli(&[
        "EVAL",
        "local s = redis.call('INCR', KEYS[1]) redis.call('LPUSH', KEYS[2], s .. ' elsewhere {\"model\":\"Post\"}') return s",
        "2",
        "{t}:purge:seq",
        "{t}:purge:log",
    ]);
    let sent = Instant::now();
    for gw in &r.gws {
        until(
            gw,
            "/cdn",
            None,
            (sent, Duration::from_secs(2)),
            "missed purge not caught up",
            |a| a.1 == "MISS",
        )
        .await;
        assert_eq!(
            gw.metric("contentgate_cluster_purges_total{direction=\"caught_up\"}")
                .await,
            1.0
        );
    }
    // A sequence that went back (Redis replaced) purges everything: nothing stale survives.
    for gw in &r.gws {
        status_of(gw, "/cdn", None).await;
        assert_eq!(status_of(gw, "/cdn", None).await.1, "HIT");
    }
    redis.cli(&["DEL", "{t}:purge:seq", "{t}:purge:log"]);
    let sent = Instant::now();
    for gw in &r.gws {
        until(
            gw,
            "/cdn",
            None,
            (sent, Duration::from_secs(2)),
            "no flush after the sequence went back",
            |a| a.1 == "MISS",
        )
        .await;
        assert_eq!(
            gw.metric("contentgate_cluster_purges_total{direction=\"flushed\"}")
                .await,
            1.0
        );
    }
}

#[tokio::test]
async fn an_invalid_set_is_refused_whole_and_every_replica_keeps_serving() {
    let redis = RedisServer::start(false);
    let (_o, b) = builder(&redis, "").await;
    let r = replicas(&redis, 3, b).await;
    let jwt = bearer(&es("jti-reader"));
    // The CLI compiles the folder first: a bad stage is refused with file, line and field,
    // and nothing is written.
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "public.toml",
        "tokens.toml",
        "revoked.txt",
        "schema.graphql",
    ] {
        std::fs::copy(r.policies().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("public.toml"),
        "default_stage = \"PUBLISHED\"\n[[permission]]\naction = \"read\"\nstages = [\"NOPE\"]\n",
    )
    .unwrap();
    let out = cli(
        &["policy", "push", dir.path().to_str().unwrap()],
        &r.config(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("public.toml:") && err.contains("unknown stage \"NOPE\""),
        "{err}"
    );
    assert_eq!(redis.cli(&["HGET", "{t}:policy", "version"]).trim(), "1");
    // --dry-run shows the difference and writes nothing.
    std::fs::write(dir.path().join("revoked.txt"), "jti-other\n").unwrap();
    std::fs::copy(
        r.policies().join("public.toml"),
        dir.path().join("public.toml"),
    )
    .unwrap();
    let out = ok(&cli(
        &["policy", "push", dir.path().to_str().unwrap(), "--dry-run"],
        &r.config(),
    ));
    assert!(
        out.contains("+1 revoked (jti-other)") && out.contains("dry run"),
        "{out}"
    );
    assert_eq!(redis.cli(&["HGET", "{t}:policy", "version"]).trim(), "1");
    // A set written behind the CLI's back (redis-cli) that does not compile: refused by every
    // replica, which keeps its snapshot and raises the alarm.
    redis.cli(&[
        "EVAL",
        "redis.call('HSET', KEYS[1], 'public', 'default_stage = 3') local v = redis.call('HINCRBY', KEYS[1], 'version', 1) redis.call('PUBLISH', '{t}:events', 'policy x ' .. v) return v",
        "1",
        "{t}:policy",
    ]);
    for gw in &r.gws {
        assert!(
            gw.wait_metric("contentgate_cluster_alarm{reason=\"refused\"}", 1.0)
                .await
                >= 1.0,
            "{}",
            gw.log()
        );
        assert_eq!(status_of(gw, "/cdn", None).await.0, 200);
        assert_eq!(status_of(gw, "/content", Some(&jwt)).await.0, 200);
        assert_eq!(gw.metric("contentgate_cluster_policy_version").await, 1.0);
    }
    // Unconfirmed past max_staleness: tokens fail closed, public reads go on.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    for gw in &r.gws {
        let (s, _, body) = status_of(gw, "/content", Some(&jwt)).await;
        assert_eq!(s, 503, "{body}");
        assert!(body.contains("POLICY_STALE"), "{body}");
        assert_eq!(status_of(gw, "/cdn", None).await.0, 200);
    }
    // A good push heals every replica.
    ok(&cli(
        &["policy", "push", r.policies().to_str().unwrap()],
        &r.config(),
    ));
    for gw in &r.gws {
        assert!(
            gw.wait_metric("contentgate_cluster_policy_version", 3.0)
                .await
                >= 3.0,
            "{}",
            gw.log()
        );
        assert_eq!(status_of(gw, "/content", Some(&jwt)).await.0, 200);
        assert_eq!(
            gw.metric("contentgate_cluster_alarm{reason=\"refused\"}")
                .await,
            0.0
        );
    }
}

#[tokio::test]
async fn a_hung_then_dead_redis_fails_tokens_closed_and_recovers_without_a_restart() {
    let mut redis = RedisServer::start(true);
    let (_o, b) = builder(&redis, "").await;
    let r = replicas(&redis, 3, b).await;
    let jwt = bearer(&es("jti-reader"));
    redis.freeze();
    let frozen = Instant::now();
    // Within max_staleness everything is served from the last good snapshot.
    for gw in &r.gws {
        assert_eq!(status_of(gw, "/content", Some(&jwt)).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(2_500).saturating_sub(frozen.elapsed())).await;
    for gw in &r.gws {
        let (s, _, body) = status_of(gw, "/content", Some(&jwt)).await;
        assert_eq!(s, 503, "{body}");
        assert!(body.contains("POLICY_STALE"));
        assert_eq!(
            status_of(gw, "/cdn", None).await.0,
            200,
            "public reads go on"
        );
        assert!(gw.metric("contentgate_policy_staleness_seconds").await >= 2.0);
        assert_eq!(gw.metric("contentgate_cluster_redis_up").await, 0.0);
    }
    redis.kill();
    for gw in &r.gws {
        assert_eq!(status_of(gw, "/cdn", None).await.0, 200);
        assert_eq!(status_of(gw, "/content", Some(&jwt)).await.0, 503);
    }
    // Back with its data (append-only file): every replica confirms again, no restart.
    redis.restart(true);
    let back = Instant::now();
    for gw in &r.gws {
        until(
            gw,
            "/content",
            Some(&jwt),
            (back, Duration::from_secs(5)),
            "token requests served again",
            |a| a.0 == 200,
        )
        .await;
    }
}

#[tokio::test]
async fn a_redis_restarted_empty_never_reads_as_no_revocations() {
    let mut redis = RedisServer::start(false);
    let (_o, b) = builder(&redis, "").await;
    let r = replicas(&redis, 3, b.revoked("jti-gone\n")).await;
    let jwt = bearer(&es("jti-reader"));
    let gone = bearer(&es("jti-gone"));
    for gw in &r.gws {
        assert_eq!(status_of(gw, "/content", Some(&gone)).await.0, 401);
    }
    redis.restart(false);
    for gw in &r.gws {
        assert!(
            gw.wait_metric("contentgate_cluster_alarm{reason=\"empty\"}", 1.0)
                .await
                >= 1.0,
            "{}",
            gw.log()
        );
        // Last good snapshot: the revocation holds, the reader still works (until stale).
        assert_eq!(status_of(gw, "/content", Some(&gone)).await.0, 401);
        assert_eq!(status_of(gw, "/content", Some(&jwt)).await.0, 200);
        assert!(gw.log().contains("cluster_policy_missing"));
    }
    // A folder that dropped the revocation, pushed onto the empty Redis: the CLI cannot know
    // (Redis forgot), but every replica keeps what it enforces, and writes it back to the set,
    // so the set (and any replica started from it later) holds it again.
    let dir = tempfile::tempdir().unwrap();
    for f in ["public.toml", "tokens.toml", "schema.graphql"] {
        std::fs::copy(r.policies().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("revoked.txt"), "# none\n").unwrap();
    ok(&cli(
        &["policy", "push", dir.path().to_str().unwrap()],
        &r.config(),
    ));
    for gw in &r.gws {
        assert!(
            gw.wait_metric("contentgate_cluster_policy_version", 2.0)
                .await
                >= 2.0,
            "{}",
            gw.log()
        );
        assert_eq!(status_of(gw, "/content", Some(&gone)).await.0, 401);
        assert_eq!(status_of(gw, "/content", Some(&jwt)).await.0, 200);
        assert_eq!(
            gw.metric("contentgate_cluster_alarm{reason=\"empty\"}")
                .await,
            0.0
        );
    }
    // The first replica to see version 1 kept the revocation and wrote it back (version 2).
    assert!(r
        .gws
        .iter()
        .any(|gw| gw.log().contains("cluster_revocations_kept")));
    let revoked = redis.cli(&["HGET", "{t}:policy", "revoked"]);
    assert!(revoked.contains("jti-gone"), "not written back: {revoked}");
    // The full folder again: applied everywhere, nothing kept, the alarm clears.
    ok(&cli(
        &["policy", "push", r.policies().to_str().unwrap()],
        &r.config(),
    ));
    for gw in &r.gws {
        assert!(
            gw.wait_metric("contentgate_cluster_policy_version", 3.0)
                .await
                >= 3.0
        );
        assert_eq!(
            gw.metric("contentgate_cluster_alarm{reason=\"revocations_kept\"}")
                .await,
            0.0
        );
        assert_eq!(status_of(gw, "/content", Some(&gone)).await.0, 401);
        assert_eq!(status_of(gw, "/content", Some(&jwt)).await.0, 200);
    }
}

#[tokio::test]
async fn a_restored_backup_never_brings_a_revoked_token_back() {
    let redis = RedisServer::start(false);
    let (_o, b) = builder(&redis, "").await;
    let b = b.tokens(&format!(
        "{}{}",
        token_entry(
            "jti-reader",
            "reader",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n"
        ),
        token_entry(
            "jti-two",
            "two",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n"
        )
    ));
    let r = replicas(&redis, 2, b).await;
    let reader = bearer(&es("jti-reader"));
    let two = bearer(&es("jti-two"));
    // A backup at version 1, a revocation (version 2), then the backup restored: the same
    // epoch at version 1 again.
    redis.cli(&["COPY", "{t}:policy", "{t}:backup"]);
    ok(&cli(&["token", "revoke", "jti-reader"], &r.config()));
    for gw in &r.gws {
        assert!(
            gw.wait_metric("contentgate_cluster_policy_version", 2.0)
                .await
                >= 2.0
        );
        assert_eq!(status_of(gw, "/content", Some(&reader)).await.0, 401);
    }
    redis.cli(&["COPY", "{t}:backup", "{t}:policy", "REPLACE"]);
    for gw in &r.gws {
        assert!(
            gw.wait_metric("contentgate_cluster_alarm{reason=\"rollback\"}", 1.0)
                .await
                >= 1.0,
            "{}",
            gw.log()
        );
        assert_eq!(status_of(gw, "/content", Some(&reader)).await.0, 401);
    }
    // The next write lands on the restored set: version 2 again, other content. Applied, with
    // jti-reader kept revoked (and written back), jti-two revoked at once.
    ok(&cli(&["token", "revoke", "jti-two"], &r.config()));
    let sent = Instant::now();
    for gw in &r.gws {
        until(
            gw,
            "/content",
            Some(&two),
            (sent, Duration::from_secs(1)),
            "revocation refused",
            |a| a.0 == 401,
        )
        .await;
        assert_eq!(status_of(gw, "/content", Some(&reader)).await.0, 401);
    }
    let revoked = redis.cli(&["HGET", "{t}:policy", "revoked"]);
    assert!(
        revoked.contains("jti-reader") && revoked.contains("jti-two"),
        "{revoked}"
    );
    for gw in &r.gws {
        assert_eq!(
            gw.metric("contentgate_cluster_alarm{reason=\"rollback\"}")
                .await,
            0.0
        );
    }
}

#[tokio::test]
async fn a_replica_is_not_ready_until_it_has_synced_once() {
    let redis = RedisServer::start(false);
    let (_o, b) = builder(&redis, "").await;
    // Nothing pushed: the replica starts, but is not ready and refuses tokens.
    let dir = b.write();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_contentgate"))
        .args(["serve", "--config"])
        .arg(dir.config())
        .env("CG_TEST_SERVICE_TOKEN", SERVICE_TOKEN)
        .env("CG_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CG_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .stderr(std::fs::File::create(dir.path().join("gateway.log")).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let client = reqwest::Client::new();
    let readyz = format!("http://127.0.0.1:{}/readyz", dir.admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        if let Ok(r) = client.get(&readyz).send().await {
            assert_eq!(r.status(), 503);
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.contains("no policy set"), "{body}");
    ok(&cli(
        &[
            "policy",
            "push",
            dir.path().join("policies").to_str().unwrap(),
        ],
        &dir.config(),
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.get(&readyz).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "not ready after the push");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = ok(&cli(&["policy", "status"], &dir.config()));
    assert!(
        status.contains("version 1") && status.contains("compiles"),
        "{status}"
    );
}

#[tokio::test]
async fn a_token_rate_limit_is_the_clusters_number() {
    let redis = RedisServer::start(false);
    let (_o, b) = builder(&redis, "").await;
    let b = b.tokens(&token_entry(
        "jti-limited",
        "limited",
        "PUBLISHED",
        "rate_limit = { requests_per_second = 40, burst = 1 }\n[[token.permission]]\naction = \"read\"\n",
    ));
    let r = replicas(&redis, 3, b).await;
    let jwt = bearer(&es("jti-limited"));
    // 3 replicas, each hammered by its own client for 3 s: the cluster admits 40/s in all.
    let run = Duration::from_secs(3);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for gw in &r.gws {
        for _ in 0..4 {
            let client = gw.client.clone();
            let url = gw.url("/cdn");
            let jwt = jwt.clone();
            tasks.push(tokio::spawn(async move {
                let mut accepted = 0u32;
                while started.elapsed() < run {
                    let r = client
                        .post(&url)
                        .header("authorization", &jwt)
                        .header("content-type", "application/json")
                        .body(serde_json::json!({ "query": Q }).to_string())
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 200 {
                        accepted += 1;
                    } else {
                        assert_eq!(r.status(), 429);
                    }
                }
                accepted
            }));
        }
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    let expected = 40.0 * run.as_secs_f64() + 1.0;
    let ratio = f64::from(accepted) / expected;
    eprintln!("accepted {accepted} of an expected {expected} ({ratio:.3})");
    // Never above the cluster's number (three local limits would admit ~3x; the fallback's
    // divided one ~1/3). Below it by the clients' jitter: with burst = 1, GCRA forfeits how late
    // each next request arrives after its slot (0.88-0.93 on 2 cores, alone or with the file).
    assert!(
        (0.75..=1.1).contains(&ratio),
        "accepted {accepted}, expected ~{expected}"
    );
    for gw in &r.gws {
        assert_eq!(
            gw.metric("contentgate_rate_limit_fallbacks_total{scope=\"token\"}")
                .await,
            0.0
        );
    }
}

#[tokio::test]
async fn the_second_level_serves_one_replicas_fill_to_the_others_and_purges_precisely() {
    let redis = RedisServer::start(false);
    let (origin, b) = builder(&redis, "l2 = \"redis\"").await;
    let r = replicas(&redis, 3, b).await;
    // Filled by A; B and C answer it from Redis without the upstream.
    assert_eq!(status_of(&r.gws[0], "/cdn", None).await.1, "MISS");
    assert_eq!(origin.count(), 1);
    for gw in &r.gws[1..] {
        let (s, _, body) = status_of(gw, "/cdn", None).await;
        assert_eq!(s, 200);
        assert!(body.contains("p1"), "{body}");
        assert_eq!(
            gw.metric("contentgate_cache_l2_total{result=\"hit\"}")
                .await,
            1.0,
            "{}\n{}",
            r.gws[0].metrics().await,
            gw.log()
        );
        // ... and from their own L1 afterwards.
        assert_eq!(status_of(gw, "/cdn", None).await.1, "HIT");
    }
    assert_eq!(origin.count(), 1);
    assert_eq!(
        r.gws[0]
            .metric("contentgate_cache_l2_total{result=\"stored\"}")
            .await,
        1.0
    );
    // A purge by model on C deletes the entry in Redis too: the next fill is upstream.
    assert_eq!(admin_purge(&r.gws[2], r#"{"model":"Post"}"#).await, 200);
    let sent = Instant::now();
    until(
        &r.gws[1],
        "/cdn",
        None,
        (sent, Duration::from_secs(1)),
        "purge reached the other replica",
        |a| a.1 == "MISS",
    )
    .await;
    assert_eq!(origin.count(), 2, "the purged entry was served from L2");
    // A purge that names another model leaves it.
    assert_eq!(admin_purge(&r.gws[2], r#"{"model":"Author"}"#).await, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status_of(&r.gws[0], "/cdn", None).await.1, "MISS");
    assert_eq!(origin.count(), 2, "an unrelated purge emptied L2");
}

#[tokio::test]
async fn identical_misses_across_three_replicas_make_one_upstream_request() {
    let redis = RedisServer::start(false);
    let (origin, b) = builder(&redis, "l2 = \"redis\"").await;
    origin.reply_with(Reply {
        body: r#"{"data":{"posts":[{"id":"p1","title":"t"}]}}"#.into(),
        delay: Duration::from_millis(300),
        ..Reply::default()
    });
    let r = replicas(&redis, 3, b).await;
    let mut tasks = Vec::new();
    for gw in &r.gws {
        for _ in 0..200 {
            let client = gw.client.clone();
            let url = gw.url("/cdn");
            tasks.push(tokio::spawn(async move {
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(serde_json::json!({ "query": Q }).to_string())
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(origin.count(), 1, "600 identical misses on 3 replicas");
    let mut waited = 0.0;
    for gw in &r.gws {
        waited += gw
            .metric("contentgate_cache_l2_total{result=\"waited\"}")
            .await;
    }
    assert_eq!(
        waited, 2.0,
        "the two other replicas' fills waited for the first"
    );
}

#[tokio::test]
async fn a_stale_replicas_refusals_do_not_spend_the_callers_refusal_budget() {
    let redis = RedisServer::start(false);
    let (_o, b) = builder(&redis, "").await;
    let b = b.extra("\n[rate_limits]\nrefused_per_ip = { requests_per_second = 1, burst = 5 }\n");
    let r = replicas(&redis, 1, b).await;
    let gw = &r.gws[0];
    let jwt = bearer(&es("jti-reader"));
    redis.freeze();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for _ in 0..20 {
        assert_eq!(status_of(gw, "/content", Some(&jwt)).await.0, 503);
    }
    // The same address's public reads are still served (not 429 "refused").
    assert_eq!(status_of(gw, "/cdn", None).await.0, 200);
    redis.thaw();
}

#[tokio::test]
async fn a_purge_sequence_that_restarted_and_overtook_purges_everything() {
    let redis = RedisServer::start(false);
    let (_o, b) = builder(&redis, "").await;
    let r = replicas(&redis, 2, b).await;
    // Some purges: the replicas know the epoch and sequence 3.
    for _ in 0..3 {
        assert_eq!(admin_purge(&r.gws[0], r#"{"model":"Author"}"#).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for gw in &r.gws {
        status_of(gw, "/cdn", None).await;
        assert_eq!(status_of(gw, "/cdn", None).await.1, "HIT");
    }
    // Redis replaced: a new epoch whose sequence already counted past 3, and none of its
    // purges (one of them for Post) reached the replicas.
    redis.cli(&[
        "EVAL",
        "redis.call('SET', KEYS[1], 'another-epoch') redis.call('SET', KEYS[2], 4) redis.call('DEL', KEYS[3]) for i = 1, 4 do redis.call('LPUSH', KEYS[3], i .. ' elsewhere {\"model\":\"' .. (i == 1 and 'Post' or 'Author') .. '\"}') end return 1",
        "3",
        "{t}:purge:epoch",
        "{t}:purge:seq",
        "{t}:purge:log",
    ]);
    let sent = Instant::now();
    for gw in &r.gws {
        until(
            gw,
            "/cdn",
            None,
            (sent, Duration::from_secs(2)),
            "everything purged",
            |a| a.1 == "MISS",
        )
        .await;
        assert!(
            gw.metric("contentgate_cluster_purges_total{direction=\"flushed\"}")
                .await
                >= 1.0
        );
    }
}

#[tokio::test]
async fn a_purge_that_cannot_be_broadcast_keeps_its_replica_off_the_second_level() {
    let redis = RedisServer::start(false);
    let (origin, b) = builder(&redis, "l2 = \"redis\"").await;
    let r = replicas(&redis, 2, b).await;
    let (a, b) = (&r.gws[0], &r.gws[1]);
    assert_eq!(status_of(a, "/cdn", None).await.1, "MISS");
    status_of(b, "/cdn", None).await; // from L2
    assert_eq!(origin.count(), 1);
    // Redis refuses writes (out of memory, noeviction): the purge on B is held, not broadcast.
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    assert_eq!(admin_purge(b, r#"{"model":"Post"}"#).await, 200);
    assert!(
        b.wait_metric("contentgate_cluster_alarm{reason=\"purges_held\"}", 1.0)
            .await
            >= 1.0
    );
    // B's next request is not answered from the second level's purged entry.
    assert_eq!(status_of(b, "/cdn", None).await.0, 200);
    assert_eq!(origin.count(), 2, "B served the purged entry from L2");
    // Redis takes writes again: the held purge goes out, A misses too.
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    let sent = Instant::now();
    until(
        a,
        "/cdn",
        None,
        (sent, Duration::from_secs(3)),
        "held purge sent",
        |a| a.1 == "MISS",
    )
    .await;
    assert_eq!(
        b.metric("contentgate_cluster_alarm{reason=\"purges_held\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn replicas_follow_a_sentinel_failover_and_revocations_still_reach_them() {
    use common::redis::TcpRedis;
    let (mp, rp, sp) = (free_port(), free_port(), free_port());
    let mut master = TcpRedis::node(mp, None);
    let replica = TcpRedis::node(rp, Some(mp));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica
        .cli(&["INFO", "replication"])
        .contains("master_link_status:up")
    {
        assert!(Instant::now() < deadline, "the replica did not sync");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _sentinel = TcpRedis::sentinel(sp, "cgmaster", mp);
    let origin = MockOrigin::start().await;
    origin.reply_with(Reply {
        body: r#"{"data":{"posts":[{"id":"p1","title":"t"}]}}"#.into(),
        ..Reply::default()
    });
    let b = GatewayBuilder::new(&origin).extra(&format!(
        "\n[cluster]\nsentinels = [\"redis://127.0.0.1:{sp}\"]\nsentinel_master = \"cgmaster\"\nprefix = \"t\"\npoll_interval = \"200ms\"\nmax_staleness = \"10s\"\ncommand_timeout = \"150ms\"\n"
    ));
    let dirs: Vec<ConfigDir> = (0..2).map(|_| b.write()).collect();
    ok(&cli(
        &[
            "policy",
            "push",
            dirs[0].path().join("policies").to_str().unwrap(),
        ],
        &dirs[0].config(),
    ));
    let mut gws = Vec::new();
    for d in dirs {
        gws.push(d.start().await);
    }
    let jwt = bearer(&es("jti-reader"));
    for gw in &gws {
        assert_eq!(status_of(gw, "/content", Some(&jwt)).await.0, 200);
    }
    // The master dies; the sentinel promotes the replica; every gateway follows it.
    master.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !replica.cli(&["ROLE"]).starts_with("master") {
        assert!(Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for gw in &gws {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gw.log().contains("cluster_master_changed") {
            assert!(
                Instant::now() < deadline,
                "did not follow the new master:\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A revocation written through the sentinels reaches both within a second.
    ok(&cli(
        &["token", "revoke", "jti-reader"],
        &gws[0].cfg.config(),
    ));
    let sent = Instant::now();
    for gw in &gws {
        until(
            gw,
            "/content",
            Some(&jwt),
            (sent, Duration::from_secs(1)),
            "revocation refused",
            |a| a.0 == 401,
        )
        .await;
    }
}

#[tokio::test]
async fn the_management_api_writes_the_shared_set_and_every_replica_follows() {
    let redis = RedisServer::start(false);
    let (_o, b) = builder(&redis, "").await;
    let r = replicas(&redis, 2, b.extra("\n[auth.signing_key]\nkid = \"hs\"\n")).await;
    let (a, other) = (&r.gws[0], &r.gws[1]);
    let api = |gw: &TestGateway, method: &str, path: &str| {
        gw.client
            .request(method.parse().unwrap(), gw.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
    };
    let etag = |resp: &reqwest::Response| {
        resp.headers()
            .get("etag")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    let first = api(a, "GET", "/admin/api/tokens").send().await.unwrap();
    let stale = etag(&first);
    let body: serde_json::Value = first.json().await.unwrap();
    assert!(body["tokens"].to_string().contains("jti-reader"));
    // A token added on one replica: its string works on the other.
    let added = api(a, "POST", "/admin/api/tokens")
        .header("if-match", &stale)
        .json(&serde_json::json!({ "name": "site" }))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let next = etag(&added);
    let added: serde_json::Value = added.json().await.unwrap();
    let jwt = bearer(added["jwt"].as_str().unwrap());
    let jti = added["token"]["jti"].as_str().unwrap().to_string();
    let written = Instant::now();
    for gw in &r.gws {
        until(
            gw,
            "/cdn",
            Some(&jwt),
            (written, Duration::from_secs(2)),
            "a token added through the API",
            |x| x.0 == 200,
        )
        .await;
    }
    assert_eq!(redis.cli(&["HGET", "{t}:policy", "version"]).trim(), "2");
    // The same ETag, seen by both replicas: an editor on the other replica still holding the
    // first version is refused, whichever replica it asks.
    let conflict = api(other, "PUT", "/admin/api/stages/default")
        .header("if-match", &stale)
        .json(&serde_json::json!({ "stage": "DRAFT" }))
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), 412);
    let on_other = api(other, "GET", "/admin/api/stages").send().await.unwrap();
    assert_eq!(etag(&on_other), next);
    // Deleted on the other replica: refused on both from the next request.
    let deleted = api(other, "DELETE", &format!("/admin/api/tokens/{jti}"))
        .header("if-match", &next)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200, "{}", deleted.text().await.unwrap());
    let written = Instant::now();
    for gw in &r.gws {
        until(
            gw,
            "/cdn",
            Some(&jwt),
            (written, Duration::from_secs(1)),
            "a token deleted through the API",
            |x| x.0 == 401,
        )
        .await;
    }
    let revoked = redis.cli(&["HGET", "{t}:policy", "revoked"]);
    assert!(revoked.contains(&jti), "{revoked}");
}
