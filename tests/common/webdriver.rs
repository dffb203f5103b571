//! A small W3C WebDriver client over reqwest: `chromedriver` on a free loopback port driving a
//! headless Chromium, for the console's browser tests (tests/console.rs).
//!
//! Only what those tests need: navigate, find (CSS), click, type, read text / attributes /
//! properties, run a script, screenshots, polling waits, alerts, the browser's console log.
//! chromedriver (and with it the browser) is stopped on drop, also when a test panics.
#![allow(unused_imports)]
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::config::free_port;

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver: `CG_CHROMEDRIVER`, default Debian's `/usr/bin/chromedriver`.
pub fn chromedriver_path() -> PathBuf {
    std::env::var_os("CG_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// The browser: `CG_CHROMIUM`, default Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CG_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Why the browser tests cannot run here (`None`: they can).
pub fn missing() -> Option<String> {
    for p in [chromedriver_path(), chromium_path()] {
        if !p.is_file() {
            return Some(format!("{} is not installed", p.display()));
        }
    }
    None
}

/// A WebDriver error answer (or a transport failure, status 0).
#[derive(Debug, Clone)]
pub struct WdError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "webdriver {} {}: {}",
            self.status, self.error, self.message
        )
    }
}

impl WdError {
    pub fn is_no_such_element(&self) -> bool {
        self.error == "no such element" || self.error == "stale element reference"
    }
}

/// The HTTP side: a client and the session's base URL.
#[derive(Clone)]
struct Wire {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
}

impl Wire {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        let url = format!("{}{path}", self.session);
        send(&self.http, method, &url, body).await
    }
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WdError> {
    let mut req = http.request(method.clone(), url);
    if method == reqwest::Method::POST {
        req = req
            .header("content-type", "application/json")
            .body(body.unwrap_or_else(|| json!({})).to_string());
    }
    let resp = req.send().await.map_err(|e| WdError {
        status: 0,
        error: "transport".into(),
        message: format!("{method} {url}: {e}"),
    })?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status >= 400 {
        return Err(WdError {
            status,
            error: v["value"]["error"].as_str().unwrap_or("unknown").into(),
            message: v["value"]["message"]
                .as_str()
                .map(|m| m.lines().next().unwrap_or("").to_string())
                .unwrap_or(text),
        });
    }
    Ok(v["value"].clone())
}

/// A headless Chromium driven through chromedriver.
pub struct Browser {
    wire: Wire,
    driver: Child,
    port: u16,
    session_id: String,
    closed: bool,
    /// How long `find` and the waits poll before failing.
    pub timeout: Duration,
}

