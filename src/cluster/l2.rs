//! The second-level cache in Redis (`[cache] l2 = "redis"`): entries under the same versioned
//! key digest as L1, tagged by model and entry id in sets that purges delete precisely, a
//! purge-all mark, and a short fill lock (`SET NX PX`) so identical misses across the replicas
//! make one upstream request. Every operation is one script (one round trip) within
//! `command_timeout`; an error is a miss, never an error for the client.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use redis::Script;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::cache::l2::{Lock, Peek, SecondLevel, Ticket};
use crate::cache::{KeyDigest, Purge, Stored, Tags};

/// Entry ids tagged per entry; an entry reading more is tagged "many ids" and goes with any
/// purge by id.
const MAX_TAGGED_IDS: usize = 64;

/// How long a tag's generation is kept after its last purge. Entries live at most
/// [`MAX_ENTRY_LIFETIME`], far less: an entry never outlives the generation it was stored
/// under (a generation that expired reads as 0, which no entry stored under a later one has).
pub const TAG_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_ENTRY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// `valid(entry, all, max)`: the entry exists, was stored at or after the last purge of
/// everything, every tag it was stored under still has the generation it had then, and its
/// body and metadata fit `max` bytes (checked before they are read: nothing larger leaves
/// Redis). The entry's `tags` field holds "key generation" lines.
const VALID: &str = r#"
local function valid(entry, all, max)
  if redis.call('HSTRLEN', entry, 'body') + redis.call('HSTRLEN', entry, 'meta') > tonumber(max) then
    return nil
  end
  local v = redis.call('HMGET', entry, 'seq', 'tags', 'meta', 'body')
  if not v[1] then return nil end
  if tonumber(v[1]) < tonumber(redis.call('GET', all) or '0') then return nil end
  for key, gen in string.gmatch(v[2] or '', '([^ \n]+) (%d+)') do
    if (redis.call('GET', key) or '0') ~= gen then return nil end
  end
  return {v[3], v[4]}
end
"#;

/// KEYS: entry, purge-all mark; ARGV: the largest entry. The entry's meta and body, or nil.
static GET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{VALID}\nlocal e = valid(KEYS[1], KEYS[2], ARGV[1])\nif e then return e end\nreturn false"
    ))
});

/// KEYS: entry, purge-all mark, lock; ARGV: the largest entry. The entry as GET does, else {0}
/// while the lock is held, {1} once it is gone.
static PEEK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{VALID}\nlocal e = valid(KEYS[1], KEYS[2], ARGV[1])\nif e then return e end\nif redis.call('EXISTS', KEYS[3]) == 1 then return {{0}} end\nreturn {{1}}"
    ))
});

/// KEYS: lock, purge sequence; ARGV: owner, hold (ms). {1, seq} when taken, {0, seq} when held.
static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local s = tonumber(redis.call('GET', KEYS[2]) or '0')
if ok then return {1, s} end
return {0, s}
"#,
    )
});

/// KEYS: lock; ARGV: owner. Deletes the lock only if this owner holds it.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// KEYS: entry, purge sequence; ARGV: ticket, lifetime (ms), meta, body, then tag generation
/// keys. Stored only if no purge happened since the ticket; the tags' generations are read now
/// (unchanged since the ticket: any purge would have moved the sequence).
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local s = tonumber(redis.call('GET', KEYS[2]) or '0')
if s ~= tonumber(ARGV[1]) then return 0 end
local tags = {}
for i = 5, #ARGV do
  table.insert(tags, ARGV[i] .. ' ' .. (redis.call('GET', ARGV[i]) or '0'))
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'tags', table.concat(tags, '\n'), 'meta', ARGV[3], 'body', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#,
    )
});

/// What an entry holds besides its body.
#[derive(Serialize, Deserialize)]
struct Meta {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<String>,
    ttl_ms: u64,
    stored_ms: u64,
    models: Vec<String>,
    stages: Vec<String>,
    ids: Vec<String>,
}

