//! The high-performance read path: an in-memory cache of upstream answers (moka, bounded in
//! bytes), request coalescing, stale-while-revalidate, stale-if-error and precise invalidation.
//!
//! Authentication and authorization run before every lookup (the proxy calls this module only
//! for admitted requests), and the key carries the permission fingerprint, so a hit is never
//! served across scopes. Fills run in their own task ([`ReadCache::fetch_coalesced`]): N
//! concurrent identical misses cause one upstream request, and a leader whose client goes away
//! does not fail its followers. Only complete 200 JSON answers without `errors`, without
//! `Set-Cookie` and not marked `no-store`/`private` are stored; stored entries keep only the
//! headers that belong to the content.

pub mod key;
pub mod l2;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;

use crate::config::{CacheSettings, Upstream};
use crate::metrics::Metrics;
use crate::upstream::{Failure, UpstreamClient, UpstreamRequest};
pub use key::{CacheKey, KeyDigest};

/// Hard cap on a body the gateway buffers for a fill: larger answers are a 502 (the per-entry
/// maximum for storing is `max_entry_bytes`, usually far below).
const MAX_FETCH_BYTES: usize = 32 * 1024 * 1024;
/// How long a key whose fill failed is not refreshed in the background.
const REFRESH_BACKOFF: Duration = Duration::from_secs(5);
/// Entry ids collected for invalidation per entry.
const MAX_IDS_PER_ENTRY: usize = 1000;

/// An upstream answer as the gateway replays it: status, the content headers, the body.
///
/// The header values are kept as they go on the wire, so a hit copies none of them:
/// `Content-Length` is built once, with the entry ([`Stored::new`]).
#[derive(Debug)]
pub struct Stored {
    pub status: u16,
    pub content_type: Option<HeaderValue>,
    /// `Retry-After` of a 429/503, passed on to every waiter.
    pub retry_after: Option<HeaderValue>,
    content_length: HeaderValue,
    pub body: Bytes,
    pub stored_at: Instant,
    pub ttl: Duration,
    pub tags: Tags,
}

impl Stored {
    pub fn new(
        status: u16,
        content_type: Option<HeaderValue>,
        retry_after: Option<HeaderValue>,
        body: Bytes,
        stored_at: Instant,
        ttl: Duration,
        tags: Tags,
    ) -> Stored {
        Stored {
            status,
            content_type,
            retry_after,
            content_length: HeaderValue::from(body.len()),
            body,
            stored_at,
            ttl,
            tags,
        }
    }

    /// `Content-Length` of the body.
    pub fn content_length(&self) -> &HeaderValue {
        &self.content_length
    }

    /// Bytes of the header values the entry keeps (weighed with it).
    pub fn header_bytes(&self) -> usize {
        [&self.content_type, &self.retry_after]
            .into_iter()
            .flatten()
            .chain([&self.content_length])
            .map(HeaderValue::len)
            .sum()
    }

    /// A header value as stored entries replay it, in a buffer of its own: visible ASCII only
    /// (what L1 keeps from an upstream answer, and all an L2 entry may hold).
    pub fn replayable(value: &str) -> Option<HeaderValue> {
        HeaderValue::from_str(value)
            .ok()
            .filter(|v| v.to_str().is_ok())
    }

    pub fn age(&self) -> Duration {
        self.stored_at.elapsed()
    }
}

/// What an entry read: for purges by model (per stage) and by entry id.
#[derive(Debug, Default, Clone)]
pub struct Tags {
    pub models: Vec<Arc<str>>,
    pub stages: Vec<String>,
    pub ids: HashSet<String>,
}

/// A purge request: by model, by entry id, by stage, or everything. Also its wire form
/// between the replicas of a cluster (JSON in the purge log and the broadcast).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default)]
    pub all: bool,
}

/// The longest model name, entry id or stage a purge may name (a Hygraph id is 25 characters):
/// a purge is logged and broadcast to every replica, so its size is bounded before it is.
pub const MAX_PURGE_NAME: usize = 256;

