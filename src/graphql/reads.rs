//! What the CMS will touch for a root field: every model it reads (selections, relation
//! filters, nested context changes) and every model a mutation payload writes, each with the
//! stages and locales it happens in.
//!
//! The walk follows the schema map, never field names alone: a field's sub-selection is read
//! in the field's context (`stage:`/`stages:`/`locales:` change it below, with their schema
//! defaults for nested fields); argument values are walked by their input types, so a relation
//! filter (`where: { author: { … } }`) reads the related model and a payload's
//! `localizations` name the locales it writes. Depth is checked before every recursion and
//! input values are walked within a node budget, so the walk is bounded in stack and time.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use apollo_parser::cst;
use serde_json::Value;

use super::args::{self, Argument, Resolver, MAX_VALUE_DEPTH};
use super::{fragment_name, GraphqlError, OperationError};
use crate::schema::{InputRole, SchemaMap};

/// What the CMS does with a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessKind {
    Read,
    ReadVersions,
    Create,
    Update,
    Delete,
}

/// The stages an access happens in: the root field's effective stage (`field`), and names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stages {
    pub field: bool,
    pub names: Vec<String>,
}

/// The locales an access happens in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locales {
    /// The root field's locales (its `locales:` argument, else the request's).
    pub field: bool,
    /// The request's locales: the `gcms-locales` header, else the CMS's default locale.
    pub request: bool,
    /// The CMS's default locale.
    pub default: bool,
    /// Every configured locale (a delete removes them all).
    pub all: bool,
    pub names: Vec<String>,
}

fn add_names(names: &mut Vec<String>, more: &BTreeSet<String>) {
    names.extend(more.iter().cloned());
    names.sort();
    names.dedup();
}

impl Stages {
    pub fn add(&mut self, more: &BTreeSet<String>) {
        add_names(&mut self.names, more);
    }
}

impl Locales {
    pub fn add(&mut self, more: &BTreeSet<String>) {
        add_names(&mut self.names, more);
    }