/// A replayed header value as the entry's metadata holds it (always visible ASCII: see
/// [`Stored`]).
fn text(v: &Option<HeaderValue>) -> Option<String> {
    v.as_ref().and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Cluster {
    fn l2_key(&self, key: &KeyDigest) -> String {
        format!("{{{}}}:l2:{}", self.settings.prefix, hex::encode(key))
    }

    fn l2_lock_key(&self, key: &KeyDigest) -> String {
        format!("{{{}}}:l2lock:{}", self.settings.prefix, hex::encode(key))
    }

    pub(super) fn l2_all_key(&self) -> String {
        format!("{{{}}}:l2:all", self.settings.prefix)
    }

    fn l2_tag_model(&self, model: &str) -> String {
        format!("{{{}}}:l2g:m:{model}", self.settings.prefix)
    }

    fn l2_tag_id(&self, id: &str) -> String {
        format!("{{{}}}:l2g:i:{id}", self.settings.prefix)
    }

    /// The tag generations a purge moves on (every entry stored under an older one is gone).
    pub(super) fn l2_purge_tags(&self, p: &Purge) -> Vec<String> {
        let mut tags = Vec::new();
        if let Some(m) = &p.model {
            tags.push(self.l2_tag_model(m));
        }
        if let Some(id) = &p.id {
            tags.push(self.l2_tag_id(id));
            tags.push(self.l2_tag_id("*"));
        }
        tags
    }

    fn l2_count(&self, result: &'static str) {
        self.metrics.cache_l2.with_label_values(&[result]).inc();
    }
}

/// Room for an entry's metadata (status, headers, up to 1 000 entry ids) beside its body.
const META_ALLOWANCE: usize = 1024 * 1024;

impl RedisL2 {
    /// The most an entry may hold to be read at all (body + metadata).
    fn max_read(&self) -> usize {
        self.max_entry_bytes + META_ALLOWANCE
    }

    /// An entry as stored: its metadata (JSON) and body; `None` when it is unusable (too large,
    /// unreadable, past its stale windows).
    fn decode(&self, meta: &[u8], body: Vec<u8>) -> Option<Stored> {
        let Ok(meta) = serde_json::from_slice::<Meta>(meta) else {
            self.cluster.l2_count("error");
            return None;
        };
        if body.len() > self.max_entry_bytes {
            self.cluster.l2_count("error");
            return None;
        }
        let age = Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(meta.stored_ms));
        let ttl = Duration::from_millis(meta.ttl_ms);
        if age > ttl + self.grace {
            self.cluster.l2_count("miss");
            return None;
        }
        // Replayed as they are: an entry whose header value L1 would not have kept (anything
        // but visible ASCII) or whose status is not one is unusable, not a broken answer.
        let value = |v: Option<String>| match v {
            None => Some(None),
            Some(v) => Stored::replayable(&v).map(Some),
        };
        let (Some(content_type), Some(retry_after), 100..=599) = (
            value(meta.content_type),
            value(meta.retry_after),
            meta.status,
        ) else {
            self.cluster.l2_count("error");
            return None;
        };
        self.cluster.l2_count("hit");
        Some(Stored::new(
            meta.status,
            content_type,
            retry_after,
            Bytes::from(body),
            Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            ttl,
            Tags {
                models: meta.models.into_iter().map(Arc::from).collect(),
                stages: meta.stages,
                ids: meta.ids.into_iter().collect(),
            },
        ))
    }
}

/// The cluster as the cache's second level.
pub struct RedisL2 {
    pub cluster: Arc<Cluster>,
    /// Largest body written or accepted.
    pub max_entry_bytes: usize,
    /// Kept past the TTL for the stale windows, as in L1.
    pub grace: Duration,
}

impl RedisL2 {
    /// Runs `script` on the cluster's runtime within the command timeout; `None` on any error.
    async fn call<T: redis::FromRedisValue + Send + 'static>(
        &self,
        inv: impl FnOnce() -> redis::ScriptInvocation<'static> + Send + 'static,
    ) -> Option<T> {
        let c = &self.cluster;
        // While Redis is unreachable, or a purge of this replica waits to be broadcast (its
        // second-level part not applied yet), the second level is not asked.
        if !c.up.load(Ordering::Acquire) || !c.pending.lock().is_empty() {
            c.l2_count("error");
            return None;
        }
        let mut conn = c.connection();
        let timeout = c.settings.command_timeout;
        let r = c
            .run(async move {
                let inv = inv();
                tokio::time::timeout(timeout, inv.invoke_async::<T>(&mut conn)).await
            })
            .await;
        match r {
            Some(Ok(Ok(v))) => Some(v),
            other => {
                c.metrics.cluster_errors.with_label_values(&["l2"]).inc();
                c.l2_count("error");
                if let Some(Ok(Err(e))) = other {
                    tracing::warn!(error = %e, "second-level cache operation failed (a miss)");
                }
                None
            }
        }
    }
}

