//! The typed per-request context: what the hooks decided, grouped, no string-keyed maps.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::{Endpoint, EndpointKind};
use crate::pipeline::Admitted;
use crate::policy::Snapshot;

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
    pub endpoint: Option<Endpoint>,
    /// The snapshot taken at the start of the request and used to its end.
    pub snapshot: Option<Arc<Snapshot>>,
    pub admitted: Option<Admitted>,
    /// The complete request body (POST), replayed to the upstream.
    pub body: Option<Bytes>,
    pub body_sent: bool,
    pub cache: CacheStatus,
    /// Status the gateway answered with itself (refusals, upstream failures).
    pub own_status: Option<u16>,
    pub upstream_started: Option<Instant>,
    pub upstream_deadline: Option<Instant>,
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
            endpoint: None,
            snapshot: None,
            admitted: None,
            body: None,
            body_sent: false,
            cache: CacheStatus::Bypass,
            own_status: None,
            upstream_started: None,
            upstream_deadline: None,
            refusal_reason: None,
            client_ip: None,
            cors: None,
            media: super::respond::Media::Json,
        }
    }

    pub fn endpoint_kind(&self) -> &'static str {
        self.endpoint
            .as_ref()
            .map(|e| e.kind.as_str())
            .unwrap_or("none")
    }

    pub fn kind(&self) -> Option<EndpointKind> {
        self.endpoint.as_ref().map(|e| e.kind)
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
