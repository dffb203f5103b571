//! Content permissions in Hygraph's model: seven actions, each grant limited by models,
//! locales and stages (Publish: from/to stages).
//!
//! This module holds the compiled grants and their fingerprint; [`crate::schema`] maps the upstream
//! schema to actions and models; [`authorize`] checks a parsed document against the grants;
//! [`management`] maps management API fields to permission names.

pub mod authorize;
pub mod management;

use std::collections::BTreeSet;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::stage::{Locale, Stage};

/// What a principal (public or a token) may do, and where it reads by default.
#[derive(Debug, Clone)]
pub struct PrincipalPolicy {
    pub default_stage: Stage,
    pub permissions: Permissions,
    /// Whether `__schema`/`__type` introspection is allowed.
    pub introspection: bool,
}

/// The content actions Hygraph's permission model knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Read,
    ReadVersions,
    Create,
    Update,
    Delete,
    Publish,
    Unpublish,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Self::Read,
        Self::ReadVersions,
        Self::Create,
        Self::Update,
        Self::Delete,
        Self::Publish,
        Self::Unpublish,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::ReadVersions => "read_versions",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Publish => "publish",
            Self::Unpublish => "unpublish",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// "All" or an explicit set. Sorted sets make the fingerprint independent of file order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope<T: Ord> {
    All,
    Only(BTreeSet<T>),
}

impl<T: Ord> Scope<T> {
    pub fn allows<Q>(&self, item: &Q) -> bool
    where
        T: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(item),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub action: Action,
    /// Model API IDs.
    pub models: Scope<String>,
    /// Read, Delete, Unpublish: the stages; unused for Read versions, Create and Update.
    pub stages: Scope<Stage>,
    pub locales: Scope<Locale>,
    /// Publish only.
    pub from_stages: Scope<Stage>,
    /// Publish only.
    pub to_stages: Scope<Stage>,
}

/// The compiled content permissions of one principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    grants: Vec<Grant>,
    fingerprint: [u8; 32],
}

impl Permissions {
    pub fn new(grants: Vec<Grant>) -> Self {
        let fingerprint = fingerprint(&grants);
        Self {
            grants,
            fingerprint,
        }
    }

    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Digest of the effective grants: equal for two principals with the same grants in any
    /// order, different when any grant differs. The cache keys on it so identical grants share
    /// entries and nothing crosses scopes.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }
}

fn fingerprint(grants: &[Grant]) -> [u8; 32] {
    // Canonical text per grant, sorted and de-duplicated, each field length-prefixed.
    let mut lines: Vec<String> = grants.iter().map(canonical).collect();
    lines.sort();
    lines.dedup();
    let mut h = Sha256::new();
    h.update(b"contentgate.permissions.v1");
    for l in &lines {
        h.update((l.len() as u64).to_be_bytes());
        h.update(l.as_bytes());
    }
    h.finalize().into()
}

fn canonical(g: &Grant) -> String {
    fn scope<T: Ord + fmt::Debug>(s: &Scope<T>) -> String {
        match s {
            Scope::All => "*".into(),
            Scope::Only(set) => format!("{set:?}"),
        }
    }
    format!(
        "{}|m={}|s={}|l={}|f={}|t={}",
        g.action,
        scope(&g.models),
        scope(&g.stages),
        scope(&g.locales),
        scope(&g.from_stages),
        scope(&g.to_stages)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(models: &[&str]) -> Grant {
        Grant {
            action: Action::Read,
            models: Scope::Only(models.iter().map(|s| s.to_string()).collect()),
            stages: Scope::All,
            locales: Scope::All,
            from_stages: Scope::All,
            to_stages: Scope::All,
        }
    }

    #[test]
    fn fingerprint_ignores_order_and_sees_differences() {
        let a = Permissions::new(vec![read(&["Post"]), read(&["Author"])]);
        let b = Permissions::new(vec![read(&["Author"]), read(&["Post"])]);
        let c = Permissions::new(vec![read(&["Post"])]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
