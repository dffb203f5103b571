//! Authorization: every (action, model, stage, locale) a document needs must be granted.
//!
//! Requirements follow Hygraph's documented permission dependencies:
//! - query root fields: Read on the model in the field's effective stage and every locale it
//!   will be served in (its `locales:`, else the `gcms-locales` header, else the CMS's default
//!   locale — never "no locale"); `…Version` fields and nested `history`: Read versions; every
//!   model reached in the selection or in a relation filter: Read, in its own context;
//! - Create/Update = the action for every locale the payload writes (plain fields: the default
//!   locale; `localizations`: the locales named) + Read on DRAFT; upsert = Create + Update;
//!   nested relation payloads need their own actions on the related model;
//!   Delete = Delete on every stage and locale + Read on every stage + Unpublish on every
//!   non-DRAFT stage; Publish = Publish from the source stage (DRAFT, or a `…Many…` `from:`)
//!   to each `to:` stage, for each locale acted on (`locales:` plus the default locale unless
//!   `withDefaultLocale: false`; no `locales:` = every locale) + Read on DRAFT;
//!   Unpublish = Unpublish from each `from:` stage for each locale acted on + Read on all
//!   stages; the selection set of a mutation is read in DRAFT in the request's locales.
//!
//! A field the schema map cannot resolve is denied, never allowed.

use std::sync::Arc;

use super::PrincipalPolicy;
use super::{Action, Permissions};
use crate::graphql::document::{Operation, OperationKind, RootField};
use crate::graphql::reads::{AccessKind, Locales, Stages};
use crate::graphql::GraphqlError;
use crate::schema::{MutationKind, MutationRoot, QueryRoot, SchemaMap};
use crate::stage::Cms;
use crate::stage::{EffectiveStage, Locale, Stage};

/// One thing the request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub action: Action,
    pub model: Arc<str>,
    /// Read, Delete, Unpublish: the stage; Publish: the target stage.
    pub stage: Option<Stage>,
    /// Publish: the source stage.
    pub from: Option<Stage>,
    pub locale: Option<Locale>,
}

/// Why a request is forbidden: the first missing grant. `model` is `None` when the caller has
/// no Read on that model at all — the denial must not reveal models it cannot see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub action: &'static str,
    pub model: Option<Arc<str>>,
    pub stage: Option<Stage>,
    pub locale: Option<Locale>,
    pub field: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "missing permission: {}", self.action)?;
        match &self.model {
            Some(m) => write!(f, " on model {m}")?,
            // Introspection is not about a model.
            None if self.action == "introspection" => {}
            None => write!(f, " on a model this token cannot read")?,
        }
        if let Some(s) = &self.stage {
            write!(f, " in stage {s}")?;
        }
        if let Some(l) = &self.locale {
            write!(f, " for locale {l}")?;
        }
        write!(f, " (field `{}`)", self.field)
    }
}

#[derive(Debug)]
pub enum AuthzError {
    /// A stage or locale in the document that the CMS does not have: a bad request.
    Invalid(GraphqlError),
    Denied(Denial),
}

/// Context of one operation's root fields.
pub struct OperationContext<'a> {
    pub stage: &'a EffectiveStage,
    pub header_locales: Option<&'a [Locale]>,
}

pub fn authorize(
    op: &Operation,
    ctx: &OperationContext,
    policy: &PrincipalPolicy,
    cms: &Cms,
    schema: &SchemaMap,
) -> Result<(), AuthzError> {
    for (i, field) in op.root_fields.iter().enumerate() {
        let stage = ctx.stage.per_field.get(i).unwrap_or(&ctx.stage.fallback);
        let needs = needs_of(
            op.kind,
            field,
            stage,
            ctx.header_locales,
            cms,
            schema,
            policy,
        )?;
        for need in needs {
            if !granted(&policy.permissions, &need) {
                return Err(AuthzError::Denied(denial(&policy.permissions, need, field)));
            }
        }
    }
    Ok(())
}

fn denial(perms: &Permissions, need: Need, field: &RootField) -> Denial {
    let visible = perms
        .grants()
        .iter()
        .any(|g| g.action == Action::Read && g.models.allows(&*need.model));
    Denial {
        action: need.action.as_str(),
        model: visible.then_some(need.model),
        stage: need.stage,
        locale: need.locale,
        field: field
            .alias
            .clone()
            .map(|a| format!("{a}: {}", field.name))
            .unwrap_or_else(|| field.name.clone()),
    }
}

