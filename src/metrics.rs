//! Every metric, declared once with its help text, in a registry owned by the gateway (no
//! global default registry: two gateways in one process, as in tests, never share counts).
//!
//! Labels come only from closed sets (endpoint kind, status class, cache result, auth reason,
//! rejection reason, reload result) — never a token, jti, path or query text.
//! The catalogue with meanings lives in docs/metrics.md.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Sub-millisecond buckets: a cache hit or an auth check is measured in microseconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A metric family whose children for label values from closed sets are resolved once each.
///
/// `with_label_values` takes the family's `RwLock` for reading (an atomic write on a line every
/// core shares) and hashes the labels; the families every request touches go through
/// [`HotVec::with`] instead, which finds the child by position in the sets and keeps it.
/// Values outside the sets still work, through `with_label_values` (the `Deref`). The series
/// exported are the same either way.
pub struct HotVec<V: Family> {
    vec: V,
    sets: &'static [&'static [&'static str]],
    children: Box<[OnceLock<V::Child>]>,
}

/// A labelled metric family (the two kinds [`HotVec`] holds).
pub trait Family {
    type Child;
    fn child(&self, labels: &[&str]) -> Self::Child;
}

impl Family for IntCounterVec {
    type Child = IntCounter;
    fn child(&self, labels: &[&str]) -> IntCounter {
        self.with_label_values(labels)
    }
}

impl Family for HistogramVec {
    type Child = Histogram;
    fn child(&self, labels: &[&str]) -> Histogram {
        self.with_label_values(labels)
    }
}

impl<V: Family> HotVec<V> {
    fn new(vec: V, sets: &'static [&'static [&'static str]]) -> Self {
        let n = sets.iter().map(|s| s.len()).product();
        Self {
            vec,
            sets,
            children: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The position of `labels` in the product of the sets, if every value is in its set.
    fn index(&self, labels: &[&str]) -> Option<usize> {
        if labels.len() != self.sets.len() {
            return None;
        }
        let mut i = 0;
        for (set, label) in self.sets.iter().zip(labels) {
            i = i * set.len() + set.iter().position(|v| v == label)?;
        }
        Some(i)
    }

    /// Runs `f` on the child for `labels` (resolved once if the values are in the sets).
    pub fn with<R>(&self, labels: &[&str], f: impl FnOnce(&V::Child) -> R) -> R {
        match self.index(labels).and_then(|i| self.children.get(i)) {
            Some(cell) => f(cell.get_or_init(|| self.vec.child(labels))),
            None => f(&self.vec.child(labels)),
        }
    }
}

impl<V: Family> std::ops::Deref for HotVec<V> {
    type Target = V;
    fn deref(&self) -> &V {
        &self.vec
    }
}

/// The closed sets of the per-request labels (the values of `EndpointKind::as_str` and "none",
/// [`status_class`], `CacheStatus::as_str`, the cache lookup results, `Principal::kind`).
const ENDPOINTS: &[&str] = &["cdn", "content", "management", "none"];
const STATUS_CLASSES: &[&str] = &["2xx", "4xx", "5xx", "3xx", "1xx", "other"];
const CACHE_RESULTS: &[&str] = &["HIT", "BYPASS", "MISS", "STALE"];
const LOOKUPS: &[&str] = &["hit", "miss", "coalesced", "stale", "bypass"];
const PRINCIPALS: &[&str] = &["public", "token"];
const AUTH_OK: &[&str] = &["public", "ok"];

pub struct Metrics {
    registry: Registry,
    pub requests: HotVec<IntCounterVec>,
    pub request_duration: HotVec<HistogramVec>,
    pub upstream_duration: HistogramVec,
    pub in_flight: IntGauge,
    pub upstream_errors: IntCounterVec,
    pub auth_results: HotVec<IntCounterVec>,
    pub graphql_rejections: IntCounterVec,
    pub permission_denials: IntCounterVec,
    pub cache_lookups: HotVec<IntCounterVec>,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    pub cache_evictions: IntCounterVec,
    pub cache_purges: IntCounterVec,
    pub stale_on_429: prometheus::IntCounter,
    pub webhook_rejections: IntCounterVec,
    pub admin_api: IntCounterVec,
    pub request_body_bytes: IntGauge,
    pub upstream_idle_connections: IntGauge,
    pub rate_limit_rejections: IntCounterVec,
    pub stage_injections: HotVec<IntCounterVec>,
    pub reloads: IntCounterVec,
    pub generation: IntGauge,
    pub last_reload_success: IntGauge,
    pub config_restart_required: IntGauge,
    pub last_reload: Gauge,
    pub revocation_lag: Histogram,
    pub registry_tokens: IntGauge,
    pub registry_revoked: IntGauge,
    pub build_info: IntGaugeVec,
    pub cluster_up: IntGauge,
    pub cluster_policy_version: IntGauge,
    pub policy_staleness: Gauge,
    pub cluster_alarm: IntGaugeVec,
    pub cluster_events: IntCounterVec,
    pub cluster_purges: IntCounterVec,
    pub cluster_errors: IntCounterVec,
    pub rate_limit_fallbacks: IntCounterVec,
    pub cache_l2: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    // The metric definitions are static: a bad name or a duplicate is a programming error
    // that every test run hits at start-up, never a runtime condition.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let registry = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique and valid");
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let hist = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )
                .expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            reg(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let m = Metrics {
            requests: HotVec::new(
                counter(
                    "contentgate_requests_total",
                    "Requests answered, by endpoint kind, status class and cache result.",
                    &["endpoint", "status_class", "cache"],
                ),
                &[ENDPOINTS, STATUS_CLASSES, CACHE_RESULTS],
            ),
            request_duration: HotVec::new(
                hist("contentgate_request_duration_seconds", "Time from request header to the end of the response.", &["endpoint"]),
                &[ENDPOINTS],
            ),
            upstream_duration: hist("contentgate_upstream_duration_seconds", "Time spent waiting on the upstream per forwarded request.", &["endpoint"]),
            in_flight: gauge("contentgate_requests_in_flight", "Requests currently being processed."),
            upstream_errors: counter("contentgate_upstream_errors_total", "Failed upstream exchanges, by kind.", &["kind"]),
            auth_results: HotVec::new(
                counter(
                    "contentgate_auth_results_total",
                    "Authentication outcomes: ok (token), public (no credentials), or the refusal reason.",
                    &["reason"],
                ),
                &[AUTH_OK],
            ),
            graphql_rejections: counter("contentgate_graphql_rejections_total", "Requests refused before authorization, by reason.", &["reason"]),
                        permission_denials: counter(
                "contentgate_permission_denials_total",
                "Requests refused with 403, by the missing action (read, create, ..., introspection, management).",
                &["action"],
            ),
            cache_lookups: HotVec::new(
                counter(
                    "contentgate_cache_lookups_total",
                    "Read-path cache outcomes: hit, miss (leader of a fill), coalesced (joined a fill), stale, bypass.",
                    &["result"],
                ),
                &[LOOKUPS],
            ),
            cache_entries: gauge("contentgate_cache_entries", "Entries in the read-path cache."),
            cache_bytes: gauge("contentgate_cache_bytes", "Weighted size of the read-path cache in bytes."),
            cache_evictions: counter("contentgate_cache_evictions_total", "Entries removed, by cause (expired, size, purged, replaced).", &["cause"]),
            cache_purges: counter("contentgate_cache_purges_total", "Purges, by source (mutation, webhook, admin).", &["source"]),
            stale_on_429: reg(
                &registry,
                prometheus::IntCounter::new(
                    "contentgate_cache_stale_served_on_429_total",
                    "Stale entries served because the upstream answered 429 (rate limit): requests kept inside the CMS plan.",
                )
                .expect("valid metric"),
            ),
                                    rate_limit_rejections: counter(
                "contentgate_rate_limit_rejections_total",
                "Requests refused with 429, by limit (token, ip, origin, refused: an address over its refusal budget).",
                &["scope"],
            ),
            webhook_rejections: counter("contentgate_webhook_rejections_total", "CMS webhooks refused, by reason.", &["reason"]),
            request_body_bytes: gauge("contentgate_request_body_bytes", "Bytes of request bodies held by requests in flight (limits.max_buffered_body_bytes caps the sum; 503 BODY_BUDGET_EXHAUSTED beyond)."),
            upstream_idle_connections: gauge("contentgate_upstream_idle_connections", "Idle keep-alive connections to the upstreams held for reuse, as of the last sweep (each second; server.upstream_keepalive_pool_size caps them)."),
            admin_api: counter("contentgate_admin_api_requests_total", "Management API and console requests, by operation (read, write, login) and result (ok or the error code).", &["op", "result"]),
            stage_injections: HotVec::new(
                counter(
                    "contentgate_stage_injections_total",
                    "Requests forwarded with the principal's default gcms-stage injected, by principal kind.",
                    &["principal"],
                ),
                &[PRINCIPALS],
            ),
            reloads: counter("contentgate_policy_reloads_total", "Policy reload attempts, by result (applied, rejected).", &["result"]),
                        generation: gauge("contentgate_policy_generation", "Generation of the policy snapshot in use."),
            config_restart_required: gauge(
                "contentgate_config_restart_required",
                "1 when gateway.toml changed outside the sections a reload applies ([auth], [cms]) since start-up.",
            ),
            last_reload_success: gauge(
                "contentgate_policy_last_reload_success",
                "1 if the last policy reload attempt was applied (or changed nothing), 0 if it was rejected.",
            ),
            last_reload: reg(
                &registry,
                Gauge::new("contentgate_policy_last_reload_timestamp_seconds", "Unix time of the last applied policy snapshot.").expect("valid metric"),
            ),
            revocation_lag: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "contentgate_revocation_lag_seconds",
                        "Seconds from a change of revoked.txt to the snapshot that applies it.",
                    )
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
                )
                .expect("valid metric"),
            ),
            registry_tokens: gauge("contentgate_registry_tokens", "Tokens in the registry of the current snapshot."),
            registry_revoked: gauge("contentgate_registry_revoked_jtis", "Revoked jtis in the current snapshot."),
            build_info: reg(
                &registry,
                IntGaugeVec::new(Opts::new("contentgate_build_info", "Build information; always 1."), &["version"]).expect("valid metric"),
            ),
            cluster_up: gauge("contentgate_cluster_redis_up", "1 when the last check reached the cluster's Redis ([cluster] only)."),
            cluster_policy_version: gauge("contentgate_cluster_policy_version", "Version of the Redis policy set the snapshot was compiled from."),
            policy_staleness: reg(
                &registry,
                Gauge::new("contentgate_policy_staleness_seconds", "Seconds since the policy version was last confirmed against Redis (since start before the first sync).").expect("valid metric"),
            ),
            cluster_alarm: reg(
                &registry,
                IntGaugeVec::new(Opts::new("contentgate_cluster_alarm", "1 while a cluster alarm holds: empty, refused, rollback, revocations_kept, purges_held, eviction_policy (docs/metrics.md)."), &["reason"]).expect("valid metric"),
            ),
            cluster_events: counter("contentgate_cluster_events_total", "Cluster events: subscribed, disconnected, policy and purge messages.", &["kind"]),
            cluster_purges: counter("contentgate_cluster_purges_total", "Cluster purges: sent, received, caught_up (from the log after a gap), flushed (the whole cache, when the log could not tell).", &["direction"]),
            cluster_errors: counter("contentgate_cluster_errors_total", "Redis operations that failed, by operation (sync, purge, webhook, rate_limit, purge_message).", &["op"]),
            rate_limit_fallbacks: counter("contentgate_rate_limit_fallbacks_total", "Rate-limit checks decided locally (limit / expected_replicas) because Redis could not be asked, by scope.", &["scope"]),
            cache_l2: counter("contentgate_cache_l2_total", "Second-level (Redis) cache operations: hit, miss, stored, skipped (a purge since the fill began), waited (another replica's fill), error.", &["result"]),
            registry,
        };
        for reason in [
            "empty",
            "refused",
            "rollback",
            "revocations_kept",
            "purges_held",
            "eviction_policy",
        ] {
            m.cluster_alarm.with_label_values(&[reason]).set(0);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for result in ["applied", "rejected"] {
            m.reloads.with_label_values(&[result]);
        }
        for result in ["hit", "miss", "coalesced", "stale", "bypass"] {
            m.cache_lookups.with_label_values(&[result]);
        }
        m
    }