/// An element of the current page.
#[derive(Clone)]
pub struct Element {
    wire: Wire,
    pub id: String,
    /// The selector it was found by (for failure messages).
    pub css: String,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session: headless, 1366×900.
    pub async fn start() -> Browser {
        let port = free_port();
        let log = std::env::var_os("CG_WEBDRIVER_LOG");
        let mut cmd = Command::new(chromedriver_path());
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(path) = &log {
            cmd.arg(format!("--log-path={}", PathBuf::from(path).display()))
                .arg("--verbose");
        }
        let mut driver = cmd.spawn().expect("spawn chromedriver");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("webdriver client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = send(&http, reqwest::Method::GET, &format!("{base}/status"), None).await
            {
                if v["ready"].as_bool().unwrap_or(false) {
                    break;
                }
            }
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "goog:chromeOptions": {
                        "binary": chromium_path().display().to_string(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--window-size=1366,900",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--no-default-browser-check",
                            "--disable-extensions",
                            "--lang=en-US",
                        ],
                    },
                }
            }
        });
        let created = match send(
            &http,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(caps),
        )
        .await
        {
            Ok(v) => v,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("cannot open a WebDriver session: {e}");
            }
        };
        let session_id = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Browser {
            wire: Wire {
                http,
                session: format!("{base}/session/{session_id}"),
            },
            driver,
            port,
            session_id,
            closed: false,
            timeout: Duration::from_secs(10),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.wire
            .call(method.clone(), path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub async fn title(&self) -> String {
        self.call(reqwest::Method::GET, "/title", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub async fn page_source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub async fn refresh(&self) {
        self.call(reqwest::Method::POST, "/refresh", None).await;
    }

    /// The first element matching `css` now, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        match self
            .wire
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
        {
            Ok(v) => Some(self.element(&v, css)),
            Err(e) if e.is_no_such_element() => None,
            Err(e) => panic!("find {css}: {e}"),
        }
    }

    /// The first element matching `css`, polling up to `self.timeout` for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                panic!("no element matches {css:?} (after {:?})", self.timeout);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every element matching `css` now (no waiting).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v.as_array()
            .map(|a| a.iter().map(|e| self.element(e, css)).collect())
            .unwrap_or_default()
    }

    fn element(&self, v: &Value, css: &str) -> Element {
        Element {
            wire: self.wire.clone(),
            id: v[ELEMENT_KEY]
                .as_str()
                .unwrap_or_else(|| panic!("not an element reference: {v}"))
                .to_string(),
            css: css.to_string(),
        }
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and answers its return value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// A PNG of the viewport, written to `path` (its folder created).
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 screenshot"))
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Waits until an element matching `css` is present and displayed.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_find(css).await {
                if e.try_displayed().await.unwrap_or(false) {
                    return e;
                }
            }
            if Instant::now() > deadline {
                panic!("{css:?} did not appear within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until no displayed element matches `css`.
    pub async fn wait_gone(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_find(css).await {
                None => return,
                Some(e) => {
                    if !e.try_displayed().await.unwrap_or(false) {
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("{css:?} is still displayed after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the (displayed) element matching `css` has a text containing `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Some(e) = self.try_find(css).await {
                if let Ok(t) = e.try_text().await {
                    if t.contains(needle) {
                        return e;
                    }
                    last = t;
                }
            }
            if Instant::now() > deadline {
                panic!("{css:?} did not show {needle:?} within {timeout:?} (last text {last:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `script` until it returns a truthy value; answers that value.
    pub async fn wait_until(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.execute(script, vec![]).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(_) | Value::Object(_) => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Session timeouts (implicit element wait, page load, script).
    pub async fn set_timeouts(&self, implicit: Duration, page_load: Duration, script: Duration) {
        self.call(
            reqwest::Method::POST,
            "/timeouts",
            Some(json!({
                "implicit": implicit.as_millis() as u64,
                "pageLoad": page_load.as_millis() as u64,
                "script": script.as_millis() as u64,
            })),
        )
        .await;
    }

    /// The open alert/confirm/prompt's text, if one is open.
    pub async fn alert_text(&self) -> Option<String> {
        self.wire
            .call(reqwest::Method::GET, "/alert/text", None)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    }

    pub async fn accept_alert(&self) {
        self.call(reqwest::Method::POST, "/alert/accept", None)
            .await;
    }

    pub async fn dismiss_alert(&self) {
        self.call(reqwest::Method::POST, "/alert/dismiss", None)
            .await;
    }

    /// The browser console entries since the last call (chromedriver's log extension; empty
    /// when the driver does not offer it).
    pub async fn console_log(&self) -> Vec<Value> {
        self.wire
            .call(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({ "type": "browser" })),
            )
            .await
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// The element that has the focus.
    pub async fn active_element(&self) -> Element {
        let v = self
            .call(reqwest::Method::GET, "/element/active", None)
            .await;
        self.element(&v, ":focus")
    }

    /// Ends the session (the browser quits) and stops chromedriver.
    pub async fn quit(mut self) {
        let _ = self
            .wire
            .http
            .delete(self.wire.session.clone())
            .send()
            .await;
        self.closed = true;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            // Synchronously (drop may run while a test unwinds): DELETE the session so the
            // browser quits with it instead of outliving chromedriver.
            let _ = delete_session_blocking(self.port, &self.session_id);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn delete_session_blocking(port: u16, session: &str) -> std::io::Result<()> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    Ok(())
}

impl Element {
    async fn call(&self, method: reqwest::Method, what: &str, body: Option<Value>) -> Value {
        self.try_call(method, what, body)
            .await
            .unwrap_or_else(|e| panic!("{what} on {:?}: {e}", self.css))
    }

    async fn try_call(
        &self,
        method: reqwest::Method,
        what: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        let path = if what.is_empty() {
            format!("/element/{}", self.id)
        } else {
            format!("/element/{}/{what}", self.id)
        };
        self.wire.call(method, &path, body).await
    }

    /// The element as a script argument.
    pub fn arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    pub async fn click(&self) {
        self.call(reqwest::Method::POST, "click", None).await;
    }

    /// Types `text` (WebDriver key codes such as `\u{E007}` for Enter work too).
    pub async fn send_keys(&self, text: &str) {
        self.call(
            reqwest::Method::POST,
            "value",
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn clear(&self) {
        self.call(reqwest::Method::POST, "clear", None).await;
    }

    /// The rendered text (what a user sees).
    pub async fn text(&self) -> String {
        self.call(reqwest::Method::GET, "text", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    async fn try_text(&self) -> Result<String, WdError> {
        Ok(self
            .try_call(reqwest::Method::GET, "text", None)
            .await?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    pub async fn attribute(&self, name: &str) -> Option<String> {
        self.call(reqwest::Method::GET, &format!("attribute/{name}"), None)
            .await
            .as_str()
            .map(str::to_string)
    }

    pub async fn property(&self, name: &str) -> Value {
        self.call(reqwest::Method::GET, &format!("property/{name}"), None)
            .await
    }

    pub async fn tag_name(&self) -> String {
        self.call(reqwest::Method::GET, "name", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub async fn is_displayed(&self) -> bool {
        self.try_displayed().await.unwrap_or(false)
    }

    async fn try_displayed(&self) -> Result<bool, WdError> {
        Ok(self
            .try_call(reqwest::Method::GET, "displayed", None)
            .await?
            .as_bool()
            .unwrap_or(false))
    }

    pub async fn is_enabled(&self) -> bool {
        self.call(reqwest::Method::GET, "enabled", None)
            .await
            .as_bool()
            .unwrap_or(false)
    }

    pub async fn is_selected(&self) -> bool {
        self.call(reqwest::Method::GET, "selected", None)
            .await
            .as_bool()
            .unwrap_or(false)
    }

    /// The first descendant matching `css` (no waiting).
    pub async fn find(&self, css: &str) -> Element {
        let v = self
            .call(
                reqwest::Method::POST,
                "element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        Element {
            wire: self.wire.clone(),
            id: v[ELEMENT_KEY].as_str().unwrap_or_default().to_string(),
            css: format!("{} {css}", self.css),
        }
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self
            .call(
                reqwest::Method::POST,
                "elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| Element {
                        wire: self.wire.clone(),
                        id: e[ELEMENT_KEY].as_str().unwrap_or_default().to_string(),
                        css: format!("{} {css}", self.css),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
