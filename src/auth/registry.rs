//! The token registry: what a `jti` stands for, and which jtis are revoked.
//!
//! Compiled from the policies folder into each snapshot; [`super::authenticate`] reads it on
//! every request, after (never instead of) the signature or pin check.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::permissions::PrincipalPolicy;
use crate::ratelimit::RateLimit;

/// One registry entry: a Permanent Auth Token, identified by its `jti`.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub jti: Arc<str>,
    pub name: String,
    pub description: String,
    pub policy: PrincipalPolicy,
    /// Management API permission names (`MODEL_READ`, ... or `*`).
    pub management: Vec<String>,
    pub pinned_sha256: Vec<[u8; 32]>,
    pub rate_limit: Option<RateLimit>,
}

/// The public principal's policy, the tokens by jti, and the revoked jtis.
#[derive(Debug, Clone)]
pub struct Registry {
    pub public: Arc<PrincipalPolicy>,
    pub tokens: HashMap<Arc<str>, Arc<TokenEntry>>,
    pub revoked: HashSet<Arc<str>>,
}
