//! Many replicas, one truth: the policy set, purges, webhook replays and rate limits shared
//! through Redis (`[cluster]`).
//!
//! The hot path never waits on Redis for a decision it can take locally: every request still
//! reads one local snapshot. Redis I/O runs on the cluster's own runtime thread; the proxy asks
//! it only (a) whether the snapshot is fresh (an atomic load), (b) for cluster-wide rate limits
//! of principals that have one. What lives where is in docs/architecture.md ("Cluster").
//!
//! Keys (one hash tag, so a Redis Cluster keeps the set and its sequence in one slot):
//! `{prefix}:policy` (hash: version, epoch, written_at, writer, public, tokens_file, tokens,
//! revoked, schema, unrevoked), `{prefix}:purge:seq` and `{prefix}:purge:log`, `{prefix}:webhook:<mac>`,
//! `{prefix}:rl:<scope>:<key>`; pub/sub channel `{prefix}:events`.

pub mod l2;
pub mod limits;
pub mod set;
pub mod sync;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::ConnectionManager;

use crate::cache::{Purge, PurgeFanout};
use crate::config::{ClusterSettings, OnStale};
use crate::metrics::Metrics;

/// Key and channel names under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    pub policy: String,
    pub purge_seq: String,
    pub purge_log: String,
    /// Random, created with the purge sequence: a sequence that restarted (a replaced Redis)
    /// is told apart even when it has already counted past the number a replica saw.
    pub purge_epoch: String,
    pub events: String,
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            policy: format!("{{{prefix}}}:policy"),
            purge_seq: format!("{{{prefix}}}:purge:seq"),
            purge_log: format!("{{{prefix}}}:purge:log"),
            purge_epoch: format!("{{{prefix}}}:purge:epoch"),
            events: format!("{{{prefix}}}:events"),
            prefix: prefix.to_string(),
        }
    }

    pub fn webhook(&self, mac: &[u8; 32]) -> String {
        format!("{{{}}}:webhook:{}", self.prefix, hex::encode(mac))
    }

    pub fn rate(&self, scope: &str, key: &str) -> String {
        format!("{}:rl:{scope}:{key}", self.prefix)
    }
}

/// Purges remembered in Redis for replicas that missed the broadcast (reconnects).
pub const PURGE_LOG_LEN: isize = 1000;
const NEVER: u64 = u64::MAX;

/// The shared state of one replica: its Redis connection and what it knows of the cluster.
pub struct Cluster {
    pub settings: ClusterSettings,
    pub keys: Keys,
    /// Random per process: a replica skips its own broadcasts.
    pub instance: String,
    /// The client and connection of the current master (swapped when Sentinel names another).
    client: arc_swap::ArcSwap<redis::Client>,
    conn: arc_swap::ArcSwap<ConnectionManager>,
    /// `[cluster] sentinels`: asked for the master at start and before every poll.
    sentinel: Option<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
    handle: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Milliseconds since `started` of the last confirmed policy version (`NEVER` before).
    confirmed_at: AtomicU64,
    /// Whether a policy set has been applied from Redis since start.
    synced: AtomicBool,
    /// (epoch, version) of the set the live snapshot was compiled from, and of the last set
    /// refused.
    applied: Mutex<Option<set::SetId>>,
    refused: Mutex<Option<set::SetId>>,
    /// The purge epoch this replica's sequence number belongs to.
    purge_epoch: Mutex<Option<String>>,
    /// One sync at a time (the subscriber and the poll both ask).
    sync_lock: tokio::sync::Mutex<()>,
    /// Highest purge sequence number applied.
    purge_seen: AtomicU64,
    purge_lock: tokio::sync::Mutex<()>,
    /// Fired when the poll recovers from a failure: the subscriber reconnects and resyncs.
    resubscribe: tokio::sync::Notify,
    /// Whether the last poll reached Redis.
    up: AtomicBool,
    /// Local buckets for when Redis cannot be asked (limit / expected_replicas).
    fallback: crate::ratelimit::Limiters,
    /// Whether the purge sequence has been read once (start-up needs no catch-up).
    purges_started: AtomicBool,
    /// Purges waiting for Redis to come back (see `sync::hold_purge`).
    pending: Mutex<std::collections::VecDeque<String>>,
    me: std::sync::Weak<Cluster>,
}