    /// Creates the series of a closed label set at zero, so dashboards and alerts see them
    /// before the first event (the app layer knows the sets: `AuthError::REASONS`, …).
    pub fn seed_auth_results(&self, reasons: &[&str]) {
        for reason in reasons.iter().chain(["ok", "public"].iter()) {
            self.auth_results.with_label_values(&[reason]);
        }
    }

    /// Adds a collector another module keeps (the log sink's counts, read at each scrape).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        // A duplicate is a wiring error every start-up would hit; the scrape goes on without it.
        if let Err(e) = self.registry.register(collector) {
            tracing::warn!(error = %e, "metric collector not registered");
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// `2xx`, `4xx`, ... as a closed label set.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_children_are_the_families_own_series() {
        let m = Metrics::new();
        m.requests.with(&["cdn", "2xx", "HIT"], |c| c.inc());
        m.requests.with(&["cdn", "2xx", "HIT"], |c| c.inc());
        // Outside the sets: still counted, through with_label_values.
        m.requests.with(&["cdn", "2xx", "ELSEWHERE"], |c| c.inc());
        m.request_duration.with(&["none"], |h| h.observe(0.5));
        assert_eq!(
            m.requests.with_label_values(&["cdn", "2xx", "HIT"]).get(),
            2
        );
        assert_eq!(
            m.requests
                .with_label_values(&["cdn", "2xx", "ELSEWHERE"])
                .get(),
            1
        );
        assert_eq!(
            m.request_duration
                .with_label_values(&["none"])
                .get_sample_count(),
            1
        );
        // Every position of the product is distinct.
        let mut seen = std::collections::HashSet::new();
        for e in ENDPOINTS {
            for s in STATUS_CLASSES {
                for c in CACHE_RESULTS {
                    assert!(seen.insert(m.requests.index(&[e, s, c]).unwrap()));
                }
            }
        }
        assert_eq!(seen.len(), m.requests.children.len());
        assert_eq!(m.requests.index(&["cdn", "2xx"]), None);
        assert!(String::from_utf8(m.render()).unwrap().contains(
            "contentgate_requests_total{cache=\"HIT\",endpoint=\"cdn\",status_class=\"2xx\"} 2"
        ));
    }
}
