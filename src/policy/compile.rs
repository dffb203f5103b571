//! Reading the policy inputs and compiling them into a [`Snapshot`], collecting every error.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::file::{FilePermission, FilePublic, FileRegistry, FileToken, JsonRegistry};
use super::Snapshot;
use crate::auth::keys::KeySet;
use crate::auth::Verifier;
use crate::auth::{Registry, TokenEntry};
use crate::config::file::FileConfig;
use crate::config::{resolve, ConfigError, ConfigErrors, Source};
use crate::graphql::parsed::DocumentCache;
use crate::permissions::PrincipalPolicy;
use crate::permissions::{Action, Grant, Permissions, Scope};
use crate::ratelimit::RateLimit;
use crate::schema::SchemaMap;
use crate::stage::Cms;
use crate::stage::Stage;

pub const PUBLIC_FILE: &str = "public.toml";
pub const TOKENS_TOML: &str = "tokens.toml";
pub const TOKENS_JSON: &str = "tokens.json";
pub const REVOKED_FILE: &str = "revoked.txt";
pub const SCHEMA_FILE: &str = "schema.graphql";

fn same_schema(a: &Option<Arc<SchemaMap>>, b: &Option<Arc<SchemaMap>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Default capacity of the verified-token cache (entries, ~100 bytes each).
const DEFAULT_VERIFIED_CACHE_ENTRIES: u64 = 100_000;

/// The raw text of every input of a snapshot, read in one pass.
pub struct Inputs {
    pub config_path: PathBuf,
    pub config_text: String,
    /// gateway.toml, parsed once per reload.
    pub file: FileConfig,
    /// Digest of the sections of gateway.toml that only take effect at start-up (everything
    /// but `[auth]`, `[cms]` and `limits.document_cache_bytes`).
    pub restart_digest: [u8; 32],
    pub dir: PathBuf,
    pub public: Option<String>,
    pub tokens: Option<(PathBuf, String)>,
    pub revoked: Option<String>,
    /// The upstream schema in SDL, for air-gapped starts (else introspection).
    pub schema: Option<String>,
    /// Whether the config has content or cdn endpoints (which need a schema map).
    pub needs_schema: bool,
    /// Digest of the key files `[auth]` names: a rotated key file is a change to reload.
    pub keys_digest: [u8; 32],
    /// Modification time of revoked.txt, for the revocation-lag metric.
    pub revoked_mtime: Option<SystemTime>,
}

impl Inputs {
    pub fn read(config_path: &Path) -> Result<Inputs, ConfigErrors> {
        let config_text = crate::config::error::read_file(config_path)?;
        let src = Source::new(config_path, &config_text);
        let file: FileConfig = toml::from_str(&config_text).map_err(|e| src.toml_error(&e))?;
        let base = config_path.parent().unwrap_or(Path::new("."));
        let dir = resolve(base, file.policies.dir.as_deref().unwrap_or("policies"));
        let read_opt = |name: &str| -> Result<Option<String>, ConfigError> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ConfigError::new(&p, None, "", format!("cannot read: {e}"))),
            }
        };
        let mut errors = Vec::new();
        let mut take = |r: Result<Option<String>, ConfigError>| {
            r.unwrap_or_else(|e| {
                errors.push(e);
                None
            })
        };
        let public = take(read_opt(PUBLIC_FILE));
        let toml_tokens = take(read_opt(TOKENS_TOML));
        let json_tokens = take(read_opt(TOKENS_JSON));
        let revoked = take(read_opt(REVOKED_FILE));
        let schema = take(read_opt(SCHEMA_FILE));
        let needs_schema = file
            .endpoints
            .iter()
            .any(|e| e.kind.get_ref() != "management");
        let base = config_path.parent().unwrap_or(Path::new("."));
        let mut kh = Sha256::new();
        let key_files = file
            .auth
            .keys
            .iter()
            .flat_map(|k| [k.public_key_file.as_deref(), k.secret_file.as_deref()])
            .chain(std::iter::once(
                file.auth.jwks_file.as_ref().map(|j| j.get_ref().as_str()),
            ))
            .flatten();
        for f in key_files {
            // A missing file is reported by the compile step; here it only changes the digest.
            kh.update(std::fs::read(resolve(base, f)).unwrap_or_default());
            kh.update([0xff]);
        }
        let keys_digest: [u8; 32] = kh.finalize().into();
        let tokens = match (toml_tokens, json_tokens) {
            (Some(_), Some(_)) => {
                errors.push(ConfigError::new(
                    &dir,
                    None,
                    "",
                    format!("both {TOKENS_TOML} and {TOKENS_JSON} exist; keep one registry"),
                ));
                None
            }
            (Some(t), None) => Some((dir.join(TOKENS_TOML), t)),
            (None, Some(t)) => Some((dir.join(TOKENS_JSON), t)),
            (None, None) => None,
        };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let revoked_mtime = std::fs::metadata(dir.join(REVOKED_FILE))
            .and_then(|m| m.modified())
            .ok();
        let restart_digest = restart_digest(&config_text);
        Ok(Inputs {
            config_path: config_path.to_path_buf(),
            config_text,
            file,
            restart_digest,
            dir,
            public,
            tokens,
            revoked,
            schema,
            needs_schema,
            keys_digest,
            revoked_mtime,
        })
    }

    /// The policy texts of a shared set replace the folder's (the SDL only when the set has one).
    pub fn overlay(&mut self, texts: &super::PolicyTexts) {
        self.dir = PathBuf::from(&texts.origin);
        self.public = texts.public.clone();
        self.tokens = texts
            .tokens
            .as_ref()
            .map(|(name, text)| (self.dir.join(name), text.clone()));
        self.revoked = texts.revoked.clone();
        if texts.schema.is_some() {
            self.schema = texts.schema.clone();
        }
        self.revoked_mtime = texts.written_at;
    }

    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.keys_digest);
        for part in [
            Some(self.config_text.as_str()),
            self.public.as_deref(),
            self.tokens.as_ref().map(|(_, t)| t.as_str()),
            self.revoked.as_deref(),
            self.schema.as_deref(),
        ] {
            match part {
                Some(t) => {
                    h.update([1]);
                    h.update((t.len() as u64).to_be_bytes());
                    h.update(t.as_bytes());
                }
                None => h.update([0]),
            }
        }
        h.finalize().into()
    }
}

