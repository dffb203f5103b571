//! The typed per-request context: what the hooks decided, grouped, no string-keyed maps.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Endpoint, EndpointKind};
use crate::policy::Snapshot;

/// An admitted request, as every later hook needs it: where it goes, the snapshot it was
/// decided against (used to its end), and the decision.
pub struct Admitted {
    pub endpoint: std::sync::Arc<Endpoint>,
    pub snapshot: Arc<Snapshot>,
    pub decision: crate::pipeline::Admitted,
}

impl std::ops::Deref for Admitted {
    type Target = crate::pipeline::Admitted;
    fn deref(&self) -> &Self::Target {
        &self.decision
    }
}

/// Cache result label for the access log and metrics (closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Not served from, nor stored into, a cache.
    Bypass,
    Hit,
    Miss,
    Stale,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bypass => "BYPASS",
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
        }
    }
}

pub struct RequestCtx {
    pub started: Instant,
    pub request_id: String,
    /// The endpoint kind, once routed (refusals before admission are labelled by it too).
    pub kind: Option<EndpointKind>,
    pub admitted: Option<Admitted>,
    /// The body's share of the process's buffered-body budget: given back once the checked
    /// request is on its way (or the request ends).
    pub body_permit: Option<super::body::BodyPermit>,
    pub cache: CacheStatus,
    /// Status the gateway answered with itself (refusals, upstream failures).
    pub own_status: Option<u16>,
    pub upstream_started: Option<Instant>,
    /// How long the upstream took: to its answer header (pass-through), or to the whole
    /// answer (a fill, or a coalesced wait for one). The access line's `upstream_ms`; without
    /// it (the upstream failed) the time since `upstream_started`.
    pub upstream_header: Option<std::time::Duration>,
    pub refusal_reason: Option<&'static str>,
    /// The client address (the peer, or from X-Forwarded-For behind a trusted proxy).
    pub client_ip: Option<std::net::IpAddr>,
    /// The media type the client asked for (`Accept`).
    pub media: super::respond::Media,
    /// The request's Origin when the endpoint's CORS policy allows it: echoed on the response.
    pub cors: Option<(String, std::sync::Arc<crate::config::Cors>)>,
}

impl RequestCtx {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            request_id: uuid::Uuid::new_v4().simple().to_string(),
            kind: None,
            admitted: None,
            body_permit: None,
            cache: CacheStatus::Bypass,
            own_status: None,
            upstream_started: None,
            upstream_header: None,
            refusal_reason: None,
            client_ip: None,
            cors: None,
            media: super::respond::Media::Json,
        }
    }

    /// The access log line and the request metrics, once the request is done.
    pub fn record(
        &self,
        metrics: &crate::metrics::Metrics,
        session: &pingora::proxy::Session,
        e: Option<&pingora::Error>,
    ) {
        let status = self
            .own_status
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let endpoint = self.endpoint_kind();
        metrics.requests.with(
            &[
                endpoint,
                crate::metrics::status_class(status),
                self.cache.as_str(),
            ],
            |c| c.inc(),
        );
        let elapsed = self.started.elapsed();
        metrics
            .request_duration
            .with(&[endpoint], |h| h.observe(elapsed.as_secs_f64()));
        let upstream_ms = self
            .upstream_header
            .or_else(|| self.upstream_started.map(|s| s.elapsed()))
            .map(|d| d.as_secs_f64() * 1000.0);
        let (principal, jti, op_type, op_name, stage) = match &self.admitted {
            Some(a) => (
                a.principal.name(),
                a.principal.jti(),
                Some(a.operation().kind.as_str()),
                a.operation().name.as_deref(),
                Some(a.stage.primary().as_str()),
            ),
            None => ("-", None, None, None, None),
        };
        crate::telemetry::access(&crate::telemetry::AccessLine {
            request_id: &self.request_id,
            endpoint,
            method: session.req_header().method.as_str(),
            principal,
            jti,
            operation_type: op_type,
            // Client-chosen and unbounded by the parser: clipped (the others are ours or the
            // operator's, or bounded by the header limit).
            operation_name: op_name.map(crate::telemetry::clip),
            stage,
            cache: self.cache.as_str(),
            status,
            refusal: self.refusal_reason,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            upstream_ms,
            error: e.map(|e| e.etype().as_str()),
        });
    }

    pub fn endpoint_kind(&self) -> &'static str {
        self.kind.map(EndpointKind::as_str).unwrap_or("none")
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a JSON object has a top-level `"errors"` key, decided as the bytes stream past, in
/// constant memory (a depth counter, a string state, and the last top-level key so far, capped
/// at 8 bytes since only `errors` matters). Used to purge only after a mutation the CMS really
/// performed: a 200 whose body carries `errors` changed nothing.
#[derive(Debug, Default)]
pub struct TopLevelErrors {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Inside a top-level key string: its bytes so far (only the first 8 kept).
    key: Option<Vec<u8>>,
    /// The last top-level string was `errors` and a `:` may follow.
    candidate: bool,
    pub found: bool,
}

impl TopLevelErrors {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.found {
                return;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if let Some(k) = self.key.take() {
                        self.candidate = k == b"errors";
                    }
                    continue;
                }
                if let Some(k) = &mut self.key {
                    if k.len() < 8 {
                        k.push(b);
                    }
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    // A string directly inside the top-level object may be a key.
                    self.key = (self.depth == 1).then(Vec::new);
                    self.candidate = false;
                }
                b':' if self.depth == 1 && self.candidate => self.found = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    self.candidate = false;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.candidate = false;
                }
                b' ' | b'\n' | b'\r' | b'\t' => {}
                _ => self.candidate = false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TopLevelErrors;

    fn scan(chunks: &[&str]) -> bool {
        let mut s = TopLevelErrors::default();
        for c in chunks {
            s.feed(c.as_bytes());
        }
        s.found
    }

    #[test]
    fn finds_only_a_top_level_errors_key_across_chunk_boundaries() {
        assert!(scan(&[r#"{"data":null,"errors":[{"message":"x"}]}"#]));
        assert!(scan(&[r#"{"data":null,"err"#, r#"ors" : []}"#]));
        assert!(!scan(&[r#"{"data":{"errors":1}}"#]));
        assert!(!scan(&[r#"{"data":{"title":"errors"}}"#]));
        assert!(!scan(&[r#"{"data":{"a":["errors"]},"x":"\"errors\":"}"#]));
        assert!(!scan(&[r#"{"errorsX":1}"#]));
    }
}
