//! Policies: the public access policy, the token registry, the revocation set and the
//! verification keys, compiled into one immutable [`Snapshot`].
//!
//! Everything the hot path reads sits behind one `ArcSwap` ([`store::PolicyStore`]). A reload
//! compiles a complete new snapshot and swaps it in; a snapshot that fails to compile is
//! rejected whole and the previous one keeps serving. A request loads the snapshot once and
//! uses it to the end.

pub mod compile;
pub mod file;
#[cfg(test)]
pub(crate) mod fixture;
pub mod store;
pub mod watch;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::{Registry, Verifier};
use crate::graphql::parsed::DocumentCache;
use crate::schema::SchemaMap;
use crate::stage::Cms;

/// One compiled, immutable view of all policy.
pub struct Snapshot {
    /// Increases by one with every applied reload; 1 is the first snapshot.
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub cms: Cms,
    /// The public policy, the tokens and the revoked jtis.
    pub registry: Registry,
    pub verifier: Arc<Verifier>,
    /// The upstream schema map (SDL file or introspection); `None` only for a gateway without
    /// content or cdn endpoints.
    pub schema: Option<Arc<SchemaMap>>,
    /// Parsed documents by digest; shared with the previous snapshot while the schema map is.
    pub documents: Arc<DocumentCache>,
    /// Digest of every input file, to skip reloads that change nothing.
    pub inputs_digest: [u8; 32],
    /// Digest of the gateway.toml sections that apply only at start-up.
    pub restart_digest: [u8; 32],
    /// Digest of the revocation file alone (revocation-lag metric).
    pub revoked_digest: [u8; 32],
}

/// The policy files of a shared policy set (the cluster's Redis), read instead of the policies
/// folder's: the same texts, compiled by the same [`compile::compile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTexts {
    /// Where the set lives (`redis:<prefix>`); errors name `<origin>/public.toml` and so on.
    pub origin: String,
    /// The set's version in its store (increases with every write there).
    pub version: u64,
    pub public: Option<String>,
    /// File name (`tokens.toml` or `tokens.json`) and text.
    pub tokens: Option<(String, String)>,
    pub revoked: Option<String>,
    /// The SDL; `None` keeps the policies folder's (or introspection).
    pub schema: Option<String>,
    pub written_at: Option<SystemTime>,
    /// jtis a writer un-revoked on purpose. A set that drops any *other* jti the live snapshot
    /// holds as revoked is refused: a restored backup or a half-written set must not bring a
    /// revoked token back.
    pub unrevoked: BTreeSet<String>,
}

impl PolicyTexts {
    /// The policy files of a folder as a set's texts (`origin` names them in errors).
    pub fn read_folder(dir: &std::path::Path, origin: &str) -> Result<PolicyTexts, String> {
        let read = |name: &str| -> Result<Option<String>, String> {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("{}: {e}", dir.join(name).display())),
            }
        };
        let tokens = match (read(compile::TOKENS_TOML)?, read(compile::TOKENS_JSON)?) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{}: both {} and {}; keep one registry",
                    dir.display(),
                    compile::TOKENS_TOML,
                    compile::TOKENS_JSON
                ))
            }
            (Some(t), None) => Some((compile::TOKENS_TOML.to_string(), t)),
            (None, Some(t)) => Some((compile::TOKENS_JSON.to_string(), t)),
            (None, None) => None,
        };
        Ok(PolicyTexts {
            origin: origin.to_string(),
            version: 0,
            public: Some(
                read(compile::PUBLIC_FILE)?.ok_or_else(|| {
                    format!("{}: missing", dir.join(compile::PUBLIC_FILE).display())
                })?,
            ),
            tokens,
            revoked: read(compile::REVOKED_FILE)?,
            schema: read(compile::SCHEMA_FILE)?,
            written_at: None,
            unrevoked: BTreeSet::new(),
        })
    }

    /// A set that grants nothing (public requests refused, no tokens): what a replica of a
    /// cluster runs before its first sync, and what `check` compiles gateway.toml against when
    /// the policies live in Redis.
    pub fn bootstrap(cms: &Cms) -> PolicyTexts {
        let stage = cms
            .stages
            .iter()
            .find(|s| s.as_str() == "PUBLISHED")
            .or(cms.stages.first())
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        PolicyTexts {
            origin: "bootstrap (no policy set from Redis yet)".into(),
            version: 0,
            public: Some(format!("default_stage = {stage:?}\n")),
            tokens: None,
            revoked: None,
            schema: None,
            written_at: None,
            unrevoked: BTreeSet::new(),
        }
    }
}

impl Snapshot {
    pub fn summary(&self) -> String {
        format!(
            "generation {}: {} tokens, {} revoked jtis, {} keys, public grants {}, stages {:?}, locales {:?}",
            self.generation,
            self.registry.tokens.len(),
            self.registry.revoked.len(),
            self.verifier.keys().len(),
            self.registry.public.permissions.grants().len(),
            self.cms.stages,
            self.cms.locales
        )
    }
}
