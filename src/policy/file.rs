//! Wire types of the policies folder (see policies/README.md for every field).
//!
//! `public.toml` (the public access policy), `tokens.toml` or `tokens.json` (the token
//! registry), `revoked.txt` (one revoked `jti` per line, `#` comments). Unknown fields are
//! errors; spans keep line numbers for the errors found after parsing.

use serde::Deserialize;
use toml::Spanned;

/// One content-permission grant as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePermission {
    pub action: Spanned<String>,
    /// Model API IDs; absent means all models.
    pub models: Option<Vec<String>>,
    /// Stages (Read, Unpublish, Delete); absent means all stages.
    pub stages: Option<Vec<String>>,
    /// Locales; absent means all locales.
    pub locales: Option<Vec<String>>,
    /// Publish only: stages published from (absent: all).
    pub from_stages: Option<Vec<String>>,
    /// Publish only: stages published to (absent: all).
    pub to_stages: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePublic {
    pub default_stage: Spanned<String>,
    #[serde(default)]
    pub introspection: bool,
    #[serde(default, rename = "permission")]
    pub permissions: Vec<FilePermission>,
}

pub use crate::config::file::FileRateLimit;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileToken {
    pub jti: Spanned<String>,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub default_stage: Spanned<String>,
    #[serde(default)]
    pub introspection: bool,
    #[serde(default, rename = "permission")]
    pub permissions: Vec<FilePermission>,
    /// Management API permission names (`MODEL_READ`, ... or `*`).
    #[serde(default)]
    pub management: Vec<String>,
    /// Hex sha256 digests of token strings accepted without a verifiable signature.
    #[serde(default)]
    pub pinned_sha256: Vec<String>,
    pub rate_limit: Option<FileRateLimit>,
    /// When the management API created and last changed the entry (RFC 3339; informational).
    pub created: Option<String>,
    pub updated: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRegistry {
    #[serde(default, rename = "token")]
    pub tokens: Vec<FileToken>,
}

/// The JSON registry (for generated files): `{"token": [ {...}, ... ]}`, the same fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonRegistry {
    #[serde(default, rename = "token")]
    pub tokens: Vec<JsonToken>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonPermission {
    pub action: String,
    pub models: Option<Vec<String>>,
    pub stages: Option<Vec<String>>,
    pub locales: Option<Vec<String>>,
    pub from_stages: Option<Vec<String>>,
    pub to_stages: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonToken {
    pub jti: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub default_stage: String,
    #[serde(default)]
    pub introspection: bool,
    #[serde(default, rename = "permission")]
    pub permissions: Vec<JsonPermission>,
    #[serde(default)]
    pub management: Vec<String>,
    #[serde(default)]
    pub pinned_sha256: Vec<String>,
    pub rate_limit: Option<FileRateLimit>,
    /// When the management API created and last changed the entry (RFC 3339; informational).
    pub created: Option<String>,
    pub updated: Option<String>,
}

impl From<JsonPermission> for FilePermission {
    fn from(p: JsonPermission) -> Self {
        Self {
            action: Spanned::new(0..0, p.action),
            models: p.models,
            stages: p.stages,
            locales: p.locales,
            from_stages: p.from_stages,
            to_stages: p.to_stages,
        }
    }
}

impl From<JsonToken> for FileToken {
    fn from(t: JsonToken) -> Self {
        Self {
            jti: Spanned::new(0..0, t.jti),
            name: t.name,
            description: t.description,
            default_stage: Spanned::new(0..0, t.default_stage),
            introspection: t.introspection,
            permissions: t.permissions.into_iter().map(Into::into).collect(),
            management: t.management,
            pinned_sha256: t.pinned_sha256,
            rate_limit: t.rate_limit,
            created: t.created,
            updated: t.updated,
        }
    }
}
