//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `POST /admin/purge`,
//! `POST /webhooks/cms`, the management API under `/admin/api/` ([`api`]) and the web console
//! at `/console` ([`console`]).
//!
//! Separate from the proxy listener so it can be firewalled to the monitoring network and so
//! health checks never compete with, or depend on, content traffic.

pub mod api;
pub mod console;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::cache::{Purge, ReadCache};
use crate::cluster::Cluster;
use crate::config::{AdminCredential, AdminScope, AdminSecrets};
use crate::manage::{ManageError, Manager};
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;

/// Admin request bodies (purge, webhook) are small JSON documents.
const MAX_ADMIN_BODY: usize = 1024 * 1024;
/// An admin body must arrive whole within this (Hygraph's webhook delivery times out at 3 s).
const ADMIN_BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Readiness: true once the first snapshot is loaded; false again when shutting down, so the
/// load balancer stops sending traffic before in-flight requests drain.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub store: Arc<PolicyStore>,
    pub health: Arc<Health>,
    pub cache: Option<Arc<ReadCache>>,
    pub secrets: AdminSecrets,
    /// MACs of webhook deliveries already acted on, kept for twice the replay window: a
    /// delivery captured and replayed inside the window is answered but not acted on again.
    /// Only verified signatures enter it, so it cannot be filled without the secret.
    seen_signatures: moka::sync::Cache<[u8; 32], ()>,
    /// In a cluster: readiness waits for the first sync, and deliveries are claimed in Redis
    /// so a replay to another replica is refused too.
    pub cluster: Option<Arc<Cluster>>,
    /// The management API and the console (`None`: no admin credentials configured).
    manager: Option<Arc<Manager>>,
    sessions: console::Sessions,
    /// The endpoints list (path, kind, full URL), fixed at start-up.
    endpoints: Value,
}

/// Verified webhook deliveries remembered (about 100 bytes each).
const SEEN_SIGNATURES: u64 = 100_000;

impl Admin {
    pub fn new(
        metrics: Arc<Metrics>,
        store: Arc<PolicyStore>,
        health: Arc<Health>,
        cache: Option<Arc<ReadCache>>,
        secrets: AdminSecrets,
    ) -> Self {
        let seen_signatures = moka::sync::Cache::builder()
            .max_capacity(SEEN_SIGNATURES)
            .time_to_live(
                secrets
                    .webhook_tolerance
                    .saturating_mul(2)
                    .max(Duration::from_secs(1)),
            )
            .build();
        Self {
            metrics,
            store,
            health,
            cache,
            secrets,
            seen_signatures,
            cluster: None,
            manager: None,
            sessions: console::Sessions::default(),
            endpoints: Value::Array(Vec::new()),
        }
    }

    pub fn in_cluster(self, cluster: Option<Arc<Cluster>>) -> Self {
        Self { cluster, ..self }
    }

    /// Serves the management API and the console through `manager` (when credentials exist).
    pub fn with_management(self, manager: Arc<Manager>, endpoints: Value) -> Self {
        let manager = (!self.secrets.credentials.is_empty()).then_some(manager);
        Self {
            manager,
            endpoints,
            ..self
        }
    }

    fn count(&self, op: &str, result: &str) {
        self.metrics
            .admin_api
            .with_label_values(&[op, result])
            .inc();
    }

    /// The management API: authenticate, read the call, run it on the blocking pool.
    async fn management_api(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.as_str().to_string();
        let op = api::op_class(&method);
        let result = self.management_call(session).await;
        match result {
            Ok(r) => {
                self.count(op, "ok");
                r
            }
            Err(e) => {
                self.count(op, e.code);
                api::error_reply(&e)
            }
        }
    }

    async fn management_call(
        &self,
        session: &mut ServerSession,
    ) -> Result<Response<Vec<u8>>, ManageError> {
        let Some(manager) = &self.manager else {
            return Err(ManageError::not_found(
                "the management API is disabled: configure [[admin.credential]] (or [admin] token_env / token_file)",
            ));
        };
        let caller = self.caller(session)?;
        let call = api::Call::read(session, caller, self.endpoints.clone()).await?;
        let manager = manager.clone();
        tokio::task::spawn_blocking(move || api::handle(&manager, call))
            .await
            .map_err(|_| ManageError::new(500, "INTERNAL", "the change was interrupted"))?
    }