#[async_trait]
impl SecondLevel for RedisL2 {
    async fn get(&self, key: &KeyDigest) -> Option<Stored> {
        let (k, all) = (self.cluster.l2_key(key), self.cluster.l2_all_key());
        let max = self.max_read();
        let got: Option<(Vec<u8>, Vec<u8>)> = self
            .call(move || {
                let mut inv = GET.key(k);
                inv.key(all).arg(max);
                inv
            })
            .await?;
        match got {
            Some((meta, body)) => self.decode(&meta, body),
            None => {
                self.cluster.l2_count("miss");
                None
            }
        }
    }

    async fn peek(&self, key: &KeyDigest) -> Peek {
        let max = self.max_read();
        let (k, all, lock) = (
            self.cluster.l2_key(key),
            self.cluster.l2_all_key(),
            self.cluster.l2_lock_key(key),
        );
        let got: Option<Vec<redis::Value>> = self
            .call(move || {
                let mut inv = PEEK.key(k);
                inv.key(all).key(lock).arg(max);
                inv
            })
            .await;
        match got.as_deref() {
            None => Peek::Unavailable,
            Some([redis::Value::Int(0)]) => Peek::Filling,
            Some([redis::Value::Int(_)]) => Peek::Released,
            Some([redis::Value::BulkString(meta), redis::Value::BulkString(body)]) => {
                match self.decode(meta, body.clone()) {
                    Some(s) => Peek::Entry(Box::new(s)),
                    None => Peek::Released,
                }
            }
            Some(_) => Peek::Unavailable,
        }
    }

    async fn lock(&self, key: &KeyDigest, hold: Duration) -> Lock {
        let (k, seq) = (
            self.cluster.l2_lock_key(key),
            self.cluster.keys.purge_seq.clone(),
        );
        let ms = hold.as_millis().max(1) as u64;
        let owner: u64 = uuid::Uuid::new_v4().as_u64_pair().0;
        let r: Option<(u8, u64)> = self
            .call(move || {
                let mut inv = LOCK.key(k);
                inv.key(seq).arg(owner).arg(ms);
                inv
            })
            .await;
        match r {
            Some((1, seq)) => Lock::Acquired(Ticket { seq, owner }),
            Some((_, seq)) => Lock::Held(Ticket { seq, owner }),
            None => Lock::Unavailable,
        }
    }

    async fn unlock(&self, key: &KeyDigest, ticket: Ticket) {
        let k = self.cluster.l2_lock_key(key);
        let _: Option<u8> = self
            .call(move || {
                let mut inv = UNLOCK.key(k);
                inv.arg(ticket.owner);
                inv
            })
            .await;
    }

    async fn put(&self, key: &KeyDigest, stored: &Stored, ticket: Ticket) {
        if stored.body.len() > self.max_entry_bytes {
            return;
        }
        let mut ids: Vec<String> = stored.tags.ids.iter().cloned().collect();
        ids.sort_unstable();
        let mut tags: Vec<String> = stored
            .tags
            .models
            .iter()
            .map(|m| self.cluster.l2_tag_model(m))
            .collect();
        if ids.len() > MAX_TAGGED_IDS {
            tags.push(self.cluster.l2_tag_id("*"));
        } else {
            tags.extend(ids.iter().map(|i| self.cluster.l2_tag_id(i)));
        }
        let meta = Meta {
            status: stored.status,
            content_type: text(&stored.content_type),
            retry_after: text(&stored.retry_after),
            ttl_ms: stored.ttl.as_millis() as u64,
            stored_ms: unix_ms(SystemTime::now()).saturating_sub(stored.age().as_millis() as u64),
            models: stored.tags.models.iter().map(|m| m.to_string()).collect(),
            stages: stored.tags.stages.clone(),
            ids,
        };
        let Ok(meta) = serde_json::to_vec(&meta) else {
            return;
        };
        let px = (stored.ttl + self.grace)
            .min(MAX_ENTRY_LIFETIME)
            .as_millis()
            .max(1) as u64;
        let (k, seq, body) = (
            self.cluster.l2_key(key),
            self.cluster.keys.purge_seq.clone(),
            stored.body.to_vec(),
        );
        let r: Option<u8> = self
            .call(move || {
                let mut inv = PUT.key(k);
                inv.key(seq).arg(ticket.seq).arg(px).arg(meta).arg(body);
                for t in tags {
                    inv.arg(t);
                }
                inv
            })
            .await;
        match r {
            Some(1) => self.cluster.l2_count("stored"),
            Some(_) => self.cluster.l2_count("skipped"),
            None => {}
        }
    }

    fn waited(&self) {
        self.cluster.l2_count("waited");
    }
}
