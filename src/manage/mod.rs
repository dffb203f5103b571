//! The API-access screens as operations: endpoints, the default public stage, content
//! permissions (public and per token), Permanent Auth Tokens, their management permissions and
//! "can't find your token?". One implementation behind the management API, the CLI verbs and
//! the web console.
//!
//! Every change is a read-check-write of the whole policy source: the version read must be the
//! one the editor saw (its ETag, so two editors cannot silently overwrite each other), the
//! edited texts are compiled exactly as a reload compiles them (an invalid change is refused
//! with the compile's error and writes nothing), then written atomically through the policy
//! source ([`source::Source`]: the folder, or the cluster's Redis set) and applied at once.

pub mod edit;
pub mod source;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use toml_edit::{value, Item, Table};

use crate::auth::mint::{mint, MintRequest};
use crate::auth::AuthError;
use crate::cluster::Cluster;
use crate::config::file::FileConfig;
use crate::config::secret::SecretSource;
use crate::config::Config;
use crate::permissions::{management, Action};
use crate::policy::compile::{compile_texts, revoked_jtis};
use crate::policy::file::{FilePublic, FileRegistry, JsonRegistry};
use crate::policy::store::PolicyStore;
use crate::policy::{PolicyTexts, Snapshot};
pub use edit::Target;
use edit::{permission_table, spec_of, string_array, write_scopes, Draft};
use source::{Current, Source};

/// Longest name or description accepted, in bytes.
const MAX_TEXT: usize = 1024;
/// Most values in one list (models, locales, stages, management permissions).
const MAX_LIST: usize = 1000;
/// Most tokens in a registry the management API grows (the registry is compiled whole on
/// every change and every replica).
const MAX_TOKENS: usize = 100_000;
/// Most content permissions per principal.
const MAX_PERMISSIONS: usize = 10_000;

/// A refusal with an HTTP status and a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManageError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ManageError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(400, "BAD_REQUEST", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(404, "NOT_FOUND", m)
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(422, "INVALID", m)
    }
    pub fn read_only(m: impl Into<String>) -> Self {
        Self::new(409, "READ_ONLY", m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(503, "UNAVAILABLE", m)
    }
    pub fn precondition_failed() -> Self {
        Self::new(
            412,
            "PRECONDITION_FAILED",
            "the policy changed since it was read (If-Match does not match the current ETag): read it again and redo the change",
        )
    }
    pub fn precondition_required() -> Self {
        Self::new(
            428,
            "PRECONDITION_REQUIRED",
            "a change needs If-Match with the ETag of the policy it was made on (GET it first)",
        )
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(409, "CONFLICT", m)
    }
}

impl std::fmt::Display for ManageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// A content permission as the screens show and send it (`None`: all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionSpec {
    pub action: String,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub locales: Option<Vec<String>>,
    #[serde(default)]
    pub stages: Option<Vec<String>>,
    #[serde(default)]
    pub from_stages: Option<Vec<String>>,
    #[serde(default)]
    pub to_stages: Option<Vec<String>>,
}

/// A permission with its position in the policy at the ETag it was read with.
#[derive(Debug, Clone, Serialize)]
pub struct PermissionView {
    pub id: usize,
    #[serde(flatten)]
    pub spec: PermissionSpec,
}

/// A token as listed (never its string).
#[derive(Debug, Clone, Serialize)]
pub struct TokenView {
    pub jti: String,
    pub name: String,
    pub description: String,
    pub default_stage: String,
    pub created: Option<String>,
    pub updated: Option<String>,
    pub revoked: bool,
    pub permissions: Vec<PermissionView>,
    pub management: Vec<String>,
}

/// What a permission list is narrowed and ordered by (`GET …/permissions?…`).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub actions: Vec<String>,
    pub models: Vec<String>,
    pub locales: Vec<String>,
    pub stages: Vec<String>,
    /// `model` or `action`, descending when `desc`.
    pub sort: Option<(String, bool)>,
}

impl ListQuery {
    /// `sort=model|action[:desc]`, `action=a,b`, `model=…`, `locale=…`, `stage=…`.
    pub fn parse(query: &str) -> Result<ListQuery, ManageError> {
        let mut q = ListQuery::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let list = || -> Vec<String> {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            match &*k {
                "action" => q.actions = list(),
                "model" => q.models = list(),
                "locale" => q.locales = list(),
                "stage" => q.stages = list(),
                "sort" => {
                    let (key, dir) = v.split_once(':').unwrap_or((&v, "asc"));
                    if !matches!(key, "model" | "action") || !matches!(dir, "asc" | "desc") {
                        return Err(ManageError::bad_request(format!(
                            "sort={v:?}: expected model or action, optionally :asc or :desc"
                        )));
                    }
                    q.sort = Some((key.to_string(), dir == "desc"));
                }
                other => {
                    return Err(ManageError::bad_request(format!(
                        "unknown parameter {other:?} (action, model, locale, stage, sort)"
                    )))
                }
            }
        }
        if q.actions.len() + q.models.len() + q.locales.len() + q.stages.len() > MAX_LIST {
            return Err(ManageError::bad_request("too many filter values"));
        }
        Ok(q)
    }

