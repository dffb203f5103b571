//! Wire types for `gateway.toml`: exactly what an operator writes, nothing more.
//!
//! Every table denies unknown fields, so a misspelled key is an error at start-up instead of a
//! silently ignored setting. These types are parsed, then compiled into [`super::Config`].

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: FileServer,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<FileListener>,
    pub admin: Option<FileAdmin>,
    #[serde(default, rename = "upstream")]
    pub upstreams: BTreeMap<String, FileUpstream>,
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<FileEndpoint>,
    #[serde(default)]
    pub auth: FileAuth,
    #[serde(default)]
    pub cms: FileCms,
    #[serde(default)]
    pub policies: FilePolicies,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub log: FileLog,
    #[serde(default)]
    pub cache: FileCache,
    #[serde(default)]
    pub rate_limits: FileRateLimits,
    #[serde(default)]
    pub network: FileNetwork,
    pub webhooks: Option<FileWebhooks>,
    /// Shared state through Redis for a set of replicas; absent: every replica is on its own.
    pub cluster: Option<FileCluster>,
}

/// `[cluster]`: the policy set, purges, webhook replays and rate limits shared through Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    /// `redis://host:port/db`, `rediss://…` (TLS) or `redis+unix:///path/to/socket`.
    pub redis: Option<Spanned<String>>,
    /// The same URL from the environment or a file (when it carries a password).
    pub redis_env: Option<String>,
    pub redis_file: Option<String>,
    /// Redis Sentinel instead of one address: the sentinels (`redis://host:26379`) and the
    /// name of the master they monitor; the replicas follow the master through failovers.
    #[serde(default)]
    pub sentinels: Vec<String>,
    pub sentinel_master: Option<String>,
    /// The password alone, added to `redis` (with Sentinel: the data nodes' password).
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    /// Prefix of every key and channel (several gateways can share one Redis).
    pub prefix: Option<String>,
    /// How often the policy version and the purge sequence are checked (pub/sub can drop).
    #[serde(default, with = "humantime_serde::option")]
    pub poll_interval: Option<Duration>,
    /// Past this without a confirmed policy version, `on_stale` applies.
    #[serde(default, with = "humantime_serde::option")]
    pub max_staleness: Option<Duration>,
    /// `refuse_tokens` (default: token requests get 503 POLICY_STALE) or `serve`.
    pub on_stale: Option<Spanned<String>>,
    /// Replicas the cluster's limits are divided by when Redis is unreachable.
    pub expected_replicas: Option<u32>,
    /// Every Redis command must answer within this (default 250 ms).
    #[serde(default, with = "humantime_serde::option")]
    pub command_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    pub enabled: Option<bool>,
    pub max_bytes: Option<u64>,
    pub max_entry_bytes: Option<usize>,
    /// Bytes all concurrent cache fills may buffer together (503 past it).
    pub fill_buffer_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde::option")]
    pub default_ttl: Option<Duration>,
    #[serde(default)]
    pub model_ttl: BTreeMap<String, FileDuration>,
    #[serde(default, with = "humantime_serde::option")]
    pub stale_while_revalidate: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub stale_if_error: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub fetch_deadline: Option<Duration>,
    /// Also cache reads on `content` endpoints (cdn endpoints are always cached).
    pub content_reads: Option<bool>,
    /// `"redis"`: a second level shared by the replicas of a `[cluster]`.
    pub l2: Option<Spanned<String>>,
    /// Largest answer written to the second level (default 256 KiB).
    pub l2_max_entry_bytes: Option<usize>,
}

