//! A sample Hygraph-shaped GraphQL Content API with an access audit.
//!
//! Who uses it: `contentgate demo` serves it next to the gateway (the embedded default);
//! the soundness oracle (`tests/soundness.rs`, `tests/attack.rs`, `benches/soundness.sh`) runs
//! it as a separate process (`contentgate sample-cms`) and reads, per request id, every
//! (action, model, stage, locale) it touched (`GET /__audit`); the GraphQL-over-HTTP audit
//! (`scripts/graphql-http-audit`) runs against the demo; the other integration tests only print
//! its SDL (`tests/common`). It is not part of the gateway library: the `contentgate` binary
//! links it only with the `demo` feature (on by default). Content lives in memory and is seeded
//! on construction; every [`SampleContentApi::new`] starts from the same seed.
//!
//! # Why a dynamic schema
//!
//! The gateway builds its schema map from the upstream SDL and leans on Hygraph's
//! naming conventions to classify operations: `posts` / `post` /
//! `postsConnection` / `postVersion` read a model, `publishManyPostsConnection`
//! publishes it, `PostWhereUniqueInput` identifies a document, and so on. Writing
//! those by hand per model invites drift from what Hygraph really generates, so
//! the schema is generated with `async_graphql::dynamic` from a short list of
//! model definitions (API ID, plural API ID, fields) the same way Hygraph derives
//! a project's Content API from its models. Adding a model here yields the full
//! Hygraph surface for it, with the names spelled by one piece of code.
//!
//! # Hygraph behaviour reproduced
//!
//! - Stages: a root field's `stage:` argument wins, then the `gcms-stage` request
//!   header, then `PUBLISHED` (or the configured root default, below). Relations
//!   inherit the stage of their parent.
//! - Locales: the `locales:` argument, then the `gcms-locales` header
//!   (comma-separated), then `en`. An entry is served in the first requested
//!   locale it has a localization for, and its `locale` field says which one.
//! - Writes go to `DRAFT`; `publish*` copies `DRAFT` to the target stages,
//!   `unpublish*` removes a stage, `delete*` removes every version.
//! - GraphQL errors come back with HTTP 200, as Hygraph does; only requests that
//!   are not GraphQL at all get a 4xx.
//!
//! - Root `stage`/`locales` arguments: an argument the document names wins, then
//!   the headers, then the endpoint's default. `locales: []` (and `null`) fall back
//!   to `gcms-locales`, then the default locale, as HYGRAPH.md describes; so does
//!   `localizations(locales: [])`. `documentInStages` without `inheritLocale: true`
//!   answers in the default locale.
//! - [`SampleContentApi::with_root_stage_default`] publishes an SDL whose root
//!   `stage` arguments default to another stage (`stage: Stage! = DRAFT`), as a
//!   schema introspected with a DRAFT-default token does, and serves that stage
//!   when a request names none. [`SampleContentApi::new`] keeps the root
//!   arguments without defaults and serves `PUBLISHED`.
//! - Headers are read as UTF-8 and trimmed of Unicode white space (so
//!   `DRAFT\u{a0}` is DRAFT, as a Go or JavaScript server's trim would read it);
//!   a repeated header is combined with `", "` (RFC 9110), so two `gcms-locales`
//!   fields form one list and two `gcms-stage` fields are an invalid stage.
//!
//! # Access audit (the soundness oracle)
//!
//! Every request carrying an `x-request-id` header (the gateway sets one on every
//! upstream request) is audited: each `(action, model, stage, locale)` the
//! execution really touched is recorded where the data is materialized, not
//! re-derived from the document. `GET /__audit?request_id=…` answers the list as
//! JSON (`[{"action":"read","model":"Post","stage":"PUBLISHED","locale":"en"}]`),
//! 404 for an unknown id; the last 8192 ids are kept. `POST /__reset` restores the
//! seed content. Recorded:
//!
//! - `read` whenever a document is materialized in a stage and locale (the
//!   localization it is served from): root fields, `node`, relations both ways,
//!   relation filters in `where` (`posts(where: {author: {…}})` reads Author),
//!   `documentInStages`, `localizations` (each locale returned), mutation
//!   results, bulk-mutation candidates, and `connect` lookups (DRAFT, default locale);
//! - `read_versions` (stage, no locale) for `postVersion` and `history`;
//! - `create`/`update` on DRAFT: the default locale when plain `data` fields are
//!   written (a create always writes it), plus every locale of
//!   `data.localizations.{create,update,upsert,delete}`;
//! - `publish` per target stage and every locale published (with `locales:`, the
//!   listed ones the DRAFT has plus the default locale, which is always published);
//! - `unpublish` per stage and every locale removed;
//! - `delete` per stage and locale the document had.
//!
//! # Deliberate simplifications
//!
//! - `DateTime` and `Json` are exposed as `String`, `Long` as `Int`, so tests and
//!   the gateway's schema map only deal with built-in scalars.
//! - `schedulePublish*` / `scheduleUnpublish*` act immediately.
//! - Reverse relations (`Author.posts`) are read-only: relations are written
//!   from the owning side (`Post.author`), which is enough to shape content.
//! - Cursors are document ids.

/// The GraphQL engine the sample is built on (its `Request` type is part of [`SampleContentApi::execute`]).
pub use async_graphql;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_graphql::dynamic::indexmap::IndexMap;
use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Interface, InterfaceField,
    Object, ResolverContext, Schema, SchemaError, Type, TypeRef,
};
use async_graphql::parser::types::OperationType;
use async_graphql::{Error, Name, Request, Response, ServerError, Value, Variables};
use async_trait::async_trait;
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

type GqlResult<T> = async_graphql::Result<T>;
type SharedStore = Arc<RwLock<Store>>;

/// Request header Hygraph reads the default stage from.
const STAGE_HEADER: &str = "gcms-stage";
/// Request header Hygraph reads the default locale fallback list from.
const LOCALES_HEADER: &str = "gcms-locales";
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Hygraph returns at most this many entries when neither `first` nor `last`
/// is given, so clients that forget to paginate notice early.
const DEFAULT_PAGE_SIZE: usize = 100;
const DEFAULT_LOCALE: Locale = Locale::En;
/// Request header the gateway sets on every upstream request; the audit is keyed by it.
const REQUEST_ID_HEADER: &str = "x-request-id";
/// How many request ids the audit remembers (oldest forgotten first).
const AUDIT_CAPACITY: usize = 8192;

// ---------------------------------------------------------------------------
// Access audit: what a request really touched
// ---------------------------------------------------------------------------

/// One access the sample performed while executing a request: an action on the data of one
/// model in one stage and locale. `stage`/`locale` are `None` only where the access is
/// genuinely free of them (`read_versions` has no locale).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    pub action: &'static str,
    pub model: &'static str,
    pub stage: Option<&'static str>,
    pub locale: Option<&'static str>,
}

impl Access {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "action": self.action,
            "model": self.model,
            "stage": self.stage,
            "locale": self.locale,
        })
    }
}

type AccessSet = Arc<std::sync::Mutex<std::collections::BTreeSet<Access>>>;

tokio::task_local! {
    /// The accesses of the request being executed. Resolvers run synchronously inside
    /// `Schema::execute`, which is polled within this scope, so every materialization point can
    /// record without threading a handle through every helper.
    static AUDIT: AccessSet;
}

/// Records one access of the current request (a no-op outside an audited execution).
fn record(
    action: &'static str,
    model: &'static ModelDef,
    stage: Option<Stage>,
    locale: Option<Locale>,
) {
    let access = Access {
        action,
        model: model.api_id,
        stage: stage.map(Stage::name),
        locale: locale.map(Locale::name),
    };
    let _ = AUDIT.try_with(|set| {
        set.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(access);
    });
}

/// The last [`AUDIT_CAPACITY`] request ids and what each touched.
#[derive(Default)]
struct AuditLog {
    order: std::collections::VecDeque<String>,
    entries: std::collections::HashMap<String, std::collections::BTreeSet<Access>>,
    /// What arrived for each request id: the context headers, content types and body as read.
    received: std::collections::HashMap<String, serde_json::Value>,
}

impl AuditLog {
    fn add(&mut self, request_id: &str, accesses: std::collections::BTreeSet<Access>) {
        if let Some(existing) = self.entries.get_mut(request_id) {
            existing.extend(accesses);
            return;
        }
        while self.order.len() >= AUDIT_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
                self.received.remove(&old);
            }
        }
        self.order.push_back(request_id.to_owned());
        self.entries.insert(request_id.to_owned(), accesses);
    }
}

/// Ids of the seeded documents, for tests and demo scripts that need to address
/// a specific entry without querying for it first.
pub mod seed {
    /// Author "Ada Lovelace" (DRAFT and PUBLISHED).
    pub const AUTHOR_ADA: &str = "clseedauthorada0000000001";
    /// Author "Grace Hopper" (DRAFT and PUBLISHED).
    pub const AUTHOR_GRACE: &str = "clseedauthorgrace00000002";
    /// Post `hello-edge` by Ada; its DRAFT title carries unpublished edits.
    pub const POST_HELLO: &str = "clseedposthello0000000001";
    /// Post `caching-content` by Grace; DRAFT and PUBLISHED are identical.
    pub const POST_CACHING: &str = "clseedpostcaching00000002";
    /// Post `upcoming-release` by Ada; exists only in DRAFT.
    pub const POST_UPCOMING: &str = "clseedpostupcoming0000003";
}

// ---------------------------------------------------------------------------
// Stages and locales
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Stage {
    Draft,
    Published,
}

