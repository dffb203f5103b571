//! The second level: entries shared by the replicas of a cluster, looked up on an L1 miss and
//! written by fills. The cache knows only this interface; the cluster implements it in Redis
//! (`cluster::l2`), so the cache never depends on the cluster.

use std::time::Duration;

use async_trait::async_trait;

use super::{KeyDigest, Stored};

/// How often a replica waiting for another replica's fill looks for the entry.
pub const WAIT_POLL: Duration = Duration::from_millis(10);

/// The purge sequence a fill started at (an entry is stored only if no purge happened since: a
/// purge on another replica while this one fetched must win), and the random value its fill
/// lock holds (only the holder releases it).
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    pub seq: u64,
    pub owner: u64,
}

pub enum Lock {
    /// This replica fills; store under the ticket.
    Acquired(Ticket),
    /// Another replica is filling; wait for its entry.
    Held(Ticket),
    /// The second level cannot be asked: fill without it.
    Unavailable,
}

/// What a replica waiting for another replica's fill finds.
pub enum Peek {
    /// The entry is there.
    Entry(Box<Stored>),
    /// Still being filled (the lock is held).
    Filling,
    /// The lock is gone and nothing was stored (the fill failed, or a purge skipped its put):
    /// try to fill.
    Released,
    /// The second level cannot be asked.
    Unavailable,
}

#[async_trait]
pub trait SecondLevel: Send + Sync {
    /// The entry for `key`, if stored and not purged (age kept: `stored_at` is backdated).
    async fn get(&self, key: &KeyDigest) -> Option<Stored>;
    /// Takes the fill lock for `key` for at most `hold`.
    async fn lock(&self, key: &KeyDigest, hold: Duration) -> Lock;
    /// Releases the fill lock if `ticket` still holds it (it may have expired and been taken).
    async fn unlock(&self, key: &KeyDigest, ticket: Ticket);
    /// The entry, or whether its fill lock is still held (one round trip).
    async fn peek(&self, key: &KeyDigest) -> Peek;
    /// Stores a fetched answer, unless a purge happened since `ticket`.
    async fn put(&self, key: &KeyDigest, stored: &Stored, ticket: Ticket);
    /// A waiter found the entry another replica stored (counted).
    fn waited(&self);
}
