//! The policy set in Redis: one hash, written whole by one Lua script (so a reader never sees
//! half a write), versioned, and announced on the events channel.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::Script;

use super::Keys;
use crate::policy::compile::{TOKENS_JSON, TOKENS_TOML};
use crate::policy::PolicyTexts;

/// A set as stored, with the identity replicas compare: (epoch, version). The epoch is new
/// whenever the hash is created (a flushed or new Redis), so a re-pushed set at a version
/// number seen before is still told apart.
#[derive(Debug, Clone)]
pub struct StoredSet {
    pub epoch: String,
    /// Random per write: a set restored from a backup and then written again reaches a version
    /// number seen before with other content, and is still told apart.
    pub wid: String,
    pub texts: PolicyTexts,
}

/// A set's identity as replicas compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetId {
    pub epoch: String,
    pub version: u64,
    pub wid: String,
}

impl StoredSet {
    pub fn id(&self) -> SetId {
        SetId {
            epoch: self.epoch.clone(),
            version: self.texts.version,
            wid: self.wid.clone(),
        }
    }
}

/// What the poll reads: the set's identity and the purge sequence with its epoch.
pub struct Head {
    pub set: Option<SetId>,
    pub purge_seq: u64,
    pub purge_epoch: Option<String>,
}

/// Largest set a replica reads (a million-token registry in JSON is ~300 MB; a bigger value is
/// refused before it is parsed).
pub const MAX_SET_BYTES: usize = 512 * 1024 * 1024;

pub fn origin(keys: &Keys) -> String {
    format!("redis:{}", keys.policy)
}

/// Reads the whole set in one command; `Ok(None)` for an empty Redis (no set written).
pub async fn read(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
) -> Result<Option<StoredSet>, redis::RedisError> {
    let values: Vec<Option<Vec<u8>>> = READ
        .key(&keys.policy)
        .arg(MAX_SET_BYTES)
        .invoke_async(conn)
        .await?;
    Ok(parse(keys, fields_of(values)))
}

/// The fields a set has; nothing else in the hash is read.
const READ_FIELDS: [&str; 11] = [
    "version",
    "epoch",
    "wid",
    "written_at",
    "writer",
    "tokens_file",
    "public",
    "tokens",
    "revoked",
    "schema",
    "unrevoked",
];

/// KEYS[1] the set; ARGV[1] the largest size. The set's fields (in `READ_FIELDS` order), after
/// checking in the same script that its texts fit: no write can grow it in between.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local total = 0
for _, f in ipairs({'public', 'tokens', 'revoked', 'schema', 'unrevoked'}) do
  total = total + redis.call('HSTRLEN', KEYS[1], f)
end
if total > tonumber(ARGV[1]) then
  return redis.error_reply('TOOLARGE the policy set holds ' .. total .. ' bytes, more than ' .. ARGV[1])
end
return redis.call('HMGET', KEYS[1], 'version', 'epoch', 'wid', 'written_at', 'writer', 'tokens_file', 'public', 'tokens', 'revoked', 'schema', 'unrevoked')
"#,
    )
});

fn fields_of(values: Vec<Option<Vec<u8>>>) -> std::collections::HashMap<String, Vec<u8>> {
    READ_FIELDS
        .iter()
        .zip(values)
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect()
}

/// (epoch, version, wid), the purge sequence, the purge epoch.
type HeadReply = (
    (Option<String>, Option<u64>, Option<String>),
    Option<u64>,
    Option<String>,
);

/// The set's identity and the purge sequence, for the poll: small fields instead of the set.
pub async fn head(conn: &mut impl ConnectionLike, keys: &Keys) -> Result<Head, redis::RedisError> {
    let (fields, seq, purge_epoch): HeadReply = redis::pipe()
        .cmd("HMGET")
        .arg(&keys.policy)
        .arg("epoch")
        .arg("version")
        .arg("wid")
        .cmd("GET")
        .arg(&keys.purge_seq)
        .cmd("GET")
        .arg(&keys.purge_epoch)
        .query_async(conn)
        .await?;
    let (epoch, version, wid) = fields;
    Ok(Head {
        set: match (epoch, version) {
            (Some(epoch), Some(version)) => Some(SetId {
                epoch,
                version,
                wid: wid.unwrap_or_default(),
            }),
            _ => None,
        },
        purge_seq: seq.unwrap_or(0),
        purge_epoch,
    })
}

/// [`read`] on a blocking connection: a large set is read and decoded on the blocking pool,
/// never on the cluster's runtime thread (which answers the polls, limits and L2 meanwhile).
pub fn read_blocking(
    conn: &mut redis::Connection,
    keys: &Keys,
) -> Result<Option<StoredSet>, redis::RedisError> {
    let values: Vec<Option<Vec<u8>>> = READ.key(&keys.policy).arg(MAX_SET_BYTES).invoke(conn)?;
    Ok(parse(keys, fields_of(values)))
}