    fn union(&self, other: &Locales) -> Locales {
        let mut names = self.names.clone();
        names.extend(other.names.iter().cloned());
        names.sort();
        names.dedup();
        Locales {
            field: self.field || other.field,
            request: self.request || other.request,
            default: self.default || other.default,
            all: self.all || other.all,
            names,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Access {
    pub kind: AccessKind,
    pub model: Arc<str>,
    pub stages: Stages,
    pub locales: Locales,
}

/// The context a selection is read in.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub stages: Stages,
    pub locales: Locales,
}

impl Ctx {
    /// A root field's context; `names`: stages the root field itself names beyond its
    /// effective stage (a mutation's `stage:` argument).
    pub fn root(names: Vec<String>) -> Self {
        Self {
            stages: Stages { field: true, names },
            locales: Locales {
                field: true,
                ..Locales::default()
            },
        }
    }
}

/// Stages and locales named inside argument values.
#[derive(Debug, Default)]
pub struct Found {
    pub stages: BTreeSet<String>,
    pub locales: BTreeSet<String>,
}

/// Arguments whose values set a field's context instead of being walked as input.
const CONTEXT_ARGS: &[&str] = &[
    "stage",
    "stages",
    "locales",
    "to",
    "from",
    "stageOverride",
    "inheritLocale",
];

pub struct Walk<'a, 'b> {
    pub schema: &'a SchemaMap,
    pub fragments: &'a HashMap<String, cst::FragmentDefinition>,
    pub resolver: &'a Resolver<'a>,
    pub accesses: &'b mut BTreeSet<Access>,
    pub unresolved: &'b mut Option<String>,
    /// JSON nodes left to walk (shared with the resolver that built them).
    pub budget: &'a Cell<u64>,
    /// Field visits left for the document: a field under an abstract type is walked once per
    /// possible type that has it, so a union whose members share a union-typed field would
    /// otherwise multiply at every level (M^depth from a kilobyte).
    pub steps: &'a Cell<u64>,
    pub max_depth: usize,
}

/// Distinct stage or locale names one field's arguments may name. Real projects have a
/// handful; the names travel with every access below the field, so they are capped before
/// they can multiply with a large selection.
pub const MAX_NAMES: usize = 32;

fn too_many_names() -> GraphqlError {
    GraphqlError::Limit {
        what: "stage or locale names in arguments",
        limit: MAX_NAMES,
    }
}

impl Walk<'_, '_> {
    fn possible(&self, ty: &str) -> Vec<Arc<str>> {
        self.schema
            .types
            .get(ty)
            .map(|t| t.possible.clone())
            .unwrap_or_default()
    }

    fn access(&mut self, kind: AccessKind, model: &Arc<str>, stages: &Stages, locales: &Locales) {
        if self.schema.is_model(model) {
            self.accesses.insert(Access {
                kind,
                model: model.clone(),
                stages: stages.clone(),
                locales: locales.clone(),
            });
        }
    }

    /// Walks the argument values of `parent.field` by their schema types (skipping `skip`),
    /// recording filter reads and payload writes in `ctx`; returns the stages and locales the
    /// values name.
    pub fn arguments(
        &mut self,
        arguments: &[Argument],
        parent: &str,
        field: &str,
        ctx: &Ctx,
        skip: &[&str],
    ) -> Result<Found, GraphqlError> {
        let mut found = Found::default();
        for a in arguments {
            if skip.contains(&a.name.as_str()) || CONTEXT_ARGS.contains(&a.name.as_str()) {
                continue;
            }
            if let Some(ty) = self.schema.arg_type(parent, field, &a.name).cloned() {
                self.input(&a.value, &ty, ctx, &mut found, 0)?;
            }
        }
        if found.stages.len() > MAX_NAMES || found.locales.len() > MAX_NAMES {
            return Err(too_many_names());
        }
        Ok(found)
    }

    /// One argument value of input type `ty`.
    fn input(
        &mut self,
        value: &Value,
        ty: &str,
        ctx: &Ctx,
        found: &mut Found,
        depth: usize,
    ) -> Result<(), GraphqlError> {
        if depth > MAX_VALUE_DEPTH {
            return Err(GraphqlError::value_too_deep());
        }
        args::spend(self.budget, 1, "input value")?;
        if found.stages.len() > MAX_NAMES || found.locales.len() > MAX_NAMES {
            return Err(too_many_names());
        }
        if let Value::Array(items) = value {
            for v in items {
                self.input(v, ty, ctx, found, depth + 1)?;
            }
            return Ok(());
        }
        match ty {
            "Stage" => {
                if let Value::String(s) = value {
                    found.stages.insert(s.clone());
                }
                return Ok(());
            }
            "Locale" => {
                if let Value::String(s) = value {
                    found.locales.insert(s.clone());
                }
                return Ok(());
            }
            _ => {}
        }
        let schema = self.schema;
        let Some(def) = schema.inputs.get(ty) else {
            return Ok(());
        };
        let Value::Object(map) = value else {
            // `where: { author: null }` still evaluates the relation: it reveals whether one
            // exists.
            if let Some((InputRole::Filter, model)) = &def.role {
                self.access(AccessKind::Read, model, &ctx.stages, &ctx.locales);
            }
            return Ok(());
        };
        let role = def.role.clone();
        let fields = &def.fields;
        match role {
            Some((write @ (InputRole::Create | InputRole::Update), model)) => {
                // A payload: plain fields write the default locale, `localizations` the
                // locales it names. Nested relation payloads are accesses of their own.
                let mut written = Found::default();
                let mut inner = Found::default();
                let mut default = map.is_empty();
                // What a payload looks up (`connect`, nested `where`) the CMS finds in the
                // default locale too.
                let payload_ctx = Ctx {
                    stages: ctx.stages.clone(),
                    locales: ctx.locales.union(&Locales {
                        default: true,
                        ..Locales::default()
                    }),
                };
                for (k, v) in map {
                    let Some(fty) = fields.get(k.as_str()) else {
                        continue;
                    };
                    if k == "localizations" {
                        self.input(v, fty, &payload_ctx, &mut written, depth + 1)?;
                    } else {
                        default = true;
                        self.input(v, fty, &payload_ctx, &mut inner, depth + 1)?;
                    }
                }
                // A new document always gets its default-locale localization.
                let (kind, default) = match write {
                    InputRole::Create => (AccessKind::Create, true),
                    _ => (AccessKind::Update, default),
                };
                let mut locales = Locales {
                    default,
                    ..Locales::default()
                };
                locales.add(&written.locales);
                self.access(kind, &model, &ctx.stages, &locales);
                found.stages.extend(inner.stages);
                found.stages.extend(written.stages);
                found.locales.extend(inner.locales);
            }
            other => {
                let mut local = Found::default();
                for (k, v) in map {
                    if let Some(fty) = fields.get(k.as_str()) {
                        self.input(v, fty, ctx, &mut local, depth + 1)?;
                    }
                }
                match other {
                    Some((InputRole::Filter, model)) => {
                        let mut stages = ctx.stages.clone();
                        stages.add(&local.stages);
                        let mut locales = ctx.locales.clone();
                        locales.add(&local.locales);
                        self.access(AccessKind::Read, &model, &stages, &locales);
                    }
                    // A relation write's `delete` removes the related documents.
                    Some((InputRole::Relation, model))
                        if map
                            .get("delete")
                            .is_some_and(|v| !v.is_null() && *v != false) =>
                    {
                        let all = Locales {
                            all: true,
                            ..Locales::default()
                        };
                        self.access(AccessKind::Delete, &model, &ctx.stages, &all);
                    }
                    _ => {}
                }
                found.stages.extend(local.stages);
                found.locales.extend(local.locales);
            }
        }
        Ok(())
    }

    /// A field of type `ty` whose arguments set `ctx` (already applied by the caller): its
    /// sub-selection is read at absolute nesting `depth`. The field reads every model it can
    /// return, whatever its selection picks: the CMS loads the document to answer even
    /// `{ __typename }`, and an abstract field (`node(id:)`, a union relation) whose type
    /// conditions skip a model still tells apart "a document of another type" (`{}`) from
    /// "none" (`null`).
    pub fn selection(
        &mut self,
        f: &cst::Field,
        ty: &Arc<str>,
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), GraphqlError> {
        let possible = self.possible(ty);
        for p in &possible {
            self.access(AccessKind::Read, p, &ctx.stages, &ctx.locales);
        }
        if let Some(set) = f.selection_set() {
            self.set(&set, &possible, ctx, depth + 1)?;
        }
        Ok(())
    }

    /// A nested field `parent.f` of type `ty`, in the parent's context.
    fn field(
        &mut self,
        f: &cst::Field,
        parent: &Arc<str>,
        ty: &Arc<str>,
        outer: &Ctx,
        depth: usize,
    ) -> Result<(), GraphqlError> {
        args::spend(self.steps, 1, "schema walk step")?;
        let name = f.name().map(|n| n.text().to_string()).unwrap_or_default();
        let arguments = args::arguments(f, self.resolver)?;
        let get = |arg: &str| -> Option<Value> {
            match arguments.iter().find(|a| a.name == arg) {
                Some(Argument {
                    value: Value::Null, ..
                })
                | None => self
                    .schema
                    .arg_default(parent, &name, arg)
                    .map(|d| Value::from(d.to_vec())),
                Some(a) => Some(a.value.clone()),
            }
        };
        let mut ctx = outer.clone();
        if let Some(s) = get("stage")
            .as_ref()
            .map(|v| args::single_name(v, "stage"))
            .transpose()?
            .flatten()
        {
            ctx.stages = Stages {
                field: false,
                names: vec![s],
            };
        } else if let Some(list) = get("stages")
            .as_ref()
            .map(|v| args::string_list(v, "stages"))
            .transpose()?
            .flatten()
        {
            ctx.stages = Stages {
                field: false,
                names: list
                    .into_iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            };
        }
        if let Some(s) = get("stageOverride")
            .as_ref()
            .map(|v| args::single_name(v, "stageOverride"))
            .transpose()?
            .flatten()
        {
            ctx.stages.add(&BTreeSet::from([s]));
        }
        match get("locales")
            .as_ref()
            .map(|v| args::string_list(v, "locales"))
            .transpose()?
            .flatten()
        {
            // An empty list falls back to the request's locales (header, else default).
            Some(list) if list.is_empty() => {
                ctx.locales = ctx.locales.union(&Locales {
                    request: true,
                    ..Locales::default()
                });
            }
            Some(list) => {
                ctx.locales = Locales {
                    names: list
                        .into_iter()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    ..Locales::default()
                };
            }
            None => {}
        }
        // `documentInStages` answers in the default (fallback) locale unless `inheritLocale`.
        if name == "documentInStages" && get("inheritLocale") != Some(Value::Bool(true)) {
            ctx.locales = ctx.locales.union(&Locales {
                request: true,
                default: true,
                ..Locales::default()
            });
        }
        let found = self.arguments(&arguments, parent, &name, &ctx, &[])?;
        ctx.stages.add(&found.stages);
        ctx.locales.add(&found.locales);
        if ctx.stages.names.len() > MAX_NAMES || ctx.locales.names.len() > MAX_NAMES {
            return Err(too_many_names());
        }
        // Version history returns another stage's data: Read versions on the document's model.
        if name == "history" && self.schema.is_model(parent) {
            self.access(AccessKind::ReadVersions, parent, &ctx.stages, &ctx.locales);
        }
        self.selection(f, ty, &ctx, depth)
    }

    /// The fields of a selection set on the (narrowed) `possible` types.
    fn set(
        &mut self,
        set: &cst::SelectionSet,
        possible: &[Arc<str>],
        ctx: &Ctx,
        depth: usize,
    ) -> Result<(), GraphqlError> {
        if depth > self.max_depth {
            return Err(GraphqlError::too_deep(self.max_depth));
        }
        for sel in set.selections() {
            match sel {
                cst::Selection::Field(f) => {
                    let name = f.name().map(|n| n.text().to_string()).unwrap_or_default();
                    if name == "__typename" {
                        continue;
                    }
                    // The field is walked on every possible type that has it: an interface
                    // field may return a different type (and take different arguments) on
                    // each implementation.
                    let schema = self.schema;
                    let mut any = false;
                    for p in possible {
                        if let Some(ty) = schema.field_type(p, &name) {
                            any = true;
                            self.field(&f, p, ty, ctx, depth)?;
                        }
                    }
                    if !any && self.unresolved.is_none() {
                        let parent = possible
                            .first()
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "?".into());
                        *self.unresolved = Some(format!("{parent}.{name}"));
                    }
                }
                cst::Selection::InlineFragment(i) => {
                    let narrowed = self.narrow(possible, i.type_condition());
                    if let Some(inner) = i.selection_set() {
                        self.set(&inner, &narrowed, ctx, depth + 1)?;
                    }
                }
                cst::Selection::FragmentSpread(s) => {
                    let name = fragment_name(&s);
                    let Some(frag) = self.fragments.get(&name) else {
                        return Err(OperationError::UnknownFragment(name.to_string()).into());
                    };
                    let narrowed = self.narrow(possible, frag.type_condition());
                    if let Some(inner) = frag.selection_set() {
                        self.set(&inner, &narrowed, ctx, depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The possible types that also satisfy a fragment's type condition (none: all of them);
    /// a condition the schema does not know keeps nothing (and GraphQL validation would reject
    /// it upstream anyway).
    fn narrow(
        &self,
        possible: &[Arc<str>],
        condition: Option<cst::TypeCondition>,
    ) -> Vec<Arc<str>> {
        let Some(name) = condition
            .and_then(|c| c.named_type())
            .and_then(|n| n.name())
        else {
            return possible.to_vec();
        };
        let cond = self.possible(&name.text());
        possible
            .iter()
            .filter(|p| cond.contains(p))
            .cloned()
            .collect()
    }
}
