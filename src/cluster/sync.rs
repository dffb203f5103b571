//! Keeping a replica in step with the cluster: a subscriber on the events channel (policy
//! versions, purges) and a poll of the version and the purge sequence every `poll_interval`,
//! because pub/sub drops whatever is published while a subscriber reconnects. After every
//! (re)subscription the replica resyncs in full: the set, then the purges it missed.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Script;

use super::{set, Cluster, PURGE_LOG_LEN};
use crate::cache::{Purge, ReadCache};
use crate::policy::store::PolicyStore;

/// Takes the next purge sequence number (creating the purge epoch with the sequence), logs the
/// purge under it (the log keeps the last `ARGV[3] + 1`), applies it to the second level (the
/// purge-all mark, or a new generation of each tag it names: entries remember the generations
/// they were stored under) and announces it. KEYS: sequence, log, purge-all mark, purge epoch;
/// ARGV: channel, "<instance> <json>", last index kept, "all" or "tags", a fresh epoch, the tag
/// generation keys' lifetime (ms), then those keys.
static PURGE: &str = r#"
local e = redis.call('GET', KEYS[4])
if not e then
  e = ARGV[5]
  redis.call('SET', KEYS[4], e)
end
local s = redis.call('INCR', KEYS[1])
redis.call('LPUSH', KEYS[2], s .. ' ' .. ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]))
if ARGV[4] == 'all' then
  redis.call('SET', KEYS[3], s)
else
  for i = 7, #ARGV do
    redis.call('INCR', ARGV[i])
    redis.call('PEXPIRE', ARGV[i], ARGV[6])
  end
end
redis.call('PUBLISH', ARGV[1], 'purge ' .. e .. ' ' .. s .. ' ' .. ARGV[2])
return s
"#;

pub static PURGE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PURGE));

/// Purges that could not be broadcast, sent when Redis is reached again (oldest first); past
/// this many, they are replaced by one purge of everything.
const MAX_PENDING_PURGES: usize = 1000;

/// What the loops act on.
pub struct Targets {
    pub store: Arc<PolicyStore>,
    pub cache: Option<Arc<ReadCache>>,
}