impl Stage {
    const NAMES: [&'static str; 2] = ["DRAFT", "PUBLISHED"];

    fn name(self) -> &'static str {
        match self {
            Stage::Draft => "DRAFT",
            Stage::Published => "PUBLISHED",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "DRAFT" => Some(Stage::Draft),
            "PUBLISHED" => Some(Stage::Published),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Locale {
    En,
    De,
}

impl Locale {
    const NAMES: [&'static str; 2] = ["en", "de"];

    fn name(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::De => "de",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "en" => Some(Locale::En),
            "de" => Some(Locale::De),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Model definitions: the single source the schema is generated from
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Kind {
    Text {
        localized: bool,
        unique: bool,
    },
    /// Stores the target document's id on this model.
    Relation {
        target: &'static str,
    },
    /// Derived from `target.via` pointing at this document.
    ReverseRelation {
        target: &'static str,
        via: &'static str,
    },
}

struct FieldDef {
    name: &'static str,
    kind: Kind,
}

struct ModelDef {
    api_id: &'static str,
    plural: &'static str,
    fields: &'static [FieldDef],
}

static MODELS: &[ModelDef] = &[
    ModelDef {
        api_id: "Post",
        plural: "posts",
        fields: &[
            FieldDef {
                name: "title",
                kind: Kind::Text {
                    localized: true,
                    unique: false,
                },
            },
            FieldDef {
                name: "slug",
                kind: Kind::Text {
                    localized: false,
                    unique: true,
                },
            },
            FieldDef {
                name: "body",
                kind: Kind::Text {
                    localized: true,
                    unique: false,
                },
            },
            FieldDef {
                name: "author",
                kind: Kind::Relation { target: "Author" },
            },
        ],
    },
    ModelDef {
        api_id: "Author",
        plural: "authors",
        fields: &[
            FieldDef {
                name: "name",
                kind: Kind::Text {
                    localized: false,
                    unique: false,
                },
            },
            FieldDef {
                name: "bio",
                kind: Kind::Text {
                    localized: true,
                    unique: false,
                },
            },
            FieldDef {
                name: "posts",
                kind: Kind::ReverseRelation {
                    target: "Post",
                    via: "author",
                },
            },
        ],
    },
];

fn model_by_api_id(api_id: &str) -> Option<&'static ModelDef> {
    MODELS.iter().find(|model| model.api_id == api_id)
}

impl ModelDef {
    /// Hygraph's singular root field is the API ID with a lower-case first letter.
    fn singular(&self) -> String {
        change_first(self.api_id, char::to_ascii_lowercase)
    }

    /// Used inside mutation names such as `publishManyPostsConnection`.
    fn plural_capitalized(&self) -> String {
        change_first(self.plural, char::to_ascii_uppercase)
    }

    fn ty(&self, suffix: &str) -> String {
        format!("{}{}", self.api_id, suffix)
    }

    fn field(&'static self, name: &str) -> Option<&'static FieldDef> {
        self.fields.iter().find(|field| field.name == name)
    }

    fn has_localized_fields(&self) -> bool {
        self.fields.iter().any(|field| {
            matches!(
                field.kind,
                Kind::Text {
                    localized: true,
                    ..
                }
            )
        })
    }

    fn text_fields(&'static self) -> impl Iterator<Item = (&'static str, bool, bool)> {
        self.fields.iter().filter_map(|field| match field.kind {
            Kind::Text { localized, unique } => Some((field.name, localized, unique)),
            _ => None,
        })
    }
}

fn change_first(text: &str, change: fn(&char) -> char) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => std::iter::once(change(&first)).chain(chars).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Version {
    created_at: String,
    updated_at: String,
    published_at: Option<String>,
    /// Non-localized text fields and relation target ids.
    fields: BTreeMap<String, String>,
    /// A key's presence means the localization exists, even with no values.
    localizations: BTreeMap<Locale, BTreeMap<String, String>>,
}

struct HistoryRecord {
    revision: i64,
    stage: Stage,
    created_at: String,
    data: serde_json::Value,
}

struct Document {
    model: &'static ModelDef,
    id: String,
    versions: BTreeMap<Stage, Version>,
    history: Vec<HistoryRecord>,
}

impl Document {
    /// Every write to a stage becomes a revision, so `postVersion` can replay
    /// what a stage looked like at any point, like Hygraph's version history.
    fn record(&mut self, stage: Stage, now: &str) {
        let Some(version) = self.versions.get(&stage) else {
            return;
        };
        let data = version_json(self.model, &self.id, stage, version);
        let revision = i64::try_from(self.history.len())
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        self.history.push(HistoryRecord {
            revision,
            stage,
            created_at: now.to_owned(),
            data,
        });
    }
}

/// Shaped like the `data` Hygraph returns for a document version: base fields
/// and default-locale values at the top, other locales under `localizations`.
fn version_json(
    model: &'static ModelDef,
    id: &str,
    stage: Stage,
    version: &Version,
) -> serde_json::Value {
    use serde_json::Value as Json;

    let text = |value: Option<&String>| value.map_or(Json::Null, |v| Json::String(v.clone()));
    let mut object = serde_json::Map::new();
    object.insert("id".into(), Json::String(id.to_owned()));
    object.insert("stage".into(), Json::String(stage.name().to_owned()));
    object.insert("createdAt".into(), Json::String(version.created_at.clone()));
    object.insert("updatedAt".into(), Json::String(version.updated_at.clone()));
    object.insert("publishedAt".into(), text(version.published_at.as_ref()));
    let default_values = version.localizations.get(&DEFAULT_LOCALE);
    for field in model.fields {
        let value = match field.kind {
            Kind::Text {
                localized: true, ..
            } => text(default_values.and_then(|values| values.get(field.name))),
            Kind::Text { .. } => text(version.fields.get(field.name)),
            Kind::Relation { .. } => version
                .fields
                .get(field.name)
                .map_or(Json::Null, |id| serde_json::json!({ "id": id })),
            Kind::ReverseRelation { .. } => continue,
        };
        object.insert(field.name.into(), value);
    }
    let localizations = version
        .localizations
        .iter()
        .filter(|(locale, _)| **locale != DEFAULT_LOCALE)
        .map(|(locale, values)| {
            let mut localization = serde_json::Map::new();
            localization.insert("locale".into(), Json::String(locale.name().to_owned()));
            for (name, value) in values {
                localization.insert(name.clone(), Json::String(value.clone()));
            }
            Json::Object(localization)
        })
        .collect();
    object.insert("localizations".into(), Json::Array(localizations));
    Json::Object(object)
}

#[derive(Default)]
struct Store {
    /// Insertion order doubles as the default (creation) order of results.
    docs: Vec<Document>,
}

impl Store {
    fn docs_of(&self, model: &'static ModelDef) -> impl Iterator<Item = &Document> {
        self.docs
            .iter()
            .filter(move |doc| doc.model.api_id == model.api_id)
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.docs.iter().position(|doc| doc.id == id)
    }

    /// Resolves a `…WhereUniqueInput`. Non-id keys are matched against the
    /// version in `stage`, because a slug can differ between DRAFT and PUBLISHED.
    fn find_unique(
        &self,
        model: &'static ModelDef,
        filter: &Value,
        stage: Stage,
    ) -> GqlResult<Option<usize>> {
        let keys: Vec<(&Name, String)> = as_object(filter, "where")?
            .iter()
            .filter_map(|(key, value)| as_text(value).map(|text| (key, text)))
            .collect();
        if keys.is_empty() {
            return Err(Error::new(format!(
                "{} requires at least one unique field",
                model.ty("WhereUniqueInput")
            )));
        }
        Ok(self.docs.iter().position(|doc| {
            doc.model.api_id == model.api_id
                && keys.iter().all(|(key, expected)| {
                    if key.as_str() == "id" {
                        doc.id == *expected
                    } else {
                        doc.versions
                            .get(&stage)
                            .and_then(|version| version.fields.get(key.as_str()))
                            == Some(expected)
                    }
                })
        }))
    }
}

fn read_store(store: &SharedStore) -> RwLockReadGuard<'_, Store> {
    // Writers validate before mutating, so a poisoned lock still holds
    // consistent content; refusing to serve would only hide the real panic.
    store.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_store(store: &SharedStore) -> RwLockWriteGuard<'_, Store> {
    store.write().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Resolved entries: what object fields see as their parent value
// ---------------------------------------------------------------------------

/// A document as seen from one stage and locale list. It is a snapshot so that
/// results stay valid after the lock is released (and after a delete).
#[derive(Clone)]
struct Entry {
    model: &'static ModelDef,
    id: String,
    stage: Stage,
    /// The localization the localized fields are read from.
    locale: Locale,
    /// The requested fallback list, handed down to relations.
    locales: Arc<[Locale]>,
    version: Version,
}

impl Entry {
    fn new(doc: &Document, stage: Stage, locales: &Arc<[Locale]>) -> Option<Self> {
        let version = doc.versions.get(&stage)?;
        let locale = locales
            .iter()
            .copied()
            .find(|locale| version.localizations.contains_key(locale))
            .or_else(|| locales.first().copied())
            .unwrap_or(DEFAULT_LOCALE);
        // The one place a document's data is materialized for reading: root fields, `node`,
        // relations both ways, relation filters, `documentInStages`, mutation results and the
        // candidates of bulk mutations all come through here.
        record("read", doc.model, Some(stage), Some(locale));
        Some(Self {
            model: doc.model,
            id: doc.id.clone(),
            stage,
            locale,
            locales: Arc::clone(locales),
            version: version.clone(),
        })
    }

    /// Mutations report a document even when it is missing from the stage the
    /// caller prefers (e.g. `deletePost` on a PUBLISHED-only leftover).
    fn preferring(doc: &Document, stage: Stage, locales: &Arc<[Locale]>) -> Option<Self> {
        Self::new(doc, stage, locales).or_else(|| {
            let other = doc.versions.keys().next().copied()?;
            Self::new(doc, other, locales)
        })
    }

    fn value_of(&self, name: &str) -> Option<String> {
        match name {
            "id" => Some(self.id.clone()),
            "createdAt" => Some(self.version.created_at.clone()),
            "updatedAt" => Some(self.version.updated_at.clone()),
            "publishedAt" => self.version.published_at.clone(),
            _ => match self.model.field(name)?.kind {
                Kind::Text {
                    localized: true, ..
                } => self
                    .version
                    .localizations
                    .get(&self.locale)?
                    .get(name)
                    .cloned(),
                Kind::Text { .. } | Kind::Relation { .. } => self.version.fields.get(name).cloned(),
                Kind::ReverseRelation { .. } => None,
            },
        }
    }
}

fn related_one(store: &Store, entry: &Entry, field: &str) -> Option<Entry> {
    let target_id = entry.version.fields.get(field)?;
    let doc = store.docs.iter().find(|doc| doc.id == *target_id)?;
    Entry::new(doc, entry.stage, &entry.locales)
}

fn related_many(store: &Store, entry: &Entry, target: &str, via: &str) -> Vec<Entry> {
    store
        .docs
        .iter()
        .filter(|doc| doc.model.api_id == target)
        .filter(|doc| {
            doc.versions
                .get(&entry.stage)
                .and_then(|version| version.fields.get(via))
                == Some(&entry.id)
        })
        .filter_map(|doc| Entry::new(doc, entry.stage, &entry.locales))
        .collect()
}

/// One page of results; also the parent value of `…Connection` objects.
#[derive(Clone)]
struct Page {
    items: Vec<Entry>,
    has_previous: bool,
    has_next: bool,
    /// Matches before pagination, reported by `aggregate { count }`.
    total: usize,
}

struct Count(usize);

struct PageInfoValue {
    has_next: bool,
    has_previous: bool,
    start: Option<String>,
    end: Option<String>,
    size: usize,
}

struct VersionValue {
    id: String,
    stage: Stage,
    revision: i64,
    created_at: String,
    data: String,
}

// ---------------------------------------------------------------------------
// Request defaults (headers)
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct RequestDefaults {
    stage: Stage,
    locales: Arc<[Locale]>,
}

impl RequestDefaults {
    /// What Hygraph's Content API assumes without headers: the endpoint's (here: the service
    /// token's) default stage and the project's default locale.
    fn hygraph(stage: Stage) -> Self {
        Self {
            stage,
            locales: Arc::from([DEFAULT_LOCALE]),
        }
    }

    fn from_headers(
        default_stage: Stage,
        stage: Option<&str>,
        locales: Option<&str>,
    ) -> Result<Self, String> {
        let mut defaults = Self::hygraph(default_stage);
        if let Some(raw) = stage.map(str::trim).filter(|raw| !raw.is_empty()) {
            defaults.stage = Stage::parse(&raw.to_ascii_uppercase()).ok_or_else(|| {
                format!("invalid {STAGE_HEADER} header {raw:?}: expected DRAFT or PUBLISHED")
            })?;
        }
        if let Some(raw) = locales {
            let mut parsed = Vec::new();
            for name in raw
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
            {
                let locale = Locale::parse(name).ok_or_else(|| {
                    format!(
                        "invalid {LOCALES_HEADER} header: unknown locale {name:?} (known: {})",
                        Locale::NAMES.join(", ")
                    )
                })?;
                if !parsed.contains(&locale) {
                    parsed.push(locale);
                }
            }
            if !parsed.is_empty() {
                defaults.locales = parsed.into();
            }
        }
        Ok(defaults)
    }
}

// ---------------------------------------------------------------------------
// Resolver plumbing
// ---------------------------------------------------------------------------

/// All content is in memory, so resolvers run synchronously; this adapts a
/// plain result to what the dynamic schema expects without a boxed future on
/// the success path.
fn done<'a>(result: GqlResult<Option<FieldValue<'a>>>) -> FieldFuture<'a> {
    match result {
        Ok(value) => FieldFuture::Value(value),
        Err(err) => FieldFuture::new(async move { Err::<Option<FieldValue<'a>>, _>(err) }),
    }
}

/// Explicit `null` and an omitted argument mean the same thing everywhere here.
fn arg<'c>(ctx: &'c ResolverContext<'_>, name: &str) -> Option<&'c Value> {
    ctx.args
        .get(name)
        .map(|accessor| accessor.as_value())
        .filter(|value| !matches!(value, Value::Null))
}

fn required_arg<'c>(ctx: &'c ResolverContext<'_>, name: &str) -> GqlResult<&'c Value> {
    arg(ctx, name).ok_or_else(|| Error::new(format!("argument \"{name}\" is required")))
}

fn defaults(ctx: &ResolverContext<'_>) -> RequestDefaults {
    ctx.ctx
        .data_opt::<RequestDefaults>()
        .cloned()
        .unwrap_or_else(|| RequestDefaults::hygraph(Stage::Published))
}

/// A root argument the document really names. Arguments the document leaves out may still
/// carry the schema's advertised default (see [`SampleContentApi::with_root_stage_default`]);
/// like Hygraph, the request's headers win over that default.
fn explicit_arg<'c>(ctx: &'c ResolverContext<'_>, name: &str) -> Option<&'c Value> {
    ctx.ctx.item.node.get_argument(name)?;
    arg(ctx, name)
}

fn root_stage(ctx: &ResolverContext<'_>) -> GqlResult<Stage> {
    match explicit_arg(ctx, "stage") {
        Some(value) => parse_stage(value),
        None => Ok(defaults(ctx).stage),
    }
}

fn root_locales(ctx: &ResolverContext<'_>) -> GqlResult<Arc<[Locale]>> {
    let requested = match explicit_arg(ctx, "locales") {
        Some(value) => parse_locales(value)?,
        None => Vec::new(),
    };
    if requested.is_empty() {
        Ok(defaults(ctx).locales)
    } else {
        Ok(requested.into())
    }
}

fn shared_store<'a>(ctx: &ResolverContext<'a>) -> GqlResult<&'a SharedStore> {
    ctx.ctx.data::<SharedStore>()
}

fn parent<'c, T: std::any::Any>(ctx: &'c ResolverContext<'_>) -> GqlResult<&'c T> {
    ctx.parent_value.try_downcast_ref::<T>()
}

fn entries_value(entries: Vec<Entry>) -> FieldValue<'static> {
    FieldValue::list(entries.into_iter().map(FieldValue::owned_any))
}

fn enum_value(name: &str) -> Value {
    Value::Enum(Name::new(name))
}

fn string_value(text: &str) -> FieldValue<'static> {
    FieldValue::value(Value::String(text.to_owned()))
}

fn as_object<'v>(value: &'v Value, what: &str) -> GqlResult<&'v IndexMap<Name, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Error::new(format!("\"{what}\" must be an input object"))),
    }
}

/// GraphQL input coercion lets a single item stand for a one-element list.
fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Null => Vec::new(),
        Value::List(items) => items.iter().collect(),
        single => vec![single],
    }
}

/// IDs may arrive as numbers when sent through JSON variables.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Enum(name) => Some(name.to_string()),
        _ => None,
    }
}

fn enum_name(value: &Value) -> Option<&str> {
    match value {
        Value::Enum(name) => Some(name.as_str()),
        Value::String(text) => Some(text.as_str()),
        _ => None,
    }
}

fn parse_stage(value: &Value) -> GqlResult<Stage> {
    enum_name(value)
        .and_then(Stage::parse)
        .ok_or_else(|| Error::new("invalid Stage value"))
}

fn parse_stages(value: &Value) -> GqlResult<Vec<Stage>> {
    let mut stages = Vec::new();
    for item in as_list(value) {
        let stage = parse_stage(item)?;
        if !stages.contains(&stage) {
            stages.push(stage);
        }
    }
    Ok(stages)
}

fn parse_locales(value: &Value) -> GqlResult<Vec<Locale>> {
    let mut locales = Vec::new();
    for item in as_list(value) {
        let locale = enum_name(item)
            .and_then(Locale::parse)
            .ok_or_else(|| Error::new("invalid Locale value"))?;
        if !locales.contains(&locale) {
            locales.push(locale);
        }
    }
    Ok(locales)
}

/// `locales:` on publish/unpublish: absent means "the whole document".
fn optional_locales(ctx: &ResolverContext<'_>) -> GqlResult<Option<Vec<Locale>>> {
    match arg(ctx, "locales") {
        Some(value) => Ok(Some(parse_locales(value)?).filter(|locales| !locales.is_empty())),
        None => Ok(None),
    }
}

fn count_arg(ctx: &ResolverContext<'_>, name: &str) -> GqlResult<Option<usize>> {
    let Some(value) = arg(ctx, name) else {
        return Ok(None);
    };
    let number = match value {
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
    .ok_or_else(|| Error::new(format!("\"{name}\" must be an integer")))?;
    usize::try_from(number)
        .map(Some)
        .map_err(|_| Error::new(format!("\"{name}\" must not be negative")))
}

// ---------------------------------------------------------------------------
// Filtering, ordering, pagination
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Not,
    In,
    NotIn,
    Contains,
    NotContains,
    StartsWith,
    NotStartsWith,
    EndsWith,
    NotEndsWith,
    Lt,
    Lte,
    Gt,
    Gte,
    RelSome,
    RelEvery,
    RelNone,
}

/// One table drives both the generated `…WhereInput` fields and their
/// evaluation, so the two cannot disagree.
const STRING_OPS: &[(&str, Op)] = &[
    ("", Op::Eq),
    ("_not", Op::Not),
    ("_in", Op::In),
    ("_not_in", Op::NotIn),
    ("_contains", Op::Contains),
    ("_not_contains", Op::NotContains),
    ("_starts_with", Op::StartsWith),
    ("_not_starts_with", Op::NotStartsWith),
    ("_ends_with", Op::EndsWith),
    ("_not_ends_with", Op::NotEndsWith),
];
const DATE_OPS: &[(&str, Op)] = &[
    ("", Op::Eq),
    ("_not", Op::Not),
    ("_in", Op::In),
    ("_not_in", Op::NotIn),
    ("_lt", Op::Lt),
    ("_lte", Op::Lte),
    ("_gt", Op::Gt),
    ("_gte", Op::Gte),
];
const RELATION_OPS: &[(&str, Op)] = &[("", Op::Eq)];
const REVERSE_OPS: &[(&str, Op)] = &[
    ("_some", Op::RelSome),
    ("_every", Op::RelEvery),
    ("_none", Op::RelNone),
];