impl Cluster {
    /// Opens the client (nothing is connected yet: a Redis that is down at start-up is a
    /// replica that is not ready, not a failed start). The cluster's I/O runs on its own
    /// single-threaded runtime, alive for the life of the process.
    pub fn new(settings: ClusterSettings, metrics: Arc<Metrics>) -> Result<Arc<Cluster>, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(std::future::pending::<()>());
            })
            .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
        let handle = rx
            .recv()
            .map_err(|e| format!("cluster thread: {e}"))?
            .map_err(|e| format!("cluster runtime: {e}"))?;
        let (client, sentinel) = match &settings.sentinel {
            None => (
                redis::Client::open(settings.url.as_str()).map_err(|e| {
                    format!(
                        "[cluster] redis {}: {e}",
                        crate::config::redact_url(&settings.url)
                    )
                })?,
                None,
            ),
            Some(s) => {
                let mut info = redis::RedisConnectionInfo::default();
                if let Some(p) = &s.password {
                    info = info.set_password(p.clone());
                }
                let node = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(info);
                let mut sc = redis::sentinel::SentinelClient::build(
                    s.sentinels.clone(),
                    s.master.clone(),
                    Some(node),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| format!("[cluster] sentinels: {e}"))?;
                // The master now, if the sentinels answer; else an address that refuses, so the
                // replica starts unready and asks again at every poll.
                let (mtx, mrx) = std::sync::mpsc::channel();
                let wait = settings.command_timeout.max(Duration::from_secs(2));
                handle.spawn(async move {
                    let found = tokio::time::timeout(wait, sc.async_get_client()).await;
                    let _ = mtx.send((found, sc));
                });
                let (found, sc) = mrx.recv().map_err(|e| format!("cluster thread: {e}"))?;
                let client = match found {
                    Ok(Ok(c)) => c,
                    _ => {
                        tracing::warn!(master = %s.master, "the sentinels did not name a master at start-up; asking again at every poll");
                        redis::Client::open("redis://127.0.0.1:1/")
                            .map_err(|e| format!("[cluster] {e}"))?
                    }
                };
                (client, Some(tokio::sync::Mutex::new(sc)))
            }
        };
        let conn = manager(&handle, &client, &settings)?;
        // Keyed by scope and key, each with the divided limit it is asked with.
        let fallback = crate::ratelimit::Limiters::new(crate::ratelimit::RateSettings {
            token_default: None,
            public_per_ip: None,
            origin_per_second: None,
            refused_per_ip: None,
            ipv6_prefix: 64,
        });
        Ok(Arc::new_cyclic(|me| Cluster {
            keys: Keys::new(&settings.prefix),
            settings,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            client: arc_swap::ArcSwap::from_pointee(client),
            conn: arc_swap::ArcSwap::from_pointee(conn),
            sentinel,
            handle,
            metrics,
            started: Instant::now(),
            confirmed_at: AtomicU64::new(NEVER),
            synced: AtomicBool::new(false),
            applied: Mutex::new(None),
            refused: Mutex::new(None),
            purge_epoch: Mutex::new(None),
            sync_lock: tokio::sync::Mutex::new(()),
            purge_seen: AtomicU64::new(0),
            purge_lock: tokio::sync::Mutex::new(()),
            resubscribe: tokio::sync::Notify::new(),
            up: AtomicBool::new(false),
            fallback,
            purges_started: AtomicBool::new(false),
            pending: Mutex::new(std::collections::VecDeque::new()),
            me: me.clone(),
        }))
    }

    /// Runs `fut` on the cluster's runtime and waits for it from any thread (start-up, CLI).
    pub fn block_on<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().ok()
    }

    /// Runs `fut` on the cluster's runtime and awaits it from another runtime (Pingora's).
    pub async fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        self.handle.spawn(fut).await.ok()
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.load().as_ref().clone()
    }

    pub(crate) fn client(&self) -> redis::Client {
        self.client.load().as_ref().clone()
    }

    /// With Sentinel: asks for the master and, when it is another node than the one in use
    /// (a failover), switches the client and connection to it and has the subscriber follow.
    /// Returns whether it switched.
    pub(crate) async fn follow_master(&self) -> bool {
        let Some(sentinel) = &self.sentinel else {
            return false;
        };
        let wait = self
            .settings
            .command_timeout
            .max(Duration::from_millis(500));
        let found = {
            let mut sc = sentinel.lock().await;
            tokio::time::timeout(wait, sc.async_get_client()).await
        };
        let Ok(Ok(client)) = found else {
            self.metrics
                .cluster_errors
                .with_label_values(&["sentinel"])
                .inc();
            return false;
        };
        let now = format!("{:?}", client.get_connection_info().addr());
        let before = format!("{:?}", self.client.load().get_connection_info().addr());
        if now == before {
            return false;
        }
        let Ok(conn) = manager(&self.handle, &client, &self.settings) else {
            return false;
        };
        tracing::warn!(target: "audit", event = "cluster_master_changed", from = %before, to = %now, "Sentinel names another master: following it");
        self.client.store(Arc::new(client));
        self.conn.store(Arc::new(conn));
        self.resubscribe.notify_one();
        true
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The policy version was confirmed against Redis just now.
    fn confirm(&self) {
        self.confirmed_at.store(self.now_ms(), Ordering::Release);
    }

    /// Time since the policy version was last confirmed; `None` before the first sync.
    pub fn staleness(&self) -> Option<Duration> {
        match self.confirmed_at.load(Ordering::Acquire) {
            NEVER => None,
            t => Some(Duration::from_millis(self.now_ms().saturating_sub(t))),
        }
    }

    /// Whether token requests must be refused now (503 POLICY_STALE): the policy version has
    /// not been confirmed within `max_staleness` (or ever), and `on_stale` says refuse.
    pub fn refuses_tokens(&self) -> bool {
        self.settings.on_stale == OnStale::RefuseTokens
            && self
                .staleness()
                .is_none_or(|s| s > self.settings.max_staleness)
    }

    /// Ready once a policy set from Redis has been applied.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Claims a verified webhook delivery cluster-wide: `Some(true)` when this replica is the
    /// first to act on it, `Some(false)` when any replica already did, `None` when Redis could
    /// not be asked (the caller's local memory then decides).
    pub async fn claim_delivery(&self, mac: [u8; 32], window: Duration) -> Option<bool> {
        let key = self.keys.webhook(&mac);
        let mut conn = self.connection();
        let ms = window.as_millis().max(1) as u64;
        let r: Option<Result<Option<String>, redis::RedisError>> = self
            .run(async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        match r {
            Some(Ok(v)) => Some(v.is_some()),
            _ => {
                self.metrics
                    .cluster_errors
                    .with_label_values(&["webhook"])
                    .inc();
                None
            }
        }
    }
}

/// A multiplexed, reconnecting connection to `client` with the cluster's timeouts (lazy:
/// nothing is connected until the first command).
fn manager(
    handle: &tokio::runtime::Handle,
    client: &redis::Client,
    settings: &ClusterSettings,
) -> Result<ConnectionManager, String> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.command_timeout.max(Duration::from_secs(1))))
        .set_response_timeout(Some(settings.command_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let _enter = handle.enter();
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|e| format!("[cluster] redis: {e}"))
}

/// Purges reach every replica: applied locally first by the cache, then broadcast (and
/// logged under a sequence number for replicas that miss the message); one that cannot be sent
/// waits for Redis to come back.
impl PurgeFanout for Cluster {
    fn publish(&self, purge: &Purge) {
        let Ok(json) = serde_json::to_string(purge) else {
            return;
        };
        let Some(me) = self.me.upgrade() else {
            return;
        };
        self.handle.spawn(async move {
            match me.broadcast(&json).await {
                Ok(_) => me
                    .metrics
                    .cluster_purges
                    .with_label_values(&["sent"])
                    .inc(),
                Err(e) => {
                    me.metrics.cluster_errors.with_label_values(&["purge"]).inc();
                    tracing::warn!(error = %e, "purge not broadcast to the other replicas yet (Redis); held until it is reached");
                    me.hold_purge(json);
                }
            }
        });
    }
}
