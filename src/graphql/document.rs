//! Parsing the GraphQL document and selecting the operation to run.
//!
//! apollo-parser is run with a recursion and a token limit, so a 10 000-deep or enormous
//! document fails fast without a stack overflow. Root fields are collected through fragment
//! spreads and inline fragments at the root (`... on Query`, named fragments spread at the
//! root), guarding against fragment cycles with an explicit stack.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use apollo_parser::cst::{self, CstNode};
use apollo_parser::Parser;
use serde_json::{Map, Value};

use super::request::GraphqlRequest;
use super::GraphqlError;
use crate::permissions::schema::SchemaMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    Query,
    Mutation,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Mutation => "mutation",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub recursion: usize,
    pub tokens: usize,
    /// Fields after expanding every fragment, computed per fragment without expanding.
    pub expanded_fields: u64,
    pub aliases: usize,
    pub root_fields: usize,
}

impl ParseLimits {
    pub const DEFAULT: ParseLimits = ParseLimits {
        recursion: 64,
        tokens: 15_000,
        expanded_fields: 10_000,
        aliases: 100,
        root_fields: 30,
    };
}

/// A root field of the selected operation with the arguments the gateway decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootField {
    pub name: String,
    pub alias: Option<String>,
    /// The `stage:` argument, resolved through variables; `None` when absent or null.
    pub stage: Option<String>,
    /// The `locales:` argument, resolved through variables; `None` when absent or null.
    pub locales: Option<Vec<String>>,
    /// Publish mutations: the `to:` stages; `None` when absent (the schema default applies).
    pub to: Option<Vec<String>>,
    /// Unpublish mutations: the `from:` stages.
    pub from: Option<Vec<String>>,
    /// Every model read inside the field's selection set (with schema knowledge).
    pub reads: Vec<NestedRead>,
    /// A field inside the selection the schema map cannot resolve (`Type.field`): denied.
    pub unresolved: Option<String>,
}

/// A model read somewhere below a root field. `stages`/`locales` are set when a nested
/// argument (`stage:`, `stages:`, `locales:`) overrides the root field's context.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NestedRead {
    pub model: Arc<str>,
    pub stages: Option<Vec<String>>,
    pub locales: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub kind: OperationKind,
    pub name: Option<String>,
    pub root_fields: Vec<RootField>,
}

/// The selected operation, plus every other operation of the document: all of them are
/// authorized, so a document cannot smuggle a forbidden operation past the check by relying
/// on how the upstream picks one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub operation: Operation,
    pub others: Vec<Operation>,
}

/// Parses `req.query`, selects the operation named by `operationName`, and (with a schema map)
/// resolves every model each root field reads.
pub fn parse_document(
    req: &GraphqlRequest,
    limits: ParseLimits,
    schema: Option<&SchemaMap>,
) -> Result<Document, GraphqlError> {
    let tree = Parser::new(&req.query)
        .recursion_limit(limits.recursion)
        .token_limit(limits.tokens)
        .parse();
    if let Some(e) = tree.errors().next() {
        if e.is_limit() {
            let what = if e.message().contains("token") {
                "token"
            } else {
                "depth"
            };
            let limit = if what == "token" {
                limits.tokens
            } else {
                limits.recursion
            };
            return Err(GraphqlError::Limit { what, limit });
        }
        return Err(GraphqlError::Syntax {
            message: e.message().to_string(),
            index: e.index(),
        });
    }
    let doc = tree.document();
    let mut operations = Vec::new();
    let mut fragments: HashMap<String, cst::FragmentDefinition> = HashMap::new();
    for def in doc.definitions() {
        match def {
            cst::Definition::OperationDefinition(op) => operations.push(op),
            cst::Definition::FragmentDefinition(f) => {
                let name = f
                    .fragment_name()
                    .and_then(|n| n.name())
                    .map(|n| n.text().to_string())
                    .unwrap_or_default();
                if fragments.insert(name.clone(), f).is_some() {
                    return Err(GraphqlError::Operation(format!(
                        "fragment {name:?} is defined more than once"
                    )));
                }
            }
            other => {
                return Err(GraphqlError::Operation(format!(
                    "a request document may contain only operations and fragments, found {}",
                    other.kind()
                )))
            }
        }
    }
    let selected = select(&operations, req.operation_name.as_deref())?;
    // Size limits before any walk: fragment expansion is costed per fragment, never expanded.
    let mut cost = Cost {
        fragments: &fragments,
        memo: HashMap::new(),
        stack: Vec::new(),
    };
    let mut expanded = 0u64;
    let mut aliases = 0u64;
    for op in &operations {
        if let Some(set) = op.selection_set() {
            let (fields, al) = cost.of_set(&set)?;
            expanded = expanded.saturating_add(fields);
            aliases = aliases.saturating_add(al);
        }
    }
    if expanded > limits.expanded_fields {
        return Err(GraphqlError::Limit {
            what: "expanded field",
            limit: limits.expanded_fields as usize,
        });
    }
    if aliases > limits.aliases as u64 {
        return Err(GraphqlError::Limit {
            what: "alias",
            limit: limits.aliases,
        });
    }
    let mut analyzed = Vec::with_capacity(operations.len());
    for op in &operations {
        let a = analyze_operation(op, req, &fragments, schema)?;
        if a.root_fields.len() > limits.root_fields {
            return Err(GraphqlError::Limit {
                what: "root field",
                limit: limits.root_fields,
            });
        }
        analyzed.push(a);
    }
    let operation = analyzed.remove(selected);
    Ok(Document {
        operation,
        others: analyzed,
    })
}

