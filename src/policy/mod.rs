//! Policies: the public access policy, the token registry, the revocation set and the
//! verification keys, compiled into one immutable [`Snapshot`].
//!
//! Everything the hot path reads sits behind one `ArcSwap` ([`store::PolicyStore`]). A reload
//! compiles a complete new snapshot and swaps it in; a snapshot that fails to compile is
//! rejected whole and the previous one keeps serving. A request loads the snapshot once and
//! uses it to the end.

pub mod compile;
pub mod file;
pub mod store;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::Verifier;
use crate::permissions::Permissions;
use crate::schema::SchemaMap;
use crate::stage::Cms;
use crate::stage::Stage;

/// What a principal (public or a token) may do, and where it reads by default.
#[derive(Debug, Clone)]
pub struct PrincipalPolicy {
    pub default_stage: Stage,
    pub permissions: Permissions,
    /// Whether `__schema`/`__type` introspection is allowed.
    pub introspection: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub requests_per_second: u32,
    pub burst: u32,
}

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

/// One compiled, immutable view of all policy.
pub struct Snapshot {
    /// Increases by one with every applied reload; 1 is the first snapshot.
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub cms: Cms,
    pub public: Arc<PrincipalPolicy>,
    pub tokens: HashMap<Arc<str>, Arc<TokenEntry>>,
    pub revoked: HashSet<Arc<str>>,
    pub verifier: Arc<Verifier>,
    /// The upstream schema map (SDL file or introspection); `None` only for a gateway without
    /// content or cdn endpoints.
    pub schema: Option<Arc<SchemaMap>>,
    /// Parsed documents by digest; shared with the previous snapshot while the schema map is.
    pub documents: Arc<crate::pipeline::DocumentCache>,
    /// Digest of every input file, to skip reloads that change nothing.
    pub inputs_digest: [u8; 32],
    /// Digest of the revocation file alone (revocation-lag metric).
    pub revoked_digest: [u8; 32],
}

impl Snapshot {
    pub fn summary(&self) -> String {
        format!(
            "generation {}: {} tokens, {} revoked jtis, {} keys, public grants {}, stages {:?}, locales {:?}",
            self.generation,
            self.tokens.len(),
            self.revoked.len(),
            self.verifier.keys().len(),
            self.public.permissions.grants().len(),
            self.cms.stages,
            self.cms.locales
        )
    }
}
