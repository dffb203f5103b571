//! The validated gateway configuration.
//!
//! `gateway.toml` is parsed into [`file::FileConfig`] and compiled here into types that cannot
//! hold an invalid state: resolved socket addresses, parsed upstream URLs, durations with units,
//! known endpoint kinds. Compilation collects every error it finds so an operator fixes them all
//! in one pass (`contentgate check`).

pub mod compile;
pub mod error;
pub mod file;
pub mod secret;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;

pub use error::{ConfigError, ConfigErrors, Source};
use file::FileConfig;

use crate::stage::Cms;

/// Pingora waits 300 s by default after SIGTERM; Kubernetes kills the pod after 30 s. The
/// grace plus the shutdown timeout must fit inside `terminationGracePeriodSeconds` minus the
/// preStop sleep (see deploy/).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(15);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pingora's default. On 2 cores neither mode was a clear win (benches/README.md, "Scaling").
pub const DEFAULT_WORK_STEALING: bool = true;
/// Larger bodies are refused (413) before they are read: CMS mutations with rich text or many
/// localizations routinely pass 64 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Request bodies the process holds at once by default: 128 bodies of the default largest size.
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: usize = 256 * 1024 * 1024;
/// The largest `limits.max_body_bytes` accepted: a body is read whole, checked, re-serialized
/// and sent in one write, so each one in flight is held about twice.
pub const MAX_FORWARDED_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The largest `[cache] l2_max_entry_bytes` accepted: an entry is read whole from Redis on a
/// miss, within one command timeout.
pub const MAX_L2_ENTRY_BYTES: usize = 8 * 1024 * 1024;
/// Nesting of a document, counted across fragment spreads; every walk over a document recurses
/// at most this deep.
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// The largest `max_depth` accepted: the walks' stack frames times this stays well inside a
/// worker thread's 2 MiB stack (measured in tests/resources.rs with the debug build).
pub const MAX_MAX_DEPTH: usize = 128;
/// Log lines held for the writer thread: at 60 000 access lines a second (~350 bytes each), a
/// log pipe may stall ~0.2 s before lines are dropped. The memory held is at most twice this.
pub const DEFAULT_LOG_BUFFER_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_LOG_BUFFER_BYTES: usize = 256 * 1024 * 1024;
/// The smallest `buffer_bytes` other than 0: one batch of the writer thread (64 KiB).
pub const MIN_LOG_BUFFER_BYTES: usize = 64 * 1024;
/// How often held log lines are written: `kubectl logs -f` sees a line within this.
pub const DEFAULT_LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Refused requests per client address (per second, burst) before it is refused up front.
pub const DEFAULT_REFUSED_PER_IP: (u32, u32) = (100, 1_000);
/// Parsed documents kept for repeated requests, in bytes (weighed per entry, admitted only).
pub const DEFAULT_DOCUMENT_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// A 16 KiB downstream write buffer lets a typical JSON response leave in one `send()` instead of
/// Pingora's default 1460-byte chunks (measured: +26% cache-hit throughput on this hardware).
pub const DEFAULT_WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Pingora's default downstream read buffer is 64 KiB per connection, allocated at accept: 400
/// half-sent request headers cost 118 KiB each (measured, tests/faults.rs). GraphQL requests are
/// small; 16 KiB holds a typical one in one read and brings the cost to about a third.
pub const DEFAULT_READ_BUFFER_BYTES: usize = 16 * 1024;

/// What an endpoint is for; decides which checks and paths a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// Reads and writes, permission-checked, never cached.
    Content,
    /// The high-performance read path: queries only (mutations get 405).
    Cdn,
    /// The CMS management API, checked against management permissions.
    Management,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Content => "content",
            Self::Cdn => "cdn",
            Self::Management => "management",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "content" => Some(Self::Content),
            "cdn" => Some(Self::Cdn),
            "management" => Some(Self::Management),
            _ => None,
        }
    }
}

/// How the gateway authenticates itself to the upstream.
#[derive(Clone)]
pub enum Credential {
    /// Drop the client's Authorization and send the gateway's service token.
    Replace(HeaderValue),
    /// Pass the client's Authorization through unchanged.
    Forward,
}

impl std::fmt::Debug for Credential {
    // The service token is a secret: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Replace(_) => f.write_str("Replace(<redacted>)"),
            Self::Forward => f.write_str("Forward"),
        }
    }
}

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub tls: bool,
    /// `host[:port]` as the upstream expects it in the Host header.
    pub host_header: HeaderValue,
    /// Path (and query) of the upstream URL; every request goes to this one GraphQL endpoint.
    pub path: String,
    pub timeouts: UpstreamTimeouts,
    pub credential: Credential,
    /// Host and port to re-resolve: CDN-fronted CMS addresses rotate.
    pub host: String,
    pub port: u16,
    pub resolve_interval: Duration,
    /// Built once per resolution (address, TLS, timeouts) and cloned per request; re-resolved
    /// by `upstream::DnsRefresher` (the live part of an upstream lives in `upstream`).
    pub(crate) peer: arc_swap::ArcSwap<HttpPeer>,
}