/// The selected operation only (tests and tools).
pub fn parse_operation(
    req: &GraphqlRequest,
    limits: ParseLimits,
) -> Result<Operation, GraphqlError> {
    parse_document(req, limits, None).map(|d| d.operation)
}

fn analyze_operation(
    op: &cst::OperationDefinition,
    req: &GraphqlRequest,
    fragments: &HashMap<String, cst::FragmentDefinition>,
    schema: Option<&SchemaMap>,
) -> Result<Operation, GraphqlError> {
    let kind = match op.operation_type() {
        None => OperationKind::Query,
        Some(t) if t.query_token().is_some() => OperationKind::Query,
        Some(t) if t.mutation_token().is_some() => OperationKind::Mutation,
        Some(_) => return Err(GraphqlError::Subscription),
    };
    let defaults = variable_defaults(op);
    let resolver = Resolver {
        variables: &req.variables,
        defaults: &defaults,
    };
    let mut root_fields = Vec::new();
    let mut stack = Vec::new();
    if let Some(set) = op.selection_set() {
        let root_type = schema.map(|s| match kind {
            OperationKind::Query => s.query_type.clone(),
            OperationKind::Mutation => s
                .mutation_type
                .clone()
                .unwrap_or_else(|| Arc::from("Mutation")),
        });
        let ctx = RootCtx {
            fragments,
            resolver: &resolver,
            schema,
            root_type,
        };
        collect_root_fields(&set, &ctx, &mut stack, &mut root_fields)?;
    }
    Ok(Operation {
        kind,
        name: op.name().map(|n| n.text().to_string()),
        root_fields,
    })
}

/// Per-fragment cost memo: (expanded fields, aliases), saturating, cycle-checked.
struct Cost<'a> {
    fragments: &'a HashMap<String, cst::FragmentDefinition>,
    memo: HashMap<String, (u64, u64)>,
    stack: Vec<String>,
}

impl Cost<'_> {
    fn of_set(&mut self, set: &cst::SelectionSet) -> Result<(u64, u64), GraphqlError> {
        let (mut fields, mut aliases) = (0u64, 0u64);
        for sel in set.selections() {
            let (f, a) = match sel {
                cst::Selection::Field(f) => {
                    let (inner_f, inner_a) = match f.selection_set() {
                        Some(inner) => self.of_set(&inner)?,
                        None => (0, 0),
                    };
                    (
                        inner_f.saturating_add(1),
                        inner_a.saturating_add(u64::from(f.alias().is_some())),
                    )
                }
                cst::Selection::InlineFragment(i) => match i.selection_set() {
                    Some(inner) => self.of_set(&inner)?,
                    None => (0, 0),
                },
                cst::Selection::FragmentSpread(s) => {
                    let name = s
                        .fragment_name()
                        .and_then(|n| n.name())
                        .map(|n| n.text().to_string())
                        .unwrap_or_default();
                    self.of_fragment(&name)?
                }
            };
            fields = fields.saturating_add(f);
            aliases = aliases.saturating_add(a);
        }
        Ok((fields, aliases))
    }

    fn of_fragment(&mut self, name: &str) -> Result<(u64, u64), GraphqlError> {
        if let Some(c) = self.memo.get(name) {
            return Ok(*c);
        }
        if self.stack.iter().any(|n| n == name) {
            return Err(GraphqlError::Operation(format!(
                "fragment {name:?} spreads itself (cycle)"
            )));
        }
        let frag = self
            .fragments
            .get(name)
            .ok_or_else(|| GraphqlError::Operation(format!("unknown fragment {name:?}")))?;
        let Some(set) = frag.selection_set() else {
            return Ok((0, 0));
        };
        self.stack.push(name.to_string());
        let c = self.of_set(&set)?;
        self.stack.pop();
        self.memo.insert(name.to_string(), c);
        Ok(c)
    }
}