    fn admits(&self, p: &PermissionSpec) -> bool {
        let covers = |scope: &Option<Vec<String>>, wanted: &[String]| {
            wanted.is_empty()
                || match scope {
                    None => true,
                    Some(list) => wanted.iter().any(|w| list.contains(w)),
                }
        };
        let stages_of = if p.action == "publish" {
            // Publish is scoped by its from/to stages.
            match (&p.from_stages, &p.to_stages) {
                (None, _) | (_, None) => None,
                (Some(a), Some(b)) => Some(a.iter().chain(b).cloned().collect()),
            }
        } else {
            p.stages.clone()
        };
        (self.actions.is_empty() || self.actions.contains(&p.action))
            && covers(&p.models, &self.models)
            && covers(&p.locales, &self.locales)
            && covers(&stages_of, &self.stages)
    }

    pub fn apply(&self, mut list: Vec<PermissionView>) -> Vec<PermissionView> {
        list.retain(|p| self.admits(&p.spec));
        if let Some((key, desc)) = &self.sort {
            let models = |p: &PermissionView| match &p.spec.models {
                // "All models" sorts first.
                None => String::new(),
                Some(m) => {
                    let mut m = m.clone();
                    m.sort();
                    m.join(",")
                }
            };
            let action_rank = |p: &PermissionView| {
                Action::parse(&p.spec.action)
                    .and_then(|a| Action::ALL.iter().position(|x| *x == a))
                    .unwrap_or(usize::MAX)
            };
            // Each row's key is built once (not per comparison: a model list can be long).
            let mut keyed: Vec<(String, usize, PermissionView)> = list
                .into_iter()
                .map(|p| (models(&p), action_rank(&p), p))
                .collect();
            keyed.sort_by(|a, b| {
                let ord = match key.as_str() {
                    "model" => a.0.cmp(&b.0).then(a.1.cmp(&b.1)),
                    _ => a.1.cmp(&b.1).then(a.0.cmp(&b.0)),
                };
                let ord = if *desc { ord.reverse() } else { ord };
                ord.then(a.2.id.cmp(&b.2.id))
            });
            return keyed.into_iter().map(|(_, _, p)| p).collect();
        }
        list
    }
}

/// Changes to a token's own fields (`PATCH /tokens/{jti}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub default_stage: Option<String>,
}

/// A new token (`POST /tokens`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub default_stage: Option<String>,
}

