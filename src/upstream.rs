//! The gateway's own client to the upstream, for what it fetches itself rather than proxies:
//! cache fills (in their own task, so coalesced waiters never depend on one client's
//! connection) and the start-up introspection query. It uses Pingora's connector and keep-alive
//! pool, so TLS, SNI and timeouts behave exactly as for proxied requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::http_req_header_to_wire;
pub use pingora::protocols::http::v1::client::HttpSession as H1Session;
use pingora::upstreams::peer::HttpPeer;
use tokio::io::AsyncWriteExt;

use crate::config::{Credential, Upstream};

/// A complete upstream response.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub header: ResponseHeader,
    pub body: Bytes,
}

/// Why an upstream exchange failed — for pass-through and cache fills alike (closed set: the
/// `kind` label of `contentgate_upstream_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    Tls,
    /// The connection closed or failed mid-exchange.
    Reset,
    /// Anything else Pingora reports (a malformed answer, an h2 error, a body too large).
    Protocol,
    /// Concurrent fills already buffer all the bytes they may (`[cache] fill_buffer_bytes`).
    Busy,
}

/// The Pingora error type for the gateway's own whole-response deadline.
pub const UPSTREAM_DEADLINE: &str = "upstream total timeout";

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Reset => "reset",
            Self::Protocol => "protocol",
            Self::Busy => "busy",
        }
    }

    pub fn is_timeout(self) -> bool {
        self == Self::Timeout
    }

    /// The failure a Pingora error stands for.
    pub fn of(e: &pingora::Error) -> Self {
        use pingora::ErrorType::*;
        match e.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => Self::Timeout,
            Custom(c) if *c == UPSTREAM_DEADLINE => Self::Timeout,
            TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup => Self::Tls,
            ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError => {
                Self::Connect
            }
            ConnectionClosed | ReadError | WriteError => Self::Reset,
            _ => Self::Protocol,
        }
    }
}

/// One upstream request as the gateway sends it — built once from an admitted request
/// (`proxy::forward`) and used by the pass-through (applied to Pingora's request header) and
/// by cache fills (sent by [`UpstreamClient`]). `headers` are the gateway's own: credential,
/// content type, checked context headers, request id; `host` and `content-length` are added
/// when sent.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: &'static str,
    /// Path and query, absolute (`/v2/project/master?query=…`).
    pub path: String,
    pub headers: Vec<(&'static str, http::HeaderValue)>,
    pub body: Option<Bytes>,
}

impl UpstreamRequest {
    /// The request header the upstream receives, built fresh: `kept` (the client's allow-listed
    /// headers for the pass-through, nothing for a fill), then this request's target, `host`,
    /// the gateway's own headers (replacing any kept copy) and the body's framing
    /// (`content-length`, never `transfer-encoding`). The one place both paths shape it.
    pub fn header<'a>(
        &self,
        upstream: &Upstream,
        kept: impl Iterator<Item = (&'a http::HeaderName, &'a http::HeaderValue)>,
    ) -> pingora::Result<RequestHeader> {
        // No case map: header names go out lowercase, one map per message instead of two.
        let mut h = RequestHeader::build_no_case(
            self.method,
            self.path.as_bytes(),
            Some(self.headers.len() + 8),
        )?;
        for (name, value) in kept {
            h.append_header(name.clone(), value.clone())?;
        }
        h.insert_header(http::header::HOST, upstream.host_header.clone())?;
        for (name, value) in &self.headers {
            h.insert_header(*name, value.clone())?;
        }
        h.remove_header(&http::header::TRANSFER_ENCODING);
        match &self.body {
            Some(body) => h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?,
            None => {
                h.remove_header(&http::header::CONTENT_LENGTH);
            }
        }
        Ok(h)
    }
}

/// Records one upstream exchange: latency by endpoint kind, and the failure or the 5xx/429
/// status that counts as an upstream error. The one recorder for pass-through and fills.
pub fn record(
    metrics: &crate::metrics::Metrics,
    endpoint_kind: &str,
    elapsed: Duration,
    outcome: Result<u16, Failure>,
) {
    match outcome {
        Ok(status) => {
            metrics
                .upstream_duration
                .with_label_values(&[endpoint_kind])
                .observe(elapsed.as_secs_f64());
            if status >= 500 || status == 429 {
                metrics.upstream_errors.with_label_values(&["status"]).inc();
            }
        }
        Err(f) => metrics
            .upstream_errors
            .with_label_values(&[f.as_str()])
            .inc(),
    }
}

pub struct UpstreamClient {
    connector: Connector,
    /// Bytes every fetch buffers, together: a fetch that would pass it fails (`Busy`) instead of
    /// growing, so many concurrent large fills cannot exhaust memory.
    buffered: std::sync::atomic::AtomicUsize,
    buffer_limit: usize,
}