impl Purge {
    /// A purge worth acting on: everything, or a model or an entry id, each name at most
    /// [`MAX_PURGE_NAME`] bytes.
    pub fn check(&self) -> Result<(), &'static str> {
        if [&self.model, &self.id, &self.stage]
            .iter()
            .any(|n| n.as_ref().is_some_and(|n| n.len() > MAX_PURGE_NAME))
        {
            return Err("a model, id or stage name longer than 256 bytes");
        }
        if !self.all && self.model.is_none() && self.id.is_none() {
            return Err("name a model, an id, or all");
        }
        Ok(())
    }

    fn matches(&self, t: &Tags) -> bool {
        if self.all {
            return true;
        }
        let stage_ok = self
            .stage
            .as_ref()
            .is_none_or(|s| t.stages.iter().any(|x| x == s));
        let model_ok = self
            .model
            .as_ref()
            .is_some_and(|m| t.models.iter().any(|x| &**x == m));
        let id_ok = self.id.as_ref().is_some_and(|i| t.ids.contains(i));
        stage_ok && (model_ok || id_ok)
    }
}

/// How a request was answered from the cache's point of view (closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Stale,
    Miss,
    Coalesced,
}

pub type FlightResult = Result<Arc<Stored>, Failure>;

/// What a fill needs to call the upstream.
#[derive(Clone)]
pub struct FillRequest {
    pub upstream: Arc<Upstream>,
    /// The same request a pass-through would send (`proxy::forward::request`).
    pub request: UpstreamRequest,
    /// The endpoint kind, for the upstream latency metric.
    pub endpoint_kind: &'static str,
    pub tags: Tags,
    /// TTL before upstream Cache-Control: the shortest per-model TTL of what the query reads.
    pub ttl: Duration,
}

pub struct ReadCache {
    entries: moka::future::Cache<KeyDigest, Arc<Stored>>,
    flights: Mutex<HashMap<KeyDigest, watch::Receiver<Option<FlightResult>>>>,
    /// Bumped by every purge; a fill that started before a purge does not store its answer.
    purge_epoch: AtomicU64,
    /// Keys whose last fill failed (5xx, 429, timeout): a stale-while-revalidate hit does not
    /// refresh them again until this expires, so stale traffic cannot hammer a failing CMS.
    backoff: moka::sync::Cache<KeyDigest, ()>,
    pub settings: CacheSettings,
    client: Arc<UpstreamClient>,
    metrics: Arc<Metrics>,
    /// Where purges go besides this cache (the other replicas of a cluster).
    fanout: std::sync::OnceLock<Arc<dyn PurgeFanout>>,
    /// The shared second level (`[cache] l2`), consulted by a fill before the upstream.
    l2: std::sync::OnceLock<Arc<dyn l2::SecondLevel>>,
}

/// Sends a purge applied here on to the other replicas (implemented by the cluster; the cache
/// does not know how).
pub trait PurgeFanout: Send + Sync {
    fn publish(&self, purge: &Purge);
}

/// Keeps an entry for its TTL plus the longest stale window, then moka drops it.
struct StaleAwareExpiry {
    grace: Duration,
}

impl moka::Expiry<KeyDigest, Arc<Stored>> for StaleAwareExpiry {
    fn expire_after_create(
        &self,
        _k: &KeyDigest,
        v: &Arc<Stored>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(v.ttl + self.grace)
    }

    fn expire_after_update(
        &self,
        _k: &KeyDigest,
        v: &Arc<Stored>,
        _now: std::time::Instant,
        _d: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl + self.grace)
    }
}

impl ReadCache {
    pub fn new(
        settings: CacheSettings,
        client: Arc<UpstreamClient>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let listener_metrics = metrics.clone();
        let entries = moka::future::Cache::builder()
            .max_capacity(settings.max_bytes)
            // Weigh by what the entry holds: body plus a fixed overhead for the struct and tags.
            .weigher(|_k: &KeyDigest, v: &Arc<Stored>| {
                (v.body.len() + v.header_bytes() + 256 + v.tags.ids.len() * 32)
                    .min(u32::MAX as usize) as u32
            })
            .expire_after(StaleAwareExpiry {
                grace: settings.stale_while_revalidate.max(settings.stale_if_error),
            })
            .support_invalidation_closures()
            .eviction_listener(move |_k, _v, cause| {
                let cause = match cause {
                    moka::notification::RemovalCause::Expired => "expired",
                    moka::notification::RemovalCause::Explicit => "purged",
                    moka::notification::RemovalCause::Replaced => "replaced",
                    moka::notification::RemovalCause::Size => "size",
                };
                listener_metrics
                    .cache_evictions
                    .with_label_values(&[cause])
                    .inc();
            })
            .build();
        Arc::new(Self {
            entries,
            flights: Mutex::new(HashMap::new()),
            purge_epoch: AtomicU64::new(0),
            backoff: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(REFRESH_BACKOFF)
                .build(),
            settings,
            client,
            metrics,
            fanout: std::sync::OnceLock::new(),
            l2: std::sync::OnceLock::new(),
        })
    }

