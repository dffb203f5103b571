//! The command line: `check`, `token mint`, `token inspect`, and `demo` end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn check_summarizes_a_valid_config() {
    let origin = MockOrigin::start().await;
    let cfg = GatewayBuilder::new(&origin).revoked("gone\n").write();
    let out = contentgate(&["check", "--config", cfg.config().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("tokens: 1 active, 1 revoked jtis"),
        "{stdout}"
    );
    assert!(stdout.contains("endpoint /content (content)"));
    assert!(stdout.contains("es (ES256)"));
}

#[tokio::test]
async fn check_lists_every_error_with_file_line_and_field() {
    let origin = MockOrigin::start().await;
    let cfg = GatewayBuilder::new(&origin)
        .tokens("[[token]]\njti = \"a\"\nname = \"a\"\ndefault_stage = \"NOPE\"\n\n[[token]]\njti = \"b\"\nname = \"b\"\ndefault_stage = \"DRAFT\"\n[[token.permission]]\naction = \"raed\"\n")
        .write();
    let out = contentgate(&["check", "--config", cfg.config().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tokens.toml:4: token[0].default_stage: unknown stage \"NOPE\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("tokens.toml:11: token[1].permission[0].action: unknown action \"raed\""),
        "{stderr}"
    );
    // A misspelled key in gateway.toml names the line.
    std::fs::write(
        cfg.config(),
        std::fs::read_to_string(cfg.config())
            .unwrap()
            .replace("threads = 2", "thraeds = 2"),
    )
    .unwrap();
    let out = contentgate(&["check", "--config", cfg.config().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("gateway.toml:2"), "{stderr}");
    assert!(stderr.contains("thraeds"), "{stderr}");
}

#[tokio::test]
async fn a_kid_configured_with_two_key_families_fails_at_start_up() {
    let origin = MockOrigin::start().await;
    let cfg = GatewayBuilder::new(&origin)
        .extra(&format!("[[auth.key]]\nkid = \"es\"\nalgorithm = \"RS256\"\npublic_key_file = \"{KEYS}/rsa.pub.pem\"\n"))
        .write();
    // The extra key lands after [policies]/[log]; move it into [auth] by rewriting the file.
    let text = std::fs::read_to_string(cfg.config()).unwrap();
    let (head, extra) = text.split_at(text.rfind("[[auth.key]]").unwrap());
    let fixed = head.replacen("[cms]", &format!("{extra}\n[cms]"), 1);
    std::fs::write(cfg.config(), fixed).unwrap();
    let out = contentgate(&["serve", "--config", cfg.config().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kid \"es\" is configured with two key families"),
        "{stderr}"
    );
}

#[tokio::test]
async fn mint_then_inspect_tells_active_revoked_and_unknown() {
    let origin = MockOrigin::start().await;
    let cfg = GatewayBuilder::new(&origin).revoked("jti-gone\n").write();
    let key = format!("{KEYS}/es256.key.pem");
    let mint = |jti: &str| {
        let out = contentgate(&[
            "token",
            "mint",
            "--alg",
            "ES256",
            "--key",
            &key,
            "--kid",
            "es",
            "--jti",
            jti,
            "--iss",
            "https://issuer.test",
            "--aud",
            "contentgate",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            stderr.contains(&format!("jti = \"{jti}\"")),
            "registry entry printed: {stderr}"
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let config = cfg.config().to_str().unwrap().to_string();
    let inspect = |jwt: &str| {
        String::from_utf8(contentgate(&["token", "inspect", jwt, "--config", &config]).stdout)
            .unwrap()
    };
    let active = inspect(&mint("jti-reader"));
    assert!(active.contains("status: active"), "{active}");
    assert!(active.contains("\"reader\""));
    assert!(inspect(&mint("jti-gone")).contains("status: revoked"));
    assert!(inspect(&mint("jti-never-registered")).contains("status: unknown"));
    // Without a config: decoded, not checked.
    let out = contentgate(&["token", "inspect", &mint("jti-reader")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not checked"));
    // The minted token really works through the gateway.
    let jwt = mint("jti-reader");
    let gw = cfg.start().await;
    assert_eq!(
        gw.query("/content", Some(&bearer(&jwt)), "{ posts { id } }")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn the_demo_serves_the_sample_api_through_the_gateway() {
    let (port, admin, upstream) = (free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_contentgate"))
        .args([
            "demo",
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin.to_string(),
            "--upstream-port",
            &upstream.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while client
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
        || std::net::TcpStream::connect(("127.0.0.1", upstream)).is_err()
    {
        assert!(Instant::now() < deadline, "demo did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let q = |query: &str| serde_json::json!({ "query": query }).to_string();
    // Public: published posts only, with their authors.
    let resp = client
        .post(format!("http://127.0.0.1:{port}/cdn"))
        .header("content-type", "application/json")
        .body(q("{ posts { title stage author { name } } }"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let posts = body["data"]["posts"].as_array().unwrap();
    assert!(!posts.is_empty(), "{body}");
    assert!(posts.iter().all(|p| p["stage"] == "PUBLISHED"), "{body}");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("curl -s"), "the demo prints curl commands");
    assert!(
        printed.contains("EDITOR='ey"),
        "the demo prints a minted token"
    );
}

#[test]
fn the_shipped_example_config_and_policies_check_clean() {
    let out = Command::new(env!("CARGO_BIN_EXE_contentgate"))
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml"),
        ])
        .env("HYGRAPH_TOKEN", "example")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tokens: 3 active"));
}