/// Bytes a fetch holds of the shared buffer budget, given back when it is dropped.
struct Held<'a> {
    client: &'a UpstreamClient,
    bytes: usize,
}

impl Held<'_> {
    fn grow(&mut self, n: usize) -> bool {
        use std::sync::atomic::Ordering;
        let limit = self.client.buffer_limit;
        let ok = self
            .client
            .buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|t| *t <= limit)
            })
            .is_ok();
        if ok {
            self.bytes += n;
        }
        ok
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.client
            .buffered
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Default for UpstreamClient {
    fn default() -> Self {
        Self::new()
    }
}

impl UpstreamClient {
    pub fn new() -> Self {
        Self {
            connector: Connector::new(None),
            buffered: Default::default(),
            buffer_limit: usize::MAX,
        }
    }

    /// Bytes currently buffered by fetches in flight.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A client with the server's upstream TLS settings (CA file).
    pub fn for_config(config: &crate::config::Config) -> Self {
        let conf = crate::config::server_conf(config);
        Self {
            connector: Connector::new(Some(
                pingora::connectors::ConnectorOptions::from_server_conf(&conf),
            )),
            buffered: Default::default(),
            buffer_limit: config.cache.fill_buffer_bytes,
        }
    }

    /// Sends one request and reads the whole response within `deadline`, at most `max_body`
    /// bytes of body. The connection goes back to the pool only after a complete exchange.
    pub async fn fetch(
        &self,
        upstream: &Upstream,
        req: &UpstreamRequest,
        deadline: Duration,
        max_body: usize,
    ) -> Result<Fetched, Failure> {
        match tokio::time::timeout(deadline, self.exchange(upstream, req, max_body)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// THE upstream request path, for the pass-through and for fills: `header` and `body`
    /// serialized into one buffer and written with one write on a pooled HTTP/1.1 connection
    /// (Pingora's connector: TLS, SNI, the keep-alive pool), then the response header read (1xx
    /// skipped). Each read and write waits at most the upstream's `read_timeout`; the caller
    /// bounds the whole exchange. A pooled connection that fails before anything was answered is
    /// tried once more when `retry_stale` (never for a mutation: it may have run).
    pub async fn send(
        &self,
        upstream: &Upstream,
        header: &RequestHeader,
        body: Option<&[u8]>,
        retry_stale: bool,
    ) -> pingora::Result<H1Session> {
        let peer = &*upstream.peer();
        let mut wire = http_req_header_to_wire(header).ok_or_else(|| {
            pingora::Error::explain(
                pingora::ErrorType::InvalidHTTPHeader,
                "the upstream request line has a forbidden byte",
            )
        })?;
        if let Some(b) = body {
            wire.extend_from_slice(b);
        }
        let (session, reused) = self.connector.get_http_session(peer).await?;
        match self.send_on(session, upstream, &wire).await {
            Err(e) if reused && retry_stale && stale_connection(&e) => {
                let (session, _) = self.connector.get_http_session(peer).await?;
                self.send_on(session, upstream, &wire).await
            }
            r => r,
        }
    }

    async fn send_on(
        &self,
        session: HttpSession,
        upstream: &Upstream,
        wire: &[u8],
    ) -> pingora::Result<H1Session> {
        let HttpSession::H1(h1) = session else {
            return Err(pingora::Error::explain(
                pingora::ErrorType::InternalError,
                "the upstream connection is not HTTP/1.1",
            ));
        };
        let mut stream = h1.into_inner();
        let timeout = upstream.timeouts.read;
        let write = async {
            stream.write_all(wire).await?;
            stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(pingora::Error::because(
                    pingora::ErrorType::WriteError,
                    "writing the upstream request",
                    e,
                ))
            }
            Err(_) => {
                return Err(pingora::Error::explain(
                    pingora::ErrorType::WriteTimedout,
                    "writing the upstream request",
                ))
            }
        }
        let mut h1 = H1Session::new_with_options(stream, &*upstream.peer());
        h1.read_timeout = Some(timeout);
        h1.write_timeout = Some(timeout);
        loop {
            h1.read_response().await?;
            // An informational answer (100, 102, 103) is not the answer; a 101 to a request
            // that asked for no upgrade is a broken upstream.
            match h1.get_status().map(|s| s.as_u16()) {
                Some(101) => {
                    return Err(pingora::Error::explain(
                        pingora::ErrorType::InvalidHTTPHeader,
                        "the upstream switched protocols unasked",
                    ))
                }
                Some(100..=199) => continue,
                _ => return Ok(h1),
            }
        }
    }

    /// Gives a connection whose answer was read whole back to the pool.
    pub async fn release(&self, upstream: &Upstream, session: H1Session) {
        self.connector
            .release_http_session(
                HttpSession::H1(session),
                &*upstream.peer(),
                Some(upstream.timeouts.idle),
            )
            .await;
    }

    async fn exchange(
        &self,
        upstream: &Upstream,
        req: &UpstreamRequest,
        max_body: usize,
    ) -> Result<Fetched, Failure> {
        // A fill sends nothing but what `req` sets.
        let header = req
            .header(upstream, std::iter::empty())
            .map_err(|_| Failure::Protocol)?;
        let mut session = self
            .send(upstream, &header, req.body.as_deref(), true)
            .await
            .map_err(|e| Failure::of(&e))?;
        let header = session.resp_header().cloned().ok_or(Failure::Reset)?;
        let mut body = BytesMut::new();
        let mut held = Held {
            client: self,
            bytes: 0,
        };
        while let Some(chunk) = session
            .read_body_bytes()
            .await
            .map_err(|e| Failure::of(&e))?
        {
            if body.len() + chunk.len() > max_body {
                return Err(Failure::Protocol);
            }
            if !held.grow(chunk.len()) {
                return Err(Failure::Busy);
            }
            body.extend_from_slice(&chunk);
        }
        self.release(upstream, session).await;
        // Grown by doubling, the buffer may hold up to twice the body; the cache weighs an entry
        // by its length, so the buffer is shrunk to the body first (in place where the
        // allocator can: no second copy of the body while it is held).
        let mut body = Vec::from(body);
        body.shrink_to_fit();
        Ok(Fetched {
            header,
            body: Bytes::from(body),
        })
    }
}

/// A pooled connection the upstream closed while it idled: the request can go again on another
/// (nothing of it was processed).
fn stale_connection(e: &pingora::Error) -> bool {
    use pingora::ErrorType::*;
    matches!(
        e.etype(),
        ConnectionClosed | WriteError | ReadError | H1Error
    )
}

/// Why a query the gateway sends itself failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QueryError {
    #[error("cannot start a runtime: {0}")]
    Runtime(String),
    #[error("{} error", .0.as_str())]
    Exchange(Failure),
    #[error("the upstream answered HTTP {0}")]
    Status(u16),
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    #[error("the query failed: {0}")]
    GraphqlErrors(String),
    #[error("the answer has no data")]
    NoData,
}

