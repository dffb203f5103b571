//! gateway.toml → [`Config`]: one function per table, every error collected (file, line,
//! field) so a start-up lists them all; nothing here applies a half-valid config.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;

use super::file::{self, FileConfig};
use super::secret::SecretSource;
use super::*;

/// The whole file.
pub(super) fn compile(src: &Source, base: &Path, file: FileConfig) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    // `[cms]` and `[auth]` are compiled into the policy snapshot (they apply on reload); here
    // they are only checked, so a start-up reports their errors with the rest.
    if let Err(m) = cms_from_file(&file.cms) {
        errors.push(src.error(None, "cms", m));
    }
    let listeners = listeners(src, base, &file, &mut errors);
    let admin = admin(src, &file, &mut errors);
    let upstreams = upstreams(src, base, &file, &mut errors);
    let endpoints = endpoints(src, &file, &upstreams, &mut errors);
    let log = log(src, &file, &mut errors);
    let server = server(src, base, &file, &mut errors);
    let limits = limits(src, &file, &mut errors);
    let cache = cache(src, &file, &mut errors);
    let rate_limits = rate_limits(src, &file, &mut errors);
    let trusted_proxies = network(src, &file, &mut errors);
    let secrets = secrets(src, base, &file, &mut errors);
    let cluster = cluster(src, base, &file, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        path: src.path.to_path_buf(),
        server,
        listeners,
        admin,
        endpoints,
        policies_dir: resolve(base, file.policies.dir.as_deref().unwrap_or("policies")),
        poll_interval: file
            .policies
            .poll_interval
            .unwrap_or(Duration::from_secs(5)),
        limits,
        log,
        cache,
        secrets,
        rate_limits,
        trusted_proxies,
        cluster,
    })
}