    /// The caller of a management request: a bearer credential, or a console session (with its
    /// CSRF token on changes).
    fn caller(&self, session: &ServerSession) -> Result<api::Caller, ManageError> {
        let unauthenticated = || {
            ManageError::new(
                401,
                "UNAUTHENTICATED",
                "an admin credential is required (Authorization: Bearer, or a console session)",
            )
        };
        if let Some(presented) = api::bearer(session) {
            return api::credential(&self.secrets.credentials, &presented)
                .map(|c| api::Caller {
                    name: c.name.clone(),
                    scope: c.scope,
                    csrf: None,
                })
                .ok_or_else(|| {
                    tracing::info!(target: "audit", event = "admin_api_refused", "management API call with a wrong credential");
                    unauthenticated()
                });
        }
        let h = session.req_header();
        match self.sessions.caller(&h.headers, &h.method) {
            Some(Ok(c)) => Ok(c),
            Some(Err(())) => Err(ManageError::new(
                403,
                "CSRF",
                "a console change needs the session's x-csrf-token header",
            )),
            None => Err(unauthenticated()),
        }
    }

    async fn console(&self, session: &mut ServerSession, path: &str) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        if method == http::Method::GET {
            return console::static_page(path, &self.sessions, &session.req_header().headers)
                .unwrap_or_else(|| reply(404, "text/plain", b"not found\n".to_vec()));
        }
        if method != http::Method::POST {
            return reply(405, "text/plain", b"method not allowed\n".to_vec());
        }
        let Some(body) = read_body(session).await else {
            return error(413, "body too large");
        };
        match path {
            "/console/login" => {
                let (r, who) = console::login(&self.sessions, &self.secrets.credentials, &body);
                self.count(
                    "login",
                    if who.is_some() {
                        "ok"
                    } else {
                        "UNAUTHENTICATED"
                    },
                );
                r
            }
            "/console/logout" => console::logout(&self.sessions, &session.req_header().headers),
            _ => reply(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_reply(status: u16, v: Value) -> Response<Vec<u8>> {
    reply(status, "application/json", v.to_string().into_bytes())
}

fn error(status: u16, message: &str) -> Response<Vec<u8>> {
    json_reply(status, json!({ "error": message }))
}

/// The whole body within [`ADMIN_BODY_DEADLINE`] and [`MAX_ADMIN_BODY`]; `None` otherwise.
async fn read_body(session: &mut ServerSession) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + ADMIN_BODY_DEADLINE;
    loop {
        let next = tokio::time::timeout_at(deadline, session.read_request_body())
            .await
            .ok()?;
        match next {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_ADMIN_BODY {
                    return None;
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(out),
            Err(_) => return None,
        }
    }
}

impl Admin {
    async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if self.secrets.credentials.is_empty() && self.secrets.purge_token.is_none() {
            return error(
                404,
                "the purge API is disabled: set [admin] token_env or token_file (or a write-scope [[admin.credential]])",
            );
        }
        let presented = api::bearer(session).unwrap_or_default();
        let purge_token = self.secrets.purge_token.as_ref().map(|t| AdminCredential {
            name: "admin".into(),
            scope: AdminScope::Write,
            secret: t.clone(),
        });
        let Some(who) = api::credential(&self.secrets.credentials, &presented)
            .or_else(|| api::credential(purge_token.as_slice(), &presented))
            .filter(|c| c.scope == AdminScope::Write && !presented.is_empty())
        else {
            tracing::info!(target: "audit", event = "purge_refused", "admin purge with a missing, wrong or read-scope token");
            return error(401, "a valid write-scope admin bearer token is required");
        };
        tracing::info!(target: "audit", event = "purge", who = %who.name, "admin purge");
        let Some(cache) = &self.cache else {
            return error(503, "the cache is disabled");
        };
        let Some(body) = read_body(session).await else {
            return error(413, "body too large");
        };
        let purge = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(o)) => {
                let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
                Purge { model: s("model"), id: s("id"), stage: s("stage"), all: o.get("all").and_then(Value::as_bool).unwrap_or(false) }
            }
            _ => return error(400, "body must be a JSON object: {\"model\"}, {\"id\"}, optional \"stage\", or {\"all\": true}"),
        };
        if let Err(why) = purge.check() {
            return error(400, why);
        }
        cache.purge(&purge, "admin");
        json_reply(
            200,
            json!({ "purged": { "model": purge.model, "id": purge.id, "stage": purge.stage, "all": purge.all } }),
        )
    }