/// Sends one GraphQL query to the upstream and returns its `data` (blocking; used before the
/// server runs, e.g. to introspect the schema).
pub fn query_data(upstream: &Upstream, query: &str) -> Result<serde_json::Value, QueryError> {
    let body = Bytes::from(serde_json::json!({ "query": query }).to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| QueryError::Runtime(e.to_string()))?;
    let client = UpstreamClient::new();
    let mut headers = vec![(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    )];
    if let Credential::Replace(token) = &upstream.credential {
        headers.push(("authorization", token.clone()));
    }
    let req = UpstreamRequest {
        method: "POST",
        path: upstream.path.clone(),
        headers,
        body: Some(body),
    };
    let fetched = rt
        .block_on(client.fetch(upstream, &req, upstream.timeouts.total, 64 * 1024 * 1024))
        .map_err(QueryError::Exchange)?;
    let status = fetched.header.status.as_u16();
    if status != 200 {
        return Err(QueryError::Status(status));
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(&fetched.body).map_err(|e| QueryError::NotJson(e.to_string()))?;
    if let Some(errors) = value.get("errors") {
        return Err(QueryError::GraphqlErrors(errors.to_string()));
    }
    value
        .get_mut("data")
        .map(serde_json::Value::take)
        .ok_or(QueryError::NoData)
}

/// The live part of an upstream: the peer requests are sent to, and its re-resolution.
impl Upstream {
    pub fn peer(&self) -> Arc<HttpPeer> {
        self.peer.load_full()
    }

    /// Re-resolves the host; swaps in a peer for a new address. Returns the new address when it
    /// changed. A failed lookup keeps the current peer.
    pub async fn refresh(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let mut addrs = tokio::net::lookup_host((host, self.port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let addr = addrs
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        let current = self.peer.load();
        if current._address.as_inet().is_some_and(|a| *a == addr) {
            return Ok(None);
        }
        let mut peer = HttpPeer::new(addr, self.tls, self.host.clone());
        peer.options = current.options.clone();
        self.peer.store(Arc::new(peer));
        Ok(Some(addr))
    }
}

/// Re-resolves every upstream host on its `resolve_interval`, so a CDN-fronted CMS whose
/// addresses rotate keeps being reached without a restart.
pub struct DnsRefresher {
    pub upstreams: Vec<std::sync::Arc<Upstream>>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for DnsRefresher {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(every) = self.upstreams.iter().map(|u| u.resolve_interval).min() else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    for u in &self.upstreams {
                        match u.refresh().await {
                            Ok(Some(addr)) => tracing::info!(upstream = %u.name, %addr, "upstream address changed"),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(upstream = %u.name, error = %e, "upstream re-resolution failed; keeping the current address"),
                        }
                    }
                }
            }
        }
    }
}
