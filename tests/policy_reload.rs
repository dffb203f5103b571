//! Hot reload of the policies folder: applied without dropping requests, rejected whole when
//! broken (the previous snapshot keeps serving), revocations effective from the next request.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const Q: &str = "{ posts { id } }";

fn two_tokens() -> String {
    [
        token_entry(
            "jti-a",
            "a",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n",
        ),
        token_entry(
            "jti-b",
            "b",
            "DRAFT",
            "[[token.permission]]\naction = \"read\"\n",
        ),
    ]
    .concat()
}

#[tokio::test]
async fn revoking_a_jti_while_requests_run_refuses_the_first_request_after_the_reload() {
    let origin = MockOrigin::start().await;
    let gw = Arc::new(
        GatewayBuilder::new(&origin)
            .tokens(&two_tokens())
            .poll("100ms")
            .start()
            .await,
    );
    let jwt = bearer(&es("jti-a"));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    // Background load with the other token: must see no errors across the reload.
    let load = {
        let (gw, stop, errors) = (gw.clone(), stop.clone(), errors.clone());
        let other = bearer(&es("jti-b"));
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if gw.query("/content", Some(&other), Q).await.status() != 200 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            n
        })
    };
    assert_eq!(gw.query("/content", Some(&jwt), Q).await.status(), 200);
    write_atomic(&gw.policies().join("revoked.txt"), "jti-a\n");
    // Poll until the snapshot that revokes it is live, then the very next request is refused.
    gw.wait_generation(2).await;
    let before = origin.count();
    let resp = gw.query("/content", Some(&jwt), Q).await;
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();
    assert!(sent > 0);
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "requests with the other token failed during the reload"
    );
    // Only the background requests reached the origin after the revocation.
    assert!(origin.requests()[before..]
        .iter()
        .all(|r| r.header("gcms-stage") == Some("DRAFT")));
    assert_eq!(gw.metric("contentgate_registry_revoked_jtis").await, 1.0);
    assert!(gw.metric("contentgate_revocation_lag_seconds_count").await >= 1.0);
}

#[tokio::test]
async fn a_broken_file_is_rejected_and_the_old_policy_keeps_serving() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .tokens(&two_tokens())
        .start()
        .await;
    let jwt = bearer(&es("jti-a"));
    let good = std::fs::read_to_string(gw.policies().join("tokens.toml")).unwrap();
    // (file, broken contents, what the rejection log line says)
    let cases = [
        ("tokens.toml", "[[token]\njti = \"x\"".to_string(), "tokens.toml"),
        ("tokens.toml", format!("{good}\n[[token]]\njti = \"jti-a\"\nname = \"dup\"\ndefault_stage = \"PUBLISHED\"\n"), "duplicate jti"),
        ("tokens.toml", good.replace("name = \"a\"", "name = \"a\"\nnmae = \"typo\""), "nmae"),
        ("tokens.toml", good.replace("default_stage = \"DRAFT\"", "default_stage = \"PREVIEW\""), "unknown stage"),
        ("tokens.toml", String::new(), "file is empty while entries existed"),
        ("public.toml", "default_stage = 5".to_string(), "public.toml"),
    ];
    for (file, text, expected) in cases {
        let original = std::fs::read_to_string(gw.policies().join(file)).unwrap();
        let seen_before = gw.log().matches(expected).count();
        write_atomic(&gw.policies().join(file), &text);
        gw.signal("HUP");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gw.log().matches(expected).count() <= seen_before
            || !gw.log().contains("reload_rejected")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{expected}: reload not rejected; log:\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            gw.metric("contentgate_policy_generation").await,
            1.0,
            "{expected}"
        );
        assert_eq!(
            gw.query("/content", Some(&jwt), Q).await.status(),
            200,
            "{expected}: the old policy must keep serving"
        );
        write_atomic(&gw.policies().join(file), original);
        // Let the watcher see the restored file before the next case.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        gw.metric("contentgate_policy_reloads_total{result=\"rejected\"}")
            .await
            >= 6.0
    );
    assert_eq!(gw.metric("contentgate_policy_generation").await, 1.0);
    let log = gw.log();
    assert!(log.contains("reload_rejected"));
    assert!(log.contains("tokens.toml"), "the log names the file");
    assert!(log.contains("duplicate jti"));
    assert!(log.contains("unknown stage"));
}