/// `[cluster]` alone (writers need nothing else of gateway.toml, e.g. none of its secrets).
pub(super) fn cluster_only(
    src: &Source,
    base: &Path,
    file: &FileConfig,
) -> Result<Option<ClusterSettings>, ConfigErrors> {
    let mut errors = Vec::new();
    let c = cluster(src, base, file, &mut errors);
    if errors.is_empty() {
        Ok(c)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// A Redis URL, checked, with `password` added (as the URL's password, or `pass=` for a socket).
fn with_password(
    src: &Source,
    c: &file::FileCluster,
    url: &str,
    password: Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let span = c.redis.as_ref().map(|r| r.span());
    let mut url = match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix") => u,
        Ok(u) => {
            errors.push(src.error(
                span,
                "cluster.redis",
                format!(
                    "scheme {:?}: use redis://, rediss:// or redis+unix://",
                    u.scheme()
                ),
            ));
            return None;
        }
        Err(e) => {
            errors.push(src.error(span, "cluster.redis", format!("not a URL: {e}")));
            return None;
        }
    };
    if let Some(password) = password {
        if url.password().is_some() || url.query().is_some_and(|q| q.contains("pass=")) {
            errors.push(src.error(
                None,
                "cluster.password",
                "the URL already carries a password",
            ));
        } else if matches!(url.scheme(), "redis" | "rediss") {
            let _ = url.set_password(Some(&password));
        } else {
            url.query_pairs_mut().append_pair("pass", &password);
        }
    }
    Some(url.to_string())
}

/// `[cluster]`.
fn cluster(
    src: &Source,
    base: &Path,
    file: &FileConfig,
    errors: &mut Vec<ConfigError>,
) -> Option<ClusterSettings> {
    let c = file.cluster.as_ref()?;
    let read = |env: &Option<String>, path: &Option<String>, field: &str, errors: &mut Vec<_>| {
        secret_value(src, base, env, path, field, errors)
    };
    let from_secret = read(&c.redis_env, &c.redis_file, "cluster.redis", errors);
    let password = read(
        &c.password_env,
        &c.password_file,
        "cluster.password",
        errors,
    );
    let (url, sentinel) = match (&c.redis, from_secret, c.sentinels.is_empty()) {
        (None, None, false) => {
            let Some(master) = c.sentinel_master.clone().filter(|m| !m.is_empty()) else {
                errors.push(src.error(
                    None,
                    "cluster.sentinel_master",
                    "name the master the sentinels monitor",
                ));
                return None;
            };
            for u in &c.sentinels {
                if !url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "redis" | "rediss")) {
                    errors.push(src.error(
                        None,
                        "cluster.sentinels",
                        format!("{u:?}: give redis://host:port sentinel URLs"),
                    ));
                }
            }
            let sentinel = SentinelSettings {
                sentinels: c.sentinels.clone(),
                master,
                password,
            };
            (c.sentinels[0].clone(), Some(sentinel))
        }
        (Some(_), _, false) | (_, Some(_), false) => {
            errors.push(src.error(
                None,
                "cluster.sentinels",
                "give either redis (one address) or sentinels, not both",
            ));
            return None;
        }
        (Some(u), None, true) => (with_password(src, c, u.get_ref(), password, errors)?, None),
        (None, Some(u), true) => (with_password(src, c, &u, password, errors)?, None),
        (None, None, true) => {
            errors.push(src.error(
                None,
                "cluster.redis",
                "give the Redis URL (redis, redis_env or redis_file) or sentinels",
            ));
            return None;
        }
        (Some(u), Some(_), true) => {
            errors.push(src.error(
                Some(u.span()),
                "cluster.redis",
                "give one of redis, redis_env or redis_file",
            ));
            return None;
        }
    };
    let prefix = c
        .prefix
        .clone()
        .unwrap_or_else(|| "contentgate".to_string());
    if prefix.is_empty()
        || prefix.len() > 64
        || !prefix
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.:".contains(ch))
    {
        errors.push(src.error(
            None,
            "cluster.prefix",
            "1 to 64 characters of A-Z a-z 0-9 - _ . :",
        ));
    }
    let poll_interval = c.poll_interval.unwrap_or(Duration::from_secs(1));
    let max_staleness = c.max_staleness.unwrap_or(Duration::from_secs(10));
    if poll_interval.is_zero() || poll_interval > Duration::from_secs(60) {
        errors.push(src.error(None, "cluster.poll_interval", "between 1ms and 60s"));
    }
    if max_staleness < poll_interval * 2 {
        errors.push(src.error(None, "cluster.max_staleness", "must be at least twice cluster.poll_interval (one missed check must not refuse tokens)"));
    }
    let on_stale = match c.on_stale.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("refuse_tokens") => OnStale::RefuseTokens,
        Some("serve") => OnStale::Serve,
        Some(other) => {
            errors.push(src.error(
                c.on_stale.as_ref().map(|s| s.span()),
                "cluster.on_stale",
                format!("{other:?}: use \"refuse_tokens\" or \"serve\""),
            ));
            OnStale::RefuseTokens
        }
    };
    let expected_replicas = c.expected_replicas.unwrap_or(1);
    if expected_replicas == 0 {
        errors.push(src.error(None, "cluster.expected_replicas", "must be at least 1"));
    }
    let command_timeout = c.command_timeout.unwrap_or(Duration::from_millis(250));
    if command_timeout.is_zero() || command_timeout > Duration::from_secs(10) {
        errors.push(src.error(None, "cluster.command_timeout", "between 1ms and 10s"));
    }
    Some(ClusterSettings {
        url,
        sentinel,
        prefix,
        poll_interval,
        max_staleness,
        on_stale,
        expected_replicas: expected_replicas.max(1),
        command_timeout,
    })
}

/// `[[listener]]`.
fn listeners(
    src: &Source,
    base: &Path,
    file: &FileConfig,
    errors: &mut Vec<ConfigError>,
) -> Vec<Listener> {
    let mut listeners = Vec::new();
    if file.listeners.is_empty() {
        errors.push(src.error(None, "listener", "at least one [[listener]] is required"));
    }
    for (i, l) in file.listeners.iter().enumerate() {
        match check_addr(l.address.get_ref()) {
            Ok(()) => listeners.push(Listener {
                address: l.address.get_ref().clone(),
                tls: l
                    .tls
                    .as_ref()
                    .map(|t| (resolve(base, &t.cert_file), resolve(base, &t.key_file))),
            }),
            Err(m) => {
                errors.push(src.error(Some(l.address.span()), format!("listener[{i}].address"), m))
            }
        }
    }
    listeners
}