fn stage_of(cms: &Cms, name: &str, what: &'static str) -> Result<Stage, AuthzError> {
    cms.stage(name).cloned().ok_or_else(|| {
        AuthzError::Invalid(GraphqlError::Argument {
            what,
            message: format!("unknown stage {name:?}"),
        })
    })
}

fn locales_of(cms: &Cms, names: &[String]) -> Result<Vec<Locale>, AuthzError> {
    names
        .iter()
        .map(|n| {
            cms.locale(n).cloned().ok_or_else(|| {
                AuthzError::Invalid(GraphqlError::Argument {
                    what: "locales",
                    message: format!("unknown locale {n:?}"),
                })
            })
        })
        .collect()
}

/// `DRAFT`, or the first configured stage of a project without one.
fn draft(cms: &Cms) -> Stage {
    cms.stage("DRAFT")
        .cloned()
        .unwrap_or_else(|| cms.stages[0].clone())
}

fn published(cms: &Cms) -> Stage {
    cms.stage("PUBLISHED")
        .cloned()
        .unwrap_or_else(|| cms.stages[cms.stages.len() - 1].clone())
}

fn dedup<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v.dedup();
    v
}

/// The stages and locales one root field's accesses resolve against.
struct FieldScope<'a> {
    cms: &'a Cms,
    /// What `Stages::field` means: the effective stage of a query root field; DRAFT (and the
    /// stages a publish/unpublish acts on) for a mutation.
    stages: Vec<Stage>,
    /// What `Locales::field` means: the root's `locales:`, else the request's.
    locales: Vec<Locale>,
    /// The `gcms-locales` header, else the CMS's default locale.
    request: Vec<Locale>,
}

impl FieldScope<'_> {
    /// Never empty: an access with no stage named happens in the field's stages.
    fn stages(&self, s: &Stages) -> Result<Vec<Stage>, AuthzError> {
        let mut out = if s.field {
            self.stages.clone()
        } else {
            Vec::new()
        };
        for n in &s.names {
            out.push(stage_of(self.cms, n, "stage")?);
        }
        if out.is_empty() {
            out = self.stages.clone();
        }
        Ok(dedup(out))
    }

    /// Never empty: an access with no locale named happens in the CMS's default locale.
    fn locales(&self, l: &Locales) -> Result<Vec<Locale>, AuthzError> {
        if l.all {
            return Ok(self.cms.locales.clone());
        }
        let mut out = locales_of(self.cms, &l.names)?;
        if l.field {
            out.extend(self.locales.iter().cloned());
        }
        if l.request {
            out.extend(self.request.iter().cloned());
        }
        if l.default || out.is_empty() {
            out.push(self.cms.default_locale.clone());
        }
        Ok(dedup(out))
    }
}

fn push(
    out: &mut Vec<Need>,
    action: Action,
    model: &Arc<str>,
    stages: &[Option<Stage>],
    locales: &[Locale],
) {
    for s in stages {
        for l in locales {
            out.push(Need {
                action,
                model: model.clone(),
                stage: s.clone(),
                from: None,
                locale: Some(l.clone()),
            });
        }
    }
}

fn some(stages: &[Stage]) -> Vec<Option<Stage>> {
    stages.iter().cloned().map(Some).collect()
}