/// A duration value in a map (`model_ttl = { Post = "30s" }`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(transparent)]
pub struct FileDuration(#[serde(with = "humantime_serde")] pub Duration);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWebhooks {
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    pub tolerance: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub threads: Option<usize>,
    pub work_stealing: Option<bool>,
    #[serde(default, with = "humantime_serde::option")]
    pub grace_period: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub shutdown_timeout: Option<Duration>,
    pub runtime_dir: Option<String>,
    pub upstream_keepalive_pool_size: Option<usize>,
    pub write_buffer_bytes: Option<usize>,
    pub read_buffer_bytes: Option<usize>,
    /// CA bundle (PEM) that upstream TLS certificates must chain to, instead of the system roots.
    pub upstream_ca_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub address: Spanned<String>,
    /// TLS termination (HTTP/2 and HTTP/1.1 by ALPN); absent: cleartext HTTP/1.1.
    pub tls: Option<FileTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub address: Spanned<String>,
    /// Bearer token for `POST /admin/purge` (from the environment or a file); also a
    /// write-scope credential named `admin` for the management API and the console.
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    /// Named credentials of the management API and the console, each with a scope.
    #[serde(default, rename = "credential")]
    pub credentials: Vec<FileAdminCredential>,
    /// The URL clients reach the proxy listener at (the endpoints list shows full URLs under
    /// it); default `http://<first listener address>`.
    pub public_url: Option<String>,
    /// The management API and the console only read (the policy is changed elsewhere: Git, a
    /// ConfigMap).
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdminCredential {
    pub name: String,
    /// `read` or `write`.
    pub scope: String,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    pub url: Spanned<String>,
    #[serde(default, with = "humantime_serde::option")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub total_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub idle_timeout: Option<Duration>,
    /// How often the upstream host is resolved again (default 30 s).
    #[serde(default, with = "humantime_serde::option")]
    pub resolve_interval: Option<Duration>,
    pub credential: Option<FileCredential>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCredential {
    pub mode: Spanned<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEndpoint {
    pub path: Spanned<String>,
    pub kind: Spanned<String>,
    pub upstream: Option<Spanned<String>>,
    pub cors: Option<FileCors>,
    /// Client networks (CIDR) allowed; empty: all.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Client networks (CIDR) refused; checked after `allow`.
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCors {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Option<Vec<String>>,
    pub allowed_headers: Option<Vec<String>>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default, with = "humantime_serde::option")]
    pub max_age: Option<Duration>,
}

/// A rate limit as written (`{ requests_per_second = 10, burst = 20 }`), in gateway.toml and in
/// a token's registry entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimit {
    pub requests_per_second: u32,
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimits {
    pub token_default: Option<FileRateLimit>,
    pub public_per_ip: Option<FileRateLimit>,
    /// The origin budget guard: uncached requests per second to the upstream.
    pub origin_requests_per_second: Option<u32>,
    pub origin_burst: Option<u32>,
    /// Refused requests per client address before it is answered 429 up front.
    pub refused_per_ip: Option<FileRateLimit>,
    /// Prefix length IPv6 clients are keyed by (default 64).
    pub ipv6_prefix: Option<u8>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNetwork {
    /// Proxies (CIDR) whose `X-Forwarded-For` is believed for the client address.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    #[serde(default)]
    pub issuers: Vec<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, with = "humantime_serde::option")]
    pub leeway: Option<Duration>,
    #[serde(default, rename = "key")]
    pub keys: Vec<FileKey>,
    pub jwks_file: Option<Spanned<String>>,
    pub verified_cache_entries: Option<u64>,
    /// The key the management API signs new token strings with.
    pub signing_key: Option<FileSigningKey>,
}

/// `[auth.signing_key]`: `kid` names one of the `[[auth.key]]` entries (so every minted string
/// verifies); an HMAC key signs with its own secret, an asymmetric one needs the private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSigningKey {
    pub kid: String,
    pub private_key_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKey {
    pub kid: Spanned<String>,
    pub algorithm: Spanned<String>,
    pub public_key_file: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCms {
    pub stages: Option<Vec<String>>,
    pub locales: Option<Vec<String>>,
    /// The CMS project's default locale (what it serves when a request names none); the first
    /// of `locales` when absent.
    pub default_locale: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePolicies {
    pub dir: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    pub poll_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_body_bytes: Option<usize>,
    /// Bytes of request bodies the whole process may hold at once (503 beyond).
    pub max_buffered_body_bytes: Option<usize>,
    pub max_query_tokens: Option<usize>,
    pub max_depth: Option<usize>,
    pub max_expanded_fields: Option<u64>,
    pub max_aliases: Option<usize>,
    pub max_root_fields: Option<usize>,
    /// JSON nodes of argument values walked per document (variables included).
    pub max_input_nodes: Option<u64>,
    /// Bytes of parsed documents kept for repeated requests (weighed per entry).
    pub document_cache_bytes: Option<u64>,
    /// Request header block (names + values), refused with 431 above it.
    pub max_header_bytes: Option<usize>,
    /// Request target (path + query), refused with 414 above it.
    pub max_uri_bytes: Option<usize>,
    /// A request header must arrive whole within this (from its first byte).
    #[serde(default, with = "humantime_serde::option")]
    pub client_header_timeout: Option<Duration>,
    /// A request body must arrive whole within this (408 after it).
    #[serde(default, with = "humantime_serde::option")]
    pub client_body_timeout: Option<Duration>,
    /// Each write to a client must complete within this (a client that stops reading).
    #[serde(default, with = "humantime_serde::option")]
    pub client_send_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    pub level: Option<String>,
    pub format: Option<String>,
    /// Bytes of log lines held for the writer thread; lines beyond are dropped and counted.
    pub buffer_bytes: Option<Spanned<usize>>,
    /// How often held lines are written ("100ms").
    pub flush_interval: Option<Spanned<String>>,
}