    async fn webhook(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let Some(secret) = &self.secrets.webhook_secret else {
            return error(
                404,
                "webhooks are disabled: set [webhooks] secret_env or secret_file",
            );
        };
        let signature = session
            .req_header()
            .headers
            .get("gcms-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Nothing is read for a delivery that cannot be signed.
        let Some(signature) = signature else {
            return self.webhook_refused("missing gcms-signature");
        };
        let Some(body) = read_body(session).await else {
            return error(413, "body too large or too slow");
        };
        let mac = match verify_signature(
            &signature,
            &body,
            secret.as_bytes(),
            self.secrets.webhook_tolerance,
            SystemTime::now(),
        ) {
            Ok(mac) => mac,
            Err(reason) => return self.webhook_refused(reason),
        };
        let Some(cache) = &self.cache else {
            return error(503, "the cache is disabled");
        };
        let payload: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return error(400, "body is not JSON"),
        };
        let data = payload.get("data").cloned().unwrap_or(Value::Null);
        let s = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
        let purge = Purge {
            model: s("__typename"),
            id: s("id"),
            stage: s("stage"),
            all: false,
        };
        if purge.model.is_none() && purge.id.is_none() {
            return error(400, "payload data names no __typename or id");
        }
        if let Err(why) = purge.check() {
            return error(400, why);
        }
        // Keyed by the verified MAC, which names (body, environment, time) whatever the header's
        // spelling (order, spaces, extra parts); claimed before acting, so two copies of one
        // delivery racing each other act once.
        let seen_here = !self.seen_signatures.entry(mac).or_insert(()).is_fresh();
        // In a cluster the claim is also made in Redis, so a copy sent to another replica is
        // refused there too; Redis unreachable (None): the local memory decides.
        let seen_elsewhere = !seen_here
            && match &self.cluster {
                Some(cluster) => {
                    cluster
                        .claim_delivery(mac, self.secrets.webhook_tolerance * 2)
                        .await
                        == Some(false)
                }
                None => false,
            };
        if seen_here || seen_elsewhere {
            self.metrics
                .webhook_rejections
                .with_label_values(&["replayed delivery"])
                .inc();
            tracing::info!(target: "audit", event = "webhook_replayed", elsewhere = seen_elsewhere, "CMS webhook delivery seen before: not acted on again");
            return json_reply(200, json!({ "duplicate": true }));
        }
        cache.purge(&purge, "webhook");
        json_reply(
            200,
            json!({ "purged": { "model": purge.model, "id": purge.id, "stage": purge.stage } }),
        )
    }

    fn webhook_refused(&self, reason: &'static str) -> Response<Vec<u8>> {
        self.metrics
            .webhook_rejections
            .with_label_values(&[reason])
            .inc();
        tracing::info!(target: "audit", event = "webhook_refused", reason, "CMS webhook refused");
        error(401, reason)
    }
}