fn needs_of(
    kind: OperationKind,
    field: &RootField,
    stage: &Stage,
    header_locales: Option<&[Locale]>,
    cms: &Cms,
    schema: &SchemaMap,
    policy: &PrincipalPolicy,
) -> Result<Vec<Need>, AuthzError> {
    let unknown = |what: String| {
        AuthzError::Denied(Denial {
            action: "read",
            model: None,
            stage: None,
            locale: None,
            field: what,
        })
    };
    if let Some(u) = &field.unresolved {
        return Err(unknown(format!("{} (unknown field {u})", field.name)));
    }
    let request: Vec<Locale> = match header_locales {
        Some(h) if !h.is_empty() => h.to_vec(),
        _ => vec![cms.default_locale.clone()],
    };
    let named_locales = match &field.locales {
        Some(names) => Some(locales_of(cms, names)?),
        None => None,
    };
    let extra_stages = field
        .extra_stages
        .iter()
        .map(|n| stage_of(cms, n, "stage"))
        .collect::<Result<Vec<_>, _>>()?;
    let extra_locales = locales_of(cms, &field.extra_locales)?;
    let all = cms.locales.clone();
    let mut needs = Vec::new();
    let scope = match kind {
        OperationKind::Query => {
            let locales = named_locales.clone().unwrap_or_else(|| request.clone());
            let mut stages = vec![stage.clone()];
            stages.extend(extra_stages.iter().cloned());
            let stages = dedup(stages);
            let mut read_locales = locales.clone();
            read_locales.extend(extra_locales.iter().cloned());
            let read_locales = dedup(read_locales);
            match schema.query_roots.get(field.name.as_str()) {
                Some(QueryRoot::Typename) => return Ok(needs),
                Some(QueryRoot::Introspection) => {
                    if policy.introspection {
                        return Ok(needs);
                    }
                    return Err(AuthzError::Denied(Denial {
                        action: "introspection",
                        model: None,
                        stage: None,
                        locale: None,
                        field: field.name.clone(),
                    }));
                }
                Some(QueryRoot::Read(m)) => {
                    push(&mut needs, Action::Read, m, &some(&stages), &read_locales)
                }
                Some(QueryRoot::ReadVersions(m)) => needs.push(Need {
                    action: Action::ReadVersions,
                    model: m.clone(),
                    stage: None,
                    from: None,
                    locale: None,
                }),
                Some(QueryRoot::Abstract) => {}
                None => return Err(unknown(format!("{} (not a content field)", field.name))),
            }
            FieldScope {
                cms,
                stages,
                locales,
                request: request.clone(),
            }
        }
        OperationKind::Mutation => {
            let (mkind, m) = match schema.mutation_roots.get(field.name.as_str()) {
                Some(MutationRoot::Typename) => return Ok(needs),
                Some(MutationRoot::Model(k, m)) => (*k, m.clone()),
                None => return Err(unknown(format!("{} (not a content mutation)", field.name))),
            };
            let draft = draft(cms);
            // Publish/unpublish: the locales named (plus the default locale, which Hygraph
            // includes unless told otherwise); none named acts on every locale.
            let acted_locales = match &named_locales {
                Some(l) => {
                    let mut l = l.clone();
                    if field.with_default_locale != Some(false) {
                        l.push(cms.default_locale.clone());
                    }
                    dedup(l)
                }
                None => all.clone(),
            };
            let stages_of = |names: &Option<Vec<String>>, what, default: Stage| match names {
                Some(n) if !n.is_empty() => n
                    .iter()
                    .map(|n| stage_of(cms, n, what))
                    .collect::<Result<Vec<_>, _>>(),
                _ => Ok(vec![default]),
            };
            let mut scope_stages = vec![draft.clone()];
            // Payload writes: the accesses of the root model carry the locales they write;
            // a payload the gateway could not see (null) writes the default locale.
            let writes = |needs: &mut Vec<Need>, action: Action, access: AccessKind| {
                if !field
                    .accesses
                    .iter()
                    .any(|a| a.kind == access && a.model == m)
                {
                    push(
                        needs,
                        action,
                        &m,
                        &[None],
                        std::slice::from_ref(&cms.default_locale),
                    );
                }
            };
            match mkind {
                MutationKind::Create => writes(&mut needs, Action::Create, AccessKind::Create),
                MutationKind::Update => writes(&mut needs, Action::Update, AccessKind::Update),
                MutationKind::Upsert => {
                    writes(&mut needs, Action::Create, AccessKind::Create);
                    writes(&mut needs, Action::Update, AccessKind::Update);
                }
                MutationKind::Delete => {
                    push(&mut needs, Action::Delete, &m, &some(&cms.stages), &all);
                    let others: Vec<Stage> = cms
                        .stages
                        .iter()
                        .filter(|s| **s != draft)
                        .cloned()
                        .collect();
                    push(&mut needs, Action::Unpublish, &m, &some(&others), &all);
                    scope_stages = cms.stages.clone();
                }
                MutationKind::Publish => {
                    let targets = stages_of(&field.to, "to", published(cms))?;
                    let sources = stages_of(&field.from, "from", draft.clone())?;
                    for source in &sources {
                        for t in &targets {
                            for l in &acted_locales {
                                needs.push(Need {
                                    action: Action::Publish,
                                    model: m.clone(),
                                    stage: Some(t.clone()),
                                    from: Some(source.clone()),
                                    locale: Some(l.clone()),
                                });
                            }
                        }
                    }
                    scope_stages.extend(sources);
                    scope_stages.extend(targets);
                }
                MutationKind::Unpublish => {
                    let sources = stages_of(&field.from, "from", published(cms))?;
                    push(
                        &mut needs,
                        Action::Unpublish,
                        &m,
                        &some(&sources),
                        &acted_locales,
                    );
                    scope_stages = cms.stages.clone();
                }
            }
            // The selection is read in DRAFT (and the stages acted on), in the request's
            // locales; so is the root model itself.
            let scope = FieldScope {
                cms,
                stages: dedup(scope_stages),
                locales: request.clone(),
                request: request.clone(),
            };
            let stages = scope.stages(&Stages {
                field: true,
                names: field.extra_stages.clone(),
            })?;
            let mut read_locales = request.clone();
            read_locales.extend(extra_locales.iter().cloned());
            push(
                &mut needs,
                Action::Read,
                &m,
                &some(&stages),
                &dedup(read_locales),
            );
            scope
        }
    };
    for access in &field.accesses {
        let locales = scope.locales(&access.locales)?;
        match access.kind {
            AccessKind::Read => {
                let stages = scope.stages(&access.stages)?;
                push(
                    &mut needs,
                    Action::Read,
                    &access.model,
                    &some(&stages),
                    &locales,
                );
            }
            AccessKind::ReadVersions => needs.push(Need {
                action: Action::ReadVersions,
                model: access.model.clone(),
                stage: None,
                from: None,
                locale: None,
            }),
            AccessKind::Create => {
                push(&mut needs, Action::Create, &access.model, &[None], &locales)
            }
            AccessKind::Update => {
                push(&mut needs, Action::Update, &access.model, &[None], &locales)
            }
            AccessKind::Delete => push(
                &mut needs,
                Action::Delete,
                &access.model,
                &some(&cms.stages),
                &all,
            ),
        }
    }
    Ok(needs)
}