#[derive(Clone, Copy)]
enum FilterKind {
    Id,
    Text,
    Date,
    One {
        target: &'static str,
    },
    Many {
        target: &'static str,
        via: &'static str,
    },
}

impl FilterKind {
    fn ops(self) -> &'static [(&'static str, Op)] {
        match self {
            FilterKind::Id | FilterKind::Text => STRING_OPS,
            FilterKind::Date => DATE_OPS,
            FilterKind::One { .. } => RELATION_OPS,
            FilterKind::Many { .. } => REVERSE_OPS,
        }
    }
}

/// `…ManyWhereInput` leaves localized fields out: bulk mutations act on whole
/// documents, not on one localization (as in Hygraph).
fn filter_fields(
    model: &'static ModelDef,
    include_localized: bool,
) -> Vec<(&'static str, FilterKind)> {
    let mut fields = vec![
        ("id", FilterKind::Id),
        ("createdAt", FilterKind::Date),
        ("updatedAt", FilterKind::Date),
        ("publishedAt", FilterKind::Date),
    ];
    for field in model.fields {
        let kind = match field.kind {
            Kind::Text { localized, .. } if include_localized || !localized => FilterKind::Text,
            Kind::Text { .. } => continue,
            Kind::Relation { target } => FilterKind::One { target },
            Kind::ReverseRelation { target, via } => FilterKind::Many { target, via },
        };
        fields.push((field.name, kind));
    }
    fields
}

fn filter_key(model: &'static ModelDef, key: &str) -> Option<(&'static str, FilterKind, Op)> {
    filter_fields(model, true)
        .into_iter()
        .find_map(|(field, kind)| {
            let suffix = key.strip_prefix(field)?;
            kind.ops()
                .iter()
                .find(|(candidate, _)| *candidate == suffix)
                .map(|(_, op)| (field, kind, *op))
        })
}

fn matches(store: &Store, entry: &Entry, filter: &Value) -> GqlResult<bool> {
    let map = match filter {
        Value::Null => return Ok(true),
        other => as_object(other, "where")?,
    };
    for (key, value) in map {
        let satisfied = match key.as_str() {
            "AND" => all_match(store, entry, value)?,
            "OR" => {
                let alternatives = as_list(value);
                alternatives.is_empty() || any_match(store, entry, &alternatives)?
            }
            "NOT" => !any_match(store, entry, &as_list(value))?,
            key => {
                let (field, kind, op) = filter_key(entry.model, key).ok_or_else(|| {
                    Error::new(format!(
                        "unknown filter \"{key}\" on {}",
                        entry.model.api_id
                    ))
                })?;
                match kind {
                    FilterKind::Id | FilterKind::Text | FilterKind::Date => {
                        compare(entry.value_of(field).as_deref(), op, value)
                    }
                    FilterKind::One { .. } => match (related_one(store, entry, field), value) {
                        (related, Value::Null) => related.is_none(),
                        (Some(related), nested) => matches(store, &related, nested)?,
                        (None, _) => false,
                    },
                    FilterKind::Many { target, via } => {
                        let related = related_many(store, entry, target, via);
                        let mut hits = 0;
                        for item in &related {
                            if matches(store, item, value)? {
                                hits += 1;
                            }
                        }
                        match op {
                            Op::RelSome => hits > 0,
                            Op::RelEvery => hits == related.len(),
                            _ => hits == 0,
                        }
                    }
                }
            }
        };
        if !satisfied {
            return Ok(false);
        }
    }
    Ok(true)
}