/// Verifies Hygraph's `gcms-signature: sign=<base64 HMAC-SHA256>, env=<environment>, t=<ms>`.
/// The signed message is the JSON `{"Body":"<raw body>","EnvironmentName":"<env>","TimeStamp":<t>}`;
/// a timestamp further than `tolerance` from now is a replay. Returns the verified MAC, the
/// delivery's identity.
pub fn verify_signature(
    header: &str,
    body: &[u8],
    secret: &[u8],
    tolerance: Duration,
    now: SystemTime,
) -> Result<[u8; 32], &'static str> {
    let mut sign = None;
    let mut env = None;
    let mut t = None;
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or("malformed gcms-signature")?;
        match k.trim() {
            "sign" => sign = Some(v.trim()),
            "env" => env = Some(v.trim()),
            "t" => t = Some(v.trim()),
            _ => {}
        }
    }
    let (sign, env, t) = match (sign, env, t) {
        (Some(s), Some(e), Some(t)) => (s, e, t),
        _ => return Err("malformed gcms-signature"),
    };
    let t_ms: u64 = t.parse().map_err(|_| "malformed gcms-signature")?;
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if now_ms.abs_diff(t_ms) > tolerance.as_millis() as u64 {
        return Err("signature timestamp outside the replay window");
    }
    let body = std::str::from_utf8(body).map_err(|_| "body is not UTF-8")?;
    // serde_json writes object keys sorted, which is the order Hygraph signs them in.
    let message = json!({ "Body": body, "EnvironmentName": env, "TimeStamp": t_ms }).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| "bad secret")?;
    mac.update(message.as_bytes());
    let mac: [u8; 32] = mac.finalize().into_bytes().into();
    let expected = base64::engine::general_purpose::STANDARD.encode(mac);
    if expected.as_bytes().ct_eq(sign.as_bytes()).unwrap_u8() == 1 {
        Ok(mac)
    } else {
        Err("bad signature")
    }
}

/// Signs like Hygraph does (tests and tools).
#[allow(clippy::expect_used)] // HMAC-SHA256 takes a key of any length
pub fn sign_webhook(body: &str, env: &str, t_ms: u64, secret: &[u8]) -> String {
    let message = json!({ "Body": body, "EnvironmentName": env, "TimeStamp": t_ms }).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    let sign = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("sign={sign}, env={env}, t={t_ms}")
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let post = session.req_header().method == http::Method::POST;
        match (path.as_str(), post) {
            ("/metrics", false) => {
                if let Some(c) = &self.cache {
                    // moka counts lazily: settle pending work so the gauges are exact.
                    c.run_pending_tasks().await;
                }
                reply(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
            ("/healthz", false) => reply(200, "text/plain", b"ok\n".to_vec()),
            ("/readyz", false) => {
                let synced = self.cluster.as_ref().is_none_or(|c| c.synced());
                if !synced {
                    reply(
                        503,
                        "text/plain",
                        b"not ready: no policy set applied from Redis yet\n".to_vec(),
                    )
                } else if self.health.is_ready() {
                    let body = format!(
                        "ready: policy generation {}\n",
                        self.store.snapshot().generation
                    );
                    reply(200, "text/plain", body.into_bytes())
                } else {
                    reply(503, "text/plain", b"not ready\n".to_vec())
                }
            }
            ("/admin/purge", true) => self.purge(session).await,
            ("/webhooks/cms", true) => self.webhook(session).await,
            (p, _) if p.starts_with("/admin/api/") => self.management_api(session).await,
            (p, _) if p == "/console" || p.starts_with("/console/") => {
                let p = p.to_string();
                self.console(session, &p).await
            }
            _ => reply(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signatures() {
        let now = SystemTime::now();
        let t = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let body =
            r#"{"operation":"publish","data":{"__typename":"Post","id":"p1","stage":"PUBLISHED"}}"#;
        let header = sign_webhook(body, "master", t, b"secret");
        let tol = Duration::from_secs(300);
        assert_eq!(
            verify_signature(&header, body.as_bytes(), b"secret", tol, now).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            verify_signature(&header, body.as_bytes(), b"other", tol, now),
            Err("bad signature")
        );
        assert_eq!(
            verify_signature(&header, b"{}", b"secret", tol, now),
            Err("bad signature")
        );
        let old = sign_webhook(body, "master", t - 600_000, b"secret");
        assert_eq!(
            verify_signature(&old, body.as_bytes(), b"secret", tol, now),
            Err("signature timestamp outside the replay window")
        );
        assert!(verify_signature("garbage", body.as_bytes(), b"secret", tol, now).is_err());
    }
}