/// Changes to a permission's scopes (`PATCH …/permissions/{id}`): a key present with `null`
/// widens that scope to all, a list narrows it, an absent key stays.
#[derive(Debug, Clone, Default)]
pub struct PermissionPatch {
    pub fields: Vec<(&'static str, Option<Vec<String>>)>,
}

impl PermissionPatch {
    pub fn from_json(v: &Value) -> Result<PermissionPatch, ManageError> {
        let Value::Object(o) = v else {
            return Err(ManageError::bad_request("expected a JSON object"));
        };
        let mut fields = Vec::new();
        for (k, v) in o {
            let key = match k.as_str() {
                "models" => "models",
                "locales" => "locales",
                "stages" => "stages",
                "from_stages" => "from_stages",
                "to_stages" => "to_stages",
                other => {
                    return Err(ManageError::bad_request(format!(
                        "unknown field {other:?} (models, locales, stages, from_stages, to_stages; to change the action, add another permission)"
                    )))
                }
            };
            let list = match v {
                Value::Null => None,
                Value::Array(a) => Some(
                    a.iter()
                        .map(|x| {
                            x.as_str().map(str::to_string).ok_or_else(|| {
                                ManageError::bad_request(format!("{key}: expected strings"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                _ => {
                    return Err(ManageError::bad_request(format!(
                        "{key}: expected a list of strings or null (all)"
                    )))
                }
            };
            fields.push((key, list));
        }
        Ok(PermissionPatch { fields })
    }

    fn apply(&self, p: &mut PermissionSpec) {
        for (k, v) in &self.fields {
            let slot = match *k {
                "models" => &mut p.models,
                "locales" => &mut p.locales,
                "stages" => &mut p.stages,
                "from_stages" => &mut p.from_stages,
                _ => &mut p.to_stages,
            };
            *slot = v.clone();
        }
    }
}

/// How the compile is run: against the running gateway's store (its schema map, its live
/// snapshot as the previous one), or from gateway.toml alone (the CLI on a folder).
enum Checker {
    Store(Arc<PolicyStore>),
    Config,
}

/// The result of a change: what to answer, and the ETag of the new version.
pub struct Changed {
    pub body: Value,
    pub etag: String,
}

pub struct Manager {
    config_path: PathBuf,
    source: Source,
    checker: Checker,
    /// One change at a time in this process (the folder lock covers other processes).
    write_lock: Mutex<()>,
}

/// A JWT string minted for a jti (shown once, never stored).
pub struct Minted {
    pub jwt: String,
    pub jti: String,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn check_text(field: &str, s: &str, required: bool) -> Result<(), ManageError> {
    if required && s.trim().is_empty() {
        return Err(ManageError::bad_request(format!("{field} is required")));
    }
    if s.len() > MAX_TEXT {
        return Err(ManageError::bad_request(format!(
            "{field} is longer than {MAX_TEXT} bytes"
        )));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
        || (field == "name" && s.contains('\n'))
    {
        return Err(ManageError::bad_request(format!(
            "{field} has control characters"
        )));
    }
    Ok(())
}

/// A list holding `*` means "all" to the compile: the screens and the filters must read it so
/// too, so it is written and shown as `None`.
fn all_if_star(list: &Option<Vec<String>>) -> Option<Vec<String>> {
    list.as_ref()
        .filter(|l| !l.iter().any(|v| v == "*"))
        .cloned()
}

impl PermissionSpec {
    fn normalized(mut self) -> PermissionSpec {
        for l in [
            &mut self.models,
            &mut self.locales,
            &mut self.stages,
            &mut self.from_stages,
            &mut self.to_stages,
        ] {
            *l = all_if_star(l);
        }
        self
    }
}

fn check_spec(p: &PermissionSpec) -> Result<(), ManageError> {
    if Action::parse(&p.action).is_none() {
        return Err(ManageError::bad_request(format!(
            "action {:?}: expected one of {}",
            p.action,
            Action::ALL.map(|a| a.as_str()).join(", ")
        )));
    }
    for list in [
        &p.models,
        &p.locales,
        &p.stages,
        &p.from_stages,
        &p.to_stages,
    ]
    .into_iter()
    .flatten()
    {
        if list.len() > MAX_LIST {
            return Err(ManageError::bad_request("too many values in one list"));
        }
        for v in list {
            if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
                return Err(ManageError::bad_request(format!("{v:?} is not a name")));
            }
        }
    }
    Ok(())
}

/// The models of a permission being added or edited must be models of the schema map (a
/// reload tolerates unknown ones, so a model removed from the CMS does not stop the gateway;
/// a new grant naming one is a typo). Stages and locales are checked by the compile.
fn check_models(p: &PermissionSpec, snap: &Snapshot) -> Result<(), ManageError> {
    let (Some(models), Some(schema)) = (&p.models, &snap.schema) else {
        return Ok(());
    };
    if let Some(bad) = models
        .iter()
        .find(|m| *m != "*" && !schema.models.contains(m.as_str()))
    {
        let mut known: Vec<&str> = schema.models.iter().map(|m| &**m).collect();
        known.truncate(50);
        return Err(ManageError::invalid(format!(
            "model {bad:?} is not a model of the schema (known: {})",
            known.join(", ")
        )));
    }
    if models.is_empty() {
        return Err(ManageError::invalid(
            "an empty model list grants nothing: leave models out (null) for all models",
        ));
    }
    Ok(())
}

/// Hygraph's dependencies between content permissions, as hints for the screens: a grant that
/// the CMS would not let work on its own.
pub fn dependency_notes(perms: &[PermissionSpec]) -> Vec<String> {
    let reads_draft = |models: &Option<Vec<String>>| {
        perms.iter().any(|p| {
            p.action == "read"
                && p.stages
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|x| x == "DRAFT"))
                && match (&p.models, models) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(have), Some(want)) => want.iter().all(|m| have.contains(m)),
                }
        })
    };
    let mut notes = Vec::new();
    for p in perms {
        if matches!(
            p.action.as_str(),
            "create" | "update" | "delete" | "publish" | "unpublish" | "read_versions"
        ) && !reads_draft(&p.models)
        {
            notes.push(format!(
                "{} needs read on DRAFT for the same models (the CMS reads the entry it changes)",
                p.action
            ));
        }
    }
    notes.sort();
    notes.dedup();
    notes
}

impl Manager {
    /// For the running gateway: its store compiles, the source is the folder or the cluster's
    /// set.
    pub fn for_gateway(
        config_path: PathBuf,
        policies_dir: PathBuf,
        store: Arc<PolicyStore>,
        cluster: Option<Arc<Cluster>>,
        read_only: bool,
    ) -> Manager {
        let mut source = Self::source_for(policies_dir, cluster);
        if read_only {
            source = source.read_only("[admin] read_only = true: the policy is changed where it comes from (Git, a ConfigMap)");
        }
        Manager {
            config_path,
            source,
            checker: Checker::Store(store),
            write_lock: Mutex::new(()),
        }
    }

    /// For the CLI: the folder gateway.toml names, or the cluster's set with `[cluster]`.
    pub fn for_config(config_path: PathBuf) -> Result<Manager, ManageError> {
        let config = Config::load(&config_path).map_err(|e| ManageError::invalid(e.to_string()))?;
        let cluster = match &config.cluster {
            Some(settings) => Some(
                Cluster::new(settings.clone(), Arc::new(crate::metrics::Metrics::new()))
                    .map_err(ManageError::unavailable)?,
            ),
            None => None,
        };
        Ok(Manager {
            source: Self::source_for(config.policies_dir.clone(), cluster),
            config_path,
            checker: Checker::Config,
            write_lock: Mutex::new(()),
        })
    }

    fn source_for(dir: PathBuf, cluster: Option<Arc<Cluster>>) -> Source {
        match cluster {
            Some(c) => Source::Redis(c),
            None => Source::Folder {
                read_only: source::probe_folder(&dir),
                dir,
            },
        }
    }

    /// Why changes are refused whatever the credential (a read-only folder).
    pub fn read_only_reason(&self) -> Option<&str> {
        self.source.read_only_reason()
    }

    pub fn source_name(&self) -> String {
        self.source.describe()
    }

    fn compile(
        &self,
        texts: &PolicyTexts,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ManageError> {
        let result = match &self.checker {
            Checker::Store(store) => store.check(texts).map_err(|e| e.to_string()),
            Checker::Config => compile_texts(&self.config_path, texts, previous),
        };
        result.map_err(|e| {
            ManageError::invalid(format!(
                "the change does not compile; nothing was written:\n{e}"
            ))
        })
    }

    /// The live snapshot (the gateway's), or the source compiled (the CLI).
    fn snapshot(&self, current: &Current) -> Result<Arc<Snapshot>, ManageError> {
        match &self.checker {
            Checker::Store(store) => Ok(store.snapshot()),
            Checker::Config => compile_texts(&self.config_path, &current.texts, None)
                .map(Arc::new)
                .map_err(|e| {
                    ManageError::invalid(format!("the policy source does not compile:\n{e}"))
                }),
        }
    }

    /// The current version and its ETag.
    pub fn current(&self) -> Result<Current, ManageError> {
        self.source.read()
    }

    /// Runs one change: checks `if_match`, edits, compiles, writes, applies, audits.
    fn change(
        &self,
        who: &str,
        if_match: Option<&str>,
        op: &'static str,
        edit: impl FnOnce(&mut Draft, &Snapshot) -> Result<(Value, Value, Value), ManageError>,
    ) -> Result<Changed, ManageError> {
        if let Some(why) = self.read_only_reason() {
            return Err(ManageError::read_only(why.to_string()));
        }
        let Some(if_match) = if_match else {
            return Err(ManageError::precondition_required());
        };
        let _one = self.write_lock.lock();
        let _lock = self.source.lock()?;
        let current = self.source.read()?;
        // Strong comparison only (RFC 9110): `*` or a weak tag would let a change made on an
        // older version — a permission addressed by its position in that version — land on
        // whatever sits there now.
        let wanted = if_match.trim();
        let wanted = wanted
            .strip_prefix('"')
            .and_then(|w| w.strip_suffix('"'))
            .unwrap_or(wanted);
        if wanted != current.etag {
            return Err(ManageError::precondition_failed());
        }
        let live = self.snapshot(&current)?;
        let mut draft = Draft::of(&current.texts)?;
        let (body, before, after) = edit(&mut draft, &live)?;
        let next = draft.texts(&current.texts);
        if next == current.texts {
            return Ok(Changed {
                body,
                etag: current.etag,
            });
        }
        self.compile(&next, Some(&live))?;
        let stored = self.source.write(&current, next, who)?;
        let etag = source::etag(&stored);
        self.apply(stored);
        tracing::info!(
            target: "audit",
            event = "policy_change",
            who,
            op,
            source = %self.source.describe(),
            before = %before,
            after = %after,
            etag = %etag,
            "policy changed through the management API"
        );
        Ok(Changed { body, etag })
    }

    /// Makes a written version live in this process at once (the next request sees it; other
    /// replicas follow through the cluster's sync, a folder's other readers through their
    /// watchers).
    fn apply(&self, stored: PolicyTexts) {
        let Checker::Store(store) = &self.checker else {
            return;
        };
        let result = if self.source.is_redis() {
            store.apply_shared(stored, "admin").map(|_| ())
        } else {
            store.reload("admin").map(|_| ())
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "a change that compiled did not apply");
        }
    }

    // ---- reads ----

    fn public_file(current: &Current) -> Result<FilePublic, ManageError> {
        toml::from_str(current.texts.public.as_deref().unwrap_or(""))
            .map_err(|e| ManageError::invalid(format!("public.toml: {e}")))
    }

    fn registry_file(
        current: &Current,
    ) -> Result<Vec<crate::policy::file::FileToken>, ManageError> {
        match &current.texts.tokens {
            None => Ok(Vec::new()),
            Some((name, text)) if name.ends_with(".json") => {
                serde_json::from_str::<JsonRegistry>(text)
                    .map(|r| r.tokens.into_iter().map(Into::into).collect())
                    .map_err(|e| ManageError::invalid(format!("{name}: {e}")))
            }
            Some((name, text)) => toml::from_str::<FileRegistry>(text)
                .map(|r| r.tokens)
                .map_err(|e| ManageError::invalid(format!("{name}: {e}"))),
        }
    }

    fn views(perms: &[crate::policy::file::FilePermission]) -> Vec<PermissionView> {
        perms
            .iter()
            .enumerate()
            .map(|(id, p)| PermissionView {
                id,
                spec: PermissionSpec {
                    action: p.action.get_ref().clone(),
                    models: p.models.clone(),
                    locales: p.locales.clone(),
                    stages: p.stages.clone(),
                    from_stages: p.from_stages.clone(),
                    to_stages: p.to_stages.clone(),
                }
                .normalized(),
            })
            .collect()
    }

    /// Stages, locales, models and actions to choose from, and the default public stage.
    pub fn stages(&self) -> Result<(Value, String), ManageError> {
        let current = self.current()?;
        let snap = self.snapshot(&current)?;
        let public = Self::public_file(&current)?;
        let models: Vec<&str> = snap
            .schema
            .as_ref()
            .map(|s| s.models.iter().map(|m| &**m).collect())
            .unwrap_or_default();
        Ok((
            json!({
                "stages": snap.cms.stages.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "locales": snap.cms.locales.iter().map(|l| l.as_str()).collect::<Vec<_>>(),
                "default_locale": snap.cms.default_locale.as_str(),
                "models": models,
                "actions": Action::ALL.map(|a| a.as_str()),
                "public_default_stage": public.default_stage.get_ref(),
                "source": self.source.describe(),
                "etag": current.etag,
            }),
            current.etag,
        ))
    }

    pub fn permissions(
        &self,
        target: &Target,
        query: &ListQuery,
    ) -> Result<(Vec<PermissionView>, String), ManageError> {
        let current = self.current()?;
        let list = match target {
            Target::Public => Self::views(&Self::public_file(&current)?.permissions),
            Target::Token(jti) => {
                let tokens = Self::registry_file(&current)?;
                let t = tokens
                    .iter()
                    .find(|t| t.jti.get_ref() == jti)
                    .ok_or_else(|| ManageError::not_found(format!("no token with jti {jti:?}")))?;
                Self::views(&t.permissions)
            }
        };
        Ok((query.apply(list), current.etag))
    }

    pub fn tokens(&self) -> Result<(Vec<TokenView>, String), ManageError> {
        let current = self.current()?;
        // What is enforced: the live snapshot's revocations in the gateway (a hand edit that
        // did not compile is not in force, and the list must not say it is), the source's own
        // in the CLI.
        let live = match &self.checker {
            Checker::Store(store) => Some(store.snapshot()),
            Checker::Config => None,
        };
        let on_disk = revoked_jtis(current.texts.revoked.as_deref().unwrap_or(""));
        let is_revoked = |jti: &str| match &live {
            Some(snap) => snap.registry.revoked.contains(jti),
            None => on_disk.contains(jti),
        };
        let list = Self::registry_file(&current)?
            .into_iter()
            .map(|t| TokenView {
                revoked: is_revoked(t.jti.get_ref()),
                jti: t.jti.into_inner(),
                name: t.name,
                description: t.description,
                default_stage: t.default_stage.into_inner(),
                created: t.created,
                updated: t.updated,
                permissions: Self::views(&t.permissions),
                management: t.management,
            })
            .collect();
        Ok((list, current.etag))
    }

    pub fn token(&self, jti: &str) -> Result<(TokenView, String), ManageError> {
        let (list, etag) = self.tokens()?;
        list.into_iter()
            .find(|t| t.jti == jti)
            .map(|t| (t, etag))
            .ok_or_else(|| ManageError::not_found(format!("no token with jti {jti:?}")))
    }

    /// Every management permission the gateway knows, with whether the token has it.
    pub fn management(&self, jti: &str) -> Result<(Value, String), ManageError> {
        let (t, etag) = self.token(jti)?;
        Ok((management_view(&t.management, &etag), etag))
    }

    // ---- changes ----

    pub fn set_default_stage(
        &self,
        who: &str,
        if_match: Option<&str>,
        stage: &str,
    ) -> Result<Changed, ManageError> {
        check_text("stage", stage, true)?;
        self.change(who, if_match, "set_default_stage", |d, snap| {
            if !snap.cms.stages.iter().any(|s| s.as_str() == stage) {
                return Err(ManageError::invalid(format!(
                    "stage {stage:?} is not one of the configured stages ({})",
                    snap.cms
                        .stages
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let before = d
                .public
                .get("default_stage")
                .and_then(Item::as_str)
                .unwrap_or("")
                .to_string();
            d.set_default_stage(stage);
            Ok((
                json!({ "public_default_stage": stage }),
                json!({ "default_stage": before }),
                json!({ "default_stage": stage }),
            ))
        })
    }

    pub fn add_permission(
        &self,
        who: &str,
        if_match: Option<&str>,
        target: &Target,
        spec: PermissionSpec,
    ) -> Result<Changed, ManageError> {
        let spec = spec.normalized();
        check_spec(&spec)?;
        self.change(who, if_match, "add_permission", |d, snap| {
            check_models(&spec, snap)?;
            let list = d.permissions(target)?;
            if list.len() >= MAX_PERMISSIONS {
                return Err(ManageError::invalid(format!("more than {MAX_PERMISSIONS} permissions")));
            }
            list.push(permission_table(&spec));
            let id = list.len() - 1;
            let all: Vec<PermissionSpec> = list.iter().map(spec_of).collect();
            if matches!(target, Target::Token(_)) {
                touch(d, target);
            }
            Ok((
                json!({ "permission": PermissionView { id, spec: spec.clone() }, "notes": dependency_notes(&all) }),
                json!({ "target": target.describe() }),
                json!({ "target": target.describe(), "added": spec }),
            ))
        })
    }

    pub fn edit_permission(
        &self,
        who: &str,
        if_match: Option<&str>,
        target: &Target,
        id: usize,
        patch: &PermissionPatch,
    ) -> Result<Changed, ManageError> {
        self.change(who, if_match, "edit_permission", |d, snap| {
            let list = d.permissions(target)?;
            let table = list.get_mut(id).ok_or_else(|| {
                ManageError::not_found(format!("no permission {id} for {}", target.describe()))
            })?;
            let before = spec_of(table).normalized();
            let mut after = before.clone();
            patch.apply(&mut after);
            let after = after.normalized();
            check_spec(&after)?;
            check_models(&after, snap)?;
            write_scopes(table, &after);
            touch(d, target);
            Ok((
                json!({ "permission": PermissionView { id, spec: after.clone() } }),
                json!({ "target": target.describe(), "permission": before }),
                json!({ "target": target.describe(), "permission": after }),
            ))
        })
    }

    pub fn delete_permission(
        &self,
        who: &str,
        if_match: Option<&str>,
        target: &Target,
        id: usize,
    ) -> Result<Changed, ManageError> {
        self.change(who, if_match, "delete_permission", |d, _| {
            let list = d.permissions(target)?;
            if id >= list.len() {
                return Err(ManageError::not_found(format!("no permission {id} for {}", target.describe())));
            }
            let before = list.get(id).map(spec_of);
            list.remove(id);
            touch(d, target);
            Ok((
                json!({ "deleted": before.as_ref().map(|spec| PermissionView { id, spec: spec.clone() }) }),
                json!({ "target": target.describe(), "permission": before }),
                json!({ "target": target.describe(), "permission": null }),
            ))
        })
    }

    /// Adds a token the way the CMS starts one (default stage PUBLISHED unless chosen, Read on
    /// all models and locales in its default stage, the basic management permissions) and mints
    /// its first string.
    pub fn add_token(
        &self,
        who: &str,
        if_match: Option<&str>,
        new: &NewToken,
    ) -> Result<(Changed, Minted), ManageError> {
        check_text("name", &new.name, true)?;
        check_text("description", &new.description, false)?;
        let jti = uuid::Uuid::new_v4().to_string();
        // Signed before anything is written: without a usable key nothing changes.
        let minted = self.mint(&jti)?;
        let changed = self.change(who, if_match, "add_token", |d, snap| {
            let stage = match &new.default_stage {
                Some(s) => s.clone(),
                None => snap
                    .cms
                    .stages
                    .iter()
                    .find(|s| s.as_str() == "PUBLISHED")
                    .or(snap.cms.stages.first())
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|| "PUBLISHED".into()),
            };
            if snap.registry.tokens.len() >= MAX_TOKENS {
                return Err(ManageError::invalid(format!(
                    "the registry holds {MAX_TOKENS} tokens already"
                )));
            }
            if snap.registry.tokens.values().any(|t| t.name == new.name) {
                return Err(ManageError::conflict(format!(
                    "a token named {:?} exists already",
                    new.name
                )));
            }
            let now = now_rfc3339();
            let mut entry = Table::new();
            entry["jti"] = value(jti.as_str());
            entry["name"] = value(new.name.as_str());
            if !new.description.is_empty() {
                entry["description"] = value(new.description.as_str());
            }
            entry["default_stage"] = value(stage.as_str());
            entry["created"] = value(now.as_str());
            entry["updated"] = value(now.as_str());
            entry["management"] = string_array(&management::BASIC.map(str::to_string));
            d.add_token(entry)?;
            d.permissions(&Target::Token(jti.clone()))?
                .push(permission_table(&PermissionSpec {
                    action: "read".into(),
                    models: None,
                    locales: None,
                    stages: Some(vec![stage.clone()]),
                    from_stages: None,
                    to_stages: None,
                }));
            let summary = json!({ "jti": jti, "name": new.name, "default_stage": stage });
            Ok((summary.clone(), Value::Null, summary))
        })?;
        let (token, _) = self.token(&jti)?;
        Ok((
            Changed {
                body: json!({ "token": token }),
                etag: changed.etag,
            },
            minted,
        ))
    }

    pub fn edit_token(
        &self,
        who: &str,
        if_match: Option<&str>,
        jti: &str,
        patch: &TokenPatch,
    ) -> Result<Changed, ManageError> {
        if let Some(n) = &patch.name {
            check_text("name", n, true)?;
        }
        if let Some(n) = &patch.description {
            check_text("description", n, false)?;
        }
        if let Some(n) = &patch.default_stage {
            check_text("default_stage", n, true)?;
        }
        self.change(who, if_match, "edit_token", |d, snap| {
            if let Some(n) = &patch.name {
                if snap.registry.tokens.values().any(|t| t.name == *n && &*t.jti != jti) {
                    return Err(ManageError::conflict(format!("a token named {n:?} exists already")));
                }
            }
            let t = d.token(jti)?;
            let field = |t: &Table, k: &str| t.get(k).and_then(Item::as_str).unwrap_or("").to_string();
            let before = json!({ "jti": jti, "name": field(t, "name"), "description": field(t, "description"), "default_stage": field(t, "default_stage") });
            if let Some(n) = &patch.name {
                t["name"] = value(n.as_str());
            }
            if let Some(n) = &patch.description {
                t["description"] = value(n.as_str());
            }
            if let Some(n) = &patch.default_stage {
                t["default_stage"] = value(n.as_str());
            }
            t["updated"] = value(now_rfc3339());
            let after = json!({ "jti": jti, "name": field(t, "name"), "description": field(t, "description"), "default_stage": field(t, "default_stage") });
            Ok((json!({}), before, after))
        })
        .and_then(|c| self.with_token(c, jti))
    }

    fn with_token(&self, _c: Changed, jti: &str) -> Result<Changed, ManageError> {
        let (token, etag) = self.token(jti)?;
        Ok(Changed {
            body: json!({ "token": token }),
            etag,
        })
    }

    /// Deletes the entry and revokes its jti in the same write: every string ever issued for
    /// it is refused from the next request, also if a restored backup brings the entry back.
    pub fn delete_token(
        &self,
        who: &str,
        if_match: Option<&str>,
        jti: &str,
    ) -> Result<Changed, ManageError> {
        let (before, _) = self.token(jti)?;
        self.change(who, if_match, "delete_token", |d, _| {
            if !d.remove_token(jti)? {
                return Err(ManageError::not_found(format!("no token with jti {jti:?}")));
            }
            d.revoke(
                jti,
                &format!(
                    "token {:?} deleted by {who} at {}",
                    before.name,
                    now_rfc3339()
                ),
            );
            Ok((
                json!({ "deleted": before }),
                json!({ "jti": jti, "name": before.name }),
                json!({ "jti": jti, "deleted": true, "revoked": true }),
            ))
        })
    }

    /// Revokes the jti and keeps the entry (listed as revoked).
    pub fn revoke_token(
        &self,
        who: &str,
        if_match: Option<&str>,
        jti: &str,
    ) -> Result<Changed, ManageError> {
        self.change(who, if_match, "revoke_token", |d, snap| {
            let name = snap.registry.tokens.get(jti).map(|t| t.name.clone());
            let Some(name) = name else {
                return Err(ManageError::not_found(format!("no token with jti {jti:?}")));
            };
            d.revoke(
                jti,
                &format!("token {name:?} revoked by {who} at {}", now_rfc3339()),
            );
            Ok((
                json!({}),
                json!({ "jti": jti, "revoked": false }),
                json!({ "jti": jti, "revoked": true }),
            ))
        })
        .and_then(|c| self.with_token(c, jti))
    }

    pub fn set_management(
        &self,
        who: &str,
        if_match: Option<&str>,
        jti: &str,
        enable: &[String],
        disable: &[String],
    ) -> Result<Changed, ManageError> {
        let known = management::catalogue();
        for n in enable.iter().chain(disable) {
            if !known.contains(&n.as_str()) {
                return Err(ManageError::bad_request(format!(
                    "{n:?} is not a management permission ({})",
                    known.join(", ")
                )));
            }
        }
        if enable.iter().any(|e| disable.contains(e)) {
            return Err(ManageError::bad_request(
                "a permission both enabled and disabled",
            ));
        }
        let changed = self.change(who, if_match, "set_management", |d, _| {
            let t = d.token(jti)?;
            let mut have: Vec<String> = t
                .get("management")
                .and_then(Item::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let before = have.clone();
            for e in enable {
                if !have.contains(e) {
                    have.push(e.clone());
                }
            }
            have.retain(|h| !disable.contains(h));
            have.sort();
            if have != before {
                t["management"] = string_array(&have);
                t["updated"] = value(now_rfc3339());
            }
            Ok((
                json!({}),
                json!({ "jti": jti, "management": before }),
                json!({ "jti": jti, "management": have }),
            ))
        })?;
        let (v, etag) = self.management(jti)?;
        Ok(Changed {
            body: v,
            etag: if etag.is_empty() { changed.etag } else { etag },
        })
    }

    // ---- strings ----

    /// A fresh string for an active jti with the current issuer, audience and signing key.
    pub fn reissue(&self, jti: &str) -> Result<Minted, ManageError> {
        let current = self.current()?;
        let snap = self.snapshot(&current)?;
        if snap.registry.revoked.contains(jti) {
            return Err(ManageError::conflict(format!(
                "jti {jti} is revoked; a revoked token stays revoked (add a new token)"
            )));
        }
        if !snap.registry.tokens.contains_key(jti) {
            return Err(ManageError::not_found(format!("no token with jti {jti:?}")));
        }
        self.mint(jti)
    }

    /// Signs a string for `jti` with `[auth.signing_key]` (gateway.toml is read again: the key
    /// is live, like the rest of `[auth]`).
    fn mint(&self, jti: &str) -> Result<Minted, ManageError> {
        let text = std::fs::read_to_string(&self.config_path).map_err(|e| {
            ManageError::unavailable(format!("{}: {e}", self.config_path.display()))
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| {
            ManageError::unavailable(format!("{}: {e}", self.config_path.display()))
        })?;
        let no_key = || {
            ManageError::conflict(
                "no signing key: set [auth.signing_key] kid = \"…\" (one of the [[auth.key]] entries) to mint token strings",
            )
        };
        let sk = file.auth.signing_key.as_ref().ok_or_else(no_key)?;
        let key = file
            .auth
            .keys
            .iter()
            .find(|k| k.kid.get_ref() == &sk.kid)
            .ok_or_else(|| {
                ManageError::conflict(format!(
                    "[auth.signing_key] kid {:?} is not one of the [[auth.key]] entries",
                    sk.kid
                ))
            })?;
        let base = self
            .config_path
            .parent()
            .unwrap_or(std::path::Path::new("."));
        let algorithm = key.algorithm.get_ref().as_str();
        let material: Vec<u8> = if algorithm.starts_with("HS") {
            let path = key.secret_file.as_ref().map(|p| base.join(p));
            SecretSource::of(key.secret_env.as_deref(), path.as_deref())
                .and_then(|s| s.ok_or_else(|| "the key has no secret".to_string()))
                .and_then(|s| s.read())
                .map_err(|e| ManageError::conflict(format!("signing key {:?}: {e}", sk.kid)))?
                .into_bytes()
        } else {
            let p = sk.private_key_file.as_ref().ok_or_else(|| {
                ManageError::conflict(format!(
                    "signing key {:?} is {algorithm}: set [auth.signing_key] private_key_file",
                    sk.kid
                ))
            })?;
            std::fs::read(base.join(p)).map_err(|e| {
                ManageError::conflict(format!("[auth.signing_key] private_key_file {p}: {e}"))
            })?
        };
        let audiences: Vec<String> = file.auth.audiences.first().cloned().into_iter().collect();
        let (jwt, jti) = mint(&MintRequest {
            algorithm,
            key: &material,
            kid: Some(&sk.kid),
            jti: Some(jti),
            issuer: file.auth.issuers.first().map(String::as_str),
            audiences: &audiences,
            subject: None,
            expires_in: None,
        })
        .map_err(ManageError::conflict)?;
        Ok(Minted { jwt, jti })
    }

    /// "Can't find your token?": decodes a pasted string, verifies it with the live keys and
    /// says which token it is. The string is neither stored nor logged.
    pub fn check(&self, jwt: &str) -> Result<Value, ManageError> {
        let jwt = jwt.trim();
        if jwt.len() > 16 * 1024 {
            return Err(ManageError::bad_request("longer than 16 KiB: not a token"));
        }
        let current = self.current()?;
        let snap = self.snapshot(&current)?;
        let (header, claims) = match crate::auth::decode_unverified(jwt) {
            Ok(parts) => parts,
            Err(why) => {
                return Ok(json!({
                    "header": null, "claims": null, "jti": null, "verified": false,
                    "verify_error": why, "status": "invalid", "token": null,
                }))
            }
        };
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .map(str::to_string);
        let bearer = format!("Bearer {jwt}");
        let result =
            crate::auth::authenticate(&[bearer.as_bytes()], &snap.registry, &snap.verifier);
        let (status, verified, verify_error) = match &result {
            Ok(_) => ("active", json!(true), Value::Null),
            Err(AuthError::Revoked) => (
                "revoked",
                Value::Null,
                json!("not checked: the jti is revoked"),
            ),
            Err(AuthError::UnknownJti) => (
                "unknown",
                json!(true),
                json!("signature valid, but no token in the list has this jti"),
            ),
            Err(e) => ("invalid", json!(false), json!(e.to_string())),
        };
        let token = match &jti {
            Some(j) => self.token(j).ok().map(|(t, _)| t),
            None => None,
        };
        Ok(json!({
            "header": header,
            "claims": claims,
            "jti": jti,
            "verified": verified,
            "verify_error": verify_error,
            "status": status,
            "token": token,
        }))
    }
}

/// A token's `updated` time, set by a change to its permissions.
fn touch(d: &mut Draft, target: &Target) {
    if let Target::Token(jti) = target {
        if let Ok(t) = d.token(jti) {
            t["updated"] = value(now_rfc3339());
        }
    }
}

fn management_view(granted: &[String], etag: &str) -> Value {
    let list: Vec<Value> = management::catalogue()
        .into_iter()
        .map(|name| {
            json!({
                "name": name,
                "enabled": granted.iter().any(|g| g == name),
                "description": management::describe(name),
            })
        })
        .collect();
    json!({ "permissions": list, "etag": etag })
}