#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// Between two reads from the upstream (Pingora's `read_timeout` is per read).
    pub read: Duration,
    /// Whole response, enforced by the gateway on top of the per-read timeout.
    pub total: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Path prefix, normalized without a trailing slash (`/content`).
    pub path: String,
    pub kind: EndpointKind,
    pub upstream: Arc<Upstream>,
    pub cors: Option<Arc<Cors>>,
    pub allow: Vec<ipnet::IpNet>,
    pub deny: Vec<ipnet::IpNet>,
}

impl Endpoint {
    /// Whether a client address may use this endpoint.
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
            && !self.deny.iter().any(|n| n.contains(&ip))
    }
}

/// CORS for one endpoint; preflights are answered at the edge.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Exact origins, or `*` for any (never with credentials).
    pub origins: Vec<String>,
    pub methods: String,
    pub headers: String,
    pub credentials: bool,
    pub max_age: String,
}

impl Cors {
    pub fn allows(&self, origin: &str) -> bool {
        self.origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: String,
    /// Certificate chain and private key files (PEM), reloaded when they change.
    pub tls: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    /// `false`: one single-threaded runtime per thread, each with its own connections (nginx's
    /// worker model); `true`: one runtime whose threads steal each other's tasks.
    pub work_stealing: bool,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    /// Where Pingora keeps its pid file and upgrade socket; per instance, so two gateways on one
    /// machine (tests, blue/green) never collide in /tmp.
    pub runtime_dir: PathBuf,
    pub upstream_keepalive_pool_size: usize,
    pub write_buffer_bytes: usize,
    pub read_buffer_bytes: usize,
    pub upstream_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Request-body bytes buffered by all requests in flight together.
    pub max_buffered_body_bytes: usize,
    pub max_query_tokens: usize,
    pub max_depth: usize,
    pub max_expanded_fields: u64,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    pub max_input_nodes: u64,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub client_header_timeout: Duration,
    pub client_body_timeout: Duration,
    pub client_send_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub json: bool,
    /// Bytes of lines the writer thread may hold (`[log] buffer_bytes`); 0: each line is written
    /// on the request thread.
    pub buffer_bytes: usize,
    /// How often the writer thread writes what it holds (`[log] flush_interval`).
    pub flush_interval: Duration,
}

/// `[cms]`: the stages and locales of the project (DRAFT/PUBLISHED and `en` when absent).
pub fn cms_from_file(f: &file::FileCms) -> Result<Cms, String> {
    Cms::new(
        compile::names_or(f.stages.clone(), &["DRAFT", "PUBLISHED"]),
        compile::names_or(f.locales.clone(), &["en"]),
        f.default_locale.clone(),
    )
}

/// The read-path cache (`[cache]`).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub enabled: bool,
    pub max_bytes: u64,
    pub max_entry_bytes: usize,
    /// Bytes all concurrent fills may buffer together.
    pub fill_buffer_bytes: usize,
    pub default_ttl: Duration,
    pub model_ttl: BTreeMap<String, Duration>,
    /// Longest stale-while-revalidate window (also the default; clients may ask for less or,
    /// up to this, more with `hyg-stale-while-revalidate`).
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub fetch_deadline: Duration,
    pub content_reads: bool,
    /// Second level in the cluster's Redis (`[cache] l2 = "redis"`).
    pub l2: bool,
    pub l2_max_entry_bytes: usize,
}

/// What an admin credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdminScope {
    Read,
    Write,
}

impl AdminScope {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminScope::Read => "read",
            AdminScope::Write => "write",
        }
    }
}

/// One named admin credential (the name is what the audit log records).
#[derive(Clone)]
pub struct AdminCredential {
    pub name: String,
    pub scope: AdminScope,
    pub secret: String,
}

/// Secrets of the admin listener.
#[derive(Clone, Default)]
pub struct AdminSecrets {
    pub purge_token: Option<String>,
    /// Management API and console credentials (the purge token among them as `admin`).
    pub credentials: Vec<AdminCredential>,
    /// Base URL of the proxy listener for the endpoints list.
    pub public_url: Option<String>,
    /// `[admin] read_only`: the management API and the console refuse every change.
    pub read_only: bool,
    pub webhook_secret: Option<String>,
    pub webhook_tolerance: Duration,
}