fn select(ops: &[cst::OperationDefinition], name: Option<&str>) -> Result<usize, GraphqlError> {
    match name {
        Some(wanted) => {
            let mut found = ops
                .iter()
                .enumerate()
                .filter(|(_, o)| o.name().is_some_and(|n| n.text() == wanted));
            match (found.next(), found.next()) {
                (Some((i, _)), None) => Ok(i),
                (Some(_), Some(_)) => Err(GraphqlError::Operation(format!(
                    "several operations are named {wanted:?}"
                ))),
                (None, _) => Err(GraphqlError::Operation(format!(
                    "no operation named {wanted:?} in the document"
                ))),
            }
        }
        None => match ops.len() {
            0 => Err(GraphqlError::Operation(
                "the document contains no operation".into(),
            )),
            1 => Ok(0),
            _ => Err(GraphqlError::Operation(
                "the document contains several operations; operationName is required".into(),
            )),
        },
    }
}

fn variable_defaults(op: &cst::OperationDefinition) -> HashMap<String, cst::Value> {
    let mut out = HashMap::new();
    if let Some(defs) = op.variable_definitions() {
        for d in defs.variable_definitions() {
            if let (Some(name), Some(value)) = (
                d.variable().and_then(|v| v.name()),
                d.default_value().and_then(|v| v.value()),
            ) {
                out.insert(name.text().to_string(), value);
            }
        }
    }
    out
}

struct Resolver<'a> {
    variables: &'a Map<String, Value>,
    defaults: &'a HashMap<String, cst::Value>,
}

impl Resolver<'_> {
    /// The coerced JSON value of an argument: literals as written, variables from the request's
    /// `variables` or else the variable's default.
    fn resolve(&self, value: &cst::Value) -> Value {
        match value {
            cst::Value::Variable(v) => {
                let name = v.name().map(|n| n.text().to_string()).unwrap_or_default();
                match self.variables.get(&name) {
                    Some(v) => v.clone(),
                    None => match self.defaults.get(&name) {
                        // A default is a constant (no variables inside), so this cannot loop.
                        Some(d) => self.resolve(d),
                        None => Value::Null,
                    },
                }
            }
            cst::Value::EnumValue(e) => Value::String(e.text().to_string()),
            cst::Value::StringValue(s) => Value::String(String::from(s)),
            cst::Value::ListValue(l) => {
                Value::Array(l.values().map(|v| self.resolve(&v)).collect())
            }
            cst::Value::NullValue(_) => Value::Null,
            other => Value::String(other.syntax().text().to_string()),
        }
    }
}

struct RootCtx<'a> {
    fragments: &'a HashMap<String, cst::FragmentDefinition>,
    resolver: &'a Resolver<'a>,
    schema: Option<&'a SchemaMap>,
    /// `Query` or `Mutation` in the schema (when a schema map is given).
    root_type: Option<Arc<str>>,
}

fn collect_root_fields(
    set: &cst::SelectionSet,
    ctx: &RootCtx,
    stack: &mut Vec<String>,
    out: &mut Vec<RootField>,
) -> Result<(), GraphqlError> {
    for sel in set.selections() {
        match sel {
            cst::Selection::Field(f) => out.push(root_field(&f, ctx)?),
            cst::Selection::InlineFragment(i) => {
                if let Some(inner) = i.selection_set() {
                    collect_root_fields(&inner, ctx, stack, out)?;
                }
            }
            cst::Selection::FragmentSpread(s) => {
                let name = s
                    .fragment_name()
                    .and_then(|n| n.name())
                    .map(|n| n.text().to_string())
                    .unwrap_or_default();
                if stack.contains(&name) {
                    return Err(GraphqlError::Operation(format!(
                        "fragment {name:?} spreads itself (cycle)"
                    )));
                }
                let frag = ctx
                    .fragments
                    .get(&name)
                    .ok_or_else(|| GraphqlError::Operation(format!("unknown fragment {name:?}")))?;
                if let Some(inner) = frag.selection_set() {
                    stack.push(name);
                    collect_root_fields(&inner, ctx, stack, out)?;
                    stack.pop();
                }
            }
        }
    }
    Ok(())
}