/// `[admin] address`.
fn admin(src: &Source, file: &FileConfig, errors: &mut Vec<ConfigError>) -> Option<String> {
    match &file.admin {
        Some(a) => match check_addr(a.address.get_ref()) {
            Ok(()) => Some(a.address.get_ref().clone()),
            Err(m) => {
                errors.push(src.error(Some(a.address.span()), "admin.address", m));
                None
            }
        },
        None => None,
    }
}

/// `[upstream.NAME]`.
fn upstreams(
    src: &Source,
    base: &Path,
    file: &FileConfig,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Arc<Upstream>> {
    let mut upstreams = BTreeMap::new();
    if file.upstreams.is_empty() {
        errors.push(src.error(
            None,
            "upstream",
            "at least one [upstream.NAME] table is required",
        ));
    }
    for (name, u) in &file.upstreams {
        match compile_upstream(src, base, name, u) {
            Ok(up) => {
                upstreams.insert(name.clone(), Arc::new(up));
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    upstreams
}

/// `[[endpoint]]`, longest path first.
fn endpoints(
    src: &Source,
    file: &FileConfig,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Arc<Endpoint>> {
    let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
    if file.endpoints.is_empty() {
        errors.push(src.error(None, "endpoint", "at least one [[endpoint]] is required"));
    }
    for (i, e) in file.endpoints.iter().enumerate() {
        let field = |f: &str| format!("endpoint[{i}].{f}");
        let raw_path = e.path.get_ref();
        if !raw_path.starts_with('/') {
            errors.push(src.error(Some(e.path.span()), field("path"), "must start with '/'"));
            continue;
        }
        let path = if raw_path.len() > 1 {
            raw_path.trim_end_matches('/').to_string()
        } else {
            raw_path.clone()
        };
        if endpoints.iter().any(|x| x.path == path) {
            errors.push(src.error(
                Some(e.path.span()),
                field("path"),
                format!("duplicate endpoint path {path}"),
            ));
        }
        let Some(kind) = EndpointKind::parse(e.kind.get_ref()) else {
            errors.push(src.error(
                Some(e.kind.span()),
                field("kind"),
                format!(
                    "unknown kind {:?} (expected content, cdn or management)",
                    e.kind.get_ref()
                ),
            ));
            continue;
        };
        let upstream = match &e.upstream {
            Some(name) => match upstreams.get(name.get_ref()) {
                Some(u) => u.clone(),
                None => {
                    if file.upstreams.contains_key(name.get_ref()) {
                        continue; // already reported while compiling the upstream
                    }
                    errors.push(src.error(
                        Some(name.span()),
                        field("upstream"),
                        format!("no [upstream.{}]", name.get_ref()),
                    ));
                    continue;
                }
            },
            None if upstreams.len() == 1 => match upstreams.values().next() {
                Some(u) => u.clone(),
                None => continue,
            },
            None if file.upstreams.len() > 1 => {
                errors.push(src.error(
                    Some(e.path.span()),
                    field("upstream"),
                    "required when several upstreams are configured",
                ));
                continue;
            }
            None => continue,
        };
        let nets = |list: &[String],
                    name: &str,
                    errors: &mut Vec<ConfigError>|
         -> Vec<ipnet::IpNet> {
            list.iter()
                .filter_map(|s| {
                    parse_net(s)
                        .map_err(|m| errors.push(src.error(Some(e.path.span()), field(name), m)))
                        .ok()
                })
                .collect()
        };
        let allow = nets(&e.allow, "allow", errors);
        let deny = nets(&e.deny, "deny", errors);
        let cors = e.cors.as_ref().map(|c| {
            if c.allow_credentials && c.allowed_origins.iter().any(|o| o == "*") {
                errors.push(src.error(
                    Some(e.path.span()),
                    field("cors"),
                    "allow_credentials cannot be combined with the origin \"*\"",
                ));
            }
            // `Origin: null` is what sandboxed iframes, `data:` and `file:` pages send: any
            // page can produce it, so with credentials it is as open as `*`.
            if c.allow_credentials && c.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case("null")) {
                errors.push(src.error(
                    Some(e.path.span()),
                    field("cors"),
                    "allow_credentials cannot be combined with the origin \"null\" (any sandboxed page sends it)",
                ));
            }
            Arc::new(Cors {
                origins: c.allowed_origins.clone(),
                methods: c
                    .allowed_methods
                    .clone()
                    .unwrap_or_else(|| vec!["GET".into(), "POST".into()])
                    .join(", "),
                headers: c
                    .allowed_headers
                    .clone()
                    .unwrap_or_else(|| {
                        [
                            "authorization",
                            "content-type",
                            "gcms-stage",
                            "gcms-locales",
                            "hyg-stale-while-revalidate",
                            "hyg-stale-if-error",
                        ]
                        .map(String::from)
                        .to_vec()
                    })
                    .join(", "),
                credentials: c.allow_credentials,
                max_age: c
                    .max_age
                    .unwrap_or(Duration::from_secs(600))
                    .as_secs()
                    .to_string(),
            })
        });
        endpoints.push(Arc::new(Endpoint {
            path,
            kind,
            upstream,
            cors,
            allow,
            deny,
        }));
    }
    // Longest prefix first, so `/cdn/v2` wins over `/cdn`.
    endpoints.sort_by_key(|e| std::cmp::Reverse(e.path.len()));
    endpoints
}

/// `[log]`.
fn log(src: &Source, file: &FileConfig, errors: &mut Vec<ConfigError>) -> LogSettings {
    let buffer_bytes = match &file.log.buffer_bytes {
        None => DEFAULT_LOG_BUFFER_BYTES,
        Some(b)
            if *b.get_ref() != 0
                && !(MIN_LOG_BUFFER_BYTES..=MAX_LOG_BUFFER_BYTES).contains(b.get_ref()) =>
        {
            errors.push(src.error(
                Some(b.span()),
                "log.buffer_bytes",
                format!(
                    "{} is outside {}..{MAX_LOG_BUFFER_BYTES} (64 KiB..256 MiB); 0 writes each line on the request thread",
                    b.get_ref(),
                    MIN_LOG_BUFFER_BYTES
                ),
            ));
            DEFAULT_LOG_BUFFER_BYTES
        }
        Some(b) => *b.get_ref(),
    };
    let flush_interval = match &file.log.flush_interval {
        None => DEFAULT_LOG_FLUSH_INTERVAL,
        Some(f) => match humantime::parse_duration(f.get_ref()) {
            Ok(d) if (Duration::from_millis(1)..=Duration::from_secs(10)).contains(&d) => d,
            parsed => {
                let why = match parsed {
                    Err(e) => format!("{:?}: {e}", f.get_ref()),
                    Ok(_) => format!("{:?} is outside 1ms..10s", f.get_ref()),
                };
                errors.push(src.error(Some(f.span()), "log.flush_interval", why));
                DEFAULT_LOG_FLUSH_INTERVAL
            }
        },
    };
    LogSettings {
        buffer_bytes,
        flush_interval,
        level: file.log.level.clone().unwrap_or_else(|| "info".into()),
        json: match file.log.format.as_deref() {
            None | Some("json") => true,
            Some("text") => false,
            Some(other) => {
                errors.push(src.error(
                    None,
                    "log.format",
                    format!("unknown format {other:?} (expected json or text)"),
                ));
                true
            }
        },
    }
}

/// `[server]`.
fn server(
    src: &Source,
    base: &Path,
    file: &FileConfig,
    errors: &mut Vec<ConfigError>,
) -> ServerSettings {
    let threads = file.server.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        errors.push(src.error(None, "server.threads", "must be at least 1"));
    }
    let runtime_dir = match &file.server.runtime_dir {
        Some(d) => resolve(base, d),
        None => std::env::temp_dir().join(format!("contentgate-{}", std::process::id())),
    };
    ServerSettings {
        threads,
        work_stealing: file.server.work_stealing.unwrap_or(DEFAULT_WORK_STEALING),
        grace_period: file.server.grace_period.unwrap_or(DEFAULT_GRACE_PERIOD),
        shutdown_timeout: file
            .server
            .shutdown_timeout
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        runtime_dir,
        upstream_keepalive_pool_size: file.server.upstream_keepalive_pool_size.unwrap_or(1024),
        write_buffer_bytes: file
            .server
            .write_buffer_bytes
            .unwrap_or(DEFAULT_WRITE_BUFFER_BYTES),
        read_buffer_bytes: file
            .server
            .read_buffer_bytes
            .unwrap_or(DEFAULT_READ_BUFFER_BYTES),
        upstream_ca_file: file
            .server
            .upstream_ca_file
            .as_deref()
            .map(|p| resolve(base, p)),
    }
}

/// `[limits]`.
fn limits(src: &Source, file: &FileConfig, errors: &mut Vec<ConfigError>) -> Limits {
    let limits = Limits {
        max_body_bytes: file.limits.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        max_buffered_body_bytes: file
            .limits
            .max_buffered_body_bytes
            .unwrap_or(DEFAULT_MAX_BUFFERED_BODY_BYTES),
        max_query_tokens: file.limits.max_query_tokens.unwrap_or(15_000),
        max_depth: file.limits.max_depth.unwrap_or(DEFAULT_MAX_DEPTH),
        max_expanded_fields: file.limits.max_expanded_fields.unwrap_or(10_000),
        max_aliases: file.limits.max_aliases.unwrap_or(100),
        max_root_fields: file.limits.max_root_fields.unwrap_or(30),
        max_input_nodes: file.limits.max_input_nodes.unwrap_or(50_000),
        max_header_bytes: file.limits.max_header_bytes.unwrap_or(32 * 1024),
        // GET queries travel in the URL: allow a typical document, refuse abuse.
        max_uri_bytes: file.limits.max_uri_bytes.unwrap_or(16 * 1024),
        client_header_timeout: file
            .limits
            .client_header_timeout
            .unwrap_or(Duration::from_secs(10)),
        client_body_timeout: file
            .limits
            .client_body_timeout
            .unwrap_or(Duration::from_secs(10)),
        client_send_timeout: file
            .limits
            .client_send_timeout
            .unwrap_or(Duration::from_secs(30)),
    };
    for (field, d) in [
        ("limits.client_header_timeout", limits.client_header_timeout),
        ("limits.client_body_timeout", limits.client_body_timeout),
        ("limits.client_send_timeout", limits.client_send_timeout),
    ] {
        if d.is_zero() {
            errors.push(src.error(None, field, "must be greater than zero"));
        }
    }
    if limits.max_depth == 0 || limits.max_depth > MAX_MAX_DEPTH {
        errors.push(src.error(
            None,
            "limits.max_depth",
            format!("must be between 1 and {MAX_MAX_DEPTH}"),
        ));
    }
    if limits.max_buffered_body_bytes < limits.max_body_bytes {
        errors.push(src.error(
            None,
            "limits.max_buffered_body_bytes",
            format!(
                "{} is smaller than limits.max_body_bytes ({}): no body of the largest size could be read",
                limits.max_buffered_body_bytes, limits.max_body_bytes
            ),
        ));
    }
    if limits.max_body_bytes > MAX_FORWARDED_BODY_BYTES {
        errors.push(src.error(
            None,
            "limits.max_body_bytes",
            format!(
                "at most {} bytes (16 MiB): a body is held whole while it is checked and sent",
                MAX_FORWARDED_BODY_BYTES
            ),
        ));
    }
    limits
}

/// `[cache]`.
fn cache(src: &Source, file: &FileConfig, errors: &mut Vec<ConfigError>) -> CacheSettings {
    let c = &file.cache;
    let l2 = match c.l2.as_ref().map(|l| (l.get_ref().as_str(), l.span())) {
        None => false,
        Some(("redis", span)) => {
            if file.cluster.is_none() {
                errors.push(src.error(
                    Some(span),
                    "cache.l2",
                    "a Redis second level needs the [cluster] section",
                ));
            }
            true
        }
        Some((other, span)) => {
            errors.push(src.error(
                Some(span),
                "cache.l2",
                format!("{other:?}: the only second level is \"redis\""),
            ));
            false
        }
    };
    let l2_max_entry_bytes = c.l2_max_entry_bytes.unwrap_or(256 * 1024);
    if l2_max_entry_bytes > MAX_L2_ENTRY_BYTES {
        errors.push(src.error(
            None,
            "cache.l2_max_entry_bytes",
            format!("at most {}", MAX_L2_ENTRY_BYTES),
        ));
    }
    CacheSettings {
        l2,
        l2_max_entry_bytes: l2_max_entry_bytes.min(MAX_L2_ENTRY_BYTES),
        enabled: c.enabled.unwrap_or(true),
        max_bytes: c.max_bytes.unwrap_or(256 * 1024 * 1024),
        max_entry_bytes: c.max_entry_bytes.unwrap_or(1024 * 1024),
        fill_buffer_bytes: c.fill_buffer_bytes.unwrap_or(64 * 1024 * 1024),
        default_ttl: c.default_ttl.unwrap_or(Duration::from_secs(60)),
        model_ttl: c.model_ttl.iter().map(|(k, v)| (k.clone(), v.0)).collect(),
        stale_while_revalidate: c.stale_while_revalidate.unwrap_or(Duration::from_secs(60)),
        stale_if_error: c.stale_if_error.unwrap_or(Duration::from_secs(300)),
        fetch_deadline: c.fetch_deadline.unwrap_or(Duration::from_secs(10)),
        content_reads: c.content_reads.unwrap_or(false),
    }
}

/// `[rate_limits]`.
fn rate_limits(
    src: &Source,
    file: &FileConfig,
    errors: &mut Vec<ConfigError>,
) -> crate::ratelimit::RateSettings {
    let rl = |r: &Option<file::FileRateLimit>| {
        r.as_ref().map(|r| crate::ratelimit::RateLimit {
            requests_per_second: r.requests_per_second.max(1),
            burst: r.burst.unwrap_or(r.requests_per_second).max(1),
        })
    };
    let rate_limits = crate::ratelimit::RateSettings {
        token_default: rl(&file.rate_limits.token_default),
        public_per_ip: rl(&file.rate_limits.public_per_ip),
        origin_per_second: file.rate_limits.origin_requests_per_second.map(|rps| {
            crate::ratelimit::RateLimit {
                requests_per_second: rps.max(1),
                burst: file.rate_limits.origin_burst.unwrap_or(rps).max(1),
            }
        }),
        // On by default: refusals are the cheapest requests to send and may each cost a
        // signature verification (an ES256 verify is ~0.25 ms).
        refused_per_ip: rl(&file.rate_limits.refused_per_ip).or(Some(
            crate::ratelimit::RateLimit {
                requests_per_second: DEFAULT_REFUSED_PER_IP.0,
                burst: DEFAULT_REFUSED_PER_IP.1,
            },
        )),
        ipv6_prefix: file.rate_limits.ipv6_prefix.unwrap_or(64),
    };
    if rate_limits.ipv6_prefix > 128 {
        errors.push(src.error(None, "rate_limits.ipv6_prefix", "must be at most 128"));
    }
    rate_limits
}

/// `[network]`.
fn network(src: &Source, file: &FileConfig, errors: &mut Vec<ConfigError>) -> Vec<ipnet::IpNet> {
    let mut trusted_proxies = Vec::new();
    for p in &file.network.trusted_proxies {
        match parse_net(p) {
            Ok(n) => trusted_proxies.push(n),
            Err(m) => errors.push(src.error(None, "network.trusted_proxies", m)),
        }
    }
    trusted_proxies
}

/// The admin token and the webhook secret (`[admin]`, `[webhooks]`).
fn secrets(
    src: &Source,
    base: &Path,
    file: &FileConfig,
    errors: &mut Vec<ConfigError>,
) -> AdminSecrets {
    let secret = |env: &Option<String>, path: &Option<String>, field: &str, errors: &mut Vec<_>| {
        secret_value(src, base, env, path, field, errors)
    };
    let purge_token = file
        .admin
        .as_ref()
        .and_then(|a| secret(&a.token_env, &a.token_file, "admin.token", errors));
    let mut credentials: Vec<AdminCredential> = Vec::new();
    // The purge token is also the write credential `admin` when it is as strong as the
    // credentials must be; a shorter one keeps purging and nothing more.
    if let Some(t) = purge_token.as_ref().filter(|t| t.len() >= 16) {
        credentials.push(AdminCredential {
            name: "admin".into(),
            scope: AdminScope::Write,
            secret: t.clone(),
        });
    }
    for (i, c) in file.admin.iter().flat_map(|a| &a.credentials).enumerate() {
        let field = format!("admin.credential[{i}]");
        let scope = match c.scope.as_str() {
            "read" => AdminScope::Read,
            "write" => AdminScope::Write,
            other => {
                errors.push(src.error(
                    None,
                    format!("{field}.scope"),
                    format!("{other:?}: expected \"read\" or \"write\""),
                ));
                continue;
            }
        };
        if c.name.is_empty()
            || c.name.len() > 64
            || !c
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.@".contains(ch))
        {
            errors.push(src.error(
                None,
                format!("{field}.name"),
                format!(
                    "{:?}: 1-64 characters of A-Z a-z 0-9 - _ . @ (the audit log records it)",
                    c.name
                ),
            ));
            continue;
        }
        if credentials.iter().any(|o| o.name == c.name) {
            errors.push(src.error(
                None,
                format!("{field}.name"),
                format!(
                    "{:?} is used twice (\"admin\" is the [admin] token's)",
                    c.name
                ),
            ));
            continue;
        }
        let Some(value) = secret(
            &c.token_env,
            &c.token_file,
            &format!("{field}.token"),
            errors,
        ) else {
            if c.token_env.is_none() && c.token_file.is_none() {
                errors.push(src.error(None, field, "needs token_env or token_file"));
            }
            continue;
        };
        if value.len() < 16 {
            errors.push(src.error(
                None,
                format!("{field}.token"),
                "shorter than 16 characters: use a random secret (openssl rand -hex 32)",
            ));
            continue;
        }
        if credentials.iter().any(|o| o.secret == value) {
            errors.push(src.error(
                None,
                format!("{field}.token"),
                "the same secret as another credential: each credential needs its own",
            ));
            continue;
        }
        credentials.push(AdminCredential {
            name: c.name.clone(),
            scope,
            secret: value,
        });
    }
    let public_url = file.admin.as_ref().and_then(|a| a.public_url.clone());
    if let Some(u) = &public_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) || url::Url::parse(u).is_err() {
            errors.push(src.error(
                None,
                "admin.public_url",
                format!("{u:?} is not an http(s) URL"),
            ));
        }
    }
    AdminSecrets {
        purge_token,
        credentials,
        public_url,
        read_only: file.admin.as_ref().is_some_and(|a| a.read_only),
        webhook_secret: file
            .webhooks
            .as_ref()
            .and_then(|w| secret(&w.secret_env, &w.secret_file, "webhooks.secret", errors)),
        webhook_tolerance: file
            .webhooks
            .as_ref()
            .and_then(|w| w.tolerance)
            .unwrap_or(Duration::from_secs(300)),
    }
}

/// A secret from `*_env` or `*_file` (`None` when neither is set); a problem is an error on
/// `field`.
fn secret_value(
    src: &Source,
    base: &Path,
    env: &Option<String>,
    path: &Option<String>,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let path = path.as_ref().map(|p| resolve(base, p));
    match SecretSource::of(env.as_deref(), path.as_deref()).and_then(|s| match s {
        Some(s) => s.read().map(Some),
        None => Ok(None),
    }) {
        Ok(v) => v,
        Err(m) => {
            errors.push(src.error(None, field, m));
            None
        }
    }
}

/// `10.0.0.0/8`, or a bare address as a single-host network.
/// A CIDR or an address; an IPv4-mapped IPv6 network (`::ffff:9.9.9.0/120`) is read as the
/// IPv4 network it maps, since client addresses are compared in canonical form.
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let net = s
        .parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR network or an IP address"))?;
    if let ipnet::IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(|n| ipnet::IpNet::V4(n.trunc()))
                .map_err(|e| e.to_string());
        }
    }
    Ok(net)
}