fn all_match(store: &Store, entry: &Entry, filters: &Value) -> GqlResult<bool> {
    for filter in as_list(filters) {
        if !matches(store, entry, filter)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn any_match(store: &Store, entry: &Entry, filters: &[&Value]) -> GqlResult<bool> {
    for filter in filters {
        if matches(store, entry, filter)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Text matching (`_contains`, `_starts_with`, …) is case-insensitive like
/// Hygraph's; equality and ranges compare exactly. Timestamps are ISO 8601 in
/// UTC, so string order is time order.
fn compare(current: Option<&str>, op: Op, expected: &Value) -> bool {
    if matches!(expected, Value::Null) {
        return match op {
            Op::Eq => current.is_none(),
            Op::Not => current.is_some(),
            // A null operand means "no constraint" for every other operator.
            _ => true,
        };
    }
    let wanted = as_text(expected);
    let listed = || {
        as_list(expected)
            .into_iter()
            .filter_map(as_text)
            .any(|item| Some(item.as_str()) == current)
    };
    let fold = |text: &str| text.to_lowercase();
    let text_test = |test: fn(&str, &str) -> bool| match (current, wanted.as_deref()) {
        (Some(current), Some(wanted)) => test(&fold(current), &fold(wanted)),
        _ => false,
    };
    let range_test = |test: fn(std::cmp::Ordering) -> bool| match (current, wanted.as_deref()) {
        (Some(current), Some(wanted)) => test(current.cmp(wanted)),
        _ => false,
    };
    match op {
        Op::Eq => current == wanted.as_deref(),
        Op::Not => current != wanted.as_deref(),
        Op::In => listed(),
        Op::NotIn => !listed(),
        Op::Contains => text_test(|c, w| c.contains(w)),
        Op::NotContains => !text_test(|c, w| c.contains(w)),
        Op::StartsWith => text_test(|c, w| c.starts_with(w)),
        Op::NotStartsWith => !text_test(|c, w| c.starts_with(w)),
        Op::EndsWith => text_test(|c, w| c.ends_with(w)),
        Op::NotEndsWith => !text_test(|c, w| c.ends_with(w)),
        Op::Lt => range_test(|o| o.is_lt()),
        Op::Lte => range_test(|o| o.is_le()),
        Op::Gt => range_test(|o| o.is_gt()),
        Op::Gte => range_test(|o| o.is_ge()),
        Op::RelSome | Op::RelEvery | Op::RelNone => false,
    }
}

fn order_fields(model: &'static ModelDef) -> Vec<&'static str> {
    let mut fields = vec!["id", "createdAt", "updatedAt", "publishedAt"];
    fields.extend(model.text_fields().map(|(name, _, _)| name));
    fields
}

fn order_entries(entries: &mut [Entry], order: Option<&Value>) -> GqlResult<()> {
    let Some(order) = order else {
        return Ok(());
    };
    let (field, direction) = enum_name(order)
        .and_then(|name| name.rsplit_once('_'))
        .ok_or_else(|| Error::new("invalid orderBy value"))?;
    let descending = match direction {
        "ASC" => false,
        "DESC" => true,
        _ => return Err(Error::new("invalid orderBy direction")),
    };
    entries.sort_by(|a, b| {
        let ordering = a.value_of(field).cmp(&b.value_of(field));
        if descending {
            ordering.reverse()
        } else {
            ordering
        }
    });
    Ok(())
}

struct PageArgs {
    skip: usize,
    first: Option<usize>,
    last: Option<usize>,
    after: Option<String>,
    before: Option<String>,
}

impl PageArgs {
    fn from_ctx(ctx: &ResolverContext<'_>) -> GqlResult<Self> {
        Ok(Self {
            skip: count_arg(ctx, "skip")?.unwrap_or(0),
            first: count_arg(ctx, "first")?,
            last: count_arg(ctx, "last")?,
            after: arg(ctx, "after").and_then(as_text),
            before: arg(ctx, "before").and_then(as_text),
        })
    }
}

fn paginate(mut items: Vec<Entry>, args: &PageArgs) -> GqlResult<Page> {
    let total = items.len();
    let mut has_previous = false;
    let mut has_next = false;
    let position = |items: &[Entry], cursor: &str| {
        items
            .iter()
            .position(|entry| entry.id == cursor)
            .ok_or_else(|| Error::new(format!("cursor \"{cursor}\" does not match any entry")))
    };
    if let Some(after) = &args.after {
        let index = position(&items, after)?;
        items.drain(..=index);
        has_previous = true;
    }
    if let Some(before) = &args.before {
        let index = position(&items, before)?;
        items.truncate(index);
        has_next = true;
    }
    let skipped = args.skip.min(items.len());
    items.drain(..skipped);
    has_previous |= skipped > 0;
    let first = match (args.first, args.last) {
        (None, None) => Some(DEFAULT_PAGE_SIZE),
        (first, _) => first,
    };
    if let Some(first) = first.filter(|first| items.len() > *first) {
        items.truncate(first);
        has_next = true;
    }
    if let Some(last) = args.last.filter(|last| items.len() > *last) {
        items.drain(..items.len() - last);
        has_previous = true;
    }
    Ok(Page {
        items,
        has_previous,
        has_next,
        total,
    })
}

/// Applies the `where`, `orderBy` and pagination arguments of `ctx`.
fn select(store: &Store, candidates: Vec<Entry>, ctx: &ResolverContext<'_>) -> GqlResult<Page> {
    let mut selected = Vec::with_capacity(candidates.len());
    let filter = arg(ctx, "where");
    for entry in candidates {
        if filter.map_or(Ok(true), |filter| matches(store, &entry, filter))? {
            selected.push(entry);
        }
    }
    order_entries(&mut selected, arg(ctx, "orderBy"))?;
    paginate(selected, &PageArgs::from_ctx(ctx)?)
}

// ---------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------

fn set_text(values: &mut BTreeMap<String, String>, name: &str, value: &Value) -> GqlResult<()> {
    match value {
        Value::Null => {
            values.remove(name);
        }
        Value::String(text) => {
            values.insert(name.to_owned(), text.clone());
        }
        _ => return Err(Error::new(format!("\"{name}\" must be a string"))),
    }
    Ok(())
}

/// Applies a `…CreateInput` / `…UpdateInput` to a detached copy of the DRAFT
/// version; callers store it only if everything validated, so a failing
/// mutation leaves no partial write behind.
/// What one write touched, recorded in the audit only once the write is stored.
#[derive(Default)]
struct Touched {
    /// Localizations written through `data.localizations`.
    locales: std::collections::BTreeSet<Locale>,
    /// Whether a plain `data` field (the default locale and the base fields) was written.
    plain: bool,
    /// Documents looked up by nested relation inputs (`connect`).
    reads: Vec<(&'static ModelDef, Stage)>,
}

impl Touched {
    /// Records `action` on every locale written. A write that names no field still touches
    /// the document itself (its `updatedAt`), which lives with the default locale.
    fn commit(self, action: &'static str, model: &'static ModelDef) {
        if self.plain || self.locales.is_empty() {
            record(action, model, Some(Stage::Draft), Some(DEFAULT_LOCALE));
        }
        for locale in self.locales {
            record(action, model, Some(Stage::Draft), Some(locale));
        }
        for (target, stage) in self.reads {
            record("read", target, Some(stage), Some(DEFAULT_LOCALE));
        }
    }
}

fn apply_data(
    store: &Store,
    model: &'static ModelDef,
    id: &str,
    version: &mut Version,
    data: &Value,
    touched: &mut Touched,
) -> GqlResult<()> {
    for (key, value) in as_object(data, "data")? {
        if key.as_str() == "localizations" {
            apply_localizations(model, version, value, touched)?;
            continue;
        }
        touched.plain = true;
        let field = model
            .field(key.as_str())
            .ok_or_else(|| Error::new(format!("unknown field \"{key}\" on {}", model.api_id)))?;
        match field.kind {
            Kind::Text {
                localized: true, ..
            } => set_text(
                version.localizations.entry(DEFAULT_LOCALE).or_default(),
                field.name,
                value,
            )?,
            Kind::Text { unique, .. } => {
                if unique {
                    ensure_unique(store, model, id, field.name, value)?;
                }
                set_text(&mut version.fields, field.name, value)?;
            }
            Kind::Relation { target } => apply_relation(
                store,
                target,
                &mut version.fields,
                field.name,
                value,
                touched,
            )?,
            Kind::ReverseRelation { .. } => {
                return Err(Error::new(format!(
                    "\"{}\" is read-only here; set the relation from the other side",
                    field.name
                )))
            }
        }
    }
    Ok(())
}

fn ensure_unique(
    store: &Store,
    model: &'static ModelDef,
    id: &str,
    field: &str,
    value: &Value,
) -> GqlResult<()> {
    let Some(wanted) = as_text(value) else {
        return Ok(());
    };
    let taken = store.docs_of(model).any(|doc| {
        doc.id != id
            && doc
                .versions
                .values()
                .any(|version| version.fields.get(field) == Some(&wanted))
    });
    if taken {
        return Err(Error::new(format!(
            "value is not unique for the field \"{field}\""
        )));
    }
    Ok(())
}

fn apply_relation(
    store: &Store,
    target: &'static str,
    fields: &mut BTreeMap<String, String>,
    name: &str,
    value: &Value,
    touched: &mut Touched,
) -> GqlResult<()> {
    let target_model =
        model_by_api_id(target).ok_or_else(|| Error::new(format!("unknown model {target}")))?;
    if matches!(value, Value::Null) {
        fields.remove(name);
        return Ok(());
    }
    let input = as_object(value, name)?;
    if let Some(filter) = input.get("connect").filter(|v| !matches!(v, Value::Null)) {
        let index = store
            .find_unique(target_model, filter, Stage::Draft)?
            .ok_or_else(|| Error::new(format!("could not find {target} to connect")))?;
        let target_id = store
            .docs
            .get(index)
            .map(|doc| doc.id.clone())
            .ok_or_else(|| Error::new(format!("could not find {target} to connect")))?;
        touched.reads.push((target_model, Stage::Draft));
        fields.insert(name.to_owned(), target_id);
    } else if matches!(input.get("disconnect"), Some(Value::Boolean(true))) {
        fields.remove(name);
    }
    Ok(())
}

fn localized_data(
    model: &'static ModelDef,
    values: &mut BTreeMap<String, String>,
    data: &Value,
) -> GqlResult<()> {
    for (key, value) in as_object(data, "data")? {
        match model.field(key.as_str()).map(|field| field.kind) {
            Some(Kind::Text {
                localized: true, ..
            }) => set_text(values, key.as_str(), value)?,
            _ => {
                return Err(Error::new(format!(
                    "\"{key}\" is not a localized field of {}",
                    model.api_id
                )))
            }
        }
    }
    Ok(())
}

fn locale_of(input: &IndexMap<Name, Value>) -> GqlResult<Locale> {
    input
        .get("locale")
        .and_then(enum_name)
        .and_then(Locale::parse)
        .ok_or_else(|| Error::new("localization requires a valid \"locale\""))
}

/// Hygraph's nested `localizations: { create, update, upsert, delete }`.
fn apply_localizations(
    model: &'static ModelDef,
    version: &mut Version,
    value: &Value,
    touched: &mut Touched,
) -> GqlResult<()> {
    let input = match value {
        Value::Null => return Ok(()),
        other => as_object(other, "localizations")?,
    };
    for (operation, items) in input {
        for item in as_list(items) {
            match operation.as_str() {
                "delete" => {
                    let locale = enum_name(item)
                        .and_then(Locale::parse)
                        .ok_or_else(|| Error::new("invalid Locale value"))?;
                    if locale == DEFAULT_LOCALE {
                        return Err(Error::new("the default locale cannot be deleted"));
                    }
                    if version.localizations.remove(&locale).is_some() {
                        touched.locales.insert(locale);
                    }
                }
                "create" | "update" | "upsert" => {
                    let item = as_object(item, "localization")?;
                    let locale = locale_of(item)?;
                    let exists = version.localizations.contains_key(&locale);
                    let data = match (operation.as_str(), exists) {
                        ("create", true) => {
                            return Err(Error::new(format!(
                                "localization \"{}\" already exists",
                                locale.name()
                            )))
                        }
                        ("update", false) => {
                            return Err(Error::new(format!(
                                "localization \"{}\" does not exist",
                                locale.name()
                            )))
                        }
                        ("upsert", true) => item.get("update"),
                        ("upsert", false) => item.get("create"),
                        _ => item.get("data"),
                    }
                    .ok_or_else(|| Error::new("localization input is missing its data"))?;
                    touched.locales.insert(locale);
                    localized_data(
                        model,
                        version.localizations.entry(locale).or_default(),
                        data,
                    )?;
                }
                other => {
                    return Err(Error::new(format!(
                        "unknown localizations operation \"{other}\""
                    )))
                }
            }
        }
    }
    Ok(())
}

fn create_document(store: &mut Store, model: &'static ModelDef, data: &Value) -> GqlResult<usize> {
    let now = now_timestamp();
    let id = new_id();
    let mut version = Version {
        created_at: now.clone(),
        updated_at: now.clone(),
        ..Version::default()
    };
    // Hygraph entries always exist in the default locale.
    version
        .localizations
        .insert(DEFAULT_LOCALE, BTreeMap::new());
    let mut touched = Touched {
        // Creating an entry always creates its default localization.
        plain: true,
        ..Touched::default()
    };
    apply_data(store, model, &id, &mut version, data, &mut touched)?;
    touched.commit("create", model);
    let mut doc = Document {
        model,
        id,
        versions: BTreeMap::from([(Stage::Draft, version)]),
        history: Vec::new(),
    };
    doc.record(Stage::Draft, &now);
    store.docs.push(doc);
    Ok(store.docs.len() - 1)
}

fn update_document(
    store: &mut Store,
    model: &'static ModelDef,
    index: usize,
    data: &Value,
) -> GqlResult<()> {
    let doc = store
        .docs
        .get(index)
        .ok_or_else(|| Error::new("document vanished during update"))?;
    let id = doc.id.clone();
    let mut version = doc
        .versions
        .get(&Stage::Draft)
        .cloned()
        .ok_or_else(|| Error::new(format!("{} {id} has no DRAFT version", model.api_id)))?;
    let mut touched = Touched::default();
    apply_data(store, model, &id, &mut version, data, &mut touched)?;
    touched.commit("update", model);
    let now = now_timestamp();
    version.updated_at = now.clone();
    if let Some(doc) = store.docs.get_mut(index) {
        doc.versions.insert(Stage::Draft, version);
        doc.record(Stage::Draft, &now);
    }
    Ok(())
}

/// Copies DRAFT into each target stage. With `locales`, only those
/// localizations (plus the default locale, like Hygraph's
/// `withDefaultLocale: true`) and the base fields are published.
fn publish_document(
    store: &mut Store,
    index: usize,
    to: &[Stage],
    locales: Option<&[Locale]>,
) -> GqlResult<()> {
    let doc = store
        .docs
        .get_mut(index)
        .ok_or_else(|| Error::new("document vanished during publish"))?;
    let draft = doc.versions.get(&Stage::Draft).cloned().ok_or_else(|| {
        Error::new(format!(
            "{} {} has no DRAFT version to publish",
            doc.model.api_id, doc.id
        ))
    })?;
    let now = now_timestamp();
    for &stage in to.iter().filter(|stage| **stage != Stage::Draft) {
        let published: Vec<Locale> = match locales {
            None => draft.localizations.keys().copied().collect(),
            Some(locales) => locales
                .iter()
                .chain(std::iter::once(&DEFAULT_LOCALE))
                .copied()
                .filter(|locale| draft.localizations.contains_key(locale))
                .collect(),
        };
        for locale in published {
            record("publish", doc.model, Some(stage), Some(locale));
        }
        let mut next = match locales {
            None => draft.clone(),
            Some(locales) => {
                let mut next = doc
                    .versions
                    .get(&stage)
                    .cloned()
                    .unwrap_or_else(|| Version {
                        localizations: BTreeMap::new(),
                        ..draft.clone()
                    });
                next.fields = draft.fields.clone();
                next.updated_at = draft.updated_at.clone();
                for locale in locales.iter().chain(std::iter::once(&DEFAULT_LOCALE)) {
                    if let Some(values) = draft.localizations.get(locale) {
                        next.localizations.insert(*locale, values.clone());
                    }
                }
                next
            }
        };
        next.published_at = Some(now.clone());
        doc.versions.insert(stage, next);
        doc.record(stage, &now);
    }
    Ok(())
}

/// Removes the given stages (or only some localizations of them). A document
/// left without any version is gone, as Hygraph would have nothing to serve.
fn unpublish_document(store: &mut Store, index: usize, from: &[Stage], locales: Option<&[Locale]>) {
    let Some(doc) = store.docs.get_mut(index) else {
        return;
    };
    for stage in from {
        match locales {
            None => {
                if let Some(version) = doc.versions.remove(stage) {
                    for locale in version.localizations.keys() {
                        record("unpublish", doc.model, Some(*stage), Some(*locale));
                    }
                }
            }
            Some(locales) => {
                if let Some(version) = doc.versions.get_mut(stage) {
                    for locale in locales {
                        if version.localizations.remove(locale).is_some() {
                            record("unpublish", doc.model, Some(*stage), Some(*locale));
                        }
                    }
                    if version.localizations.is_empty() {
                        doc.versions.remove(stage);
                    }
                }
            }
        }
    }
    if doc.versions.is_empty() {
        store.docs.remove(index);
    }
}

// ---------------------------------------------------------------------------
// Root field resolvers
// ---------------------------------------------------------------------------

fn resolve_list(ctx: &ResolverContext<'_>, model: &'static ModelDef) -> GqlResult<Page> {
    let stage = root_stage(ctx)?;
    let locales = root_locales(ctx)?;
    let store = read_store(shared_store(ctx)?);
    let candidates = store
        .docs_of(model)
        .filter_map(|doc| Entry::new(doc, stage, &locales))
        .collect();
    select(&store, candidates, ctx)
}

fn resolve_single(
    ctx: &ResolverContext<'_>,
    model: &'static ModelDef,
) -> GqlResult<Option<FieldValue<'static>>> {
    let stage = root_stage(ctx)?;
    let locales = root_locales(ctx)?;
    let filter = required_arg(ctx, "where")?;
    let store = read_store(shared_store(ctx)?);
    let entry = store
        .find_unique(model, filter, stage)?
        .and_then(|index| store.docs.get(index))
        .and_then(|doc| Entry::new(doc, stage, &locales));
    Ok(entry.map(FieldValue::owned_any))
}

fn resolve_node(ctx: &ResolverContext<'_>) -> GqlResult<Option<FieldValue<'static>>> {
    let id = required_arg(ctx, "id").map(as_text)?.unwrap_or_default();
    let stage = root_stage(ctx)?;
    let locales = root_locales(ctx)?;
    let store = read_store(shared_store(ctx)?);
    // Interface-typed fields must name the concrete object type.
    Ok(store
        .docs
        .iter()
        .find(|doc| doc.id == id)
        .and_then(|doc| Entry::new(doc, stage, &locales))
        .map(|entry| {
            let type_name = entry.model.api_id;
            FieldValue::owned_any(entry).with_type(type_name)
        }))
}

fn resolve_version(
    ctx: &ResolverContext<'_>,
    model: &'static ModelDef,
) -> GqlResult<Option<FieldValue<'static>>> {
    let filter = as_object(required_arg(ctx, "where")?, "where")?;
    let id = filter.get("id").and_then(as_text).unwrap_or_default();
    let stage = filter.get("stage").map(parse_stage).transpose()?;
    let revision = match filter.get("revision") {
        Some(Value::Number(number)) => number.as_i64(),
        _ => None,
    };
    let store = read_store(shared_store(ctx)?);
    let version = store
        .docs_of(model)
        .find(|doc| doc.id == id)
        .and_then(|doc| {
            doc.history
                .iter()
                .find(|record| Some(record.stage) == stage && Some(record.revision) == revision)
        })
        .inspect(|found| record("read_versions", model, Some(found.stage), None))
        .map(|record| VersionValue {
            id: id.clone(),
            stage: record.stage,
            revision: record.revision,
            created_at: record.created_at.clone(),
            data: record.data.to_string(),
        });
    Ok(version.map(FieldValue::owned_any))
}

fn unique_where<'c>(ctx: &'c ResolverContext<'_>) -> GqlResult<&'c Value> {
    required_arg(ctx, "where")
}

fn mutation_create(
    ctx: &ResolverContext<'_>,
    model: &'static ModelDef,
) -> GqlResult<Option<FieldValue<'static>>> {
    let data = required_arg(ctx, "data")?;
    let locales = defaults(ctx).locales;
    let mut store = write_store(shared_store(ctx)?);
    let index = create_document(&mut store, model, data)?;
    Ok(store
        .docs
        .get(index)
        .and_then(|doc| Entry::new(doc, Stage::Draft, &locales))
        .map(FieldValue::owned_any))
}

fn mutation_update(
    ctx: &ResolverContext<'_>,
    model: &'static ModelDef,
) -> GqlResult<Option<FieldValue<'static>>> {
    let filter = unique_where(ctx)?;
    let data = required_arg(ctx, "data")?;
    let locales = defaults(ctx).locales;
    let mut store = write_store(shared_store(ctx)?);
    let Some(index) = store.find_unique(model, filter, Stage::Draft)? else {
        return Ok(None);
    };
    update_document(&mut store, model, index, data)?;
    Ok(store
        .docs
        .get(index)
        .and_then(|doc| Entry::new(doc, Stage::Draft, &locales))
        .map(FieldValue::owned_any))
}

fn mutation_upsert(
    ctx: &ResolverContext<'_>,
    model: &'static ModelDef,
) -> GqlResult<Option<FieldValue<'static>>> {
    let filter = unique_where(ctx)?;
    let upsert = as_object(required_arg(ctx, "upsert")?, "upsert")?;
    let locales = defaults(ctx).locales;
    let mut store = write_store(shared_store(ctx)?);
    let index = match store.find_unique(model, filter, Stage::Draft)? {
        Some(index) => {
            let data = upsert
                .get("update")
                .ok_or_else(|| Error::new("upsert requires \"update\""))?;
            update_document(&mut store, model, index, data)?;
            index
        }
        None => {
            let data = upsert
                .get("create")
                .ok_or_else(|| Error::new("upsert requires \"create\""))?;
            create_document(&mut store, model, data)?
        }
    };
    Ok(store
        .docs
        .get(index)
        .and_then(|doc| Entry::new(doc, Stage::Draft, &locales))
        .map(FieldValue::owned_any))
}

/// A delete removes every localization of every stage.
fn record_delete(doc: &Document) {
    for (stage, version) in &doc.versions {
        for locale in version.localizations.keys() {
            record("delete", doc.model, Some(*stage), Some(*locale));
        }
    }
}

fn mutation_delete(
    ctx: &ResolverContext<'_>,
    model: &'static ModelDef,
) -> GqlResult<Option<FieldValue<'static>>> {
    let filter = unique_where(ctx)?;
    let locales = defaults(ctx).locales;
    let mut store = write_store(shared_store(ctx)?);
    let Some(index) = store.find_unique(model, filter, Stage::Draft)? else {
        return Ok(None);
    };
    let doc = store.docs.remove(index);
    record_delete(&doc);
    Ok(Entry::preferring(&doc, Stage::Draft, &locales).map(FieldValue::owned_any))
}

fn mutation_publish(
    ctx: &ResolverContext<'_>,
    model: &'static ModelDef,
) -> GqlResult<Option<FieldValue<'static>>> {
    let filter = unique_where(ctx)?;
    let to = parse_stages(required_arg(ctx, "to")?)?;
    let only = optional_locales(ctx)?;
    let locales = defaults(ctx).locales;
    let mut store = write_store(shared_store(ctx)?);
    let Some(index) = store.find_unique(model, filter, Stage::Draft)? else {
        return Ok(None);
    };
    publish_document(&mut store, index, &to, only.as_deref())?;
    let shown = to.first().copied().unwrap_or(Stage::Published);
    Ok(store
        .docs
        .get(index)
        .and_then(|doc| Entry::preferring(doc, shown, &locales))
        .map(FieldValue::owned_any))
}

fn mutation_unpublish(
    ctx: &ResolverContext<'_>,
    model: &'static ModelDef,
) -> GqlResult<Option<FieldValue<'static>>> {
    let filter = unique_where(ctx)?;
    let from = parse_stages(required_arg(ctx, "from")?)?;
    let only = optional_locales(ctx)?;
    let locales = defaults(ctx).locales;
    let mut store = write_store(shared_store(ctx)?);
    // Try DRAFT first so a slug lookup still works after the document was
    // already unpublished; fall back to the stage being unpublished.
    let mut index = store.find_unique(model, filter, Stage::Draft)?;
    for stage in &from {
        if index.is_none() {
            index = store.find_unique(model, filter, *stage)?;
        }
    }
    let Some(index) = index else {
        return Ok(None);
    };
    let before = store.docs.get(index).and_then(|doc| {
        let stage = from.first().copied().unwrap_or(Stage::Published);
        Entry::preferring(doc, stage, &locales)
    });
    let id = store.docs.get(index).map(|doc| doc.id.clone());
    unpublish_document(&mut store, index, &from, only.as_deref());
    let after = id
        .and_then(|id| store.index_of(&id))
        .and_then(|index| store.docs.get(index))
        .and_then(|doc| Entry::preferring(doc, Stage::Draft, &locales));
    Ok(after.or(before).map(FieldValue::owned_any))
}