#[tokio::test]
async fn a_file_change_is_picked_up_by_the_directory_watch_without_a_signal() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin)
        .tokens(&two_tokens())
        .start()
        .await;
    let jwt = bearer(&es("jti-new"));
    assert_eq!(gw.query("/content", Some(&jwt), Q).await.status(), 401);
    let more = format!(
        "{}{}",
        two_tokens(),
        token_entry(
            "jti-new",
            "new",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n"
        )
    );
    // Write-then-rename, like an editor or a ConfigMap update.
    let tmp = gw.policies().join(".tokens.tmp");
    std::fs::write(&tmp, more).unwrap();
    std::fs::rename(&tmp, gw.policies().join("tokens.toml")).unwrap();
    gw.wait_generation(2).await;
    assert_eq!(gw.query("/content", Some(&jwt), Q).await.status(), 200);
    assert_eq!(gw.metric("contentgate_registry_tokens").await, 3.0);
}

#[tokio::test]
async fn a_json_registry_works_like_the_toml_one() {
    let origin = MockOrigin::start().await;
    let cfg = GatewayBuilder::new(&origin).write();
    std::fs::remove_file(cfg.path().join("policies/tokens.toml")).unwrap();
    std::fs::write(
        cfg.path().join("policies/tokens.json"),
        r#"{"token":[{"jti":"jti-json","name":"generated","default_stage":"DRAFT","permission":[{"action":"read"}]}]}"#,
    )
    .unwrap();
    let gw = cfg.start().await;
    assert_eq!(
        gw.query("/content", Some(&bearer(&es("jti-json"))), Q)
            .await
            .status(),
        200
    );
    assert_eq!(origin.last().header("gcms-stage"), Some("DRAFT"));
}

#[tokio::test]
async fn a_rotated_key_file_is_picked_up_without_a_restart() {
    let origin = MockOrigin::start().await;
    let cfg = GatewayBuilder::new(&origin).tokens(&two_tokens()).write();
    // The "es" key lives in a file beside the config, so it can be rotated in place.
    let key_file = cfg.path().join("es.pub.pem");
    std::fs::copy(format!("{KEYS}/es256.pub.pem"), &key_file).unwrap();
    let config = std::fs::read_to_string(cfg.config())
        .unwrap()
        .replace(&format!("{KEYS}/es256.pub.pem"), "es.pub.pem");
    std::fs::write(cfg.config(), config).unwrap();
    let gw = cfg.start().await;
    let other_key = std::fs::read(format!("{KEYS}/other-es256.key.pem")).unwrap();
    contentgate::install_crypto_provider();
    let rotated = contentgate::token::mint(&contentgate::token::MintRequest {
        algorithm: "ES256",
        key: &other_key,
        kid: Some("es"),
        jti: Some("jti-a"),
        issuer: Some("https://issuer.test"),
        audiences: &["contentgate".to_string()],
        subject: None,
        expires_in: None,
    })
    .unwrap()
    .0;
    assert_eq!(
        gw.query("/content", Some(&bearer(&rotated)), Q)
            .await
            .status(),
        401
    );
    assert_eq!(
        gw.query("/content", Some(&bearer(&es("jti-a"))), Q)
            .await
            .status(),
        200
    );
    write_atomic(
        &key_file,
        std::fs::read(format!("{KEYS}/other-es256.pub.pem")).unwrap(),
    );
    gw.signal("HUP");
    gw.wait_generation(2).await;
    assert_eq!(
        gw.query("/content", Some(&bearer(&rotated)), Q)
            .await
            .status(),
        200
    );
    assert_eq!(
        gw.query("/content", Some(&bearer(&es("jti-a"))), Q)
            .await
            .status(),
        401,
        "the old key is gone"
    );
}

#[tokio::test]
async fn a_change_outside_the_live_sections_is_reported_as_needing_a_restart() {
    let origin = MockOrigin::start().await;
    let gw = GatewayBuilder::new(&origin).start().await;
    assert_eq!(gw.metric("contentgate_config_restart_required").await, 0.0);
    // [cms] applies live: no restart needed.
    let path = gw.cfg.config();
    let text = std::fs::read_to_string(&path).unwrap();
    let live = text.replace(
        "locales = [\"en\", \"de\"]",
        "locales = [\"en\", \"de\"]\ndefault_locale = \"en\"",
    );
    write_atomic(&path, &live);
    gw.signal("HUP");
    gw.wait_generation(2).await;
    assert_eq!(gw.metric("contentgate_config_restart_required").await, 0.0);
    // [log] does not: the reload says so instead of implying it took effect.
    write_atomic(&path, live.replace("level = \"info\"", "level = \"debug\""));
    gw.signal("HUP");
    gw.wait_generation(3).await;
    assert_eq!(gw.metric("contentgate_config_restart_required").await, 1.0);
    assert!(gw.log().contains("restart_required"), "{}", gw.log());
}
