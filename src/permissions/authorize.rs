//! Authorization: every (action, model, stage, locale) a document needs must be granted.
//!
//! Requirements follow Hygraph's documented permission dependencies:
//! - query root fields: Read on the model in the field's effective stage and every requested
//!   locale; `…Version` fields: Read versions; every model reached in the selection: Read;
//! - Create = Create + Read on DRAFT; Update = Update + Read on DRAFT; upsert = Create + Update;
//!   Delete = Delete + Read on all stages + Unpublish on every non-DRAFT stage;
//!   Publish = Publish (from DRAFT to each `to:` stage) + Read on DRAFT;
//!   Unpublish = Unpublish from each `from:` stage + Read on all stages;
//!   the selection set of a mutation is a read in DRAFT.
//!
//! A field the schema map cannot resolve is denied, never allowed.

use std::sync::Arc;

use super::schema::{MutationKind, MutationRoot, QueryRoot, SchemaMap};
use super::{Action, Permissions};
use crate::config::Cms;
use crate::graphql::document::{Operation, OperationKind, RootField};
use crate::graphql::GraphqlError;
use crate::policy::PrincipalPolicy;
use crate::stage::{EffectiveStage, Locale, Stage};

/// One thing the request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub action: Action,
    pub model: Arc<str>,
    /// Read, Unpublish: the stage; Publish: the target stage.
    pub stage: Option<Stage>,
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

#[allow(clippy::too_many_arguments)]
fn push_reads(
    out: &mut Vec<Need>,
    action: Action,
    model: &Arc<str>,
    stages: &[Stage],
    locales: &[Locale],
) {
    for s in stages {
        if locales.is_empty() {
            out.push(Need {
                action,
                model: model.clone(),
                stage: Some(s.clone()),
                locale: None,
            });
        }
        for l in locales {
            out.push(Need {
                action,
                model: model.clone(),
                stage: Some(s.clone()),
                locale: Some(l.clone()),
            });
        }
    }
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
    // No locale named: the CMS answers in the project's default locale (the first configured).
    let locales = match (&field.locales, header_locales) {
        (Some(names), _) => locales_of(cms, names)?,
        (None, Some(h)) => h.to_vec(),
        (None, None) => cms.locales.first().cloned().into_iter().collect(),
    };
    let mut needs = Vec::new();
    let nested_stage_default: Stage = match kind {
        OperationKind::Query => {
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
                Some(QueryRoot::Read(m)) => push_reads(
                    &mut needs,
                    Action::Read,
                    m,
                    std::slice::from_ref(stage),
                    &locales,
                ),
                Some(QueryRoot::ReadVersions(m)) => needs.push(Need {
                    action: Action::ReadVersions,
                    model: m.clone(),
                    stage: None,
                    locale: None,
                }),
                Some(QueryRoot::Abstract) => {}
                None => return Err(unknown(format!("{} (not a content field)", field.name))),
            }
            stage.clone()
        }
        OperationKind::Mutation => {
            let (mkind, m) = match schema.mutation_roots.get(field.name.as_str()) {
                Some(MutationRoot::Typename) => return Ok(needs),
                Some(MutationRoot::Model(k, m)) => (*k, m.clone()),
                None => return Err(unknown(format!("{} (not a content mutation)", field.name))),
            };
            let draft = draft(cms);
            let mutation_locales: Vec<Locale> = match &field.locales {
                Some(names) => locales_of(cms, names)?,
                None => Vec::new(),
            };
            let per_locale = |needs: &mut Vec<Need>, action: Action, stage: Option<Stage>| {
                if mutation_locales.is_empty() {
                    needs.push(Need {
                        action,
                        model: m.clone(),
                        stage: stage.clone(),
                        locale: None,
                    });
                }
                for l in &mutation_locales {
                    needs.push(Need {
                        action,
                        model: m.clone(),
                        stage: stage.clone(),
                        locale: Some(l.clone()),
                    });
                }
            };
            match mkind {
                MutationKind::Create => {
                    per_locale(&mut needs, Action::Create, None);
                    push_reads(
                        &mut needs,
                        Action::Read,
                        &m,
                        std::slice::from_ref(&draft),
                        &[],
                    );
                }
                MutationKind::Update => {
                    per_locale(&mut needs, Action::Update, None);
                    push_reads(
                        &mut needs,
                        Action::Read,
                        &m,
                        std::slice::from_ref(&draft),
                        &[],
                    );
                }
                MutationKind::Upsert => {
                    per_locale(&mut needs, Action::Create, None);
                    per_locale(&mut needs, Action::Update, None);
                    push_reads(
                        &mut needs,
                        Action::Read,
                        &m,
                        std::slice::from_ref(&draft),
                        &[],
                    );
                }
                MutationKind::Delete => {
                    per_locale(&mut needs, Action::Delete, None);
                    push_reads(&mut needs, Action::Read, &m, &cms.stages, &[]);
                    for s in cms.stages.iter().filter(|s| **s != draft) {
                        needs.push(Need {
                            action: Action::Unpublish,
                            model: m.clone(),
                            stage: Some(s.clone()),
                            locale: None,
                        });
                    }
                }
                MutationKind::Publish => {
                    let targets = match &field.to {
                        Some(names) => names
                            .iter()
                            .map(|n| stage_of(cms, n, "to"))
                            .collect::<Result<Vec<_>, _>>()?,
                        None => vec![published(cms)],
                    };
                    for t in targets {
                        per_locale(&mut needs, Action::Publish, Some(t));
                    }
                    push_reads(
                        &mut needs,
                        Action::Read,
                        &m,
                        std::slice::from_ref(&draft),
                        &[],
                    );
                }
                MutationKind::Unpublish => {
                    let sources = match &field.from {
                        Some(names) => names
                            .iter()
                            .map(|n| stage_of(cms, n, "from"))
                            .collect::<Result<Vec<_>, _>>()?,
                        None => vec![published(cms)],
                    };
                    for s in sources {
                        per_locale(&mut needs, Action::Unpublish, Some(s));
                    }
                    push_reads(&mut needs, Action::Read, &m, &cms.stages, &[]);
                }
            }
            draft
        }
    };
    for read in &field.reads {
        let stages = match &read.stages {
            Some(names) => names
                .iter()
                .map(|n| stage_of(cms, n, "stage"))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![nested_stage_default.clone()],
        };
        let read_locales = match &read.locales {
            Some(names) => locales_of(cms, names)?,
            None if kind == OperationKind::Mutation => Vec::new(),
            None => locales.clone(),
        };
        push_reads(
            &mut needs,
            Action::Read,
            &read.model,
            &stages,
            &read_locales,
        );
    }
    Ok(needs)
}

/// Whether some grant covers the need.
pub fn granted(perms: &Permissions, need: &Need) -> bool {
    let model: &str = &need.model;
    perms.grants().iter().any(|g| {
        g.action == need.action
            && g.models.allows(model)
            && need
                .locale
                .as_ref()
                .is_none_or(|l| g.locales.allows(l) || need.action == Action::ReadVersions)
            && match need.action {
                Action::Read | Action::Unpublish => {
                    need.stage.as_ref().is_none_or(|s| g.stages.allows(s))
                }
                Action::Publish => {
                    g.from_stages.allows(&Stage::new("DRAFT"))
                        && need.stage.as_ref().is_none_or(|s| g.to_stages.allows(s))
                }
                Action::ReadVersions | Action::Create | Action::Update | Action::Delete => true,
            }
    })
}