#[derive(Clone, Copy)]
enum Bulk {
    Update,
    Delete,
    Publish,
    Unpublish,
}

/// Shared by the `…ManyConnection` mutations and their deprecated
/// `BatchPayload` twins. Documents are matched on their DRAFT version, which is
/// what editors see in the Hygraph UI.
fn bulk_mutation(
    ctx: &ResolverContext<'_>,
    model: &'static ModelDef,
    bulk: Bulk,
) -> GqlResult<Page> {
    let locales = defaults(ctx).locales;
    let stages = match bulk {
        Bulk::Publish => parse_stages(required_arg(ctx, "to")?)?,
        Bulk::Unpublish => parse_stages(required_arg(ctx, "from")?)?,
        Bulk::Update | Bulk::Delete => Vec::new(),
    };
    let only = optional_locales(ctx)?;
    let data = match bulk {
        Bulk::Update => Some(required_arg(ctx, "data")?),
        _ => None,
    };
    let mut store = write_store(shared_store(ctx)?);
    let candidates = store
        .docs_of(model)
        .filter_map(|doc| Entry::preferring(doc, Stage::Draft, &locales))
        .collect();
    let targets = select(&store, candidates, ctx)?;
    let mut affected = Vec::with_capacity(targets.items.len());
    for target in targets.items {
        let Some(index) = store.index_of(&target.id) else {
            continue;
        };
        match bulk {
            Bulk::Update => {
                if let Some(data) = data {
                    update_document(&mut store, model, index, data)?;
                }
            }
            Bulk::Delete => {
                record_delete(&store.docs.remove(index));
                affected.push(target);
                continue;
            }
            Bulk::Publish => publish_document(&mut store, index, &stages, only.as_deref())?,
            Bulk::Unpublish => unpublish_document(&mut store, index, &stages, only.as_deref()),
        }
        let current = store
            .index_of(&target.id)
            .and_then(|index| store.docs.get(index))
            .and_then(|doc| Entry::preferring(doc, Stage::Draft, &locales));
        affected.push(current.unwrap_or(target));
    }
    let total = affected.len();
    Ok(Page {
        items: affected,
        has_previous: targets.has_previous,
        has_next: targets.has_next,
        total,
    })
}

// ---------------------------------------------------------------------------
// Schema generation
// ---------------------------------------------------------------------------

fn string_ty() -> TypeRef {
    TypeRef::named(TypeRef::STRING)
}

/// Root `stage`/`locales` arguments. With an advertised default they are shaped as in a
/// generated Hygraph schema (`stage: Stage! = <D>, locales: [Locale!]! = [en]`).
fn with_stage_args(field: Field, advertised: Option<Stage>) -> Field {
    match advertised {
        None => field
            .argument(InputValue::new("stage", TypeRef::named("Stage")))
            .argument(InputValue::new("locales", TypeRef::named_nn_list("Locale"))),
        Some(stage) => field
            .argument(
                InputValue::new("stage", TypeRef::named_nn("Stage"))
                    .default_value(enum_value(stage.name())),
            )
            .argument(
                InputValue::new("locales", TypeRef::named_nn_list_nn("Locale"))
                    .default_value(Value::List(vec![enum_value(DEFAULT_LOCALE.name())])),
            ),
    }
}

fn with_page_args(field: Field, model: &'static ModelDef, filter_type: &str) -> Field {
    field
        .argument(InputValue::new("where", TypeRef::named(filter_type)))
        .argument(InputValue::new(
            "orderBy",
            TypeRef::named(model.ty("OrderByInput")),
        ))
        .argument(InputValue::new("skip", TypeRef::named(TypeRef::INT)))
        .argument(InputValue::new("after", string_ty()))
        .argument(InputValue::new("before", string_ty()))
        .argument(InputValue::new("first", TypeRef::named(TypeRef::INT)))
        .argument(InputValue::new("last", TypeRef::named(TypeRef::INT)))
}

fn stage_list_default(stage: Stage) -> Value {
    Value::List(vec![enum_value(stage.name())])
}

fn entry_field<F>(name: &str, ty: TypeRef, get: F) -> Field
where
    F: Fn(&Entry) -> Option<Value> + Send + Sync + 'static,
{
    Field::new(name, ty, move |ctx| {
        done(parent::<Entry>(&ctx).map(|entry| get(entry).map(FieldValue::value)))
    })
}

fn resolve_relation(
    ctx: &ResolverContext<'_>,
    field: &str,
) -> GqlResult<Option<FieldValue<'static>>> {
    let entry = parent::<Entry>(ctx)?;
    let store = read_store(shared_store(ctx)?);
    Ok(related_one(&store, entry, field).map(FieldValue::owned_any))
}

fn resolve_reverse_relation(
    ctx: &ResolverContext<'_>,
    target: &str,
    via: &str,
) -> GqlResult<Option<FieldValue<'static>>> {
    let entry = parent::<Entry>(ctx)?;
    let store = read_store(shared_store(ctx)?);
    let related = related_many(&store, entry, target, via);
    let page = select(&store, related, ctx)?;
    Ok(Some(entries_value(page.items)))
}

fn model_object(model: &'static ModelDef) -> Object {
    let api_id = model.api_id;
    let mut object = Object::new(api_id)
        .implement("Node")
        .field(entry_field("id", TypeRef::named_nn(TypeRef::ID), |entry| {
            Some(Value::String(entry.id.clone()))
        }))
        .field(entry_field("stage", TypeRef::named_nn("Stage"), |entry| {
            Some(enum_value(entry.stage.name()))
        }))
        .field(entry_field(
            "locale",
            TypeRef::named_nn("Locale"),
            |entry| Some(enum_value(entry.locale.name())),
        ))
        .field(entry_field(
            "createdAt",
            TypeRef::named_nn(TypeRef::STRING),
            |entry| Some(Value::String(entry.version.created_at.clone())),
        ))
        .field(entry_field(
            "updatedAt",
            TypeRef::named_nn(TypeRef::STRING),
            |entry| Some(Value::String(entry.version.updated_at.clone())),
        ))
        .field(entry_field("publishedAt", string_ty(), |entry| {
            entry.version.published_at.clone().map(Value::String)
        }));
    for field in model.fields {
        let name = field.name;
        object = object.field(match field.kind {
            Kind::Text { .. } => entry_field(name, string_ty(), move |entry| {
                entry.value_of(name).map(Value::String)
            }),
            Kind::Relation { target } => Field::new(name, TypeRef::named(target), move |ctx| {
                done(resolve_relation(&ctx, name))
            }),
            Kind::ReverseRelation { target, via } => {
                let field = Field::new(name, TypeRef::named_nn_list_nn(target), move |ctx| {
                    done(resolve_reverse_relation(&ctx, target, via))
                });
                match model_by_api_id(target) {
                    Some(target_model) => {
                        with_page_args(field, target_model, &target_model.ty("WhereInput"))
                    }
                    None => field,
                }
            }
        });
    }
    object
        .field(localizations_field(model))
        .field(document_in_stages_field(model))
        .field(history_field())
}