    /// Fills look in `l2` before calling the upstream, and write what they fetch to it.
    pub fn set_second_level(&self, l2: Arc<dyn l2::SecondLevel>) {
        let _ = self.l2.set(l2);
    }

    /// Purges applied here are sent on through `fanout` from now on (set once).
    pub fn set_fanout(&self, fanout: Arc<dyn PurgeFanout>) {
        let _ = self.fanout.set(fanout);
    }

    /// The entry for `key` if it is still servable (fresh or inside a stale window).
    pub async fn get(&self, key: &KeyDigest) -> Option<Arc<Stored>> {
        self.entries.get(key).await
    }

    pub fn record(&self, outcome: &'static str) {
        self.metrics.cache_lookups.with(&[outcome], |c| c.inc());
    }

    /// Runs (or joins) the fill for `key` and waits for it at most `fetch_deadline`.
    pub async fn fetch_coalesced(
        self: &Arc<Self>,
        key: KeyDigest,
        req: FillRequest,
    ) -> (Outcome, Result<Arc<Stored>, Failure>) {
        let (outcome, mut rx) = self.join_or_lead(key, req);
        let wait = rx.wait_for(Option::is_some);
        let result = match tokio::time::timeout(self.settings.fetch_deadline, wait).await {
            Ok(Ok(v)) => v.clone().unwrap_or(Err(Failure::Reset)),
            Ok(Err(_)) => Err(Failure::Reset),
            Err(_) => Err(Failure::Timeout),
        };
        (outcome, result)
    }

    /// Starts a background refresh for a stale entry unless a fill for it is already running.
    /// A background refresh of a stale entry, unless the key's last fill failed recently.
    /// The caller has taken the origin budget for it.
    pub fn refresh(self: &Arc<Self>, key: KeyDigest, req: FillRequest) {
        if self.backoff.contains_key(&key) {
            return;
        }
        let _ = self.join_or_lead(key, req);
    }

    /// Whether a refresh of `key` would be attempted now (no recent failure, none in flight).
    pub fn wants_refresh(&self, key: &KeyDigest) -> bool {
        !self.backoff.contains_key(key) && !self.flights.lock().contains_key(key)
    }