impl std::fmt::Debug for AdminSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSecrets")
            .field(
                "purge_token",
                &self.purge_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "credentials",
                &self
                    .credentials
                    .iter()
                    .map(|c| (&c.name, c.scope))
                    .collect::<Vec<_>>(),
            )
            .field("public_url", &self.public_url)
            .field("read_only", &self.read_only)
            .field("webhook_tolerance", &self.webhook_tolerance)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerSettings,
    pub listeners: Vec<Listener>,
    pub admin: Option<String>,
    /// Shared with each request routed to one (a request holds its endpoint without copying it).
    pub endpoints: Vec<Arc<Endpoint>>,
    pub policies_dir: PathBuf,
    pub poll_interval: Duration,
    pub limits: Limits,
    pub log: LogSettings,
    pub cache: CacheSettings,
    pub secrets: AdminSecrets,
    pub rate_limits: crate::ratelimit::RateSettings,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `[cluster]`: shared state through Redis; `None` for a gateway on its own.
    pub cluster: Option<ClusterSettings>,
}

/// What a replica does when it cannot confirm the policy version for `max_staleness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStale {
    /// Token requests get 503 `POLICY_STALE`; public requests go on.
    RefuseTokens,
    /// Everything goes on with the last good snapshot.
    Serve,
}

/// Redis Sentinel: where to ask for the master.
#[derive(Clone)]
pub struct SentinelSettings {
    pub sentinels: Vec<String>,
    pub master: String,
    /// The data nodes' password.
    pub password: Option<String>,
}

/// `[cluster]`, validated.
#[derive(Clone)]
pub struct ClusterSettings {
    /// The Redis URL, password included: never logged (see `Debug`). With Sentinel, the
    /// sentinels' first URL (the master is asked for at start and at every poll).
    pub url: String,
    pub sentinel: Option<SentinelSettings>,
    pub prefix: String,
    pub poll_interval: Duration,
    pub max_staleness: Duration,
    pub on_stale: OnStale,
    pub expected_replicas: u32,
    pub command_timeout: Duration,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("url", &redact_url(&self.url))
            .field(
                "sentinel",
                &self.sentinel.as_ref().map(|s| {
                    (
                        s.sentinels
                            .iter()
                            .map(|u| redact_url(u))
                            .collect::<Vec<_>>(),
                        &s.master,
                    )
                }),
            )
            .field("prefix", &self.prefix)
            .field("poll_interval", &self.poll_interval)
            .field("max_staleness", &self.max_staleness)
            .field("on_stale", &self.on_stale)
            .field("expected_replicas", &self.expected_replicas)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// A URL with its password (and a `pass=` query parameter) replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("REDACTED"));
            }
            if u.query().is_some_and(|q| q.contains("pass")) {
                u.set_query(Some("<redacted>"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable url>".to_string(),
    }
}

impl Config {
    /// Loads and validates `gateway.toml`. Relative paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = error::read_file(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let src = Source::new(path, text);
        let file: FileConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        compile::compile(&src, &base, file)
    }

    /// Only the `[cluster]` section of `path`, for the policy writers (CLI).
    pub fn cluster_settings(path: &Path) -> Result<Option<ClusterSettings>, ConfigErrors> {
        let text = error::read_file(path)?;
        let src = Source::new(path, &text);
        let file: FileConfig = toml::from_str(&text).map_err(|e| src.toml_error(&e))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        compile::cluster_only(&src, &base, &file)
    }

    /// The upstream introspected for the schema map: that of the first content or cdn endpoint.
    pub fn schema_upstream(&self) -> Option<&Upstream> {
        self.endpoints
            .iter()
            .find(|e| e.kind != EndpointKind::Management)
            .map(|e| e.upstream.as_ref())
    }

    /// The endpoint whose path prefix matches, longest prefix first.
    pub fn route(&self, path: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.iter().find(|e| path_matches(&e.path, path))
    }
}

/// `/cdn` matches `/cdn` and `/cdn/`, nothing below it: a GraphQL endpoint has one URL, and
/// answering `/cdn/x.css` would invite a shared cache in front to store an answer under a
/// static-looking name (web cache deception).
fn path_matches(endpoint: &str, path: &str) -> bool {
    match path.strip_prefix(endpoint) {
        Some(rest) => rest.is_empty() || (rest == "/" && endpoint != "/"),
        None => false,
    }
}

pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub fn server_conf(config: &Config) -> pingora::server::configuration::ServerConf {
    let s = &config.server;
    let _ = std::fs::create_dir_all(&s.runtime_dir);
    pingora::server::configuration::ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.as_secs()),
        pid_file: s.runtime_dir.join("contentgate.pid").display().to_string(),
        upgrade_sock: s.runtime_dir.join("upgrade.sock").display().to_string(),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        ca_file: s.upstream_ca_file.as_ref().map(|p| p.display().to_string()),
        ..Default::default()
    }
}