fn parse(keys: &Keys, mut f: std::collections::HashMap<String, Vec<u8>>) -> Option<StoredSet> {
    let text = |f: &mut std::collections::HashMap<String, Vec<u8>>, k: &str| {
        f.remove(k)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let version: u64 = text(&mut f, "version")?.parse().ok()?;
    let epoch = text(&mut f, "epoch").unwrap_or_default();
    let wid = text(&mut f, "wid").unwrap_or_default();
    let tokens_file = text(&mut f, "tokens_file").unwrap_or_else(|| TOKENS_TOML.to_string());
    let tokens = text(&mut f, "tokens").map(|t| {
        let name = if tokens_file == TOKENS_JSON {
            TOKENS_JSON
        } else {
            TOKENS_TOML
        };
        (name.to_string(), t)
    });
    let written_at = text(&mut f, "written_at")
        .and_then(|t| t.parse::<u64>().ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let unrevoked = text(&mut f, "unrevoked")
        .map(|t| crate::policy::compile::revoked_jtis(&t))
        .unwrap_or_default();
    Some(StoredSet {
        epoch,
        wid,
        texts: PolicyTexts {
            origin: origin(keys),
            version,
            public: text(&mut f, "public"),
            tokens,
            revoked: text(&mut f, "revoked"),
            schema: text(&mut f, "schema"),
            written_at,
            unrevoked,
        },
    })
}

/// Writes a whole set if the stored version is still `expected` (`None`: whatever it is),
/// bumps the version and announces it. KEYS[1] the hash; ARGV: expected, channel, now (ms),
/// writer, a fresh random id (the write's `wid`, and the epoch of a new hash), the number of
/// fields to delete, their names, then field/value pairs.
static WRITE: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'version')
if not cur then cur = '0' end
if ARGV[1] ~= '' and cur ~= ARGV[1] then
  return redis.error_reply('CONFLICT the policy set is at version ' .. cur .. ', not ' .. ARGV[1])
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then epoch = ARGV[5] end
local v = tonumber(cur) + 1
local ndel = tonumber(ARGV[6])
for i = 1, ndel do redis.call('HDEL', KEYS[1], ARGV[6 + i]) end
for i = 7 + ndel, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'version', v, 'epoch', epoch, 'wid', ARGV[5], 'written_at', ARGV[3], 'writer', ARGV[4])
redis.call('PUBLISH', ARGV[2], 'policy ' .. epoch .. ' ' .. v)
return v
"#;

/// Adds jtis to the revocation text (and removes them from `unrevoked`), bumps the version and
/// announces it; a set that holds them all already is left alone. KEYS[1] the hash; ARGV:
/// channel, now (ms), writer, a fresh write id, jtis. Returns {version, added}.
static REVOKE: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'version')
if not cur then
  return redis.error_reply('EMPTY there is no policy set in Redis: push one first (contentgate policy push)')
end
local revoked = redis.call('HGET', KEYS[1], 'revoked') or ''
local have = {}
for line in string.gmatch(revoked, '[^\n]+') do
  local j = string.match(line, '^%s*([^#%s]+)')
  if j then have[j] = true end
end
local added = 0
for i = 5, #ARGV do
  if not have[ARGV[i]] then
    if revoked ~= '' and string.sub(revoked, -1) ~= '\n' then revoked = revoked .. '\n' end
    revoked = revoked .. ARGV[i] .. '\n'
    have[ARGV[i]] = true
    added = added + 1
  end
end
if added == 0 then return {tonumber(cur), 0} end
local unrevoked = redis.call('HGET', KEYS[1], 'unrevoked')
if unrevoked then
  local keep = {}
  for j in string.gmatch(unrevoked, '[^\n]+') do
    if not have[j] then table.insert(keep, j) end
  end
  redis.call('HSET', KEYS[1], 'unrevoked', table.concat(keep, '\n'))
end
local v = tonumber(cur) + 1
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
redis.call('HSET', KEYS[1], 'revoked', revoked, 'version', v, 'wid', ARGV[4], 'written_at', ARGV[2], 'writer', ARGV[3])
redis.call('PUBLISH', ARGV[1], 'policy ' .. epoch .. ' ' .. v)
return {v, added}
"#;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a writer puts in the set: the folder's texts (schema optional).
pub struct NewSet<'a> {
    pub public: &'a str,
    pub tokens: Option<(&'a str, &'a str)>,
    pub revoked: &'a str,
    pub schema: Option<&'a str>,
    pub unrevoked: &'a BTreeSet<String>,
}

/// Writes `set` atomically if the stored version is `expected`; returns the new version.
pub async fn write(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    set: &NewSet<'_>,
    expected: Option<u64>,
    writer: &str,
) -> Result<u64, redis::RedisError> {
    let script = Script::new(WRITE);
    let mut inv = script.key(&keys.policy);
    inv.arg(expected.map(|v| v.to_string()).unwrap_or_default())
        .arg(&keys.events)
        .arg(now_ms())
        .arg(writer)
        .arg(uuid::Uuid::new_v4().simple().to_string());
    let mut delete = Vec::new();
    if set.tokens.is_none() {
        delete.push("tokens");
        delete.push("tokens_file");
    }
    if set.schema.is_none() {
        delete.push("schema");
    }
    inv.arg(delete.len());
    for d in &delete {
        inv.arg(*d);
    }
    inv.arg("public").arg(set.public);
    inv.arg("revoked").arg(set.revoked);
    inv.arg("unrevoked")
        .arg(set.unrevoked.iter().cloned().collect::<Vec<_>>().join("\n"));
    if let Some((name, text)) = set.tokens {
        inv.arg("tokens_file").arg(name).arg("tokens").arg(text);
    }
    if let Some(s) = set.schema {
        inv.arg("schema").arg(s);
    }
    inv.invoke_async(conn).await
}

/// Revokes `jtis` in the set; returns (new version, how many were not revoked before).
pub async fn revoke(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    jtis: &[String],
    writer: &str,
) -> Result<(u64, u64), redis::RedisError> {
    let script = Script::new(REVOKE);
    let mut inv = script.key(&keys.policy);
    inv.arg(&keys.events)
        .arg(now_ms())
        .arg(writer)
        .arg(uuid::Uuid::new_v4().simple().to_string());
    for j in jtis {
        inv.arg(j);
    }
    inv.invoke_async(conn).await
}