    fn join_or_lead(
        self: &Arc<Self>,
        key: KeyDigest,
        req: FillRequest,
    ) -> (Outcome, watch::Receiver<Option<FlightResult>>) {
        let mut flights = self.flights.lock();
        if let Some(rx) = flights.get(&key) {
            return (Outcome::Coalesced, rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key, rx.clone());
        drop(flights);
        let this = self.clone();
        // Its own task: the fill finishes (and stores) even if every waiting client goes away.
        tokio::spawn(async move {
            let epoch = this.purge_epoch.load(Ordering::SeqCst);
            let result = match this.l2.get() {
                Some(l2) => this.fill_shared(l2.as_ref(), &key, &req).await,
                None => this.fill(&req).await,
            };
            match &result {
                Ok(stored) if stored.status >= 500 || stored.status == 429 => {
                    this.backoff.insert(key, ());
                }
                Ok(stored) => {
                    if stored.ttl > Duration::ZERO
                        && this.purge_epoch.load(Ordering::SeqCst) == epoch
                    {
                        this.entries.insert(key, stored.clone()).await;
                        // A purge that landed between the check and the insert must win: the
                        // answer was fetched before it.
                        if this.purge_epoch.load(Ordering::SeqCst) != epoch {
                            this.entries.invalidate(&key).await;
                        }
                        this.publish_gauges();
                    }
                }
                Err(_) => this.backoff.insert(key, ()),
            }
            // Stored before the flight disappears: a request arriving now finds the entry.
            this.flights.lock().remove(&key);
            let _ = tx.send(Some(result));
        });
        (Outcome::Miss, rx)
    }

    /// A fill in a cluster with a second level: the entry another replica stored, else the
    /// upstream — by one replica at a time (the others wait for its entry, up to the fill lock's
    /// hold, then fetch themselves). Redis errors make it a plain fill.
    async fn fill_shared(
        &self,
        l2: &dyn l2::SecondLevel,
        key: &KeyDigest,
        req: &FillRequest,
    ) -> FlightResult {
        if let Some(stored) = l2.get(key).await {
            return Ok(Arc::new(stored));
        }
        // Waiting for another replica's fill takes at most half the fetch deadline, so a waiter
        // that ends up fetching itself still answers inside it.
        let hold = self
            .settings
            .fetch_deadline
            .min(req.upstream.timeouts.total)
            / 2;
        let deadline = Instant::now() + hold;
        let ticket = loop {
            match l2.lock(key, hold).await {
                l2::Lock::Acquired(ticket) => break Some(ticket),
                l2::Lock::Unavailable => break None,
                l2::Lock::Held(_) => {}
            }
            // Another replica fills: wait for its entry while its lock is held.
            let released = loop {
                if Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(l2::WAIT_POLL).await;
                match l2.peek(key).await {
                    l2::Peek::Entry(stored) => {
                        l2.waited();
                        return Ok(Arc::from(stored));
                    }
                    l2::Peek::Filling => {}
                    l2::Peek::Released => break true,
                    l2::Peek::Unavailable => break false,
                }
            };
            if !released {
                break None; // fetch without the lock; another replica's entry may win
            }
        };
        let result = self.fill(req).await;
        if let Some(ticket) = ticket {
            if let Ok(stored) = &result {
                if stored.ttl > Duration::ZERO
                    && stored.body.len() <= self.settings.l2_max_entry_bytes
                {
                    l2.put(key, stored, ticket).await;
                }
            }
            // Released whatever the outcome: waiters see it and fill themselves.
            l2.unlock(key, ticket).await;
        }
        result
    }

    async fn fill(&self, req: &FillRequest) -> FlightResult {
        let started = Instant::now();
        let fetched = self
            .client
            .fetch(
                &req.upstream,
                &req.request,
                // The upstream's total timeout bounds the exchange; waiters give up at the fetch
                // deadline (whichever comes first).
                self.settings
                    .fetch_deadline
                    .min(req.upstream.timeouts.total),
                MAX_FETCH_BYTES,
            )
            .await;
        crate::upstream::record(
            &self.metrics,
            req.endpoint_kind,
            started.elapsed(),
            fetched
                .as_ref()
                .map(|f| f.header.status.as_u16())
                .map_err(|e| *e),
        );
        let fetched = fetched?;
        let h = &fetched.header;
        let status = h.status.as_u16();
        // Only visible ASCII is replayed (as before: a value `to_str` refuses is dropped). The
        // value is copied: the upstream's header values share the buffer its whole answer
        // header was read into (4 KiB or more), which the entry would otherwise keep, unweighed.
        let header = |name: http::header::HeaderName| {
            h.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(Stored::replayable)
        };
        let content_type = header(http::header::CONTENT_TYPE);
        let ttl = self.storable_ttl(
            h,
            &fetched.body,
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            req.ttl,
        );
        let mut tags = req.tags.clone();
        if ttl > Duration::ZERO {
            if let Ok(v) = serde_json::from_slice::<Value>(&fetched.body) {
                collect_ids(&v, &mut tags.ids);
            }
        }
        Ok(Arc::new(Stored::new(
            status,
            content_type,
            header(http::header::RETRY_AFTER),
            fetched.body,
            Instant::now(),
            ttl,
            tags,
        )))
    }

    /// The TTL to store an answer for, or zero when it must not be stored.
    fn storable_ttl(
        &self,
        h: &pingora::http::ResponseHeader,
        body: &Bytes,
        content_type: Option<&str>,
        ttl: Duration,
    ) -> Duration {
        let none = Duration::ZERO;
        if h.status.as_u16() != 200
            || h.headers.contains_key("set-cookie")
            || body.len() > self.settings.max_entry_bytes
        {
            return none;
        }
        let json = content_type.is_some_and(|ct| {
            let media = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            media == "application/json" || media == "application/graphql-response+json"
        });
        if !json {
            return none;
        }
        let mut ttl = ttl;
        for cc in h
            .headers
            .get_all("cache-control")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for directive in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
                if directive == "no-store" || directive == "private" || directive == "no-cache" {
                    return none;
                }
                if let Some(v) = directive
                    .strip_prefix("s-maxage=")
                    .or_else(|| directive.strip_prefix("max-age="))
                {
                    if let Ok(secs) = v.parse::<u64>() {
                        // s-maxage wins over max-age (RFC 9111 §5.2.2.10); both over config.
                        if directive.starts_with("s-maxage")
                            || !cc.to_ascii_lowercase().contains("s-maxage")
                        {
                            ttl = Duration::from_secs(secs);
                        }
                    }
                }
            }
        }
        // A GraphQL error (even next to partial data) is never stored; nor is a body that does
        // not parse (truncated).
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) if !o.contains_key("errors") => ttl,
            _ => none,
        }
    }

    /// Makes every matching entry invisible to the very next lookup, here and (in a cluster)
    /// on every other replica.
    pub fn purge(&self, purge: &Purge, source: &'static str) {
        self.apply_purge(purge, source);
        if let Some(f) = self.fanout.get() {
            f.publish(purge);
        }
    }

    /// [`Self::purge`] on this cache alone (a purge received from another replica).
    pub fn apply_purge(&self, purge: &Purge, source: &'static str) {
        self.purge_epoch.fetch_add(1, Ordering::SeqCst);
        self.metrics.cache_purges.with_label_values(&[source]).inc();
        if purge.all {
            self.entries.invalidate_all();
        } else {
            let p = purge.clone();
            if self
                .entries
                .invalidate_entries_if(move |_k, v| p.matches(&v.tags))
                .is_err()
            {
                // Predicates unsupported or too many pending: fall back to dropping everything.
                self.entries.invalidate_all();
            }
        }
        tracing::info!(target: "audit", event = "purge", source, model = purge.model.as_deref(), id = purge.id.as_deref(), stage = purge.stage.as_deref(), all = purge.all, "cache purge");
    }

    pub fn publish_gauges(&self) {
        self.metrics
            .cache_entries
            .set(self.entries.entry_count() as i64);
        self.metrics
            .cache_bytes
            .set(self.entries.weighted_size() as i64);
    }

    /// For tests and benches: apply pending evictions and invalidations now.
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
        self.publish_gauges();
    }
}