/// Whether some grant covers the need. Every need but Read versions names a locale; Read,
/// Delete and Unpublish name a stage; Publish names its source and target stages.
pub fn granted(perms: &Permissions, need: &Need) -> bool {
    let model: &str = &need.model;
    perms.grants().iter().any(|g| {
        g.action == need.action
            && g.models.allows(model)
            && match &need.locale {
                Some(l) => g.locales.allows(l),
                None => need.action == Action::ReadVersions,
            }
            && match need.action {
                Action::Read | Action::Unpublish | Action::Delete => {
                    need.stage.as_ref().is_none_or(|s| g.stages.allows(s))
                }
                Action::Publish => {
                    need.from.as_ref().is_some_and(|f| g.from_stages.allows(f))
                        && need.stage.as_ref().is_some_and(|s| g.to_stages.allows(s))
                }
                Action::ReadVersions | Action::Create | Action::Update => true,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::document::{parse_document, ParseLimits};
    use crate::graphql::request::GraphqlRequest;
    use crate::permissions::{Grant, Permissions, Scope};

    fn schema() -> SchemaMap {
        SchemaMap::from_sdl(include_str!("../../tests/fixtures/hygraph.graphql")).unwrap()
    }

    fn cms() -> Cms {
        Cms::new(
            vec!["DRAFT".into(), "PUBLISHED".into()],
            vec!["en".into(), "de".into()],
            None,
        )
        .unwrap()
    }

    fn only<T: Ord + Clone>(items: &[T]) -> Scope<T> {
        Scope::Only(items.iter().cloned().collect())
    }

    /// `action:models:stages:locales`, `*` or empty = all; `;` between grants.
    fn policy(spec: &str) -> PrincipalPolicy {
        let grants = spec
            .split(';')
            .filter(|g| !g.trim().is_empty())
            .map(|g| {
                let p: Vec<&str> = g.trim().split(':').collect();
                let list = |i: usize| -> Option<Vec<String>> {
                    match p.get(i).copied().unwrap_or("*") {
                        "*" | "" => None,
                        s => Some(s.split(',').map(str::to_string).collect()),
                    }
                };
                let stages = |i: usize| match list(i) {
                    None => Scope::All,
                    Some(v) => only(&v.into_iter().map(Stage::new).collect::<Vec<_>>()),
                };
                Grant {
                    action: Action::parse(p[0]).unwrap(),
                    models: list(1).map_or(Scope::All, |v| only(&v)),
                    stages: stages(2),
                    locales: match list(3) {
                        None => Scope::All,
                        Some(v) => only(&v.into_iter().map(Locale::new).collect::<Vec<_>>()),
                    },
                    from_stages: Scope::All,
                    to_stages: Scope::All,
                }
            })
            .collect();
        PrincipalPolicy {
            default_stage: Stage::new("PUBLISHED"),
            permissions: Permissions::new(grants),
            introspection: false,
        }
    }

    /// Whether `query` (with `gcms-locales` = `header`) is allowed under `spec`.
    fn allowed(spec: &str, query: &str, header: Option<&[&str]>) -> bool {
        let schema = schema();
        let cms = cms();
        let req = GraphqlRequest {
            query: query.into(),
            operation_name: None,
            variables: Default::default(),
        };
        let doc = parse_document(&req, ParseLimits::DEFAULT, Some(&schema)).unwrap();
        let op = &doc.operation;
        let args: Vec<Option<Stage>> = op
            .root_fields
            .iter()
            .map(|f| f.stage.as_deref().map(Stage::new))
            .collect();
        let stage = EffectiveStage::decide(&args, None, &Stage::new("PUBLISHED"));
        let header: Option<Vec<Locale>> =
            header.map(|h| h.iter().map(|l| Locale::new(*l)).collect());
        let ctx = OperationContext {
            stage: &stage,
            header_locales: header.as_deref(),
        };
        match authorize(op, &ctx, &policy(spec), &cms, &schema) {
            Ok(()) => true,
            Err(AuthzError::Denied(_)) => false,
            Err(AuthzError::Invalid(e)) => panic!("{query}: invalid: {e}"),
        }
    }

    #[test]
    fn requirements_table() {
        let de = Some(&["de"][..]);
        let cases: &[(&str, &str, Option<&[&str]>, bool)] = &[
            // Root reads: stage and locale (the default locale when none is named).
            ("read:Post:PUBLISHED", "{ posts { title } }", None, true),
            ("read:Post:PUBLISHED", "{ posts(stage: DRAFT) { title } }", None, false),
            ("read:Post:*:de", "{ posts { title } }", None, false),
            ("read:Post:*:de", "{ posts { title } }", de, true),
            ("read:Post:*:de", "{ posts(locales: []) { title } }", None, false),
            ("read:Post:*:de", "{ posts(locales: [de]) { title } }", None, true),
            // Nested reads, relation filters, versions, abstract fields.
            ("read:Post", "{ posts { author { name } } }", None, false),
            ("read:Post", "{ posts(where: { author: { name: \"a\" } }) { title } }", None, false),
            ("read:Post,Author", "{ posts(where: { author: { name: \"a\" } }) { title } }", None, true),
            ("read", "{ posts { history { id } } }", None, false),
            ("read;read_versions", "{ posts { history { id } } }", None, true),
            ("read:Post", "{ node(id: \"x\") { ... on Post { title } } }", None, false),
            ("read", "{ node(id: \"x\") { ... on Post { title } } }", None, true),
            ("read:*:PUBLISHED", "{ posts { documentInStages(inheritLocale: true) { id } } }", None, false),
            // Writes: locales of the payload, publish locales, delete everywhere.
            ("read;update:*:*:de", "mutation { updatePost(where: {id: \"p\"}, data: {title: \"t\"}) { id } }", None, false),
            ("read;update:*:*:de", "mutation { updatePost(where: {id: \"p\"}, data: {localizations: {update: [{locale: de, data: {title: \"t\"}}]}}) { id } }", None, true),
            ("read;create:*:*:de", "mutation { createPost(data: {title: \"t\", slug: \"s\", localizations: {create: [{locale: de, data: {title: \"t\"}}]}}) { id } }", None, false),
            ("read;update;create:Post", "mutation { updatePost(where: {id: \"p\"}, data: {author: {create: {name: \"n\"}}}) { id } }", None, false),
            ("read;publish:*:*:de", "mutation { publishPost(where: {id: \"p\"}, locales: [de], withDefaultLocale: false) { id } }", None, true),
            ("read;publish:*:*:de", "mutation { publishPost(where: {id: \"p\"}, locales: [de]) { id } }", None, false),
            ("read;publish:*:*:de", "mutation { publishPost(where: {id: \"p\"}) { id } }", None, false),
            ("read;unpublish;delete:*:DRAFT", "mutation { deletePost(where: {id: \"p\"}) { id } }", None, false),
            ("read;unpublish;delete", "mutation { deletePost(where: {id: \"p\"}) { id } }", None, true),
            // Stages named inside inputs.
            ("read:*:PUBLISHED", "{ entities(where: [{id: \"x\", typename: Post, stage: DRAFT}]) { id } }", None, false),
        ];
        for (spec, query, header, want) in cases {
            assert_eq!(
                allowed(spec, query, *header),
                *want,
                "{spec} | {query} | {header:?}"
            );
        }
    }
}
