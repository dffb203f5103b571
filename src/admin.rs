//! The admin listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! Separate from the proxy listener so it can be firewalled to the monitoring network and so
//! health checks never compete with, or depend on, content traffic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;

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
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .expect("static response parts are valid")
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/metrics" => reply(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/healthz" => reply(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                if self.health.is_ready() {
                    let body = format!(
                        "ready: policy generation {}\n",
                        self.store.snapshot().generation
                    );
                    reply(200, "text/plain", body.into_bytes())
                } else {
                    reply(503, "text/plain", b"not ready\n".to_vec())
                }
            }
            _ => reply(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}