fn string_list(value: Value, what: &'static str) -> Result<Option<Vec<String>>, GraphqlError> {
    match value {
        Value::Null => Ok(None),
        // GraphQL input coercion: a single value where a list is expected.
        Value::String(s) => Ok(Some(vec![s])),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(GraphqlError::Argument {
                    what,
                    message: format!("expected a name, got {other}"),
                }),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Err(GraphqlError::Argument {
            what,
            message: format!("expected a list, got {other}"),
        }),
    }
}

/// The context arguments of one field: `stage`, `stages` (e.g. `documentInStages`), `locales`,
/// and for publish/unpublish `to`/`from`. `@include`/`@skip` are deliberately ignored: a field
/// is checked whether or not a directive would drop it.
#[derive(Default)]
struct FieldArgs {
    stage: Option<String>,
    stages: Option<Vec<String>>,
    locales: Option<Vec<String>>,
    to: Option<Vec<String>>,
    from: Option<Vec<String>>,
}

fn field_args(f: &cst::Field, resolver: &Resolver) -> Result<FieldArgs, GraphqlError> {
    let mut out = FieldArgs::default();
    let Some(args) = f.arguments() else {
        return Ok(out);
    };
    for arg in args.arguments() {
        let (Some(arg_name), Some(value)) = (arg.name(), arg.value()) else {
            continue;
        };
        match arg_name.text().as_str() {
            "stage" => {
                out.stage = match resolver.resolve(&value) {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    other => {
                        return Err(GraphqlError::Argument {
                            what: "stage",
                            message: format!("expected a stage, got {other}"),
                        })
                    }
                }
            }
            "stages" => out.stages = string_list(resolver.resolve(&value), "stages")?,
            "locales" => out.locales = string_list(resolver.resolve(&value), "locales")?,
            "to" => out.to = string_list(resolver.resolve(&value), "to")?,
            "from" => out.from = string_list(resolver.resolve(&value), "from")?,
            _ => {}
        }
    }
    Ok(out)
}

impl FieldArgs {
    /// Fills the arguments the document left out with the schema's defaults, so a default such
    /// as `documentInStages(stages: … = [DRAFT, PUBLISHED])` is checked like an explicit value.
    fn with_defaults(mut self, schema: &SchemaMap, parent: &str, field: &str) -> Self {
        let d = |arg: &str| {
            schema
                .arg_default(parent, field, arg)
                .map(<[String]>::to_vec)
        };
        if self.stage.is_none() {
            self.stage = d("stage").and_then(|v| v.into_iter().next());
        }
        if self.stages.is_none() {
            self.stages = d("stages");
        }
        if self.locales.is_none() {
            self.locales = d("locales");
        }
        if self.to.is_none() {
            self.to = d("to");
        }
        if self.from.is_none() {
            self.from = d("from");
        }
        self
    }
}

fn root_field(f: &cst::Field, ctx: &RootCtx) -> Result<RootField, GraphqlError> {
    let name = f.name().map(|n| n.text().to_string()).unwrap_or_default();
    let alias = f
        .alias()
        .and_then(|a| a.name())
        .map(|n| n.text().to_string());
    let mut args = field_args(f, ctx.resolver)?;
    if let (Some(schema), Some(root)) = (ctx.schema, &ctx.root_type) {
        args = args.with_defaults(schema, root, &name);
    }
    let mut reads = BTreeSet::new();
    let mut unresolved = None;
    if let (Some(schema), Some(root)) = (ctx.schema, &ctx.root_type) {
        if !name.starts_with("__") {
            match schema.field_type(root, &name) {
                None => unresolved = Some(format!("{root}.{name}")),
                Some(ty) => {
                    let mut walk = Walk {
                        schema,
                        fragments: ctx.fragments,
                        resolver: ctx.resolver,
                        reads: &mut reads,
                        unresolved: &mut unresolved,
                    };
                    walk.field_selection(f, root, ty, &None, &None)?;
                }
            }
        }
    }
    Ok(RootField {
        name,
        alias,
        stage: args.stage,
        locales: args.locales,
        to: args.to,
        from: args.from,
        reads: reads.into_iter().collect(),
        unresolved,
    })
}