/// The schema map from `upstream` by introspection when the inputs have no SDL but need a
/// schema (content or cdn endpoints); `Ok(None)` when they have an SDL or need none. A failure
/// is an error on the SDL file's name, saying what to add.
pub fn introspect_if_needed(
    inputs: &Inputs,
    upstream: Option<&crate::config::Upstream>,
) -> Result<Option<Arc<SchemaMap>>, ConfigErrors> {
    let (None, true, Some(up)) = (&inputs.schema, inputs.needs_schema, upstream) else {
        return Ok(None);
    };
    let map = crate::schema::introspect(up).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            &inputs.dir.join(SCHEMA_FILE),
            None,
            "",
            format!(
                "no SDL file, and introspecting upstream {:?} failed: {e}; add the upstream's SDL as {SCHEMA_FILE}",
                up.name
            ),
        )])
    })?;
    tracing::info!(upstream = %up.name, models = map.models.len(), "schema map built by introspection");
    Ok(Some(Arc::new(map)))
}

/// The entries of a revocation text with their line numbers: one jti per line, `#` starts a
/// comment, blank lines skipped (the compile refuses an entry holding whitespace).
pub fn revoked_entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, j)| !j.is_empty())
}

/// The jtis of a revocation text, for the writers and the cluster's comparisons.
pub fn revoked_jtis(text: &str) -> std::collections::BTreeSet<String> {
    revoked_entries(text).map(|(_, j)| j.to_string()).collect()
}

/// Compiles `inputs` into a snapshot with the given generation. `previous` guards against an
/// emptied file wiping a populated registry and lets an unchanged verifier (and its cache) be
/// reused.
/// Sections of gateway.toml a reload applies; a change anywhere else needs a restart.
pub const LIVE_SECTIONS: &[&str] = &["auth", "cms"];

