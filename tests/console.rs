//! The web console in a real browser (headless Chromium through chromedriver,
//! tests/common/webdriver.rs), against a real gateway with a recording origin. Every flow is
//! checked where it matters: through the proxy (what the origin receives, which status a
//! client gets) and through the management API, not only on the page.
//!
//! Skipped with a notice when chromedriver or Chromium is missing, unless
//! `CG_REQUIRE_BROWSER=1`. Screenshots of each screen go to target/console-screenshots/, and
//! with `CG_UPDATE_SCREENSHOTS=1` also to docs/console/.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::webdriver::{self, Browser, Element};
use common::*;
use serde_json::{json, Value};

/// A write-scope console credential (token_file), besides the legacy `admin` one.
const OPS: &str = "ops-console-credential-2f1c6a52";
/// A read-scope console credential.
const VIEWER: &str = "viewer-console-credential-7d0e9b1a";
const T: Duration = Duration::from_secs(10);

const POSTS: &str = "{ posts { id } }";
const AUTHORS: &str = "{ authors { id } }";

/// Public policy of the permission flows. Policy order differs from every sort order:
/// by action rank (read, read_versions, create, update, delete, publish, unpublish) the ids are
/// 1, 3, 2, 0; by model (Author first, then action rank) 3, 0, 1, 2.
const PUBLIC: &str = r#"default_stage = "PUBLISHED"

[[permission]]
action = "publish"
models = ["Author"]
from_stages = ["DRAFT"]
to_stages = ["PUBLISHED"]

[[permission]]
action = "read"
models = ["Post"]

[[permission]]
action = "delete"
models = ["Post"]
stages = ["DRAFT"]

[[permission]]
action = "update"
models = ["Author"]
locales = ["de"]
"#;

// ------------------------------------------------------------------------------------------
// Fixture

/// `None` (with a notice) when the browser tests cannot run here.
fn browser_available() -> bool {
    match webdriver::missing() {
        None => true,
        Some(why) => {
            if std::env::var("CG_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("CG_REQUIRE_BROWSER=1 but {why}");
            }
            eprintln!(
                "NOTICE: skipping the console browser test: {why} (CG_REQUIRE_BROWSER=1 fails instead)"
            );
            false
        }
    }
}

/// The gateway the console tests run against: the usual test config plus the console's
/// credentials (token files), `public_url`, and the signing key new tokens are minted with.
async fn gateway(origin: &MockOrigin, public: &str, tokens: &str) -> TestGateway {
    let mut builder = GatewayBuilder::new(origin).public(public).tokens(tokens);
    builder.auth = format!("{}\n[auth.signing_key]\nkid = \"hs\"\n", default_auth());
    let cfg = builder.write();
    let ops = cfg.path().join("ops.token");
    let viewer = cfg.path().join("viewer.token");
    std::fs::write(&ops, OPS).unwrap();
    std::fs::write(&viewer, VIEWER).unwrap();
    let text = std::fs::read_to_string(cfg.config()).unwrap();
    let admin = format!("[admin]\naddress = \"127.0.0.1:{}\"\n", cfg.admin);
    assert!(
        text.contains(&admin),
        "the config helper changed its [admin] section"
    );
    let text = text.replacen(
        &admin,
        &format!("{admin}public_url = \"http://127.0.0.1:{}\"\n", cfg.port),
        1,
    );
    let text = format!(
        "{text}\n[[admin.credential]]\nname = \"ops\"\nscope = \"write\"\ntoken_file = \"{}\"\n\n\
         [[admin.credential]]\nname = \"viewer\"\nscope = \"read\"\ntoken_file = \"{}\"\n",
        ops.display(),
        viewer.display()
    );
    std::fs::write(cfg.config(), text).unwrap();
    cfg.start().await
}

struct Console {
    b: Browser,
    gw: TestGateway,
    origin: MockOrigin,
}

impl Console {
    /// A gateway, a browser, and (unless `credential` is `None`) a signed-in console session.
    async fn start(public: &str, tokens: &str, credential: Option<&str>) -> Option<Console> {
        if !browser_available() {
            return None;
        }
        let origin = MockOrigin::start().await;
        let gw = gateway(&origin, public, tokens).await;
        let b = Browser::start().await;
        let c = Console { b, gw, origin };
        if let Some(cred) = credential {
            c.login(cred).await;
        }
        Some(c)
    }

    fn url(&self, hash: &str) -> String {
        format!("{}{hash}", self.gw.admin_url("/console"))
    }

    async fn login(&self, credential: &str) {
        self.b.goto(&self.url("")).await;
        self.b
            .wait_for("#credential", T)
            .await
            .send_keys(credential)
            .await;
        self.b.find("#login-submit").await.click().await;
        self.wait_screen("endpoints", "").await;
    }