/// Walks a selection set with schema knowledge, recording every model read. The document's
/// expansion cost was bounded before, so walking fragments without memoization is bounded too.
struct Walk<'a, 'b> {
    schema: &'a SchemaMap,
    fragments: &'a HashMap<String, cst::FragmentDefinition>,
    resolver: &'a Resolver<'a>,
    reads: &'b mut BTreeSet<NestedRead>,
    unresolved: &'b mut Option<String>,
}

impl Walk<'_, '_> {
    fn possible(&self, ty: &str) -> Vec<Arc<str>> {
        self.schema
            .types
            .get(ty)
            .map(|t| t.possible.clone())
            .unwrap_or_default()
    }

    fn read(
        &mut self,
        model: &Arc<str>,
        stages: &Option<Vec<String>>,
        locales: &Option<Vec<String>>,
    ) {
        if self.schema.is_model(model) {
            self.reads.insert(NestedRead {
                model: model.clone(),
                stages: stages.clone(),
                locales: locales.clone(),
            });
        }
    }

    /// A field of type `ty`: its sub-selection is walked in the field's argument context. A
    /// field returning a model (or an abstract type) whose selection picks nothing but
    /// `__typename` still reads it: it reveals existence and type.
    fn field_selection(
        &mut self,
        f: &cst::Field,
        parent: &str,
        ty: &Arc<str>,
        stages: &Option<Vec<String>>,
        locales: &Option<Vec<String>>,
    ) -> Result<(), GraphqlError> {
        let name = f.name().map(|n| n.text().to_string()).unwrap_or_default();
        let args = field_args(f, self.resolver)?.with_defaults(self.schema, parent, &name);
        let stages = match (args.stage, args.stages) {
            (Some(s), _) => Some(vec![s]),
            (None, Some(list)) => Some(list),
            (None, None) => stages.clone(),
        };
        let locales = args.locales.or_else(|| locales.clone());
        let possible = self.possible(ty);
        let selected = match f.selection_set() {
            Some(set) => self.set(&set, &possible, &stages, &locales)?,
            None => false,
        };
        if !selected {
            for p in &possible {
                self.read(p, &stages, &locales);
            }
        }
        Ok(())
    }

    /// Returns whether anything but `__typename` was selected.
    fn set(
        &mut self,
        set: &cst::SelectionSet,
        possible: &[Arc<str>],
        stages: &Option<Vec<String>>,
        locales: &Option<Vec<String>>,
    ) -> Result<bool, GraphqlError> {
        let mut selected = false;
        for sel in set.selections() {
            match sel {
                cst::Selection::Field(f) => {
                    let name = f.name().map(|n| n.text().to_string()).unwrap_or_default();
                    if name == "__typename" {
                        continue;
                    }
                    selected = true;
                    for p in possible {
                        self.read(p, stages, locales);
                    }
                    // The field is looked up on the possible types (an interface field exists
                    // on every implementation).
                    match possible.iter().find_map(|p| {
                        self.schema
                            .field_type(p, &name)
                            .map(|t| (p.clone(), t.clone()))
                    }) {
                        Some((parent, ty)) => {
                            self.field_selection(&f, &parent, &ty, stages, locales)?
                        }
                        None => {
                            if self.unresolved.is_none() {
                                let parent = possible
                                    .first()
                                    .map(|p| p.to_string())
                                    .unwrap_or_else(|| "?".into());
                                *self.unresolved = Some(format!("{parent}.{name}"));
                            }
                        }
                    }
                }
                cst::Selection::InlineFragment(i) => {
                    let narrowed = match i
                        .type_condition()
                        .and_then(|c| c.named_type())
                        .and_then(|n| n.name())
                    {
                        Some(cond) => self.narrow(possible, &cond.text()),
                        None => possible.to_vec(),
                    };
                    if let Some(inner) = i.selection_set() {
                        selected |= self.set(&inner, &narrowed, stages, locales)?;
                    }
                }
                cst::Selection::FragmentSpread(s) => {
                    let name = s
                        .fragment_name()
                        .and_then(|n| n.name())
                        .map(|n| n.text().to_string())
                        .unwrap_or_default();
                    let Some(frag) = self.fragments.get(&name) else {
                        return Err(GraphqlError::Operation(format!(
                            "unknown fragment {name:?}"
                        )));
                    };
                    let narrowed = match frag
                        .type_condition()
                        .and_then(|c| c.named_type())
                        .and_then(|n| n.name())
                    {
                        Some(cond) => self.narrow(possible, &cond.text()),
                        None => possible.to_vec(),
                    };
                    if let Some(inner) = frag.selection_set() {
                        selected |= self.set(&inner, &narrowed, stages, locales)?;
                    }
                }
            }
        }
        Ok(selected)
    }