/// Hygraph's `history(limit, skip, stageOverride)`: the entry's versions, newest first.
fn resolve_history(ctx: &ResolverContext<'_>) -> GqlResult<Option<FieldValue<'static>>> {
    let entry = parent::<Entry>(ctx)?;
    let limit = count_arg(ctx, "limit")?.unwrap_or(10);
    let skip = count_arg(ctx, "skip")?.unwrap_or(0);
    let stage = match arg(ctx, "stageOverride") {
        Some(value) => parse_stage(value)?,
        None => entry.stage,
    };
    let store = read_store(shared_store(ctx)?);
    let versions: Vec<VersionValue> = store
        .index_of(&entry.id)
        .and_then(|index| store.docs.get(index))
        .map(|doc| {
            doc.history
                .iter()
                .rev()
                .filter(|found| found.stage == stage)
                .skip(skip)
                .take(limit)
                .map(|found| {
                    record("read_versions", doc.model, Some(found.stage), None);
                    VersionValue {
                        id: doc.id.clone(),
                        stage: found.stage,
                        revision: found.revision,
                        created_at: found.created_at.clone(),
                        data: found.data.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(FieldValue::list(
        versions.into_iter().map(FieldValue::owned_any),
    )))
}

fn history_field() -> Field {
    Field::new("history", TypeRef::named_nn_list_nn("Version"), |ctx| {
        done(resolve_history(&ctx))
    })
    .argument(InputValue::new("limit", TypeRef::named_nn(TypeRef::INT)).default_value(10))
    .argument(InputValue::new("skip", TypeRef::named_nn(TypeRef::INT)).default_value(0))
    .argument(InputValue::new("stageOverride", TypeRef::named("Stage")))
}

fn flag(ctx: &ResolverContext<'_>, name: &str) -> bool {
    matches!(arg(ctx, name), Some(Value::Boolean(true)))
}

fn resolve_localizations(ctx: &ResolverContext<'_>) -> GqlResult<Option<FieldValue<'static>>> {
    let entry = parent::<Entry>(ctx)?;
    let mut wanted = match arg(ctx, "locales") {
        Some(value) => parse_locales(value)?,
        None => vec![DEFAULT_LOCALE],
    };
    // An empty list is "whatever the CMS serves": the gcms-locales list, then the default.
    if wanted.is_empty() {
        wanted = defaults(ctx).locales.to_vec();
    }
    let include_current = flag(ctx, "includeCurrent");
    let entries = wanted
        .into_iter()
        .filter(|locale| entry.version.localizations.contains_key(locale))
        .filter(|locale| include_current || *locale != entry.locale)
        .map(|locale| {
            record("read", entry.model, Some(entry.stage), Some(locale));
            Entry {
                locale,
                locales: Arc::from([locale]),
                ..entry.clone()
            }
        })
        .collect();
    Ok(Some(entries_value(entries)))
}

/// Hygraph's `localizations(locales, includeCurrent)`: the same entry in other
/// locales, which editors' previews use to build language switchers.
fn localizations_field(model: &'static ModelDef) -> Field {
    Field::new(
        "localizations",
        TypeRef::named_nn_list_nn(model.api_id),
        |ctx| done(resolve_localizations(&ctx)),
    )
    .argument(
        InputValue::new("locales", TypeRef::named_nn_list_nn("Locale"))
            .default_value(Value::List(vec![enum_value(DEFAULT_LOCALE.name())])),
    )
    .argument(
        InputValue::new("includeCurrent", TypeRef::named_nn(TypeRef::BOOLEAN)).default_value(false),
    )
}

fn resolve_document_in_stages(ctx: &ResolverContext<'_>) -> GqlResult<Option<FieldValue<'static>>> {
    let entry = parent::<Entry>(ctx)?;
    let stages = match arg(ctx, "stages") {
        Some(value) => parse_stages(value)?,
        None => vec![Stage::Draft, Stage::Published],
    };
    let include_current = flag(ctx, "includeCurrent");
    let locales = if flag(ctx, "inheritLocale") {
        Arc::clone(&entry.locales)
    } else {
        Arc::from([DEFAULT_LOCALE])
    };
    let store = read_store(shared_store(ctx)?);
    let entries = store
        .index_of(&entry.id)
        .and_then(|index| store.docs.get(index))
        .map(|doc| {
            stages
                .iter()
                .filter(|stage| include_current || **stage != entry.stage)
                .filter_map(|stage| Entry::new(doc, *stage, &locales))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(entries_value(entries)))
}

/// Hygraph's `documentInStages`: lets a client see whether a DRAFT has been
/// published (and how it differs) in a single request.
fn document_in_stages_field(model: &'static ModelDef) -> Field {
    Field::new(
        "documentInStages",
        TypeRef::named_nn_list_nn(model.api_id),
        |ctx| done(resolve_document_in_stages(&ctx)),
    )
    .argument(
        InputValue::new("stages", TypeRef::named_nn_list_nn("Stage")).default_value(Value::List(
            Stage::NAMES.iter().map(|name| enum_value(name)).collect(),
        )),
    )
    .argument(
        InputValue::new("includeCurrent", TypeRef::named_nn(TypeRef::BOOLEAN)).default_value(false),
    )
    .argument(
        InputValue::new("inheritLocale", TypeRef::named_nn(TypeRef::BOOLEAN)).default_value(false),
    )
}

fn connection_types(model: &'static ModelDef) -> [Object; 2] {
    let edge = Object::new(model.ty("Edge"))
        .field(Field::new("node", TypeRef::named_nn(model.api_id), |ctx| {
            done(parent::<Entry>(&ctx).map(|entry| Some(FieldValue::owned_any(entry.clone()))))
        }))
        .field(Field::new(
            "cursor",
            TypeRef::named_nn(TypeRef::STRING),
            |ctx| done(parent::<Entry>(&ctx).map(|entry| Some(string_value(&entry.id)))),
        ));
    let connection = Object::new(model.ty("Connection"))
        .field(Field::new(
            "pageInfo",
            TypeRef::named_nn("PageInfo"),
            |ctx| {
                done(parent::<Page>(&ctx).map(|page| {
                    Some(FieldValue::owned_any(PageInfoValue {
                        has_next: page.has_next,
                        has_previous: page.has_previous,
                        start: page.items.first().map(|entry| entry.id.clone()),
                        end: page.items.last().map(|entry| entry.id.clone()),
                        size: page.items.len(),
                    }))
                }))
            },
        ))
        .field(Field::new(
            "edges",
            TypeRef::named_nn_list_nn(model.ty("Edge")),
            |ctx| done(parent::<Page>(&ctx).map(|page| Some(entries_value(page.items.clone())))),
        ))
        .field(Field::new(
            "aggregate",
            TypeRef::named_nn("Aggregate"),
            |ctx| {
                done(
                    parent::<Page>(&ctx).map(|page| Some(FieldValue::owned_any(Count(page.total)))),
                )
            },
        ));
    [edge, connection]
}

fn where_input(model: &'static ModelDef, name: &str, include_localized: bool) -> InputObject {
    let mut input = InputObject::new(name)
        .field(InputValue::new("AND", TypeRef::named_nn_list(name)))
        .field(InputValue::new("OR", TypeRef::named_nn_list(name)))
        .field(InputValue::new("NOT", TypeRef::named_nn_list(name)));
    for (field, kind) in filter_fields(model, include_localized) {
        for (suffix, op) in kind.ops() {
            let ty = match kind {
                FilterKind::One { target } | FilterKind::Many { target, .. } => {
                    TypeRef::named(format!("{target}WhereInput"))
                }
                FilterKind::Id | FilterKind::Text | FilterKind::Date => {
                    let scalar = if matches!(kind, FilterKind::Id) {
                        TypeRef::ID
                    } else {
                        TypeRef::STRING
                    };
                    if matches!(op, Op::In | Op::NotIn) {
                        TypeRef::named_list(scalar)
                    } else {
                        TypeRef::named(scalar)
                    }
                }
            };
            input = input.field(InputValue::new(format!("{field}{suffix}"), ty));
        }
    }
    input
}

fn localization_inputs(model: &'static ModelDef) -> Vec<InputObject> {
    let localized: Vec<&str> = model
        .text_fields()
        .filter(|(_, localized, _)| *localized)
        .map(|(name, _, _)| name)
        .collect();
    let data_input = |suffix: &str| {
        localized
            .iter()
            .fold(InputObject::new(model.ty(suffix)), |input, name| {
                input.field(InputValue::new(*name, string_ty()))
            })
    };
    let locale = || InputValue::new("locale", TypeRef::named_nn("Locale"));
    vec![
        data_input("CreateLocalizationDataInput"),
        data_input("UpdateLocalizationDataInput"),
        InputObject::new(model.ty("CreateLocalizationInput"))
            .field(InputValue::new(
                "data",
                TypeRef::named_nn(model.ty("CreateLocalizationDataInput")),
            ))
            .field(locale()),
        InputObject::new(model.ty("UpdateLocalizationInput"))
            .field(InputValue::new(
                "data",
                TypeRef::named_nn(model.ty("UpdateLocalizationDataInput")),
            ))
            .field(locale()),
        InputObject::new(model.ty("UpsertLocalizationInput"))
            .field(InputValue::new(
                "update",
                TypeRef::named_nn(model.ty("UpdateLocalizationDataInput")),
            ))
            .field(InputValue::new(
                "create",
                TypeRef::named_nn(model.ty("CreateLocalizationDataInput")),
            ))
            .field(locale()),
        InputObject::new(model.ty("CreateLocalizationsInput")).field(InputValue::new(
            "create",
            TypeRef::named_nn_list(model.ty("CreateLocalizationInput")),
        )),
        InputObject::new(model.ty("UpdateLocalizationsInput"))
            .field(InputValue::new(
                "create",
                TypeRef::named_nn_list(model.ty("CreateLocalizationInput")),
            ))
            .field(InputValue::new(
                "update",
                TypeRef::named_nn_list(model.ty("UpdateLocalizationInput")),
            ))
            .field(InputValue::new(
                "upsert",
                TypeRef::named_nn_list(model.ty("UpsertLocalizationInput")),
            ))
            .field(InputValue::new("delete", TypeRef::named_nn_list("Locale"))),
    ]
}

fn write_inputs(model: &'static ModelDef) -> Vec<InputObject> {
    let mut create = InputObject::new(model.ty("CreateInput"));
    let mut update = InputObject::new(model.ty("UpdateInput"));
    let mut update_many = InputObject::new(model.ty("UpdateManyInput"));
    let mut inputs = Vec::new();
    for field in model.fields {
        match field.kind {
            Kind::Text { unique, .. } => {
                create = create.field(InputValue::new(field.name, string_ty()));
                update = update.field(InputValue::new(field.name, string_ty()));
                // Setting one unique value on many documents can only fail.
                if !unique {
                    update_many = update_many.field(InputValue::new(field.name, string_ty()));
                }
            }
            Kind::Relation { target } => {
                let create_one = format!("{target}CreateOneInlineInput");
                let update_one = format!("{target}UpdateOneInlineInput");
                let unique = format!("{target}WhereUniqueInput");
                create = create.field(InputValue::new(field.name, TypeRef::named(&create_one)));
                update = update.field(InputValue::new(field.name, TypeRef::named(&update_one)));
                inputs.push(
                    InputObject::new(create_one)
                        .field(InputValue::new("connect", TypeRef::named(&unique))),
                );
                inputs.push(
                    InputObject::new(update_one)
                        .field(InputValue::new("connect", TypeRef::named(&unique)))
                        .field(InputValue::new(
                            "disconnect",
                            TypeRef::named(TypeRef::BOOLEAN),
                        )),
                );
            }
            Kind::ReverseRelation { .. } => {}
        }
    }
    if model.has_localized_fields() {
        create = create.field(InputValue::new(
            "localizations",
            TypeRef::named(model.ty("CreateLocalizationsInput")),
        ));
        update = update.field(InputValue::new(
            "localizations",
            TypeRef::named(model.ty("UpdateLocalizationsInput")),
        ));
        inputs.extend(localization_inputs(model));
    }
    let unique = model.text_fields().filter(|(_, _, unique)| *unique).fold(
        InputObject::new(model.ty("WhereUniqueInput"))
            .field(InputValue::new("id", TypeRef::named(TypeRef::ID))),
        |input, (name, _, _)| input.field(InputValue::new(name, string_ty())),
    );
    let upsert = InputObject::new(model.ty("UpsertInput"))
        .field(InputValue::new(
            "create",
            TypeRef::named_nn(model.ty("CreateInput")),
        ))
        .field(InputValue::new(
            "update",
            TypeRef::named_nn(model.ty("UpdateInput")),
        ));
    inputs.extend([create, update, update_many, unique, upsert]);
    inputs
}

fn model_types(model: &'static ModelDef) -> Vec<Type> {
    let mut types: Vec<Type> = vec![model_object(model).into()];
    types.extend(connection_types(model).map(Type::from));
    types.push(where_input(model, &model.ty("WhereInput"), true).into());
    types.push(where_input(model, &model.ty("ManyWhereInput"), false).into());
    types.push(
        Enum::new(model.ty("OrderByInput"))
            .items(
                order_fields(model)
                    .into_iter()
                    .flat_map(|field| [format!("{field}_ASC"), format!("{field}_DESC")]),
            )
            .into(),
    );
    types.extend(write_inputs(model).into_iter().map(Type::from));
    types
}

fn query_fields(model: &'static ModelDef, advertised: Option<Stage>) -> Vec<Field> {
    let with_stage_args = |field| with_stage_args(field, advertised);
    let where_type = model.ty("WhereInput");
    vec![
        with_page_args(
            with_stage_args(Field::new(
                model.plural,
                TypeRef::named_nn_list_nn(model.api_id),
                move |ctx| {
                    done(resolve_list(&ctx, model).map(|page| Some(entries_value(page.items))))
                },
            )),
            model,
            &where_type,
        ),
        with_stage_args(
            Field::new(model.singular(), TypeRef::named(model.api_id), move |ctx| {
                done(resolve_single(&ctx, model))
            })
            .argument(InputValue::new(
                "where",
                TypeRef::named_nn(model.ty("WhereUniqueInput")),
            )),
        ),
        with_page_args(
            with_stage_args(Field::new(
                format!("{}Connection", model.plural),
                TypeRef::named_nn(model.ty("Connection")),
                move |ctx| {
                    done(resolve_list(&ctx, model).map(|page| Some(FieldValue::owned_any(page))))
                },
            )),
            model,
            &where_type,
        ),
        Field::new(
            format!("{}Version", model.singular()),
            TypeRef::named("DocumentVersion"),
            move |ctx| done(resolve_version(&ctx, model)),
        )
        .argument(InputValue::new(
            "where",
            TypeRef::named_nn("VersionWhereInput"),
        )),
    ]
}

type RootResolver =
    fn(&ResolverContext<'_>, &'static ModelDef) -> GqlResult<Option<FieldValue<'static>>>;

fn mutation_fields(model: &'static ModelDef) -> Vec<Field> {
    let api_id = model.api_id;
    let plural = model.plural_capitalized();
    let unique = || InputValue::new("where", TypeRef::named_nn(model.ty("WhereUniqueInput")));
    let many_where = || InputValue::new("where", TypeRef::named(model.ty("ManyWhereInput")));
    let stages = |name: &str| {
        InputValue::new(name, TypeRef::named_nn_list_nn("Stage"))
            .default_value(stage_list_default(Stage::Published))
    };
    let locales = || InputValue::new("locales", TypeRef::named_nn_list("Locale"));
    let release_at = || InputValue::new("releaseAt", string_ty());
    let single = |name: String, resolve: RootResolver| {
        Field::new(name, TypeRef::named(api_id), move |ctx| {
            done(resolve(&ctx, model))
        })
    };
    let connection = |name: String, bulk: Bulk| {
        Field::new(
            name,
            TypeRef::named_nn(model.ty("Connection")),
            move |ctx| {
                done(bulk_mutation(&ctx, model, bulk).map(|page| Some(FieldValue::owned_any(page))))
            },
        )
        .argument(many_where())
        .argument(InputValue::new("skip", TypeRef::named(TypeRef::INT)))
        .argument(InputValue::new("first", TypeRef::named(TypeRef::INT)))
        .argument(InputValue::new("last", TypeRef::named(TypeRef::INT)))
        .argument(InputValue::new("after", string_ty()))
        .argument(InputValue::new("before", string_ty()))
    };
    let batch = |name: String, bulk: Bulk, replacement: String| {
        Field::new(name, TypeRef::named_nn("BatchPayload"), move |ctx| {
            done(
                bulk_mutation(&ctx, model, bulk)
                    .map(|page| Some(FieldValue::owned_any(Count(page.total)))),
            )
        })
        .argument(many_where())
        .deprecation(Some(
            format!("Please use the new paginated many mutation ({replacement})").as_str(),
        ))
    };
    let data = |suffix: &str| InputValue::new("data", TypeRef::named_nn(model.ty(suffix)));
    let connection_name = |verb: &str| format!("{verb}Many{plural}Connection");

    vec![
        single(format!("create{api_id}"), mutation_create).argument(data("CreateInput")),
        single(format!("update{api_id}"), mutation_update)
            .argument(unique())
            .argument(data("UpdateInput")),
        single(format!("upsert{api_id}"), mutation_upsert)
            .argument(unique())
            .argument(InputValue::new(
                "upsert",
                TypeRef::named_nn(model.ty("UpsertInput")),
            )),
        single(format!("delete{api_id}"), mutation_delete).argument(unique()),
        single(format!("publish{api_id}"), mutation_publish)
            .argument(unique())
            .argument(stages("to"))
            .argument(locales()),
        single(format!("unpublish{api_id}"), mutation_unpublish)
            .argument(unique())
            .argument(stages("from"))
            .argument(locales()),
        single(format!("schedulePublish{api_id}"), mutation_publish)
            .argument(unique())
            .argument(stages("to"))
            .argument(release_at())
            .argument(locales()),
        single(format!("scheduleUnpublish{api_id}"), mutation_unpublish)
            .argument(unique())
            .argument(stages("from"))
            .argument(release_at())
            .argument(locales()),
        connection(connection_name("update"), Bulk::Update).argument(data("UpdateManyInput")),
        connection(connection_name("delete"), Bulk::Delete),
        connection(connection_name("publish"), Bulk::Publish)
            .argument(stages("to"))
            .argument(locales()),
        connection(connection_name("unpublish"), Bulk::Unpublish)
            .argument(stages("from"))
            .argument(locales()),
        batch(
            format!("updateMany{plural}"),
            Bulk::Update,
            connection_name("update"),
        )
        .argument(data("UpdateManyInput")),
        batch(
            format!("deleteMany{plural}"),
            Bulk::Delete,
            connection_name("delete"),
        ),
        batch(
            format!("publishMany{plural}"),
            Bulk::Publish,
            connection_name("publish"),
        )
        .argument(stages("to")),
        batch(
            format!("unpublishMany{plural}"),
            Bulk::Unpublish,
            connection_name("unpublish"),
        )
        .argument(stages("from")),
    ]
}

fn count_field(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    done(parent::<Count>(&ctx).map(|count| {
        Some(FieldValue::value(
            i64::try_from(count.0).unwrap_or(i64::MAX),
        ))
    }))
}

fn shared_types() -> Vec<Type> {
    let page_info = Object::new("PageInfo")
        .field(Field::new(
            "hasNextPage",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            |ctx| {
                done(
                    parent::<PageInfoValue>(&ctx)
                        .map(|info| Some(FieldValue::value(info.has_next))),
                )
            },
        ))
        .field(Field::new(
            "hasPreviousPage",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            |ctx| {
                done(
                    parent::<PageInfoValue>(&ctx)
                        .map(|info| Some(FieldValue::value(info.has_previous))),
                )
            },
        ))
        .field(Field::new("startCursor", string_ty(), |ctx| {
            done(parent::<PageInfoValue>(&ctx).map(|info| info.start.as_deref().map(string_value)))
        }))
        .field(Field::new("endCursor", string_ty(), |ctx| {
            done(parent::<PageInfoValue>(&ctx).map(|info| info.end.as_deref().map(string_value)))
        }))
        .field(Field::new(
            "pageSize",
            TypeRef::named(TypeRef::INT),
            |ctx| {
                done(parent::<PageInfoValue>(&ctx).map(|info| {
                    Some(FieldValue::value(
                        i64::try_from(info.size).unwrap_or(i64::MAX),
                    ))
                }))
            },
        ));
    let aggregate = Object::new("Aggregate").field(Field::new(
        "count",
        TypeRef::named_nn(TypeRef::INT),
        count_field,
    ));
    let batch_payload = Object::new("BatchPayload").field(Field::new(
        "count",
        TypeRef::named_nn(TypeRef::INT),
        count_field,
    ));
    // `DocumentVersion` (`postVersion`) and `Version` (`history`) share their identity fields.
    let version_fields = |object: Object| {
        object
            .field(Field::new("id", TypeRef::named_nn(TypeRef::ID), |ctx| {
                done(parent::<VersionValue>(&ctx).map(|version| Some(string_value(&version.id))))
            }))
            .field(Field::new("stage", TypeRef::named_nn("Stage"), |ctx| {
                done(
                    parent::<VersionValue>(&ctx)
                        .map(|version| Some(FieldValue::value(enum_value(version.stage.name())))),
                )
            }))
            .field(Field::new(
                "revision",
                TypeRef::named_nn(TypeRef::INT),
                |ctx| {
                    done(
                        parent::<VersionValue>(&ctx)
                            .map(|version| Some(FieldValue::value(version.revision))),
                    )
                },
            ))
            .field(Field::new(
                "createdAt",
                TypeRef::named_nn(TypeRef::STRING),
                |ctx| {
                    done(
                        parent::<VersionValue>(&ctx)
                            .map(|version| Some(string_value(&version.created_at))),
                    )
                },
            ))
    };
    let document_version = version_fields(Object::new("DocumentVersion")).field(Field::new(
        "data",
        string_ty(),
        |ctx| done(parent::<VersionValue>(&ctx).map(|version| Some(string_value(&version.data)))),
    ));
    let version = version_fields(Object::new("Version"));
    vec![
        version.into(),
        Enum::new("Stage")
            .description("Stage system enumeration")
            .items(Stage::NAMES)
            .into(),
        Enum::new("Locale")
            .description("Locale system enumeration")
            .items(Locale::NAMES)
            .into(),
        Interface::new("Node")
            .description("An object with an ID")
            .field(InterfaceField::new("id", TypeRef::named_nn(TypeRef::ID)))
            .field(InterfaceField::new("stage", TypeRef::named_nn("Stage")))
            .into(),
        InputObject::new("VersionWhereInput")
            .field(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
            .field(InputValue::new("stage", TypeRef::named_nn("Stage")))
            .field(InputValue::new("revision", TypeRef::named_nn(TypeRef::INT)))
            .into(),
        page_info.into(),
        aggregate.into(),
        batch_payload.into(),
        document_version.into(),
    ]
}

fn build_schema(store: SharedStore, advertised: Option<Stage>) -> Result<Schema, SchemaError> {
    let mut builder = Schema::build("Query", Some("Mutation"), None);
    for ty in shared_types() {
        builder = builder.register(ty);
    }
    let mut query = Object::new("Query");
    let mut mutation = Object::new("Mutation");
    for model in MODELS {
        for ty in model_types(model) {
            builder = builder.register(ty);
        }
        query = query_fields(model, advertised)
            .into_iter()
            .fold(query, Object::field);
        mutation = mutation_fields(model)
            .into_iter()
            .fold(mutation, Object::field);
    }
    query = query.field(with_stage_args(
        Field::new("node", TypeRef::named("Node"), |ctx| {
            done(resolve_node(&ctx))
        })
        .description("Fetches an object given its ID")
        .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID))),
        advertised,
    ));
    builder
        .register(query)
        .register(mutation)
        .data(store)
        .finish()
}

// ---------------------------------------------------------------------------
// Seed content
// ---------------------------------------------------------------------------

/// One seeded document, as `seed.json` spells it.
struct SeedDoc {
    model: String,
    id: String,
    created_at: String,
    fields: Vec<(String, String)>,
    en: Vec<(String, String)>,
    de: Vec<(String, String)>,
    published_at: Option<String>,
}

/// The seed content: `crates/sample-cms/seed.json`, embedded at build time.
const SEED_JSON: &str = include_str!("../seed.json");

fn seed_docs() -> Vec<SeedDoc> {
    let docs: Vec<serde_json::Value> = serde_json::from_str(SEED_JSON).unwrap_or_default();
    let text = |d: &serde_json::Value, k: &str| d[k].as_str().unwrap_or_default().to_string();
    let pairs = |d: &serde_json::Value, k: &str| -> Vec<(String, String)> {
        d[k].as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    docs.iter()
        .map(|d| SeedDoc {
            model: text(d, "model"),
            id: text(d, "id"),
            created_at: text(d, "createdAt"),
            fields: pairs(d, "fields"),
            en: pairs(d, "en"),
            de: pairs(d, "de"),
            published_at: d["publishedAt"].as_str().map(str::to_string),
        })
        .collect()
}

/// The DRAFT of `hello-edge` carries an unpublished edit so that DRAFT and
/// PUBLISHED reads of the same document visibly differ.
const HELLO_DRAFT_TITLE: &str = "Hello from the edge (draft edits)";

impl Store {
    fn seeded() -> Self {
        let mut store = Store::default();
        for spec in seed_docs() {
            let Some(model) = model_by_api_id(&spec.model) else {
                continue;
            };
            let pairs = |pairs: Vec<(String, String)>| -> BTreeMap<String, String> {
                pairs.into_iter().collect()
            };
            let version = Version {
                created_at: spec.created_at.clone(),
                updated_at: spec.created_at.clone(),
                published_at: None,
                fields: pairs(spec.fields),
                localizations: BTreeMap::from([
                    (Locale::En, pairs(spec.en)),
                    (Locale::De, pairs(spec.de)),
                ]),
            };
            let mut doc = Document {
                model,
                id: spec.id.clone(),
                versions: BTreeMap::from([(Stage::Draft, version.clone())]),
                history: Vec::new(),
            };
            doc.record(Stage::Draft, &spec.created_at);
            if let Some(published_at) = &spec.published_at {
                doc.versions.insert(
                    Stage::Published,
                    Version {
                        published_at: Some(published_at.clone()),
                        ..version
                    },
                );
                doc.record(Stage::Published, published_at);
            }
            if spec.id == seed::POST_HELLO {
                if let Some(values) = doc
                    .versions
                    .get_mut(&Stage::Draft)
                    .and_then(|draft| draft.localizations.get_mut(&Locale::En))
                {
                    values.insert("title".to_owned(), HELLO_DRAFT_TITLE.to_owned());
                }
                doc.record(Stage::Draft, "2024-01-20T12:00:00.000000+00:00");
            }
            store.docs.push(doc);
        }
        store
    }
}

// ---------------------------------------------------------------------------
// Ids and timestamps
// ---------------------------------------------------------------------------

/// Hygraph ids are 25-character lower-case cuids starting with `c`; tests and
/// the gateway may rely on that shape (e.g. when validating `where: { id }`).
fn new_id() -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bits = uuid::Uuid::new_v4().as_u128();
    let mut id = String::with_capacity(25);
    id.push('c');
    for _ in 0..24 {
        id.push(char::from(ALPHABET[(bits % 36) as usize]));
        bits /= 36;
    }
    id
}

fn now_timestamp() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros());
    format_timestamp(micros)
}

/// Hygraph's timestamp format (`2024-01-15T09:00:00.000000+00:00`), without
/// pulling a date crate into the gateway for one formatter.
fn format_timestamp(unix_micros: u128) -> String {
    let seconds = i64::try_from(unix_micros / 1_000_000).unwrap_or(i64::MAX);
    let fraction = unix_micros % 1_000_000;
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:06}+00:00",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// An in-memory, Hygraph-shaped Content API (models `Post` and `Author`).
///
/// Cloning is cheap and clones share the same content, so one instance can be
/// handed to a Pingora service and kept by a test to inspect state.
#[derive(Clone)]
pub struct SampleContentApi {
    schema: Schema,
    store: SharedStore,
    /// The stage served when a request names none (argument or `gcms-stage`).
    root_stage: Stage,
    audit: Arc<std::sync::Mutex<AuditLog>>,
}

impl std::fmt::Debug for SampleContentApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleContentApi").finish_non_exhaustive()
    }
}

impl Default for SampleContentApi {
    fn default() -> Self {
        Self::new()
    }
}

impl SampleContentApi {
    /// A fresh API holding the seed content (2 authors, 3 posts; see [`seed`]).
    pub fn new() -> Self {
        Self::build(None)
    }

    /// Like a Hygraph project seen through a token whose default stage is `stage`
    /// (`"DRAFT"` or `"PUBLISHED"`): the SDL advertises it as the default of every root
    /// `stage` argument (`stage: Stage! = DRAFT`, `locales: [Locale!]! = [en]`), and requests
    /// that name no stage (no argument, no `gcms-stage` header) are served from it.
    pub fn with_root_stage_default(stage: &str) -> Result<Self, String> {
        let stage = Stage::parse(stage)
            .ok_or_else(|| format!("unknown stage {stage:?}: expected DRAFT or PUBLISHED"))?;
        Ok(Self::build(Some(stage)))
    }

    #[allow(clippy::expect_used)] // the static model list; no request input is involved
    fn build(advertised: Option<Stage>) -> Self {
        let store: SharedStore = Arc::new(RwLock::new(Store::seeded()));
        let schema = build_schema(Arc::clone(&store), advertised)
            // Only reachable if the static model list above is inconsistent,
            // which the unit tests would catch; no request input is involved.
            .expect("sample content API schema must be valid");
        Self {
            schema,
            store,
            root_stage: advertised.unwrap_or(Stage::Published),
            audit: Arc::default(),
        }
    }

    /// Puts the seed content back (every write since is forgotten; the audit is kept).
    pub fn reset(&self) {
        *write_store(&self.store) = Store::seeded();
    }

    /// What the request with this `x-request-id` touched, sorted; `None` if the id is unknown
    /// (never received, or older than the last [`AUDIT_CAPACITY`] ids).
    pub fn audit(&self, request_id: &str) -> Option<Vec<Access>> {
        let log = self.audit.lock().unwrap_or_else(PoisonError::into_inner);
        log.entries
            .get(request_id)
            .map(|set| set.iter().cloned().collect())
    }

    /// [`Self::execute`], also returning every access the execution performed.
    pub async fn execute_audited(
        &self,
        request: Request,
        stage_header: Option<&str>,
        locales_header: Option<&str>,
    ) -> (Response, std::collections::BTreeSet<Access>) {
        let set = AccessSet::default();
        let response = AUDIT
            .scope(
                Arc::clone(&set),
                self.execute(request, stage_header, locales_header),
            )
            .await;
        let accesses = std::mem::take(&mut *set.lock().unwrap_or_else(PoisonError::into_inner));
        (response, accesses)
    }

    /// The schema in SDL, for building the gateway's schema map.
    pub fn sdl(&self) -> String {
        self.schema.sdl()
    }

    /// Executes one GraphQL request with Hygraph's header defaults applied:
    /// `stage_header` is the `gcms-stage` value and `locales_header` the
    /// `gcms-locales` value, both as received. Invalid header values produce a
    /// GraphQL error response rather than being ignored, as silently serving
    /// the wrong stage would hide gateway bugs.
    pub async fn execute(
        &self,
        request: Request,
        stage_header: Option<&str>,
        locales_header: Option<&str>,
    ) -> Response {
        match RequestDefaults::from_headers(self.root_stage, stage_header, locales_header) {
            Ok(defaults) => self.schema.execute(request.data(defaults)).await,
            Err(message) => Response::from_errors(vec![ServerError::new(message, None)]),
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

impl SampleContentApi {
    /// `GET /__audit?request_id=…`: the accesses recorded for that request as a JSON array,
    /// 404 if the id is unknown.
    fn audit_response(&self, query: &str) -> http::Response<Vec<u8>> {
        let id = url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "request_id")
            .map(|(_, value)| value.into_owned());
        let Some(id) = id else {
            return error_response(StatusCode::BAD_REQUEST, "missing \"request_id\" parameter");
        };
        match self.audit(&id) {
            Some(accesses) => {
                let list: Vec<serde_json::Value> = accesses.iter().map(Access::to_json).collect();
                json_response(
                    StatusCode::OK,
                    serde_json::to_vec(&list).unwrap_or_default(),
                )
            }
            None => error_response(StatusCode::NOT_FOUND, "unknown request id"),
        }
    }
}

impl SampleContentApi {
    /// `GET /__received?request_id=…`: what arrived for that request — `gcms-stage`,
    /// `gcms-locales`, every `content-type`, the body's sha256 (hex), the query string — 404
    /// if unknown.
    fn received_response(&self, query: &str) -> http::Response<Vec<u8>> {
        let id = url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "request_id")
            .map(|(_, value)| value.into_owned());
        let Some(id) = id else {
            return error_response(StatusCode::BAD_REQUEST, "missing \"request_id\" parameter");
        };
        let log = self.audit.lock().unwrap_or_else(PoisonError::into_inner);
        match log.received.get(&id) {
            Some(v) => json_response(StatusCode::OK, v.to_string().into_bytes()),
            None => error_response(StatusCode::NOT_FOUND, "unknown request id"),
        }
    }
}

/// sha256 of a request body, lower-case hex.
pub fn body_digest(body: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> http::Response<Vec<u8>> {
    let length = body.len();
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

fn error_response(status: StatusCode, message: &str) -> http::Response<Vec<u8>> {
    let body = serde_json::json!({ "errors": [{ "message": message }] });
    json_response(status, serde_json::to_vec(&body).unwrap_or_default())
}

fn method_not_allowed(message: &str) -> http::Response<Vec<u8>> {
    let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, message);
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, POST"));
    response
}

/// GraphQL-over-HTTP GET parameters: `query`, `variables` (JSON), `operationName`.
fn request_from_query(query: &str) -> Result<Request, String> {
    let mut source = None;
    let mut variables = None;
    let mut operation_name = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "query" => source = Some(value.into_owned()),
            "variables" => variables = Some(value.into_owned()),
            "operationName" => operation_name = Some(value.into_owned()),
            _ => {}
        }
    }
    let source = source
        .filter(|source| !source.trim().is_empty())
        .ok_or_else(|| "missing \"query\" parameter".to_owned())?;
    let mut request = Request::new(source);
    if let Some(raw) = variables.filter(|raw| !raw.trim().is_empty()) {
        let parsed: Variables = serde_json::from_str(&raw)
            .map_err(|err| format!("\"variables\" is not a JSON object: {err}"))?;
        request = request.variables(parsed);
    }
    if let Some(name) = operation_name.filter(|name| !name.is_empty()) {
        request = request.operation_name(name);
    }
    Ok(request)
}

/// GET must not change state (it may be cached or prefetched), so the selected
/// operation is checked before execution. Unparsable queries are left to the
/// executor, which reports them as GraphQL errors.
fn selects_mutation(request: &mut Request) -> bool {
    let wanted = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    let mut selected = document
        .operations
        .iter()
        .filter(|(name, _)| match &wanted {
            Some(wanted) => name.is_some_and(|name| name.as_str() == wanted),
            None => true,
        });
    match (selected.next(), selected.next()) {
        (Some((_, operation)), None) => matches!(operation.node.ty, OperationType::Mutation),
        _ => false,
    }
}

enum BodyError {
    TooLarge,
    Read(String),
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(err) => return Err(BodyError::Read(err.to_string())),
        }
    }
}