    /// The render generation of the current screen ("" before the app rendered one).
    async fn generation(&self) -> String {
        self.b
            .execute(
                "const v = document.querySelector('#view'); return v && v.dataset.ready || '';",
                vec![],
            )
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    async fn wait_screen(&self, screen: &str, before: &str) {
        let script = format!(
            "const v = document.querySelector('#view'); \
             return !!v && v.dataset.screen === {screen:?} && !!v.dataset.ready && v.dataset.ready !== {before:?};"
        );
        self.b
            .wait_until(&format!("the {screen} screen"), &script, T)
            .await;
    }

    /// Navigates to `#/…` and waits until that screen rendered anew.
    async fn open(&self, hash: &str, screen: &str) {
        let before = self.generation().await;
        self.b.goto(&self.url(hash)).await;
        self.wait_screen(screen, &before).await;
    }

    /// Saves a screenshot as target/console-screenshots/NAME (and docs/console/NAME when
    /// CG_UPDATE_SCREENSHOTS=1).
    async fn shot(&self, name: &str) {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        // Let transitions and the caret settle.
        tokio::time::sleep(Duration::from_millis(250)).await;
        self.b
            .screenshot(&root.join("target/console-screenshots").join(name))
            .await;
        if std::env::var("CG_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            self.b
                .screenshot(&root.join("docs/console").join(name))
                .await;
        }
    }

    /// GET on the management API with the legacy write credential.
    async fn api(&self, path: &str) -> Value {
        let resp = self
            .gw
            .client
            .get(self.gw.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.unwrap()
    }

    async fn etag(&self) -> String {
        self.api("/admin/api/stages").await["etag"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A public (no Authorization) request through the proxy.
    async fn public_status(&self, query: &str) -> u16 {
        self.gw
            .query("/content", None, query)
            .await
            .status()
            .as_u16()
    }

    async fn token_status(&self, path: &str, jwt: &str) -> u16 {
        self.gw
            .query(path, Some(&bearer(jwt)), POSTS)
            .await
            .status()
            .as_u16()
    }

    /// Fails on CSP violations and script errors the browser logged.
    async fn assert_clean_console(&self) {
        let log = self.b.console_log().await;
        let bad: Vec<&Value> = log
            .iter()
            .filter(|e| {
                let m = e["message"].as_str().unwrap_or("");
                e["source"] == "javascript"
                    || m.contains("Content Security Policy")
                    || m.contains("Refused to")
                    || m.contains("Uncaught")
            })
            .collect();
        assert!(bad.is_empty(), "the browser logged errors: {bad:#?}");
    }

    async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.b.find_all(css).await {
            out.push(e.text().await);
        }
        out
    }

    /// Polls until `script`'s value equals `want`.
    async fn wait_value(&self, what: &str, script: &str, want: Value) {
        let deadline = Instant::now() + T;
        loop {
            let got = self.b.execute(script, vec![]).await;
            if got == want {
                return;
            }
            if Instant::now() > deadline {
                panic!("{what}: expected {want}, the page shows {got}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the permission rows shown are exactly `ids`, in that order.
    async fn wait_rows(&self, ids: &[usize], what: &str) {
        let want = json!(ids.iter().map(|i| i.to_string()).collect::<Vec<_>>());
        self.wait_value(
            what,
            "return Array.from(document.querySelectorAll('#permissions tr.perm-row')).map(r => r.dataset.id);",
            want,
        )
        .await;
    }

    async fn click(&self, css: &str) {
        self.b.find(css).await.click().await;
    }

    async fn confirm_dialog(&self) -> Element {
        self.b.wait_for("dialog#confirm[open]", T).await
    }
}

/// The ids of a permissions list answer.
fn ids(v: &Value) -> Vec<usize> {
    v["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap() as usize)
        .collect()
}

/// The claims of a JWT (not verified).
fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let seg = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(seg)
            .unwrap(),
    )
    .unwrap()
}

impl Console {
    /// Polls the management API until the token's enabled management permissions are `want`.
    async fn wait_enabled(&self, path: &str, want: &[&str]) {
        let deadline = Instant::now() + T;
        loop {
            let got = enabled(&self.api(path).await);
            let busy = self
                .b
                .execute(
                    "return document.getElementById('management').getAttribute('aria-busy') === 'true';",
                    vec![],
                )
                .await;
            if got == want && busy == json!(false) {
                return;
            }
            if Instant::now() > deadline {
                panic!("management permissions: expected {want:?}, the API says {got:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn enabled(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["enabled"] == true)
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

// ------------------------------------------------------------------------------------------
// Login, endpoints, logout

#[tokio::test]
async fn login_endpoints_copy_toast_and_logout() {
    let Some(c) = Console::start(
        PUBLIC_READ,
        &token_entry("jti-reader", "reader", "PUBLISHED", ""),
        None,
    )
    .await
    else {
        return;
    };
    // The console pages carry the strict CSP.
    let resp =
        c.gw.client
            .get(c.gw.admin_url("/console"))
            .send()
            .await
            .unwrap();
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("style-src 'self'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    let login = resp.text().await.unwrap();
    assert!(
        login.contains("name=\"credential\"") && !login.contains("<script"),
        "the login page is a plain form"
    );

    // Without a session: the login page.
    c.b.goto(&c.url("")).await;
    c.b.wait_for("#credential", T).await;
    c.shot("login.png").await;

    // A wrong credential: 401 and the page says so (through the browser and on the wire).
    let wrong =
        c.gw.client
            .post(c.gw.admin_url("/console/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("credential=not-a-credential")
            .send()
            .await
            .unwrap();
    assert_eq!(wrong.status(), 401);
    c.b.find("#credential")
        .await
        .send_keys("not-a-credential")
        .await;
    c.click("#login-submit").await;
    let err = c.b.wait_for("#login-error", T).await;
    assert!(
        !err.text().await.trim().is_empty(),
        "the login error is empty"
    );
    assert!(
        c.b.try_find("#view").await.is_none(),
        "a wrong credential reached the app"
    );
    assert!(!c.b.page_source().await.contains("<!--ERROR-->"));

    // The right one lands on the app, on the endpoints screen.
    c.b.find("#credential").await.send_keys(OPS).await;
    c.click("#login-submit").await;
    c.wait_screen("endpoints", "").await;
    assert_eq!(c.b.find("#whoami").await.text().await, "ops · write");
    assert!(!c.b.find("#readonly").await.is_displayed().await);

    let rows = c.texts("#endpoints tbody tr").await;
    let content = format!("http://127.0.0.1:{}/content", c.gw.cfg.port);
    let cdn = format!("http://127.0.0.1:{}/cdn", c.gw.cfg.port);
    assert!(
        rows.iter()
            .any(|r| r.contains("/content") && r.contains(&content)),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.contains("/cdn") && r.contains(&cdn)),
        "{rows:?}"
    );

    // Copy a URL: the toast confirms it, lower right, even where the clipboard is denied.
    assert!(!c.b.find("#toast").await.is_displayed().await);
    c.click("#endpoints tr[data-path='/cdn'] .copy-url").await;
    let toast = c.b.wait_text("#toast", "Copied to clipboard", T).await;
    assert!(toast.attribute("class").await.unwrap().contains("toast"));
    let place = c
        .b
        .execute(
            "const r = document.getElementById('toast').getBoundingClientRect(); \
             return [innerWidth - r.right, innerHeight - r.bottom, r.left > innerWidth / 2, r.top > innerHeight / 2];",
            vec![],
        )
        .await;
    assert!(
        place[0].as_f64().unwrap() < 64.0 && place[1].as_f64().unwrap() < 64.0,
        "{place}"
    );
    assert_eq!(
        (place[2].clone(), place[3].clone()),
        (json!(true), json!(true)),
        "toast not lower right"
    );
    c.shot("endpoints.png").await;
    c.assert_clean_console().await;

    // Log out (a form with the CSRF token): back to the login page, the session is gone.
    c.click("#logout").await;
    c.b.wait_for("#credential", T).await;
    c.b.goto(&c.url("#/tokens")).await;
    c.b.wait_for("#credential", T).await;
    assert!(c.b.try_find("#view").await.is_none());
}

// ------------------------------------------------------------------------------------------
// Public content API

#[tokio::test]
async fn public_permissions_filters_sort_confirmation_and_default_stage() {
    let Some(c) = Console::start(
        PUBLIC,
        &token_entry("jti-reader", "reader", "PUBLISHED", ""),
        Some(OPS),
    )
    .await
    else {
        return;
    };
    c.open("#/public", "public").await;
    c.wait_rows(&[0, 1, 2, 3], "policy order").await;
    let row = |id: usize, class: &str| format!("#permissions tr.perm-row[data-id='{id}'] .{class}");
    assert_eq!(c.b.find(&row(1, "c-action")).await.text().await, "Read");
    assert_eq!(c.b.find(&row(1, "c-models")).await.text().await, "Post");
    assert_eq!(
        c.b.find(&row(1, "c-locales")).await.text().await,
        "All locales"
    );
    assert_eq!(
        c.b.find(&row(1, "c-stages")).await.text().await,
        "All stages"
    );
    assert_eq!(
        c.b.find(&row(0, "c-stages")).await.text().await,
        "from DRAFT → to PUBLISHED"
    );
    assert_eq!(c.b.find(&row(3, "c-locales")).await.text().await, "de");
    assert_eq!(c.b.find(&row(2, "c-stages")).await.text().await, "DRAFT");
    assert_eq!(c.b.find("#default-stage").await.text().await, "PUBLISHED");
    c.shot("public.png").await;

    // Adding a permission: a refused public query is allowed from the next request on.
    assert_eq!(c.public_status(AUTHORS).await, 403);
    c.click("#add-permission").await;
    c.b.wait_for("#perm-dialog", T).await;
    let help = c.b.find("#perm-help").await.text().await;
    assert!(
        help.contains("Read on DRAFT") && help.contains("Publish needs Read"),
        "{help}"
    );
    let actions: Vec<String> = {
        let mut v = Vec::new();
        for o in c.b.find_all("#perm-action option").await {
            v.push(o.attribute("value").await.unwrap());
        }
        v
    };
    assert_eq!(
        actions,
        [
            "read",
            "read_versions",
            "create",
            "update",
            "delete",
            "publish",
            "unpublish"
        ]
    );
    assert!(
        c.b.try_find("#perm-models input[value='*']")
            .await
            .is_some(),
        "no All models option"
    );
    c.click("#perm-models input[value='Author']").await;
    c.click("#perm-stages input.all").await; // All stages → a choice
    c.click("#perm-stages input[value='PUBLISHED']").await;
    c.shot("add-permission.png").await;
    c.click("#perm-save").await;
    c.b.wait_gone("#perm-dialog", T).await;
    c.wait_rows(&[0, 1, 2, 3, 4], "after the add").await;
    assert_eq!(c.b.find(&row(4, "c-models")).await.text().await, "Author");
    assert_eq!(
        c.b.find(&row(4, "c-stages")).await.text().await,
        "PUBLISHED"
    );
    assert_eq!(c.public_status(AUTHORS).await, 200);
    let added = c.api("/admin/api/public/permissions").await;
    assert_eq!(
        added["permissions"][4],
        json!({"id": 4, "action": "read", "models": ["Author"], "locales": null, "stages": ["PUBLISHED"], "from_stages": null, "to_stages": null})
    );

    // Deleting asks first, in the page; Cancel sends nothing.
    let etag = c.etag().await;
    c.click("#permissions tr.perm-row[data-id='4'] .perm-delete")
        .await;
    let dialog = c.confirm_dialog().await;
    assert!(dialog.text().await.contains("permanent"));
    c.shot("confirm-delete.png").await;
    c.click("#confirm-cancel").await;
    c.b.wait_gone("dialog#confirm[open]", T).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.etag().await, etag, "Cancel changed the policy");
    assert_eq!(
        ids(&c.api("/admin/api/public/permissions").await),
        [0, 1, 2, 3, 4]
    );
    assert!(c
        .b
        .try_find("#permissions tr.perm-row[data-id='4']")
        .await
        .is_some());
    assert_eq!(c.public_status(AUTHORS).await, 200);
    // Escape cancels too.
    c.click("#permissions tr.perm-row[data-id='4'] .perm-delete")
        .await;
    c.confirm_dialog().await;
    c.b.active_element().await.send_keys("\u{E00C}").await; // Escape, on the focused Cancel
    c.b.wait_gone("dialog#confirm[open]", T).await;
    assert_eq!(c.etag().await, etag, "Escape changed the policy");
    // OK deletes: the row goes, the permission is gone at the proxy.
    c.click("#permissions tr.perm-row[data-id='4'] .perm-delete")
        .await;
    c.confirm_dialog().await;
    c.click("#confirm-ok").await;
    c.wait_rows(&[0, 1, 2, 3], "after the delete").await;
    assert_eq!(
        ids(&c.api("/admin/api/public/permissions").await),
        [0, 1, 2, 3]
    );
    assert_eq!(c.public_status(AUTHORS).await, 403);

    // Sorting: the rows show in the server's order for that sort.
    for (sort, want) in [
        ("action", [1, 3, 2, 0]),
        ("action:desc", [0, 2, 3, 1]),
        ("model", [3, 0, 1, 2]),
        ("model:desc", [2, 1, 0, 3]),
    ] {
        c.click(&format!("#sort option[value='{sort}']")).await;
        c.wait_rows(&want, &format!("sort={sort}")).await;
        let api = c
            .api(&format!("/admin/api/public/permissions?sort={sort}"))
            .await;
        assert_eq!(ids(&api), want, "the API's order for sort={sort}");
    }
    c.click("#sort option[value='model']").await;
    c.wait_rows(&[3, 0, 1, 2], "sort=model").await;

    // Filters combine with AND, within the chosen sort.
    c.click("#filter-action input[value='read']").await;
    c.click("#filter-action input[value='update']").await;
    c.wait_rows(&[3, 1], "action=read,update").await;
    c.click("#filter-model input[value='Author']").await;
    c.wait_rows(&[3], "action=read,update & model=Author").await;
    c.click("#filter-clear").await;
    c.wait_rows(&[3, 0, 1, 2], "no filter").await;
    c.click("#filter-stage input[value='PUBLISHED']").await;
    c.wait_rows(&[3, 0, 1], "stage=PUBLISHED").await;
    c.click("#filter-locale input[value='en']").await;
    c.wait_rows(&[0, 1], "stage=PUBLISHED & locale=en").await;
    assert_eq!(
        ids(&c
            .api("/admin/api/public/permissions?sort=model&stage=PUBLISHED&locale=en")
            .await),
        [0, 1]
    );
    c.b.execute(
        "document.querySelector('.toolbar').scrollIntoView({block: 'start'})",
        vec![],
    )
    .await;
    c.shot("public-filtered.png").await;
    c.click("#filter-clear").await;
    c.click("#sort option[value='']").await;
    c.wait_rows(&[0, 1, 2, 3], "policy order again").await;

    // Edit: the update on Author gets the English locale too.
    c.click("#permissions tr.perm-row[data-id='3'] .perm-edit")
        .await;
    c.b.wait_for("#perm-dialog", T).await;
    assert!(
        !c.b.find("#perm-action").await.is_enabled().await,
        "the action is not editable"
    );
    c.click("#perm-locales input[value='en']").await;
    c.click("#perm-save").await;
    c.b.wait_gone("#perm-dialog", T).await;
    c.wait_value(
        "the edited locales",
        "const c = document.querySelector(\"#permissions tr.perm-row[data-id='3'] .c-locales\"); return c && c.textContent;",
        json!("en, de"),
    )
    .await;
    assert_eq!(
        c.api("/admin/api/public/permissions").await["permissions"][3]["locales"],
        json!(["en", "de"])
    );

    // The default stage, changed with the keyboard: the origin sees it on the next request.
    assert_eq!(c.public_status(POSTS).await, 200);
    assert_eq!(c.origin.last().header("gcms-stage"), Some("PUBLISHED"));
    c.b.find("#change-stage").await.send_keys("\u{E007}").await; // Enter
    let select = c.b.wait_for("#stage-select", T).await;
    let mut options = Vec::new();
    for o in select.find_all("option").await {
        options.push(o.attribute("value").await.unwrap());
    }
    assert_eq!(
        options,
        ["DRAFT", "PUBLISHED"],
        "only the configured stages"
    );
    c.click("#stage-select option[value='DRAFT']").await;
    c.click("#save-stage").await;
    c.b.wait_text("#default-stage", "DRAFT", T).await;
    assert_eq!(
        c.api("/admin/api/stages").await["public_default_stage"],
        "DRAFT"
    );
    assert_eq!(c.public_status(POSTS).await, 200);
    assert_eq!(c.origin.last().header("gcms-stage"), Some("DRAFT"));

    // Someone else changes the policy meanwhile: the console's next write gets 412, says so
    // and reloads; nothing of the stale write happens.
    let etag = c.etag().await;
    let other =
        c.gw.client
            .put(c.gw.admin_url("/admin/api/stages/default"))
            .bearer_auth(ADMIN_TOKEN)
            .header("if-match", format!("\"{etag}\""))
            .json(&json!({"stage": "PUBLISHED"}))
            .send()
            .await
            .unwrap();
    assert_eq!(other.status(), 200);
    c.click("#permissions tr.perm-row[data-id='2'] .perm-delete")
        .await;
    c.confirm_dialog().await;
    c.click("#confirm-ok").await;
    c.b.wait_text("#error", "Someone else changed the policy; reloaded", T)
        .await;
    c.b.wait_text("#default-stage", "PUBLISHED", T).await;
    assert_eq!(
        ids(&c.api("/admin/api/public/permissions").await),
        [0, 1, 2, 3]
    );
    c.assert_clean_console().await;
}

// ------------------------------------------------------------------------------------------
// Tokens

fn token_fixture() -> String {
    [
        token_entry(
            "jti-reader",
            "reader",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n",
        ),
        token_entry(
            "jti-doomed",
            "doomed",
            "PUBLISHED",
            "[[token.permission]]\naction = \"read\"\n",
        ),
    ]
    .concat()
}

#[tokio::test]
async fn tokens_add_shows_the_jwt_once_reissue_and_delete_revoke_at_the_proxy() {
    let Some(c) = Console::start(PUBLIC_READ, &token_fixture(), Some(OPS)).await else {
        return;
    };
    c.open("#/tokens", "tokens").await;
    let rows = c.texts("#tokens tr.token-row").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let reader = "#tokens tr.token-row[data-jti='jti-reader']";
    assert!(c
        .b
        .find(&format!("{reader} .c-name"))
        .await
        .text()
        .await
        .contains("reader"));
    assert!(c
        .b
        .find(&format!("{reader} .c-jti"))
        .await
        .text()
        .await
        .contains("jti-reader"));
    assert!(c
        .b
        .find(&format!("{reader} .c-status"))
        .await
        .text()
        .await
        .contains("Active"));

    // Copy the jti.
    c.click(&format!("{reader} .copy-jti")).await;
    c.b.wait_text("#toast", "Copied to clipboard", T).await;

    // The row menu: Open, Re-issue, Delete. Re-issue shows a fresh JWT for the same jti.
    let menu = format!("{reader} .menu");
    assert!(!c.b.find(&menu).await.is_displayed().await);
    c.click(&format!("{reader} .token-menu")).await;
    c.b.wait_for(&menu, T).await;
    let items = c.texts(&format!("{menu} button")).await;
    assert_eq!(items, ["Open", "Re-issue", "Delete"]);
    c.click(&format!("{reader} .token-reissue")).await;
    let jwt = c.b.wait_for("#new-jwt", T).await.text().await;
    assert_eq!(claims(&jwt)["jti"], "jti-reader");
    assert_eq!(c.token_status("/cdn", &jwt).await, 200);

    // Add a token: its JWT is shown once, on its details screen.
    c.click("#add-token").await;
    c.b.wait_for("#token-dialog", T).await;
    c.b.find("#token-name").await.send_keys("site").await;
    c.b.find("#token-description")
        .await
        .send_keys("The <b>public</b> web site")
        .await;
    c.click("input[name='token-stage'][value='DRAFT']").await;
    let before = c.generation().await;
    c.click("#token-create").await;
    c.wait_screen("tokens", &before).await;
    let box_ = c.b.wait_for("#new-jwt-box", T).await;
    assert!(box_.text().await.contains("will not be shown again"));
    assert!(c.b.try_find("#new-jwt-box #copy-new-jwt").await.is_some());
    let jwt = c.b.find("#new-jwt").await.text().await;
    let url = c.b.current_url().await;
    let jti = claims(&jwt)["jti"].as_str().unwrap().to_string();
    assert!(url.ends_with(&format!("#/tokens/{jti}")), "{url}");
    c.shot("token-new.png").await;
    let t = c.api(&format!("/admin/api/tokens/{jti}")).await;
    assert_eq!(t["token"]["name"], "site");
    assert_eq!(t["token"]["description"], "The <b>public</b> web site");
    assert_eq!(t["token"]["default_stage"], "DRAFT");
    // A new token starts with the gateway's default grants: its JWT works at once.
    assert_eq!(c.token_status("/cdn", &jwt).await, 200);
    let defaults = c.api(&format!("/admin/api/tokens/{jti}/permissions")).await;
    let n = defaults["permissions"].as_array().unwrap().len();
    assert!(n > 0, "no default permission: {defaults}");

    // Its permissions, with the same component as the public screen: take them all away
    // (each delete confirmed) and the JWT is refused (403: authenticated, not allowed)...
    c.wait_rows(&(0..n).collect::<Vec<_>>(), "the default permissions")
        .await;
    for left in (0..n).rev() {
        c.click("#permissions tr.perm-row .perm-delete").await;
        c.confirm_dialog().await;
        c.click("#confirm-ok").await;
        c.wait_rows(&(0..left).collect::<Vec<_>>(), "after a delete")
            .await;
    }
    assert_eq!(c.token_status("/cdn", &jwt).await, 403);
    // ... and give it Read again: allowed, on the token's default stage.
    c.click("#add-permission").await;
    c.b.wait_for("#perm-dialog", T).await;
    c.click("#perm-models input.all").await;
    c.click("#perm-save").await;
    c.b.wait_gone("#perm-dialog", T).await;
    c.wait_rows(&[0], "the token's new permission").await;
    assert_eq!(
        c.api(&format!("/admin/api/tokens/{jti}/permissions")).await["permissions"][0]["action"],
        "read"
    );
    assert_eq!(c.token_status("/cdn", &jwt).await, 200);
    let seen = c.gw.query("/content", Some(&bearer(&jwt)), POSTS).await;
    assert_eq!(seen.status(), 200);
    assert_eq!(c.origin.last().header("gcms-stage"), Some("DRAFT"));

    // Shown once: back on the screen, no JWT.
    c.open("#/tokens", "tokens").await;
    let desc =
        c.b.find(&format!(
            "#tokens tr.token-row[data-jti='{jti}'] .c-description"
        ))
        .await;
    assert_eq!(
        desc.text().await,
        "The <b>public</b> web site",
        "data is text, never HTML"
    );
    assert!(desc.find_all("b").await.is_empty());
    c.shot("tokens.png").await;
    c.open(&format!("#/tokens/{jti}"), "tokens").await;
    c.b.wait_for("#management", T).await;
    assert!(
        c.b.try_find("#new-jwt").await.is_none(),
        "the JWT was shown twice"
    );

    // Edit the details: the origin sees the new default stage.
    let name = c.b.find("#token-name").await;
    name.clear().await;
    name.send_keys("site-renamed").await;
    c.click("input[name='token-stage'][value='PUBLISHED']")
        .await;
    c.click("#token-save").await;
    c.b.wait_text("h1", "site-renamed", T).await;
    let t = c.api(&format!("/admin/api/tokens/{jti}")).await;
    assert_eq!(t["token"]["name"], "site-renamed");
    assert_eq!(t["token"]["default_stage"], "PUBLISHED");
    assert!(t["token"]["updated"].is_string());
    c.gw.query("/content", Some(&bearer(&jwt)), POSTS).await;
    assert_eq!(c.origin.last().header("gcms-stage"), Some("PUBLISHED"));
    c.b.execute("window.scrollTo(0, 0)", vec![]).await;
    c.shot("token-details.png").await;

    // Delete from the details screen: the confirmation button is "Delete <name>".
    let doomed = es("jti-doomed");
    assert_eq!(c.token_status("/cdn", &doomed).await, 200);
    c.open("#/tokens/jti-doomed", "tokens").await;
    c.click("#token-delete-detail").await;
    c.confirm_dialog().await;
    assert_eq!(c.b.find("#confirm-ok").await.text().await, "Delete doomed");
    c.click("#confirm-cancel").await;
    c.b.wait_gone("dialog#confirm[open]", T).await;
    assert_eq!(
        c.token_status("/cdn", &doomed).await,
        200,
        "Cancel deleted the token"
    );
    c.click("#token-delete-detail").await;
    c.confirm_dialog().await;
    let before = c.generation().await;
    c.click("#confirm-ok").await;
    c.wait_screen("tokens", &before).await;
    c.b.wait_for("#tokens", T).await;
    assert!(c
        .b
        .try_find("#tokens tr.token-row[data-jti='jti-doomed']")
        .await
        .is_none());
    assert_eq!(
        c.token_status("/cdn", &doomed).await,
        401,
        "a deleted token's JWT still works"
    );
    let gone =
        c.gw.client
            .get(c.gw.admin_url("/admin/api/tokens/jti-doomed"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
    assert_eq!(gone.status(), 404);

    // Delete from the list's menu.
    let row = format!("#tokens tr.token-row[data-jti='{jti}']");
    c.click(&format!("{row} .token-menu")).await;
    c.click(&format!("{row} .token-delete")).await;
    c.confirm_dialog().await;
    assert_eq!(
        c.b.find("#confirm-ok").await.text().await,
        "Delete site-renamed"
    );
    c.click("#confirm-ok").await;
    c.b.wait_gone(&row, T).await;
    assert_eq!(c.token_status("/cdn", &jwt).await, 401);
    c.assert_clean_console().await;
}

#[tokio::test]
async fn management_switches_toggle_and_bulk_changes() {
    let tokens = token_entry(
        "jti-bot",
        "bot",
        "PUBLISHED",
        "management = [\"PROJECT_READ\"]\n[[token.permission]]\naction = \"read\"\n",
    );
    let Some(c) = Console::start(PUBLIC_READ, &tokens, Some(OPS)).await else {
        return;
    };
    let path = "/admin/api/tokens/jti-bot/management";
    let all: Vec<String> = c.api(path).await["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    for name in ["PROJECT_READ", "MODEL_CREATE", "MODEL_UPDATE"] {
        assert!(all.iter().any(|n| n == name), "{name} missing from {all:?}");
    }
    let shown = "return Array.from(document.querySelectorAll('#management .mgmt-row')).map(r => r.dataset.name);";
    c.open("#/tokens/jti-bot", "tokens").await;
    // By default only the enabled ones.
    c.wait_value("enabled rows", shown, json!(["PROJECT_READ"]))
        .await;
    let toggle = c.b.find("#mgmt-toggle").await;
    assert_eq!(toggle.text().await, "Show all permissions");
    toggle.click().await;
    c.wait_value("every row", shown, json!(all)).await;
    assert_eq!(toggle.text().await, "Show enabled permissions");
    c.b.execute(
        "document.getElementById('management').scrollIntoView()",
        vec![],
    )
    .await;
    c.shot("management-all.png").await;

    let sel = |n: &str| format!("#management .mgmt-row[data-name='{n}'] input.mgmt-select");
    let switch = |n: &str| format!("#management .mgmt-row[data-name='{n}'] input.mgmt-switch");
    assert!(c.b.find(&switch("PROJECT_READ")).await.is_selected().await);
    assert!(!c.b.find(&switch("MODEL_CREATE")).await.is_selected().await);

    // Bulk enable.
    c.click(&sel("MODEL_CREATE")).await;
    c.click(&sel("MODEL_UPDATE")).await;
    c.click("#mgmt-enable").await;
    c.wait_value(
        "switches after the bulk enable",
        "return ['MODEL_CREATE','MODEL_UPDATE'].every(n => document.querySelector(`#management .mgmt-row[data-name='${n}'] input.mgmt-switch`).checked);",
        json!(true),
    )
    .await;
    c.wait_enabled(path, &["MODEL_CREATE", "MODEL_UPDATE", "PROJECT_READ"])
        .await;
    // One switch.
    c.click(&switch("PROJECT_READ")).await;
    c.wait_value(
        "the switched-off row",
        "return document.querySelector(\"#management .mgmt-row[data-name='PROJECT_READ'] input.mgmt-switch\").checked;",
        json!(false),
    )
    .await;
    c.wait_enabled(path, &["MODEL_CREATE", "MODEL_UPDATE"])
        .await;
    // Bulk disable.
    c.click(&sel("MODEL_CREATE")).await;
    c.click("#mgmt-disable").await;
    c.wait_value(
        "switches after the bulk disable",
        "return document.querySelector(\"#management .mgmt-row[data-name='MODEL_CREATE'] input.mgmt-switch\").checked;",
        json!(false),
    )
    .await;
    c.wait_enabled(path, &["MODEL_UPDATE"]).await;
    assert_eq!(
        c.api("/admin/api/tokens/jti-bot").await["token"]["management"],
        json!(["MODEL_UPDATE"])
    );
    // Back to the enabled ones.
    c.click("#mgmt-toggle").await;
    c.wait_value("enabled rows", shown, json!(["MODEL_UPDATE"]))
        .await;
    assert_eq!(
        c.b.find("#mgmt-toggle").await.text().await,
        "Show all permissions"
    );
    c.assert_clean_console().await;
}

#[tokio::test]
async fn token_check_keep_and_revoke() {
    let Some(c) = Console::start(PUBLIC_READ, &token_fixture(), Some(OPS)).await else {
        return;
    };
    c.open("#/check", "check").await;
    let check = |jwt: String| {
        let c = &c;
        async move {
            let ta = c.b.find("#check-jwt").await;
            ta.clear().await;
            ta.send_keys(&jwt).await;
            let before = c
                .b
                .execute("const s = document.getElementById('check-status'); if (s) s.id = 'check-status-old'; return true;", vec![])
                .await;
            assert_eq!(before, json!(true));
            c.click("#check-run").await;
            c.b.wait_for("#check-status", T).await.text().await
        }
    };
    assert!(check("not-a-token".into()).await.contains("invalid"));
    assert!(check(es("jti-nobody")).await.contains("unknown"));
    let reader = es("jti-reader");
    let status = check(reader.clone()).await;
    assert!(status.contains("active"), "{status}");
    assert!(c
        .b
        .find("#check-jti")
        .await
        .text()
        .await
        .contains("jti-reader"));
    assert!(c
        .b
        .find("#check-verified")
        .await
        .text()
        .await
        .contains("verified"));
    assert!(c
        .b
        .find("#check-match")
        .await
        .text()
        .await
        .contains("reader"));
    assert!(c
        .b
        .find("#check-claims")
        .await
        .text()
        .await
        .contains("\"jti\": \"jti-reader\""));
    assert!(c
        .b
        .find("#check-header")
        .await
        .text()
        .await
        .contains("ES256"));
    c.shot("token-check.png").await;

    // Keep: a re-issued JWT of the same jti, shown once.
    c.click("#check-keep").await;
    let fresh = c.b.wait_for("#new-jwt", T).await.text().await;
    assert_eq!(claims(&fresh)["jti"], "jti-reader");
    assert_eq!(c.token_status("/cdn", &fresh).await, 200);

    // Revoke (confirmed): every JWT of the jti is refused; the entry stays, marked revoked.
    assert_eq!(c.token_status("/cdn", &reader).await, 200);
    c.click("#check-revoke").await;
    c.confirm_dialog().await;
    c.click("#confirm-cancel").await;
    c.b.wait_gone("dialog#confirm[open]", T).await;
    assert_eq!(
        c.token_status("/cdn", &reader).await,
        200,
        "Cancel revoked the token"
    );
    c.click("#check-revoke").await;
    c.confirm_dialog().await;
    c.click("#confirm-ok").await;
    c.b.wait_text("#check-status", "revoked", T).await;
    assert_eq!(c.token_status("/cdn", &reader).await, 401);
    assert_eq!(c.token_status("/cdn", &fresh).await, 401);
    assert_eq!(
        c.api("/admin/api/tokens/jti-reader").await["token"]["revoked"],
        true
    );
    c.open("#/tokens", "tokens").await;
    assert!(c
        .b
        .find("#tokens tr.token-row[data-jti='jti-reader'] .c-status")
        .await
        .text()
        .await
        .contains("Revoked"));
    c.assert_clean_console().await;
}

#[tokio::test]
async fn a_read_scope_login_is_read_only() {
    let tokens = token_entry(
        "jti-bot",
        "bot",
        "PUBLISHED",
        "management = [\"PROJECT_READ\"]\n[[token.permission]]\naction = \"read\"\n",
    );
    let Some(c) = Console::start(PUBLIC, &tokens, Some(VIEWER)).await else {
        return;
    };
    let banner = c.b.wait_for("#readonly", T).await;
    assert!(banner
        .text()
        .await
        .to_lowercase()
        .contains("read-only: your credential has the read scope"));
    assert_eq!(c.b.find("#whoami").await.text().await, "viewer · read");
    let writes = [
        "#change-stage",
        "#save-stage",
        "#add-permission",
        ".perm-edit",
        ".perm-delete",
        "#add-token",
        ".token-reissue",
        ".token-delete",
        "#token-save",
        "#token-delete-detail",
        "#token-reissue-detail",
        ".mgmt-select",
        "#mgmt-enable",
        "#mgmt-disable",
        "#check-keep",
        "#check-revoke",
    ];
    let no_writes = |screen: &'static str| {
        let c = &c;
        async move {
            for css in writes {
                if let Some(e) = c.b.try_find(css).await {
                    assert!(
                        !e.is_displayed().await || !e.is_enabled().await,
                        "{css} is usable read-only on {screen}"
                    );
                }
            }
        }
    };
    c.open("#/public", "public").await;
    c.wait_rows(&[0, 1, 2, 3], "the public permissions").await;
    no_writes("public").await;
    // Reading still works: sort and filters.
    c.click("#sort option[value='action']").await;
    c.wait_rows(&[1, 3, 2, 0], "sort=action").await;
    c.shot("read-only.png").await;

    c.open("#/tokens", "tokens").await;
    c.click("#tokens tr.token-row[data-jti='jti-bot'] .token-menu")
        .await;
    assert_eq!(
        c.texts("#tokens tr.token-row[data-jti='jti-bot'] .menu button")
            .await,
        ["Open"]
    );
    no_writes("tokens").await;

    c.open("#/tokens/jti-bot", "tokens").await;
    c.b.wait_for("#management .mgmt-row", T).await;
    no_writes("token details").await;
    for sw in c.b.find_all("#management input.mgmt-switch").await {
        assert!(
            !sw.is_enabled().await,
            "a management switch is usable read-only"
        );
    }
    assert_eq!(
        c.b.find("#token-name")
            .await
            .attribute("readonly")
            .await
            .as_deref(),
        Some("true")
    );

    c.open("#/check", "check").await;
    c.b.find("#check-jwt").await.send_keys(&es("jti-bot")).await;
    c.click("#check-run").await;
    c.b.wait_text("#check-status", "active", T).await;
    no_writes("check").await;

    // The API itself refuses the read scope's writes.
    let etag = c.etag().await;
    let refused =
        c.gw.client
            .put(c.gw.admin_url("/admin/api/stages/default"))
            .bearer_auth(VIEWER)
            .header("if-match", format!("\"{etag}\""))
            .json(&json!({"stage": "DRAFT"}))
            .send()
            .await
            .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    c.assert_clean_console().await;
}