    /// The possible types that also satisfy a type condition; a condition the schema does not
    /// know keeps nothing (and GraphQL validation would reject it upstream anyway).
    fn narrow(&self, possible: &[Arc<str>], condition: &str) -> Vec<Arc<str>> {
        let cond = self.possible(condition);
        possible
            .iter()
            .filter(|p| cond.contains(p))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ParseLimits = ParseLimits::DEFAULT;

    fn req(q: &str, vars: Value, op: Option<&str>) -> GraphqlRequest {
        GraphqlRequest {
            query: q.into(),
            operation_name: op.map(Into::into),
            variables: vars.as_object().cloned().unwrap_or_default(),
            extensions: None,
        }
    }

    #[test]
    fn stage_from_literal_variable_and_default() {
        let op = parse_operation(
            &req(
                "{ posts(stage: DRAFT) { id } authors { id } }",
                Value::Null,
                None,
            ),
            LIMITS,
        )
        .unwrap();
        assert_eq!(op.kind, OperationKind::Query);
        assert_eq!(op.root_fields[0].stage.as_deref(), Some("DRAFT"));
        assert_eq!(op.root_fields[1].stage, None);
        let q =
            "query Q($s: Stage = DRAFT, $l: [Locale!]) { posts(stage: $s, locales: $l) { id } }";
        let op = parse_operation(
            &req(q, serde_json::json!({"l": ["de", "en"]}), None),
            LIMITS,
        )
        .unwrap();
        assert_eq!(op.root_fields[0].stage.as_deref(), Some("DRAFT"));
        assert_eq!(
            op.root_fields[0].locales,
            Some(vec!["de".to_string(), "en".to_string()])
        );
        let op =
            parse_operation(&req(q, serde_json::json!({"s": "PUBLISHED"}), None), LIMITS).unwrap();
        assert_eq!(op.root_fields[0].stage.as_deref(), Some("PUBLISHED"));
    }

    #[test]
    fn root_fragments_are_followed_and_cycles_refused() {
        let q = "query { ...F ... on Query { authors(stage: DRAFT) { id } } } fragment F on Query { posts { id } }";
        let op = parse_operation(&req(q, Value::Null, None), LIMITS).unwrap();
        let names: Vec<_> = op.root_fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["posts", "authors"]);
        let q = "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert!(matches!(
            parse_operation(&req(q, Value::Null, None), LIMITS),
            Err(GraphqlError::Operation(_))
        ));
    }

    #[test]
    fn operation_selection() {
        let q = "query A { posts { id } } mutation B { deletePost(where: {id: \"1\"}) { id } }";
        assert!(parse_operation(&req(q, Value::Null, None), LIMITS).is_err());
        assert_eq!(
            parse_operation(&req(q, Value::Null, Some("B")), LIMITS)
                .unwrap()
                .kind,
            OperationKind::Mutation
        );
        assert!(parse_operation(&req(q, Value::Null, Some("C")), LIMITS).is_err());
        assert!(matches!(
            parse_operation(&req("subscription { a }", Value::Null, None), LIMITS),
            Err(GraphqlError::Subscription)
        ));
        assert!(matches!(
            parse_operation(&req("{ posts { id }", Value::Null, None), LIMITS),
            Err(GraphqlError::Syntax { .. })
        ));
    }

    #[test]
    fn deep_nesting_fails_fast_without_overflow() {
        let q = format!("{}{}", "{a".repeat(10_000), "}".repeat(10_000));
        assert!(matches!(
            parse_operation(&req(&q, Value::Null, None), LIMITS),
            Err(GraphqlError::Limit { .. })
        ));
    }
}
