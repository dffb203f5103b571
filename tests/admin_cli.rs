//! The API-access CLI verbs through the real binary: on a policies folder directly, and on a
//! running gateway with `--admin`; tables for people, `--json` for scripts, confirmations that
//! really stop, and the documented exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const Q: &str = "{ posts { id title } }";

struct Run {
    code: i32,
    out: String,
    err: String,
}

fn cg(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contentgate"));
    cmd.args(args)
        .env_remove("CONTENTGATE_ADMIN_URL")
        .env_remove("CONTENTGATE_ADMIN_TOKEN")
        .env("CG_TEST_SERVICE_TOKEN", SERVICE_TOKEN)
        .env("CG_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CG_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).to_string(),
        err: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

fn signing(b: GatewayBuilder) -> GatewayBuilder {
    b.extra("\n[auth.signing_key]\nkid = \"hs\"\n")
}

#[tokio::test]
async fn verbs_on_a_policies_folder() {
    let origin = MockOrigin::start().await;
    let cfg = signing(GatewayBuilder::new(&origin)).write();
    let config = cfg.config();
    let c = config.to_str().unwrap();
    let public = cfg.path().join("policies/public.toml");

    let r = cg(&["endpoints", "--config", c], "", &[]);
    assert_eq!(r.code, 0, "{}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["KIND", "PATH", "URL"]
    );
    assert!(
        lines[1].starts_with("content  /content  http://127.0.0.1:"),
        "{}",
        r.out
    );

    let r = cg(&["stage", "default", "--config", c], "", &[]);
    assert_eq!(r.out, "default public stage: PUBLISHED\n", "{}", r.err);
    let r = cg(
        &["stage", "default", "set", "ARCHIVE", "--config", c],
        "",
        &[],
    );
    assert_eq!(r.code, 1, "{} {}", r.out, r.err);
    assert!(r.err.contains("INVALID"), "{}", r.err);
    let r = cg(
        &["stage", "default", "set", "DRAFT", "--config", c],
        "",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(std::fs::read_to_string(&public)
        .unwrap()
        .contains("default_stage = \"DRAFT\""));

    let r = cg(
        &[
            "permission",
            "add",
            "--public",
            "--action",
            "read",
            "--model",
            "Author",
            "--locale",
            "en,de",
            "--config",
            c,
        ],
        "",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    let r = cg(
        &[
            "permission",
            "add",
            "--action",
            "create",
            "--model",
            "Post",
            "--config",
            c,
        ],
        "",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains("note: create needs read on DRAFT"),
        "{}",
        r.out
    );
    let r = cg(
        &["permission", "list", "--sort", "model:desc", "--config", c],
        "",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    let rows: Vec<Vec<&str>> = r
        .out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["ID", "ACTION", "MODELS", "LOCALES", "STAGES"]);
    assert_eq!(rows[1], ["2", "create", "Post", "all", "all"]);
    assert_eq!(rows[2], ["1", "read", "Author", "en,de", "all"]);
    assert_eq!(rows[3], ["0", "read", "all", "all", "PUBLISHED"]);
    // Columns line up: every row's second column starts where the header's does.
    let col = r.out.lines().next().unwrap().find("ACTION").unwrap();
    assert!(
        r.out
            .lines()
            .skip(1)
            .all(|l| l[col..].starts_with(['r', 'c'])),
        "{}",
        r.out
    );
    let r = cg(
        &[
            "permission",
            "list",
            "--action",
            "read",
            "--model",
            "Author",
            "--json",
            "--config",
            c,
        ],
        "",
        &[],
    );
    let v: Value = serde_json::from_str(&r.out).unwrap();
    let ids: Vec<u64> = v["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 1]);
    let r = cg(
        &["permission", "edit", "1", "--locale", "de", "--config", c],
        "",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("Author  de"), "{}", r.out);

    // Delete asks; anything but "delete" leaves the file as it was.
    let before = std::fs::read_to_string(&public).unwrap();
    let r = cg(&["permission", "delete", "1", "--config", c], "no\n", &[]);
    assert_eq!(r.code, 3, "{}", r.err);
    assert!(r.err.contains("Type \"delete\""), "{}", r.err);
    assert_eq!(std::fs::read_to_string(&public).unwrap(), before);
    let r = cg(
        &["permission", "delete", "1", "--config", c],
        "delete\n",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(!std::fs::read_to_string(&public).unwrap().contains("Author"));
    let r = cg(
        &["permission", "delete", "7", "--yes", "--config", c],
        "",
        &[],
    );
    assert_eq!(r.code, 1);

    // Tokens.
    let r = cg(
        &[
            "token",
            "add",
            "site",
            "--description",
            "the site",
            "--config",
            c,
        ],
        "",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    let jwt = r.out.lines().last().unwrap().to_string();
    assert_eq!(jwt.split('.').count(), 3, "{}", r.out);
    let r = cg(&["token", "list", "--json", "--config", c], "", &[]);
    let v: Value = serde_json::from_str(&r.out).unwrap();
    let site = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "site")
        .unwrap()
        .clone();
    let jti = site["jti"].as_str().unwrap().to_string();
    let r = cg(&["token", "check", "-", "--config", c], &jwt, &[]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains("verified: yes")
            && r.out
                .contains("status: active — the same token as \"site\""),
        "{}",
        r.out
    );
    let r = cg(
        &[
            "token",
            "permissions",
            "site",
            "--management",
            "--enable",
            "MODEL_CREATE",
            "--config",
            c,
        ],
        "",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains("MODEL_CREATE")
            && r.out.contains("PROJECT_READ")
            && !r.out.contains("MODEL_DELETE"),
        "{}",
        r.out
    );
    let r = cg(
        &[
            "token",
            "permissions",
            "site",
            "--management",
            "--all",
            "--config",
            c,
        ],
        "",
        &[],
    );
    assert!(r.out.contains("MODEL_DELETE        off"), "{}", r.out);
    let r = cg(
        &[
            "token",
            "edit",
            "site",
            "--default-stage",
            "DRAFT",
            "--config",
            c,
        ],
        "",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    let r = cg(&["token", "delete", "site", "--config", c], "sit\n", &[]);
    assert_eq!(r.code, 3, "{}", r.err);
    assert!(r.err.contains("Type the token's name"), "{}", r.err);
    let r = cg(&["token", "delete", "site", "--config", c], "site\n", &[]);
    assert_eq!(r.code, 0, "{}", r.err);
    let revoked = std::fs::read_to_string(cfg.path().join("policies/revoked.txt")).unwrap();
    assert!(revoked.lines().any(|l| l == jti), "{revoked}");
    // A gateway started on the folder refuses the deleted token's string.
    let gw = cfg.start().await;
    assert_eq!(gw.query("/cdn", Some(&bearer(&jwt)), Q).await.status(), 401);
    assert_eq!(
        gw.query("/cdn", Some(&bearer(&es("jti-reader"))), Q)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn verbs_on_a_running_gateway() {
    let origin = MockOrigin::start().await;
    let cfg = signing(GatewayBuilder::new(&origin))
        .extra("\n[[admin.credential]]\nname = \"viewer\"\nscope = \"read\"\ntoken_file = \"viewer.token\"\n")
        .write();
    std::fs::write(
        cfg.path().join("viewer.token"),
        "viewer-credential-0123456789",
    )
    .unwrap();
    let gw = cfg.start().await;
    let url = gw.admin_url("");
    let admin = [("CONTENTGATE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let viewer = [("CONTENTGATE_ADMIN_TOKEN", "viewer-credential-0123456789")];

    let r = cg(&["token", "list", "--admin", &url], "", &[]);
    assert_eq!(r.code, 2, "{}", r.err);
    assert!(r.err.contains("CONTENTGATE_ADMIN_TOKEN"));
    let r = cg(&["token", "add", "app", "--admin", &url], "", &admin);
    assert_eq!(r.code, 0, "{}", r.err);
    let jwt = r.out.lines().last().unwrap().to_string();
    assert_eq!(gw.query("/cdn", Some(&bearer(&jwt)), Q).await.status(), 200);
    let r = cg(&["token", "list", "--admin", &url], "", &viewer);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out
            .lines()
            .any(|l| l.starts_with("app ") && l.contains("active")),
        "{}",
        r.out
    );
    let r = cg(
        &["token", "delete", "app", "--yes", "--admin", &url],
        "",
        &viewer,
    );
    assert_eq!(r.code, 1, "{}", r.err);
    assert!(r.err.contains("FORBIDDEN"), "{}", r.err);
    assert_eq!(gw.query("/cdn", Some(&bearer(&jwt)), Q).await.status(), 200);
    let r = cg(
        &["stage", "default", "set", "DRAFT", "--admin", &url],
        "",
        &admin,
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(gw.query("/content", None, Q).await.status(), 403);
    let r = cg(
        &["token", "delete", "app", "--yes", "--admin", &url],
        "",
        &admin,
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(gw.query("/cdn", Some(&bearer(&jwt)), Q).await.status(), 401);
    let r = cg(
        &["token", "check", &jwt, "--admin", &url, "--json"],
        "",
        &viewer,
    );
    let v: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["status"], "revoked");
    let r = cg(&["endpoints", "--admin", &url, "--json"], "", &viewer);
    let v: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["endpoints"][1]["kind"], "cdn");
    drop(gw);
    let r = cg(&["token", "list", "--admin", &url], "", &admin);
    assert_eq!(r.code, 4, "{}", r.err);
}