#[async_trait]
impl ServeHttp for SampleContentApi {
    async fn response(&self, http_session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let header = http_session.req_header();
        let method = header.method.clone();
        let text_header = |name: &str| {
            header
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        // Content headers as a CMS reads them: UTF-8 text (not only visible ASCII), repeated
        // fields combined with ", " (RFC 9110, 5.3).
        let content_header = |name: &str| {
            let values: Vec<String> = header
                .headers
                .get_all(name)
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        };
        let stage = content_header(STAGE_HEADER);
        let locales = content_header(LOCALES_HEADER);
        let request_id = text_header(REQUEST_ID_HEADER);
        let declared_length = text_header(CONTENT_LENGTH.as_str())
            .and_then(|value| value.trim().parse::<usize>().ok());
        let query_string = header.uri.query().unwrap_or_default().to_owned();
        match header.uri.path() {
            "/__audit" => return self.audit_response(&query_string),
            "/__received" => return self.received_response(&query_string),
            "/__reset" if method == Method::POST => {
                self.reset();
                return json_response(StatusCode::OK, b"{}".to_vec());
            }
            _ => {}
        }

        let content_types: Vec<String> = header
            .headers
            .get_all(CONTENT_TYPE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let mut received_body: Option<String> = None;
        let request = if method == Method::POST {
            if declared_length.is_some_and(|length| length > MAX_BODY_BYTES) {
                // The unread body would be parsed as the next request.
                http_session.set_keepalive(None);
                return error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
            }
            let body = match read_body(http_session).await {
                Ok(body) => {
                    // A digest, not the body: the log keeps 8 192 requests of up to 4 MiB.
                    received_body = Some(body_digest(&body));
                    body
                }
                Err(BodyError::TooLarge) => {
                    http_session.set_keepalive(None);
                    return error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
                }
                Err(BodyError::Read(err)) => {
                    http_session.set_keepalive(None);
                    tracing::debug!(error = %err, "sample content API failed to read body");
                    return error_response(StatusCode::BAD_REQUEST, "could not read request body");
                }
            };
            match serde_json::from_slice::<Request>(&body) {
                Ok(request) => request,
                Err(err) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        &format!("request body is not a GraphQL JSON request: {err}"),
                    )
                }
            }
        } else if method == Method::GET {
            match request_from_query(&query_string) {
                Ok(mut request) => {
                    if selects_mutation(&mut request) {
                        return method_not_allowed("mutations must be sent with POST");
                    }
                    request
                }
                Err(message) => return error_response(StatusCode::BAD_REQUEST, &message),
            }
        } else {
            http_session.set_keepalive(None);
            return method_not_allowed("only GET and POST are supported");
        };

        let (response, accesses) = self
            .execute_audited(request, stage.as_deref(), locales.as_deref())
            .await;
        if let Some(id) = request_id {
            let mut log = self.audit.lock().unwrap_or_else(PoisonError::into_inner);
            log.add(&id, accesses);
            log.received.insert(
                id,
                serde_json::json!({
                    "gcms-stage": stage,
                    "gcms-locales": locales,
                    "content-type": content_types,
                    "body_sha256": received_body,
                    "query": query_string,
                }),
            );
        }
        match serde_json::to_vec(&response) {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(err) => {
                tracing::warn!(error = %err, "sample content API could not encode a response");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not encode response",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seed_file_holds_every_seeded_document() {
        let docs = super::seed_docs();
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        for id in [
            seed::AUTHOR_ADA,
            seed::AUTHOR_GRACE,
            seed::POST_HELLO,
            seed::POST_CACHING,
            seed::POST_UPCOMING,
        ] {
            assert!(ids.contains(&id), "{id} missing from seed.json");
        }
        assert!(docs.iter().all(|d| !d.en.is_empty() && !d.de.is_empty()));
    }

    use super::*;

    async fn run(api: &SampleContentApi, query: &str) -> serde_json::Value {
        run_with(api, query, None, None).await
    }

    async fn run_with(
        api: &SampleContentApi,
        query: &str,
        stage: Option<&str>,
        locales: Option<&str>,
    ) -> serde_json::Value {
        let response = api.execute(Request::new(query), stage, locales).await;
        assert!(
            response.errors.is_empty(),
            "unexpected errors for {query}: {:?}",
            response.errors
        );
        response.data.into_json().expect("data converts to JSON")
    }

    fn slugs(list: &serde_json::Value) -> Vec<&str> {
        list.as_array()
            .expect("a list")
            .iter()
            .filter_map(|item| item["slug"].as_str())
            .collect()
    }

    #[tokio::test]
    async fn stage_defaults_to_published() {
        let api = SampleContentApi::new();
        let data = run(&api, "{ posts { slug title stage } }").await;
        assert_eq!(slugs(&data["posts"]), ["hello-edge", "caching-content"]);
        assert_eq!(data["posts"][0]["title"], "Hello from the edge");
        assert_eq!(data["posts"][0]["stage"], "PUBLISHED");
    }

    #[tokio::test]
    async fn draft_via_argument_and_header() {
        let api = SampleContentApi::new();
        let data = run(&api, "{ posts(stage: DRAFT) { slug title stage } }").await;
        assert_eq!(
            slugs(&data["posts"]),
            ["hello-edge", "caching-content", "upcoming-release"]
        );
        assert_eq!(data["posts"][0]["title"], HELLO_DRAFT_TITLE);
        assert_eq!(data["posts"][0]["stage"], "DRAFT");

        let data = run_with(&api, "{ posts { slug } }", Some("DRAFT"), None).await;
        assert_eq!(slugs(&data["posts"]).len(), 3);

        // The argument wins over the header.
        let data = run_with(
            &api,
            "{ posts(stage: PUBLISHED) { slug } }",
            Some("DRAFT"),
            None,
        )
        .await;
        assert_eq!(slugs(&data["posts"]).len(), 2);
    }

    #[tokio::test]
    async fn invalid_stage_header_is_an_error() {
        let api = SampleContentApi::new();
        let response = api
            .execute(Request::new("{ posts { id } }"), Some("LIVE"), None)
            .await;
        assert!(!response.errors.is_empty());
    }

    #[tokio::test]
    async fn german_locale_and_fallback() {
        let api = SampleContentApi::new();
        let data = run(
            &api,
            r#"{ post(where: { slug: "hello-edge" }, locales: [de, en]) { title locale author { bio } } }"#,
        )
        .await;
        assert_eq!(data["post"]["title"], "Hallo vom Netzwerkrand");
        assert_eq!(data["post"]["locale"], "de");
        assert_eq!(
            data["post"]["author"]["bio"],
            "Mathematikerin, die das erste veröffentlichte Programm schrieb."
        );

        let data = run_with(
            &api,
            r#"{ post(where: { slug: "caching-content" }) { title locale } }"#,
            None,
            Some("de, en"),
        )
        .await;
        assert_eq!(data["post"]["title"], "Inhalts-APIs zwischenspeichern");

        // A new entry only exists in `en`, so `[de, en]` falls back to it.
        run(
            &api,
            r#"mutation { createPost(data: { title: "English only", slug: "english-only" }) { id } }"#,
        )
        .await;
        let data = run(
            &api,
            r#"{ post(where: { slug: "english-only" }, stage: DRAFT, locales: [de, en]) { title locale } }"#,
        )
        .await;
        assert_eq!(data["post"]["title"], "English only");
        assert_eq!(data["post"]["locale"], "en");
    }

    #[tokio::test]
    async fn nested_relations_inherit_stage() {
        let api = SampleContentApi::new();
        let data = run(
            &api,
            r#"{ post(where: { slug: "hello-edge" }) { author { name stage posts { slug } } } }"#,
        )
        .await;
        assert_eq!(data["post"]["author"]["name"], "Ada Lovelace");
        assert_eq!(data["post"]["author"]["stage"], "PUBLISHED");
        assert_eq!(slugs(&data["post"]["author"]["posts"]), ["hello-edge"]);

        let data = run(
            &api,
            r#"{ authors(stage: DRAFT, where: { name: "Ada Lovelace" }) { posts(orderBy: createdAt_DESC) { slug stage } } }"#,
        )
        .await;
        assert_eq!(
            slugs(&data["authors"][0]["posts"]),
            ["upcoming-release", "hello-edge"]
        );
        assert_eq!(data["authors"][0]["posts"][0]["stage"], "DRAFT");
    }

    #[tokio::test]
    async fn create_then_publish_becomes_visible() {
        let api = SampleContentApi::new();
        let created = run(
            &api,
            &format!(
                r#"mutation {{ createPost(data: {{
                    title: "Fresh", slug: "fresh", author: {{ connect: {{ id: "{}" }} }},
                    localizations: {{ create: [{{ locale: de, data: {{ title: "Frisch" }} }}] }}
                }}) {{ id stage author {{ name }} }} }}"#,
                seed::AUTHOR_GRACE
            ),
        )
        .await;
        assert_eq!(created["createPost"]["stage"], "DRAFT");
        assert_eq!(created["createPost"]["author"]["name"], "Grace Hopper");
        let id = created["createPost"]["id"].as_str().expect("id").to_owned();
        assert_eq!(id.len(), 25);

        let query = r#"{ post(where: { slug: "fresh" }) { id title } }"#;
        assert!(run(&api, query).await["post"].is_null());

        let published = run(
            &api,
            r#"mutation { publishPost(where: { slug: "fresh" }) { stage publishedAt } }"#,
        )
        .await;
        assert_eq!(published["publishPost"]["stage"], "PUBLISHED");
        assert!(published["publishPost"]["publishedAt"].is_string());

        let data = run(&api, query).await;
        assert_eq!(data["post"]["id"], id.as_str());
        assert_eq!(data["post"]["title"], "Fresh");
        let data = run(
            &api,
            r#"{ post(where: { slug: "fresh" }, locales: [de]) { title } postsConnection { aggregate { count } } }"#,
        )
        .await;
        assert_eq!(data["post"]["title"], "Frisch");
        assert_eq!(data["postsConnection"]["aggregate"]["count"], 3);

        let data = run(
            &api,
            r#"mutation { unpublishPost(where: { slug: "fresh" }) { stage } }"#,
        )
        .await;
        assert_eq!(data["unpublishPost"]["stage"], "DRAFT");
        assert!(run(&api, query).await["post"].is_null());
    }

    #[tokio::test]
    async fn update_delete_and_bulk_mutations() {
        let api = SampleContentApi::new();
        let data = run(
            &api,
            r#"mutation { updatePost(where: { slug: "caching-content" }, data: { title: "Edited" }) { title stage } }"#,
        )
        .await;
        assert_eq!(data["updatePost"]["title"], "Edited");

        let duplicate = api
            .execute(
                Request::new(
                    r#"mutation { updatePost(where: { slug: "caching-content" }, data: { slug: "hello-edge" }) { id } }"#,
                ),
                None,
                None,
            )
            .await;
        assert!(!duplicate.errors.is_empty(), "unique slug must be enforced");

        let data = run(
            &api,
            r#"mutation { publishManyPostsConnection(where: { slug: "upcoming-release" }) { edges { node { slug } } aggregate { count } } }"#,
        )
        .await;
        assert_eq!(data["publishManyPostsConnection"]["aggregate"]["count"], 1);
        let data = run(&api, "{ posts { slug } }").await;
        assert_eq!(slugs(&data["posts"]).len(), 3);

        let data = run(&api, "mutation { deleteManyPosts { count } }").await;
        assert_eq!(data["deleteManyPosts"]["count"], 3);
        let data = run(&api, "{ posts(stage: DRAFT) { slug } }").await;
        assert!(slugs(&data["posts"]).is_empty());
    }

    #[tokio::test]
    async fn connection_pagination() {
        let api = SampleContentApi::new();
        let data = run(
            &api,
            "{ postsConnection(stage: DRAFT, first: 1, skip: 1) { edges { cursor node { slug } } pageInfo { hasNextPage hasPreviousPage pageSize } aggregate { count } } }",
        )
        .await;
        let connection = &data["postsConnection"];
        assert_eq!(connection["edges"][0]["node"]["slug"], "caching-content");
        assert_eq!(connection["edges"][0]["cursor"], seed::POST_CACHING);
        assert_eq!(connection["pageInfo"]["hasNextPage"], true);
        assert_eq!(connection["pageInfo"]["hasPreviousPage"], true);
        assert_eq!(connection["pageInfo"]["pageSize"], 1);
        assert_eq!(connection["aggregate"]["count"], 3);

        let data = run(
            &api,
            &format!(
                r#"{{ posts(stage: DRAFT, after: "{}") {{ slug }} }}"#,
                seed::POST_HELLO
            ),
        )
        .await;
        assert_eq!(
            slugs(&data["posts"]),
            ["caching-content", "upcoming-release"]
        );
    }

    #[tokio::test]
    async fn node_and_versions() {
        let api = SampleContentApi::new();
        let data = run(
            &api,
            &format!(
                r#"{{ node(id: "{}") {{ __typename id stage ... on Author {{ name }} }} }}"#,
                seed::AUTHOR_GRACE
            ),
        )
        .await;
        assert_eq!(data["node"]["__typename"], "Author");
        assert_eq!(data["node"]["name"], "Grace Hopper");

        let data = run(
            &api,
            &format!(
                r#"{{ postVersion(where: {{ id: "{}", stage: PUBLISHED, revision: 2 }}) {{ revision stage data }} }}"#,
                seed::POST_HELLO
            ),
        )
        .await;
        assert_eq!(data["postVersion"]["stage"], "PUBLISHED");
        let snapshot: serde_json::Value =
            serde_json::from_str(data["postVersion"]["data"].as_str().expect("data string"))
                .expect("version data is JSON");
        assert_eq!(snapshot["title"], "Hello from the edge");
    }

    #[tokio::test]
    async fn introspection_lists_generated_fields() {
        let api = SampleContentApi::new();
        let data = run(
            &api,
            // Deprecated fields only show up when asked for, as in any GraphQL server.
            "{ __schema { queryType { fields { name } } mutationType { fields(includeDeprecated: true) { name } } } }",
        )
        .await;
        let names = |kind: &str| -> Vec<String> {
            data["__schema"][kind]["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .filter_map(|field| field["name"].as_str().map(str::to_owned))
                .collect()
        };
        let query = names("queryType");
        let mutation = names("mutationType");
        for expected in [
            "posts",
            "post",
            "postsConnection",
            "postVersion",
            "authorsConnection",
            "node",
        ] {
            assert!(
                query.iter().any(|name| name == expected),
                "missing {expected}"
            );
        }
        for expected in [
            "createPost",
            "publishManyPostsConnection",
            "unpublishManyAuthorsConnection",
            "deleteManyPosts",
            "scheduleUnpublishAuthor",
        ] {
            assert!(
                mutation.iter().any(|name| name == expected),
                "missing {expected}"
            );
        }

        let sdl = api.sdl();
        assert!(sdl.contains("type Post implements Node"));
        assert!(sdl.contains("input PostWhereUniqueInput"));
        assert!(sdl.contains("to: [Stage!]! = [PUBLISHED]"));
    }

    #[test]
    fn get_parameters_are_decoded() {
        let mut request = request_from_query(
            "query=query%20Q(%24s%3AString)%7Bpost(where%3A%7Bslug%3A%24s%7D)%7Bid%7D%7D&variables=%7B%22s%22%3A%22hello-edge%22%7D&operationName=Q",
        )
        .expect("valid GET request");
        assert_eq!(request.operation_name.as_deref(), Some("Q"));
        assert!(!selects_mutation(&mut request));
        let mut mutation =
            request_from_query("query=mutation%7BdeleteManyPosts%7Bcount%7D%7D").expect("valid");
        assert!(selects_mutation(&mut mutation));
        assert!(request_from_query("variables=%7B%7D").is_err());
        assert!(request_from_query("query=%7Bposts%7Bid%7D%7D&variables=%5B1%5D").is_err());
    }

    #[test]
    fn timestamps_use_hygraph_format() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(
            format_timestamp(1_709_251_200_123_456),
            "2024-03-01T00:00:00.123456+00:00"
        );
    }
}
