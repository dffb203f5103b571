//! The web console at `/console`: static pages and one script, compiled into the binary (no
//! CDN, nothing fetched or built at run time), talking to the management API with a session.
//!
//! Login trades an admin credential for a session: a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie, and a random CSRF token the page reads from `whoami` and sends as
//! `x-csrf-token` with every change. Sessions live in this process only (bounded, idle and
//! absolute expiry); behind a load balancer the admin listener of each replica has its own.
//! Every console response carries a Content-Security-Policy without inline scripts or styles;
//! the script builds the page with `textContent`, never HTML from data.

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use subtle::ConstantTimeEq;

use super::api::{credential, Caller};
use crate::config::{AdminCredential, AdminScope};

const INDEX_HTML: &str = include_str!("../../assets/console/index.html");
const LOGIN_HTML: &str = include_str!("../../assets/console/login.html");
const APP_JS: &str = include_str!("../../assets/console/app.js");
const APP_CSS: &str = include_str!("../../assets/console/app.css");
const LOGIN_CSS: &str = include_str!("../../assets/console/login.css");

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
pub const COOKIE: &str = "cg_session";
/// Sessions kept (about 200 bytes each); the oldest go first beyond it.
const MAX_SESSIONS: u64 = 10_000;
const IDLE: Duration = Duration::from_secs(30 * 60);
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Clone)]
struct Session {
    name: String,
    scope: AdminScope,
    csrf: String,
}

pub struct Sessions {
    map: moka::sync::Cache<String, Arc<Session>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            map: moka::sync::Cache::builder()
                .max_capacity(MAX_SESSIONS)
                .time_to_idle(IDLE)
                .time_to_live(LIFETIME)
                .build(),
        }
    }
}

/// 244 random bits from the thread's CSPRNG, as hex.
fn random_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn cookie_of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
}

impl Sessions {
    /// The caller of a request carrying a session cookie. A change (any method but GET/HEAD)
    /// also needs the session's CSRF token in `x-csrf-token`: `Err` when it is missing or wrong.
    pub fn caller(
        &self,
        headers: &http::HeaderMap,
        method: &http::Method,
    ) -> Option<Result<Caller, ()>> {
        let id = cookie_of(headers)?;
        if id.len() != 64 {
            return None;
        }
        let s = self.map.get(&id)?;
        if method != http::Method::GET && method != http::Method::HEAD {
            let sent = headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if sent.as_bytes().ct_eq(s.csrf.as_bytes()).unwrap_u8() != 1 {
                return Some(Err(()));
            }
        }
        Some(Ok(Caller {
            name: s.name.clone(),
            scope: s.scope,
            csrf: Some(s.csrf.clone()),
        }))
    }

    fn open(&self, c: &AdminCredential) -> String {
        let id = random_id();
        self.map.insert(
            id.clone(),
            Arc::new(Session {
                name: c.name.clone(),
                scope: c.scope,
                csrf: random_id(),
            }),
        );
        id
    }

    /// Ends the session the cookie names. No CSRF token is needed: a forged logout only logs
    /// out, and a session must not outlive the cookie its browser dropped.
    fn close(&self, headers: &http::HeaderMap) {
        if let Some(id) = cookie_of(headers) {
            self.map.invalidate(&id);
        }
    }
}

fn page(status: u16, content_type: &str, body: &[u8]) -> Response<Vec<u8>> {
    let mut r = super::reply(status, content_type, body.to_vec());
    let h = r.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        h.insert(k, http::HeaderValue::from_static(v));
    }
    r
}

fn login_page(status: u16, message: &str) -> Response<Vec<u8>> {
    let mut escaped = String::new();
    for c in message.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    let html = if message.is_empty() {
        LOGIN_HTML.to_string()
    } else {
        LOGIN_HTML.replace(
            "<!--ERROR-->",
            &format!("<p class=\"login-error\" id=\"login-error\" role=\"alert\">{escaped}</p>"),
        )
    };
    page(status, "text/html; charset=utf-8", html.as_bytes())
}

fn redirect(to: &'static str, cookie: Option<String>) -> Response<Vec<u8>> {
    let mut r = page(303, "text/plain", b"");
    r.headers_mut()
        .insert("location", http::HeaderValue::from_static(to));
    if let Some(c) = cookie.and_then(|c| http::HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert("set-cookie", c);
    }
    r
}

/// What the console answers at `path`; `None` when the path is not the console's.
pub fn static_page(
    path: &str,
    sessions: &Sessions,
    headers: &http::HeaderMap,
) -> Option<Response<Vec<u8>>> {
    Some(match path {
        "/console" | "/console/" => match sessions.caller(headers, &http::Method::GET) {
            Some(Ok(_)) => page(200, "text/html; charset=utf-8", INDEX_HTML.as_bytes()),
            _ => login_page(200, ""),
        },
        "/console/login" => login_page(200, ""),
        "/console/app.js" => page(200, "text/javascript; charset=utf-8", APP_JS.as_bytes()),
        "/console/app.css" => page(200, "text/css; charset=utf-8", APP_CSS.as_bytes()),
        "/console/login.css" => page(200, "text/css; charset=utf-8", LOGIN_CSS.as_bytes()),
        _ => return None,
    })
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.to_string())
}

/// `POST /console/login` (form field `credential`). Returns the answer and whether it logged in.
pub fn login(
    sessions: &Sessions,
    creds: &[AdminCredential],
    body: &[u8],
) -> (Response<Vec<u8>>, Option<String>) {
    if creds.is_empty() {
        return (
            login_page(404, "The console is disabled: configure [[admin.credential]] (or [admin] token_env) first."),
            None,
        );
    }
    let presented = form_field(body, "credential").unwrap_or_default();
    let presented = presented.trim();
    match credential(creds, presented).filter(|_| !presented.is_empty()) {
        Some(c) => {
            let id = sessions.open(c);
            tracing::info!(target: "audit", event = "console_login", who = %c.name, scope = c.scope.as_str(), "console session opened");
            let cookie = format!(
                "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                LIFETIME.as_secs()
            );
            (redirect("/console", Some(cookie)), Some(c.name.clone()))
        }
        None => {
            tracing::info!(target: "audit", event = "console_login_refused", "console login with a wrong credential");
            (
                login_page(401, "That is not an admin credential of this gateway."),
                None,
            )
        }
    }
}

/// `POST /console/logout`.
pub fn logout(sessions: &Sessions, headers: &http::HeaderMap) -> Response<Vec<u8>> {
    sessions.close(headers);
    redirect(
        "/console",
        Some(format!(
            "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        )),
    )
}