pub(super) fn names_or(v: Option<Vec<String>>, default: &[&str]) -> Vec<String> {
    v.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
}

fn check_addr(a: &str) -> Result<(), String> {
    a.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|e| format!("{a:?} is not an ip:port socket address: {e}"))
}

fn compile_upstream(
    src: &Source,
    base: &Path,
    name: &str,
    u: &file::FileUpstream,
) -> Result<Upstream, Vec<ConfigError>> {
    let field = |f: &str| format!("upstream.{name}.{f}");
    let span = Some(u.url.span());
    let err = |f: &str, m: String| vec![src.error(span.clone(), field(f), m)];
    let url =
        url::Url::parse(u.url.get_ref()).map_err(|e| err("url", format!("invalid URL: {e}")))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        s => return Err(err("url", format!("scheme {s:?} is not http or https"))),
    };
    let host = url
        .host_str()
        .ok_or_else(|| err("url", "URL has no host".into()))?
        .to_string();
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()
        .map_err(|e| err("url", format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| err("url", format!("{host} resolves to no address")))?;
    let timeouts = UpstreamTimeouts {
        connect: u.connect_timeout.unwrap_or(Duration::from_secs(3)),
        read: u.read_timeout.unwrap_or(Duration::from_secs(15)),
        total: u.total_timeout.unwrap_or(Duration::from_secs(30)),
        idle: u.idle_timeout.unwrap_or(Duration::from_secs(60)),
    };
    let credential = match &u.credential {
        None => Credential::Forward,
        Some(c) => match c.mode.get_ref().as_str() {
            "forward" => Credential::Forward,
            "replace" => {
                let path = c.token_file.as_ref().map(|f| resolve(base, f));
                let token = match SecretSource::of(c.token_env.as_deref(), path.as_deref()) {
                    Ok(Some(source)) => source.read(),
                    Ok(None) => Err(
                        "mode = \"replace\" needs exactly one of token_env or token_file".into(),
                    ),
                    Err(m) => Err(m),
                }
                .map_err(|m| vec![src.error(Some(c.mode.span()), field("credential"), m)])?;
                let mut value =
                    HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                        vec![src.error(
                            Some(c.mode.span()),
                            field("credential"),
                            "service token is not a valid header value",
                        )]
                    })?;
                value.set_sensitive(true);
                Credential::Replace(value)
            }
            other => {
                return Err(vec![src.error(
                    Some(c.mode.span()),
                    field("credential.mode"),
                    format!("unknown mode {other:?} (expected replace or forward)"),
                )])
            }
        },
    };
    let mut peer = HttpPeer::new(addr, tls, host.clone());
    let resolve_interval = u.resolve_interval.unwrap_or(Duration::from_secs(30));
    peer.options.connection_timeout = Some(timeouts.connect);
    peer.options.total_connection_timeout = Some(timeouts.connect);
    peer.options.read_timeout = Some(timeouts.read);
    peer.options.write_timeout = Some(timeouts.read);
    peer.options.idle_timeout = Some(timeouts.idle);
    Ok(Upstream {
        name: name.to_string(),
        tls,
        host_header: HeaderValue::try_from(host_header)
            .map_err(|_| err("url", "host is not a valid header value".into()))?,
        path,
        timeouts,
        credential,
        host,
        port,
        resolve_interval,
        peer: arc_swap::ArcSwap::from_pointee(peer),
    })
}