/// Digest of gateway.toml without its live sections (and `limits.document_cache_bytes`, also
/// applied on reload), independent of formatting and key order.
fn restart_digest(text: &str) -> [u8; 32] {
    let mut table: toml::Table = text.parse().unwrap_or_default();
    for s in LIVE_SECTIONS {
        table.remove(*s);
    }
    if let Some(toml::Value::Table(limits)) = table.get_mut("limits") {
        limits.remove("document_cache_bytes");
    }
    Sha256::digest(toml::to_string(&table).unwrap_or_default().as_bytes()).into()
}

/// `introspected`: the schema map fetched from the upstream, used when there is no SDL file.
pub fn compile(
    inputs: &Inputs,
    generation: u64,
    previous: Option<&Snapshot>,
    introspected: Option<Arc<SchemaMap>>,
) -> Result<Snapshot, ConfigErrors> {
    let src = Source::new(&inputs.config_path, &inputs.config_text);
    let file = &inputs.file;
    let mut errors = Vec::new();
    let cms = match crate::config::cms_from_file(&file.cms) {
        Ok(c) => c,
        Err(m) => {
            errors.push(src.error(None, "cms", m));
            Cms::fallback()
        }
    };

    // Keys and the verifier.
    let verifier = match KeySet::load(&file.auth, &inputs.config_path, &inputs.config_text) {
        Ok((keys, material)) => {
            let mut h = Sha256::new();
            h.update(format!(
                "{:?}|{:?}|{:?}",
                file.auth.issuers, file.auth.audiences, file.auth.leeway
            ));
            for k in &file.auth.keys {
                h.update(format!("{}|{}", k.kid.get_ref(), k.algorithm.get_ref()));
            }
            h.update(&material);
            let digest: [u8; 32] = h.finalize().into();
            match previous {
                Some(p) if p.verifier.source_digest == digest => Some(p.verifier.clone()),
                _ => Some(Arc::new(Verifier::new(
                    keys,
                    file.auth.issuers.clone(),
                    file.auth.audiences.clone(),
                    file.auth.leeway.unwrap_or(Duration::from_secs(30)),
                    file.auth
                        .verified_cache_entries
                        .unwrap_or(DEFAULT_VERIFIED_CACHE_ENTRIES),
                    digest,
                ))),
            }
        }
        Err(mut e) => {
            errors.append(&mut e);
            None
        }
    };

    // Public policy.
    let public_path = inputs.dir.join(super::compile::PUBLIC_FILE);
    let public = match &inputs.public {
        None => {
            errors.push(ConfigError::new(
                &public_path,
                None,
                "",
                "missing: the public access policy is required (it may grant nothing)",
            ));
            None
        }
        Some(text) => {
            let psrc = Source::new(&public_path, text);
            match toml::from_str::<FilePublic>(text) {
                Err(e) => {
                    errors.push(psrc.toml_error(&e));
                    None
                }
                Ok(p) => {
                    let mut local = Vec::new();
                    let default_stage =
                        stage(&psrc, &cms, &p.default_stage, "default_stage", &mut local);
                    let permissions =
                        permissions(&psrc, &cms, &p.permissions, "permission", &mut local);
                    errors.append(&mut local);
                    default_stage.map(|default_stage| PrincipalPolicy {
                        default_stage,
                        permissions,
                        introspection: p.introspection,
                    })
                }
            }
        }
    };

    // Token registry.
    let mut tokens: HashMap<Arc<str>, Arc<TokenEntry>> = HashMap::new();
    match &inputs.tokens {
        None => {
            if previous.is_some_and(|p| !p.registry.tokens.is_empty()) {
                errors.push(ConfigError::new(&inputs.dir.join(TOKENS_TOML), None, "", "the token registry disappeared while entries existed; refusing to drop every token"));
            }
        }
        Some((path, text)) => {
            let tsrc = Source::new(path, text);
            if text.trim().is_empty() && previous.is_some_and(|p| !p.registry.tokens.is_empty()) {
                errors.push(tsrc.error(None, "", "file is empty while entries existed (truncated write?); write `token = []` to empty the registry on purpose"));
            }
            let parsed: Result<Vec<FileToken>, ConfigError> =
                if path.extension().is_some_and(|e| e == "json") {
                    if text.trim().is_empty() {
                        Ok(Vec::new())
                    } else {
                        serde_json::from_str::<JsonRegistry>(text)
                            .map(|r| r.tokens.into_iter().map(Into::into).collect())
                            .map_err(|e| ConfigError::new(path, Some(e.line()), "", e.to_string()))
                    }
                } else {
                    toml::from_str::<FileRegistry>(text)
                        .map(|r| r.tokens)
                        .map_err(|e| tsrc.toml_error(&e))
                };
            match parsed {
                Err(e) => errors.push(e),
                Ok(list) => {
                    tokens.reserve(list.len());
                    for (i, t) in list.iter().enumerate() {
                        if let Some(entry) = token(&tsrc, &cms, i, t, &mut errors) {
                            if tokens.insert(entry.jti.clone(), Arc::new(entry)).is_some() {
                                errors.push(tsrc.error(
                                    Some(t.jti.span()),
                                    format!("token[{i}].jti"),
                                    format!("duplicate jti {:?}", t.jti.get_ref()),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }

    // Revocation set.
    let revoked_path = inputs.dir.join(REVOKED_FILE);
    let mut revoked: HashSet<Arc<str>> = HashSet::new();
    let revoked_text = inputs.revoked.as_deref().unwrap_or("");
    if revoked_text.trim().is_empty() && previous.is_some_and(|p| !p.registry.revoked.is_empty()) {
        errors.push(ConfigError::new(&revoked_path, None, "", "revocation file is empty or missing while revocations existed; refusing to un-revoke every jti (write a comment line to empty it on purpose)"));
    }
    for (line, jti) in revoked_entries(revoked_text) {
        if jti.contains(char::is_whitespace) {
            errors.push(ConfigError::new(
                &revoked_path,
                Some(line),
                "jti",
                "one jti per line",
            ));
            continue;
        }
        revoked.insert(Arc::from(jti));
    }

    // Schema map: the SDL file wins; an unchanged file reuses the previous map.
    let schema_path = inputs.dir.join(SCHEMA_FILE);
    let schema = match &inputs.schema {
        Some(sdl) => {
            let digest: [u8; 32] = Sha256::digest(sdl.as_bytes()).into();
            match previous.and_then(|p| p.schema.as_ref().filter(|s| s.source_digest == digest)) {
                Some(same) => Some(same.clone()),
                None => match SchemaMap::from_sdl(sdl) {
                    Ok(mut m) => {
                        m.source_digest = digest;
                        Some(Arc::new(m))
                    }
                    Err(e) => {
                        errors.push(ConfigError::new(&schema_path, None, "", e.to_string()));
                        None
                    }
                },
            }
        }
        None => introspected.or_else(|| previous.and_then(|p| p.schema.clone())),
    };
    if schema.is_none() && inputs.needs_schema && !errors.iter().any(|e| e.file == schema_path) {
        errors.push(ConfigError::new(
            &schema_path,
            None,
            "",
            "no schema map: add the upstream SDL as policies/schema.graphql, or let the gateway reach the upstream for introspection at start-up",
        ));
    }

    let revoked_digest: [u8; 32] = Sha256::digest(revoked_text.as_bytes()).into();
    let document_cache_bytes = file
        .limits
        .document_cache_bytes
        .unwrap_or(crate::config::DEFAULT_DOCUMENT_CACHE_BYTES);
    match (errors.is_empty(), verifier, public) {
        (true, Some(verifier), Some(public)) => Ok(Snapshot {
            generation,
            loaded_at: SystemTime::now(),
            cms,
            registry: Registry {
                public: Arc::new(public),
                tokens,
                revoked,
            },
            verifier,
            documents: match previous {
                Some(p)
                    if same_schema(&p.schema, &schema)
                        && p.documents.budget() == document_cache_bytes =>
                {
                    p.documents.clone()
                }
                _ => Arc::new(DocumentCache::new(document_cache_bytes)),
            },
            schema,
            inputs_digest: inputs.digest(),
            restart_digest: inputs.restart_digest,
            revoked_digest,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

fn token(
    src: &Source,
    cms: &Cms,
    i: usize,
    t: &FileToken,
    errors: &mut Vec<ConfigError>,
) -> Option<TokenEntry> {
    let before = errors.len();
    let field = |f: &str| format!("token[{i}].{f}");
    let jti = t.jti.get_ref().trim();
    if jti.is_empty() || jti.contains(char::is_whitespace) || jti.contains('#') {
        errors.push(src.error(
            Some(t.jti.span()),
            field("jti"),
            "must be a non-empty string without whitespace or '#'",
        ));
    }
    if t.name.trim().is_empty() {
        errors.push(src.error(Some(t.jti.span()), field("name"), "must not be empty"));
    }
    let default_stage = stage(src, cms, &t.default_stage, &field("default_stage"), errors);
    let permissions = permissions(src, cms, &t.permissions, &field("permission"), errors);
    let mut pinned = Vec::new();
    for (j, p) in t.pinned_sha256.iter().enumerate() {
        match hex::decode(p.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        {
            Some(d) => pinned.push(d),
            None => errors.push(src.error(
                Some(t.jti.span()),
                field(&format!("pinned_sha256[{j}]")),
                "must be 64 hex digits (sha256)",
            )),
        }
    }
    let rate_limit = match &t.rate_limit {
        Some(r) if r.requests_per_second == 0 => {
            errors.push(src.error(
                Some(t.jti.span()),
                field("rate_limit.requests_per_second"),
                "must be at least 1",
            ));
            None
        }
        Some(r) => Some(RateLimit {
            requests_per_second: r.requests_per_second,
            burst: r.burst.unwrap_or(r.requests_per_second),
        }),
        None => None,
    };
    if errors.len() != before {
        return None;
    }
    Some(TokenEntry {
        jti: Arc::from(jti),
        name: t.name.clone(),
        description: t.description.clone(),
        policy: PrincipalPolicy {
            default_stage: default_stage?,
            permissions,
            introspection: t.introspection,
        },
        management: t.management.clone(),
        pinned_sha256: pinned,
        rate_limit,
    })
}

fn stage(
    src: &Source,
    cms: &Cms,
    s: &toml::Spanned<String>,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Stage> {
    match cms.stage(s.get_ref()) {
        Some(st) => Some(st.clone()),
        None => {
            errors.push(src.error(
                Some(s.span()),
                field,
                format!("unknown stage {:?} (known: {:?})", s.get_ref(), cms.stages),
            ));
            None
        }
    }
}

fn permissions(
    src: &Source,
    cms: &Cms,
    list: &[FilePermission],
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Permissions {
    let mut grants = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let span = Some(p.action.span());
        let f = |x: &str| format!("{field}[{i}].{x}");
        let Some(action) = Action::parse(p.action.get_ref()) else {
            errors.push(src.error(span, f("action"), format!(
                "unknown action {:?} (read, read_versions, create, update, delete, publish, unpublish)",
                p.action.get_ref()
            )));
            continue;
        };
        let stages =
            |v: &Option<Vec<String>>, name: &str, errors: &mut Vec<ConfigError>| -> Scope<Stage> {
                scope(
                    v,
                    |s| cms.stage(s).cloned(),
                    |bad| {
                        errors.push(src.error(
                            span.clone(),
                            f(name),
                            format!("unknown stage {bad:?} (known: {:?})", cms.stages),
                        ))
                    },
                )
            };
        let grant = Grant {
            action,
            models: match &p.models {
                None => Scope::All,
                Some(m) if m.iter().any(|x| x == "*") => Scope::All,
                Some(m) => Scope::Only(m.iter().cloned().collect::<BTreeSet<_>>()),
            },
            stages: stages(&p.stages, "stages", errors),
            locales: scope(
                &p.locales,
                |l| cms.locale(l).cloned(),
                |bad| {
                    errors.push(src.error(
                        span.clone(),
                        f("locales"),
                        format!("unknown locale {bad:?} (known: {:?})", cms.locales),
                    ))
                },
            ),
            from_stages: stages(&p.from_stages, "from_stages", errors),
            to_stages: stages(&p.to_stages, "to_stages", errors),
        };
        if action != Action::Publish && (p.from_stages.is_some() || p.to_stages.is_some()) {
            errors.push(src.error(
                span.clone(),
                f("from_stages"),
                "from_stages/to_stages apply to the publish action only",
            ));
        }
        grants.push(grant);
    }
    Permissions::new(grants)
}

fn scope<T: Ord>(
    v: &Option<Vec<String>>,
    known: impl Fn(&str) -> Option<T>,
    mut unknown: impl FnMut(&str),
) -> Scope<T> {
    match v {
        None => Scope::All,
        Some(items) if items.iter().any(|x| x == "*") => Scope::All,
        Some(items) => Scope::Only(
            items
                .iter()
                .filter_map(|i| {
                    let k = known(i);
                    if k.is_none() {
                        unknown(i);
                    }
                    k
                })
                .collect(),
        ),
    }
}

/// Compiles a set's texts with gateway.toml as a replica would (introspecting the upstream when
/// there is no SDL and no previous snapshot to take the schema map from).
pub fn compile_texts(
    config_path: &Path,
    texts: &super::PolicyTexts,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, String> {
    let mut inputs = Inputs::read(config_path).map_err(|e| e.to_string())?;
    inputs.overlay(texts);
    // Without an SDL the replicas introspect their upstream; so does the check here (which then
    // needs the whole gateway.toml, secrets included, to reach it).
    let introspected = match (&inputs.schema, inputs.needs_schema, previous) {
        (None, true, None) => {
            let config = crate::config::Config::load(config_path).map_err(|e| e.to_string())?;
            introspect_if_needed(&inputs, config.schema_upstream()).map_err(|e| e.to_string())?
        }
        _ => None,
    };
    compile(&inputs, 1, previous, introspected).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::policy::fixture::folder;

    const PUBLIC: &str = "default_stage = \"PUBLISHED\"\n";
    const TOKEN: &str = "[[token]]\njti = \"j1\"\nname = \"one\"\ndefault_stage = \"DRAFT\"\n";

    fn errors(e: ConfigErrors) -> String {
        e.0.iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_error_is_named_and_a_bad_set_compiles_to_nothing() {
        let bad_public =
            "default_stage = \"LIVE\"\n[[permission]]\naction = \"read\"\nlocales = [\"fr\"]\n";
        let (_d, config) = folder(bad_public, TOKEN, "");
        let inputs = Inputs::read(&config).unwrap();
        let e = errors(compile(&inputs, 1, None, None).err().unwrap());
        assert!(e.contains("LIVE") && e.contains("fr"), "{e}");
    }

    #[test]
    fn an_emptied_registry_or_revocation_list_never_replaces_a_populated_one() {
        let (_d, config) = folder(PUBLIC, TOKEN, "j0\n");
        let first = compile(&Inputs::read(&config).unwrap(), 1, None, None).unwrap();
        assert_eq!(first.registry.tokens.len(), 1);
        let dir = config.parent().unwrap().join("policies");
        std::fs::write(dir.join("tokens.toml"), "").unwrap();
        let e = compile(&Inputs::read(&config).unwrap(), 2, Some(&first), None);
        assert!(e.is_err(), "an emptied registry was accepted");
        std::fs::write(dir.join("tokens.toml"), TOKEN).unwrap();
        std::fs::write(dir.join("revoked.txt"), "").unwrap();
        let e = compile(&Inputs::read(&config).unwrap(), 2, Some(&first), None);
        assert!(e.is_err(), "an emptied revocation list was accepted");
    }
}