/// Reading a whole set may take longer than one command (a large registry).
const SET_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl Cluster {
    /// Starts the subscriber and the poll on the cluster's runtime.
    pub fn start(self: &Arc<Self>, targets: Targets) {
        let targets = Arc::new(targets);
        if let Some(cache) = &targets.cache {
            cache.set_fanout(self.clone());
            if cache.settings.l2 {
                cache.set_second_level(Arc::new(super::l2::RedisL2 {
                    cluster: self.clone(),
                    max_entry_bytes: cache.settings.l2_max_entry_bytes,
                    grace: cache
                        .settings
                        .stale_while_revalidate
                        .max(cache.settings.stale_if_error),
                }));
            }
        }
        self.handle.spawn(self.clone().subscriber(targets.clone()));
        self.handle.spawn(self.clone().poller(targets));
    }

    /// Reads the set for start-up, within `wait`; `None` when Redis is unreachable or empty.
    pub fn initial_set(self: &Arc<Self>, wait: Duration) -> Option<set::StoredSet> {
        let me = self.clone();
        self.block_on(async move {
            let mut conn = me.connection();
            match tokio::time::timeout(wait, set::read(&mut conn, &me.keys)).await {
                Ok(Ok(s)) => {
                    me.up.store(true, Ordering::Release);
                    if s.is_none() {
                        tracing::error!(target: "audit", event = "cluster_policy_missing", key = %me.keys.policy, "Redis holds no policy set: push one with `contentgate policy push`; token requests are refused until then");
                    }
                    s
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the policy set from Redis at start-up; not ready until it can");
                    None
                }
                Err(_) => {
                    tracing::warn!("Redis did not answer at start-up; not ready until it does");
                    None
                }
            }
        })
        .flatten()
    }

    /// Records the set the start-up snapshot was compiled from (or refused).
    pub fn started_with(&self, id: set::SetId, applied: bool) {
        if applied {
            self.metrics.cluster_policy_version.set(id.version as i64);
            *self.applied.lock() = Some(id);
            self.synced.store(true, Ordering::Release);
            self.confirm();
        } else {
            self.metrics
                .cluster_alarm
                .with_label_values(&["refused"])
                .set(1);
            *self.refused.lock() = Some(id);
        }
    }

    async fn subscriber(self: Arc<Self>, targets: Arc<Targets>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let connect = self.settings.command_timeout.max(Duration::from_secs(1));
            if let Ok(Ok(mut ps)) =
                tokio::time::timeout(connect, self.client().get_async_pubsub()).await
            {
                if let Ok(Ok(())) =
                    tokio::time::timeout(connect, ps.subscribe(&self.keys.events)).await
                {
                    backoff = Duration::from_millis(50);
                    self.metrics
                        .cluster_events
                        .with_label_values(&["subscribed"])
                        .inc();
                    self.check_eviction_policy().await;
                    // Subscribed first, then resynced: nothing published in between is lost.
                    self.sync_once(&targets).await;
                    let (mut sink, mut stream) = ps.split();
                    // A subscription that died without the connection closing (a half-open
                    // TCP connection behind a partition) is found by pinging it.
                    let mut ping = tokio::time::interval(self.settings.poll_interval);
                    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    ping.tick().await;
                    loop {
                        tokio::select! {
                            m = stream.next() => match m {
                                Some(m) => self.on_event(&targets, m.get_payload_bytes()).await,
                                None => break,
                            },
                            _ = ping.tick() => {
                                let alive = tokio::time::timeout(
                                    self.settings.command_timeout,
                                    sink.ping::<String>(),
                                )
                                .await;
                                if !matches!(alive, Ok(Ok(_))) {
                                    break;
                                }
                            }
                            _ = self.resubscribe.notified() => break,
                        }
                    }
                }
            }
            self.metrics
                .cluster_events
                .with_label_values(&["disconnected"])
                .inc();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// An `allkeys-*` eviction policy may evict the policy set itself (every replica then
    /// refuses tokens) or the purge sequence: alarm. `volatile-*` and `noeviction` keep keys
    /// without a lifetime, which the set and the sequence are.
    async fn check_eviction_policy(&self) {
        let mut conn = self.connection();
        let info: Result<Result<String, _>, _> = tokio::time::timeout(
            self.settings.command_timeout,
            redis::cmd("INFO").arg("memory").query_async(&mut conn),
        )
        .await;
        let Ok(Ok(info)) = info else {
            return;
        };
        let policy = info
            .lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
            .map(str::trim)
            .unwrap_or("");
        let bad = policy.starts_with("allkeys");
        if bad {
            tracing::error!(target: "audit", event = "cluster_eviction_policy", policy, "Redis may evict the policy set (maxmemory-policy allkeys-*): use volatile-lru/volatile-ttl or noeviction");
        }
        self.metrics
            .cluster_alarm
            .with_label_values(&["eviction_policy"])
            .set(i64::from(bad));
    }

    async fn poller(self: Arc<Self>, targets: Arc<Targets>) {
        let mut tick = tokio::time::interval(self.settings.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed = false;
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            ticks += 1;
            // With Sentinel, a failover moves the master: ask for it when the last check failed
            // or writes are not getting through (a demoted master still answers reads), and
            // every tenth poll as a backstop — not at every poll (a sentinel query and a role
            // check on new connections each time).
            if failed || !self.pending.lock().is_empty() || ticks.is_multiple_of(10) {
                self.follow_master().await;
            }
            let reached = self.sync_once(&targets).await;
            if reached && failed {
                // The subscriber may hold a connection that died silently (a partition):
                // make it subscribe again, which resyncs.
                self.resubscribe.notify_one();
            }
            failed = !reached;
            self.metrics.policy_staleness.set(
                self.staleness()
                    .unwrap_or_else(|| self.started.elapsed())
                    .as_secs_f64(),
            );
            self.metrics.cluster_up.set(i64::from(reached));
        }
    }

    async fn on_event(&self, targets: &Targets, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        let mut parts = text.splitn(2, ' ');
        match (parts.next(), parts.next()) {
            (Some("policy"), _) => {
                self.metrics
                    .cluster_events
                    .with_label_values(&["policy"])
                    .inc();
                self.sync_once(targets).await;
            }
            (Some("purge"), Some(rest)) => {
                self.metrics
                    .cluster_events
                    .with_label_values(&["purge"])
                    .inc();
                let mut parts = rest.splitn(3, ' ');
                let (Some(epoch), Some(seq), Some(entry)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return;
                };
                let Ok(seq) = seq.parse::<u64>() else {
                    return;
                };
                let _g = self.purge_lock.lock().await;
                let seen = self.purge_seen.load(Ordering::Acquire);
                // No epoch known yet (no purge had happened): this one starts it.
                let same_epoch = {
                    let mut known = self.purge_epoch.lock();
                    if known.is_none() && seq == seen + 1 {
                        *known = Some(epoch.to_string());
                    }
                    known.as_deref() == Some(epoch)
                };
                if same_epoch && seq <= seen {
                    return; // applied already, by a catch-up
                }
                if same_epoch && seq == seen + 1 {
                    self.apply_purge_entry(targets, entry, "received");
                    self.purge_seen.store(seq, Ordering::Release);
                } else {
                    // A gap, or another epoch: the log (or a full purge) settles it.
                    self.catch_up_locked(targets, seq, Some(epoch.to_string()))
                        .await;
                }
            }
            _ => {}
        }
    }

    /// One check against Redis: the set's identity and the purge sequence; reads and applies
    /// a new set, catches up on purges. Returns whether Redis answered. One at a time: the
    /// subscriber and the poll never apply two sets out of order.
    async fn sync_once(&self, targets: &Targets) -> bool {
        let _one = self.sync_lock.lock().await;
        let mut conn = self.connection();
        let head = tokio::time::timeout(
            self.settings.command_timeout,
            set::head(&mut conn, &self.keys),
        )
        .await;
        let head = match head {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                self.unreachable(&e.to_string());
                return false;
            }
            Err(_) => {
                self.unreachable("timed out");
                return false;
            }
        };
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!(target: "audit", event = "cluster_reachable", "Redis reachable");
        }
        self.send_pending_purges().await;
        {
            let _g = self.purge_lock.lock().await;
            self.catch_up_locked(targets, head.purge_seq, head.purge_epoch.clone())
                .await;
        }
        let alarm = |reason: &str, on: bool| {
            self.metrics
                .cluster_alarm
                .with_label_values(&[reason])
                .set(i64::from(on));
        };
        let Some(id) = head.set else {
            // An empty Redis (flushed, or a new instance) is never read as "no tokens, no
            // revocations": the last good snapshot keeps serving, unconfirmed.
            if self
                .metrics
                .cluster_alarm
                .with_label_values(&["empty"])
                .get()
                == 0
            {
                tracing::error!(target: "audit", event = "cluster_policy_missing", key = %self.keys.policy, "Redis holds no policy set (flushed or new?): keeping the last good snapshot; token requests are refused after max_staleness until a set is pushed");
            }
            alarm("empty", true);
            return true;
        };
        alarm("empty", false);
        if self.applied.lock().as_ref() == Some(&id) {
            self.confirm();
            return true;
        }
        if self.refused.lock().as_ref() == Some(&id) {
            return true;
        }
        // The same epoch at a lower version than the one applied: Redis went back in time (a
        // restored backup). Never confirmed; a new write (a push) moves it forward again.
        let rollback = self
            .applied
            .lock()
            .as_ref()
            .is_some_and(|a| a.epoch == id.epoch && id.version < a.version);
        if rollback {
            if self
                .metrics
                .cluster_alarm
                .with_label_values(&["rollback"])
                .get()
                == 0
            {
                tracing::error!(target: "audit", event = "cluster_policy_rollback", version = id.version, "the policy set in Redis is older than the one applied (a restored backup?): keeping the last good snapshot, unconfirmed; push the policies to move on");
            }
            alarm("rollback", true);
            return true;
        }
        alarm("rollback", false);
        // A new set: read and decoded on the blocking pool over its own connection (it may be
        // large; the runtime thread goes on answering polls, limits and L2 meanwhile).
        let client = self.client();
        let keys = self.keys.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut c = client.get_connection_with_timeout(SET_READ_TIMEOUT)?;
            c.set_read_timeout(Some(SET_READ_TIMEOUT))?;
            set::read_blocking(&mut c, &keys)
        })
        .await;
        let stored = match read {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => return true, // emptied in between; the next check says so
            Ok(Err(e)) => {
                self.unreachable(&format!("reading the policy set: {e}"));
                return false;
            }
            Err(e) => {
                self.unreachable(&format!("reading the policy set: {e}"));
                return false;
            }
        };
        let id = stored.id();
        let store = targets.store.clone();
        let texts = stored.texts;
        let applied =
            tokio::task::spawn_blocking(move || store.apply_shared(texts, "cluster")).await;
        match applied {
            Ok(Ok((_, kept))) => {
                self.metrics.cluster_policy_version.set(id.version as i64);
                alarm("refused", false);
                if !kept.is_empty() {
                    tracing::error!(target: "audit", event = "cluster_revocations_kept", version = id.version, kept = kept.len(), first = %kept[0], "the policy set in Redis drops revoked jtis that no writer un-revoked on purpose (a restored backup or a stale copy?): applied with them still revoked, and written back to the set so every replica (and every new one) holds them");
                    // Revocations are monotone cluster-wide: the set gets them back (one script,
                    // idempotent if several replicas do it), and the next sync applies it.
                    let mut conn = self.connection();
                    let written = tokio::time::timeout(
                        self.settings.command_timeout * 4,
                        set::revoke(
                            &mut conn,
                            &self.keys,
                            &kept,
                            &format!("replica:{}", self.instance),
                        ),
                    )
                    .await;
                    if !matches!(written, Ok(Ok(_))) {
                        self.metrics
                            .cluster_errors
                            .with_label_values(&["sync"])
                            .inc();
                    }
                }
                alarm("revocations_kept", !kept.is_empty());
                tracing::info!(target: "audit", event = "cluster_policy_applied", epoch = %id.epoch, version = id.version, "policy set from Redis applied");
                *self.applied.lock() = Some(id);
                self.synced.store(true, Ordering::Release);
                self.confirm();
            }
            Ok(Err(errors)) => {
                // Logged with file, line and reason by the store; the last good snapshot serves.
                alarm("refused", true);
                tracing::error!(target: "audit", event = "cluster_policy_refused", epoch = %id.epoch, version = id.version, errors = errors.0.len(), "policy set in Redis refused; the last good snapshot keeps serving, unconfirmed");
                *self.refused.lock() = Some(id);
            }
            Err(e) => tracing::error!(error = %e, "applying the policy set failed"),
        }
        true
    }

    fn unreachable(&self, why: &str) {
        self.metrics
            .cluster_errors
            .with_label_values(&["sync"])
            .inc();
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(target: "audit", event = "cluster_unreachable", error = why, "Redis unreachable: serving the last good snapshot; token requests are refused after max_staleness");
        }
    }

    /// Brings the purges applied here up to `seq`: from the log when it reaches back far
    /// enough, else by purging everything. A sequence of another epoch, or lower than what was
    /// seen, means Redis lost it (flushed or replaced): purges may be lost with it, so
    /// everything is purged here, and in the second level (a purge of everything, broadcast).
    async fn catch_up_locked(&self, targets: &Targets, seq: u64, epoch: Option<String>) {
        let seen = self.purge_seen.load(Ordering::Acquire);
        let known = self.purge_epoch.lock().clone();
        if !self.purges_started.swap(true, Ordering::AcqRel) {
            // Start-up: nothing is cached yet that an earlier purge could concern.
            self.purge_seen.store(seq, Ordering::Release);
            *self.purge_epoch.lock() = epoch;
            return;
        }
        let epoch_changed = match (&known, &epoch) {
            (Some(k), Some(e)) => k != e,
            (Some(_), None) => seq > 0, // purges exist, but not under the epoch seen
            (None, _) => false,
        };
        if epoch.is_some() {
            *self.purge_epoch.lock() = epoch.clone();
        }
        if epoch_changed || seq < seen {
            self.purge_everything(
                targets,
                "the purge sequence restarted (Redis flushed or replaced)",
            );
            self.purge_seen.store(seq, Ordering::Release);
            if let Some(cache) = &targets.cache {
                if cache.settings.l2 {
                    // Entries restored with an old Redis may predate purges since: none of
                    // them is served. (Applied here already; the broadcast tells the rest.)
                    let all = serde_json::to_string(&Purge {
                        all: true,
                        ..Purge::default()
                    })
                    .unwrap_or_default();
                    if let Ok(s) = self.broadcast(&all).await {
                        self.purge_seen.store(s, Ordering::Release);
                    }
                }
            }
            return;
        }
        if seq == seen {
            return;
        }
        let missing = seq - seen;
        let mut conn = self.connection();
        let want = missing.min(PURGE_LOG_LEN as u64) as isize;
        let log: Result<Result<Vec<String>, _>, _> = tokio::time::timeout(
            self.settings.command_timeout,
            redis::cmd("LRANGE")
                .arg(&self.keys.purge_log)
                .arg(0)
                .arg(want - 1)
                .query_async(&mut conn),
        )
        .await;
        let Ok(Ok(log)) = log else {
            // Try again at the next check; nothing is marked seen.
            return;
        };
        let mut found = 0u64;
        // Newest first in the log: apply oldest first.
        for entry in log.iter().rev() {
            let Some((s, rest)) = entry.split_once(' ') else {
                continue;
            };
            match s.parse::<u64>() {
                Ok(s) if s > seen && s <= seq => {
                    found += 1;
                    self.apply_purge_entry(targets, rest, "caught_up");
                }
                _ => {}
            }
        }
        if found < missing {
            self.purge_everything(targets, "purges missed beyond the log");
        }
        self.purge_seen.store(seq, Ordering::Release);
    }

    /// "<instance> <json>": applied unless this replica sent it (it applied it already).
    fn apply_purge_entry(&self, targets: &Targets, entry: &str, how: &'static str) {
        let Some((instance, json)) = entry.split_once(' ') else {
            return;
        };
        if instance == self.instance {
            return;
        }
        let Ok(purge) = serde_json::from_str::<Purge>(json) else {
            self.metrics
                .cluster_errors
                .with_label_values(&["purge_message"])
                .inc();
            return;
        };
        if let Some(cache) = &targets.cache {
            cache.apply_purge(&purge, "cluster");
        }
        self.metrics.cluster_purges.with_label_values(&[how]).inc();
    }

    fn purge_everything(&self, targets: &Targets, why: &str) {
        if let Some(cache) = &targets.cache {
            cache.apply_purge(
                &Purge {
                    all: true,
                    ..Purge::default()
                },
                "cluster",
            );
        }
        self.metrics
            .cluster_purges
            .with_label_values(&["flushed"])
            .inc();
        tracing::warn!(target: "audit", event = "cluster_purge_flush", reason = why, "purged the whole local cache to catch up with the cluster");
    }

    /// A purge that could not be broadcast waits here for the next contact with Redis.
    pub(super) fn hold_purge(&self, json: String) {
        self.metrics
            .cluster_alarm
            .with_label_values(&["purges_held"])
            .set(1);
        let mut pending = self.pending.lock();
        if pending.len() >= MAX_PENDING_PURGES {
            pending.clear();
            pending.push_back(r#"{"all":true}"#.to_string());
        } else {
            pending.push_back(json);
        }
    }

    async fn send_pending_purges(&self) {
        let held: VecDeque<String> = std::mem::take(&mut *self.pending.lock());
        if held.is_empty() {
            return;
        }
        for (i, json) in held.iter().enumerate() {
            if let Err(e) = self.broadcast(json).await {
                tracing::warn!(error = %e, "held purges still not broadcast");
                let mut pending = self.pending.lock();
                for j in held.iter().skip(i).rev() {
                    pending.push_front(j.clone());
                }
                return;
            }
        }
        if self.pending.lock().is_empty() {
            self.metrics
                .cluster_alarm
                .with_label_values(&["purges_held"])
                .set(0);
        }
    }

    pub(super) async fn broadcast(&self, json: &str) -> Result<u64, redis::RedisError> {
        let purge: Purge = serde_json::from_str(json).unwrap_or(Purge {
            all: true,
            ..Purge::default()
        });
        let mut conn = self.connection();
        let mut inv = PURGE_SCRIPT.key(&self.keys.purge_seq);
        inv.key(&self.keys.purge_log)
            .key(self.l2_all_key())
            .key(&self.keys.purge_epoch)
            .arg(&self.keys.events)
            .arg(format!("{} {json}", self.instance))
            .arg(PURGE_LOG_LEN - 1)
            .arg(if purge.all { "all" } else { "tags" })
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(super::l2::TAG_LIFETIME.as_millis() as u64);
        for t in self.l2_purge_tags(&purge) {
            inv.arg(t);
        }
        inv.invoke_async(&mut conn).await
    }
}