/// Every string `id` in a response, for purges by entry id.
fn collect_ids(v: &Value, out: &mut HashSet<String>) {
    if out.len() >= MAX_IDS_PER_ENTRY {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("id", Value::String(s)) => {
                        out.insert(s.clone());
                    }
                    _ => collect_ids(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_ids(i, out)),
        _ => {}
    }
}

/// A client's `hyg-stale-*` header (seconds), capped by the configured window.
pub fn window(header: Option<&[u8]>, max: Duration) -> Duration {
    header
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(max))
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream header value shares the buffer the whole answer header was read into; what
    /// an entry keeps must be a copy of its own, weighed with the entry.
    #[test]
    fn stored_header_values_are_copies_and_weighed() {
        let read = Bytes::from(format!("application/json{}", " ".repeat(4096)).into_bytes());
        let upstream = HeaderValue::from_maybe_shared(read.slice(..16)).unwrap();
        let kept = Stored::replayable(upstream.to_str().unwrap()).unwrap();
        assert_eq!(kept, "application/json");
        let buffer = read.as_ptr() as usize..read.as_ptr() as usize + read.len();
        assert!(!buffer.contains(&(kept.as_bytes().as_ptr() as usize)));
        assert!(
            Stored::replayable("caf\u{e9}").is_none(),
            "visible ASCII only"
        );
        let stored = Stored::new(
            200,
            Some(kept),
            None,
            Bytes::from_static(b"{}"),
            Instant::now(),
            Duration::from_secs(1),
            Tags::default(),
        );
        assert_eq!(stored.content_length(), "2");
        assert_eq!(stored.header_bytes(), "application/json".len() + 1);
    }

    #[test]
    fn purge_matching() {
        let tags = Tags {
            models: vec![Arc::from("Post"), Arc::from("Author")],
            stages: vec!["PUBLISHED".into()],
            ids: ["p1".to_string()].into(),
        };
        assert!(Purge {
            model: Some("Post".into()),
            ..Purge::default()
        }
        .matches(&tags));
        assert!(Purge {
            id: Some("p1".into()),
            ..Purge::default()
        }
        .matches(&tags));
        assert!(!Purge {
            model: Some("Post".into()),
            stage: Some("DRAFT".into()),
            ..Purge::default()
        }
        .matches(&tags));
        assert!(!Purge {
            model: Some("Page".into()),
            ..Purge::default()
        }
        .matches(&tags));
        assert!(Purge {
            all: true,
            ..Purge::default()
        }
        .matches(&tags));
    }

    #[test]
    fn client_windows_are_capped() {
        let max = Duration::from_secs(60);
        assert_eq!(window(Some(b"10"), max), Duration::from_secs(10));
        assert_eq!(window(Some(b"600"), max), max);
        assert_eq!(window(Some(b"x"), max), max);
        assert_eq!(window(None, max), max);
    }
}
