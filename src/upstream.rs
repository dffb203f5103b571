//! The gateway's own client to the upstream, for every request it sends there: the
//! pass-through, cache fills (in their own task, so coalesced waiters never depend on one
//! client's connection) and the start-up introspection query. Connections are made by Pingora's
//! connector (TCP, TLS, SNI, connect timeouts); the HTTP/1.1 exchange and the keep-alive pool
//! are [`h1`]'s.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::TransportConnector;
use pingora::http::ResponseHeader;
use pingora::upstreams::peer::{HttpPeer, Peer};
use tokio::io::AsyncWriteExt;

pub mod h1;
pub use h1::Exchange;

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
    /// The request as it goes on the wire, header and body in one buffer, built fresh: the
    /// request line, `kept` (the client's allow-listed headers for the pass-through, nothing
    /// for a fill) except any the gateway sets itself, then `host`, the gateway's own headers
    /// and the body's framing (`content-length`, never `transfer-encoding`). The one place both
    /// paths shape it. Names go out in lower case.
    pub fn wire<'a>(
        &self,
        upstream: &Upstream,
        kept: impl Iterator<Item = (&'a http::HeaderName, &'a http::HeaderValue)>,
    ) -> pingora::Result<Vec<u8>> {
        // What Pingora's own writer refuses in a request target: it would end the line.
        if self
            .path
            .bytes()
            .any(|b| matches!(b, 0x00 | b'\n' | b'\r' | b' '))
        {
            return Err(pingora::Error::explain(
                pingora::ErrorType::InvalidHTTPHeader,
                "the upstream request line has a forbidden byte",
            ));
        }
        let body = self.body.as_deref().unwrap_or_default();
        let mut w = Vec::with_capacity(256 + self.path.len() + body.len());
        let line = |w: &mut Vec<u8>, name: &[u8], value: &[u8]| {
            w.extend_from_slice(name);
            w.extend_from_slice(b": ");
            w.extend_from_slice(value);
            w.extend_from_slice(b"\r\n");
        };
        w.extend_from_slice(self.method.as_bytes());
        w.push(b' ');
        w.extend_from_slice(self.path.as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in kept {
            let own = *name == http::header::HOST
                || *name == http::header::CONTENT_LENGTH
                || *name == http::header::TRANSFER_ENCODING
                || self.headers.iter().any(|(n, _)| name.as_str() == *n);
            if !own {
                line(&mut w, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        line(&mut w, b"host", upstream.host_header.as_bytes());
        for (name, value) in &self.headers {
            line(&mut w, name.as_bytes(), value.as_bytes());
        }
        if self.body.is_some() {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(w, "content-length: {}\r\n", body.len());
        }
        w.extend_from_slice(b"\r\n");
        w.extend_from_slice(body);
        Ok(w)
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
    connector: TransportConnector,
    /// Idle keep-alive connections.
    pool: h1::Pool,
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
            connector: TransportConnector::new(None),
            pool: h1::Pool::new(1024),
            buffered: Default::default(),
            buffer_limit: usize::MAX,
        }
    }

    /// Bytes currently buffered by fetches in flight.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Closes the idle connections past their upstream's `idle_timeout`; returns how many are
    /// left.
    pub fn sweep(&self) -> usize {
        self.pool.sweep()
    }

    /// A client with the server's upstream TLS settings (CA file) and keep-alive pool size.
    pub fn for_config(config: &crate::config::Config) -> Self {
        let conf = crate::config::server_conf(config);
        Self {
            connector: TransportConnector::new(Some(
                pingora::connectors::ConnectorOptions::from_server_conf(&conf),
            )),
            pool: h1::Pool::new(config.server.upstream_keepalive_pool_size),
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

    /// THE upstream request path, for the pass-through and for fills: the request's `wire`
    /// bytes (header and body, [`UpstreamRequest::wire`]) written with one write on a pooled
    /// HTTP/1.1 connection, then the answer's header read (1xx skipped). Each read and write
    /// waits at most the upstream's `read_timeout`; the caller bounds the whole exchange. A
    /// pooled connection that fails before anything was answered is tried once more when
    /// `retry_stale` (never for a mutation: it may have run).
    pub async fn send(
        &self,
        upstream: &Upstream,
        wire: &[u8],
        retry_stale: bool,
    ) -> pingora::Result<(ResponseHeader, Exchange)> {
        let peer = upstream.peer();
        let key = peer.reuse_hash();
        if let Some(stream) = self.pool.take(key) {
            match self.send_on(stream, key, upstream, wire).await {
                Err(e) if retry_stale && stale_connection(&e) => {}
                r => return r,
            }
        }
        let stream = self.connector.new_stream(&*peer).await?;
        // Peers offer only HTTP/1.1 in ALPN; a server that picked h2 anyway is refused rather
        // than spoken HTTP/1.1 to.
        if stream.selected_alpn_proto() == Some(pingora::protocols::ALPN::H2) {
            // Nothing was sent on it: a connect failure (a mutation is not taken as run).
            return Err(pingora::Error::explain(
                pingora::ErrorType::ConnectError,
                "the upstream connection is not HTTP/1.1",
            ));
        }
        self.send_on(stream, key, upstream, wire).await
    }

    async fn send_on(
        &self,
        mut stream: pingora::protocols::Stream,
        key: u64,
        upstream: &Upstream,
        wire: &[u8],
    ) -> pingora::Result<(ResponseHeader, Exchange)> {
        let timeout = upstream.timeouts.read;
        let write = async {
            stream.write_all(wire).await?;
            stream.flush().await
        };
        match pingora_timeout::timeout(timeout, write).await {
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
        Exchange::read_answer(stream, key, timeout).await
    }

    /// Gives a connection whose answer was read whole back to the pool, under the key it was
    /// taken for (one that cannot carry another request is closed).
    pub fn release(&self, upstream: &Upstream, exchange: Exchange) {
        if let Some((key, stream)) = exchange.into_reusable() {
            self.pool.put(key, stream, upstream.timeouts.idle);
        }
    }

    async fn exchange(
        &self,
        upstream: &Upstream,
        req: &UpstreamRequest,
        max_body: usize,
    ) -> Result<Fetched, Failure> {
        // A fill sends nothing but what `req` sets.
        let wire = req
            .wire(upstream, std::iter::empty())
            .map_err(|_| Failure::Protocol)?;
        let (header, mut answer) = self
            .send(upstream, &wire, true)
            .await
            .map_err(|e| Failure::of(&e))?;
        drop(wire);
        let mut body = BytesMut::new();
        let mut held = Held {
            client: self,
            bytes: 0,
        };
        while let Some(chunk) = answer
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
        self.release(upstream, answer);
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
/// addresses rotate keeps being reached without a restart; and closes, every second, the idle
/// upstream connections past their `idle_timeout`.
pub struct DnsRefresher {
    pub upstreams: Vec<std::sync::Arc<Upstream>>,
    /// Its idle connections past their `idle_timeout` are closed every second.
    pub client: Arc<UpstreamClient>,
    /// `contentgate_upstream_idle_connections`, set after each sweep.
    pub metrics: Arc<crate::metrics::Metrics>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for DnsRefresher {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        // The sweep has its own loop, so a slow lookup never delays it.
        let mut stop = shutdown.clone();
        let sweep = async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tick.tick() => {
                        let left = self.client.sweep();
                        self.metrics
                            .upstream_idle_connections
                            .set(i64::try_from(left).unwrap_or(i64::MAX));
                    }
                }
            }
        };
        tokio::join!(sweep, self.resolve(shutdown));
    }
}

impl DnsRefresher {
    async fn resolve(&self, mut shutdown: pingora::server::ShutdownWatch) {
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
