//! Parsing the GraphQL document and selecting the operation to run.
//!
//! apollo-parser is run with a recursion and a token limit, so a 10 000-deep or enormous
//! document fails fast without a stack overflow. Before any walk, [`super::cost`] bounds the
//! document's expanded size and its nesting depth *across fragment spreads*; every later walk
//! ([`super::reads`], the root-field collection here) checks the same depth before it recurses,
//! so no document can make the gateway recurse deeper than `max_depth`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use apollo_parser::cst;
use apollo_parser::Parser;

use super::args::{self, Resolver};
use super::cost::Cost;
use super::reads::{Access, Ctx, Walk};
use super::request::GraphqlRequest;
use super::{fragment_name, GraphqlError, OperationError};
use crate::schema::SchemaMap;

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
    /// Parser recursion, and the logical nesting across fragment spreads.
    pub recursion: usize,
    pub tokens: usize,
    /// Fields after expanding every fragment, computed per fragment without expanding.
    pub expanded_fields: u64,
    pub aliases: usize,
    pub root_fields: usize,
    /// JSON nodes of argument values walked per document (a variable referenced by many
    /// fields is walked once per reference).
    pub input_nodes: u64,
}

impl ParseLimits {
    pub const DEFAULT: ParseLimits = ParseLimits {
        recursion: 64,
        tokens: 15_000,
        expanded_fields: 10_000,
        aliases: 100,
        root_fields: 30,
        input_nodes: 50_000,
    };
}

/// Schema-walk field visits allowed per expanded field (see [`super::reads::Walk::steps`]):
/// enough for an interface field walked on several implementations, far below M^depth.
pub const WALK_STEPS_PER_FIELD: u64 = 8;

/// A root field of an operation with the arguments the gateway decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootField {
    pub name: String,
    pub alias: Option<String>,
    /// The `stage:` argument as the document gives it (literal or variable). A query root's
    /// schema default never fills it: Hygraph's schema carries the default of whoever
    /// introspected it, not the principal's. Mutations: the argument or its schema default.
    pub stage: Option<String>,
    /// The `locales:` argument when it names at least one locale; `[]` and `null` are `None`:
    /// the CMS then serves the request's locales (header, else its default locale).
    pub locales: Option<Vec<String>>,
    /// Publish: the `to:` stages; `None` when absent (the schema default applies).
    pub to: Option<Vec<String>>,
    /// Unpublish: the stages to unpublish from; publish (`…Many…`): the source stage.
    pub from: Option<Vec<String>>,
    /// Publish/unpublish: `withDefaultLocale` (`None`: not given).
    pub with_default_locale: Option<bool>,
    /// Stages and locales named inside the field's argument values (`entities(where: [{stage:
    /// DRAFT}])`, `documentInStages_some: {stage: …}`): the field's data may come from them.
    pub extra_stages: Vec<String>,
    pub extra_locales: Vec<String>,
    /// Everything the CMS does below the root: reads of the selection, of relation filters and
    /// of nested context changes, and the writes of mutation payloads.
    pub accesses: Vec<Access>,
    /// A field inside the selection the schema map cannot resolve (`Type.field`): denied.
    pub unresolved: Option<String>,
    /// Without a schema map (the management endpoint): every field name below the root,
    /// through fragments, deduplicated.
    pub nested: Vec<String>,
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

impl Document {
    /// An estimate of the heap bytes this analysis holds (for the document cache's weigher).
    pub fn weight(&self) -> usize {
        std::iter::once(&self.operation)
            .chain(&self.others)
            .flat_map(|o| &o.root_fields)
            .map(|f| {
                160 + f.name.len()
                    + f.alias.as_ref().map_or(0, String::len)
                    + f.accesses.len() * std::mem::size_of::<Access>()
                    + f.accesses
                        .iter()
                        .map(|a| (a.stages.names.len() + a.locales.names.len()) * 24)
                        .sum::<usize>()
            })
            .sum::<usize>()
            + 128
    }
}

/// Parses `req.query`, selects the operation named by `operationName`, and (with a schema map)
/// resolves everything each root field makes the CMS read or write.
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
            let (what, limit) = if e.message().contains("token") {
                ("token", limits.tokens)
            } else {
                ("depth", limits.recursion)
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
                    return Err(OperationError::DuplicateFragment(name.clone()).into());
                }
            }
            other => return Err(OperationError::NotExecutable(other.kind().to_string()).into()),
        }
    }
    let selected = select(&operations, req.operation_name.as_deref())?;
    // Size and depth before any walk: fragments are costed once each, never expanded.
    let mut cost = Cost::new(&fragments, limits.recursion);
    let mut expanded = 0u64;
    let mut aliases = 0u64;
    for op in &operations {
        if let Some(set) = op.selection_set() {
            let size = cost.of_set(&set, 1)?;
            expanded = expanded.saturating_add(size.fields);
            aliases = aliases.saturating_add(size.aliases);
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
    // Every variable may be built once at full size; repeated references and literals spend the
    // configured budget.
    let budget = std::cell::Cell::new(
        limits
            .input_nodes
            .saturating_add(req.variables.values().map(args::nodes).sum::<u64>()),
    );
    // Field visits of the schema walk: every expanded field once, and a few possible types each.
    let steps = std::cell::Cell::new(limits.expanded_fields.saturating_mul(WALK_STEPS_PER_FIELD));
    let mut analyzed = Vec::with_capacity(operations.len());
    for (i, op) in operations.iter().enumerate() {
        if i == selected {
            if let Some(schema) = schema {
                args::check_variables(op, &req.variables, schema)?;
            }
        }
        let a = analyze_operation(op, req, &fragments, schema, &limits, &budget, &steps)?;
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
    limits: &ParseLimits,
    budget: &std::cell::Cell<u64>,
    steps: &std::cell::Cell<u64>,
) -> Result<Operation, GraphqlError> {
    let kind = match op.operation_type() {
        None => OperationKind::Query,
        Some(t) if t.query_token().is_some() => OperationKind::Query,
        Some(t) if t.mutation_token().is_some() => OperationKind::Mutation,
        Some(_) => return Err(GraphqlError::Subscription),
    };
    let resolver = Resolver::new(op, &req.variables, budget)?;
    let mut root_fields = Vec::new();
    if let Some(set) = op.selection_set() {
        let root_type = schema.map(|s| match kind {
            OperationKind::Query => s.query_type.clone(),
            OperationKind::Mutation => s
                .mutation_type
                .clone()
                .unwrap_or_else(|| Arc::from("Mutation")),
        });
        let mut ctx = RootCtx {
            kind,
            fragments,
            resolver: &resolver,
            schema,
            root_type,
            max_depth: limits.recursion,
            budget,
            steps,
            stack: Vec::new(),
        };
        ctx.collect(&set, 1, &mut root_fields)?;
    }
    Ok(Operation {
        kind,
        name: op.name().map(|n| n.text().to_string()),
        root_fields,
    })
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
                (Some(_), Some(_)) => Err(OperationError::AmbiguousName(wanted.to_string()).into()),
                (None, _) => Err(OperationError::UnknownOperation(wanted.to_string()).into()),
            }
        }
        None => match ops.len() {
            0 => Err(OperationError::NoOperation.into()),
            1 => Ok(0),
            _ => Err(OperationError::NameRequired.into()),
        },
    }
}

struct RootCtx<'a> {
    kind: OperationKind,
    fragments: &'a HashMap<String, cst::FragmentDefinition>,
    resolver: &'a Resolver<'a>,
    schema: Option<&'a SchemaMap>,
    /// `Query` or `Mutation` in the schema (when a schema map is given).
    root_type: Option<Arc<str>>,
    max_depth: usize,
    budget: &'a std::cell::Cell<u64>,
    steps: &'a std::cell::Cell<u64>,
    /// Fragments being expanded at the root (cycle guard).
    stack: Vec<String>,
}

impl RootCtx<'_> {
    /// Root fields through inline fragments and spreads at the root (`... on Query`), at
    /// absolute nesting `depth` (checked before recursing).
    fn collect(
        &mut self,
        set: &cst::SelectionSet,
        depth: usize,
        out: &mut Vec<RootField>,
    ) -> Result<(), GraphqlError> {
        if depth > self.max_depth {
            return Err(GraphqlError::too_deep(self.max_depth));
        }
        for sel in set.selections() {
            match sel {
                cst::Selection::Field(f) => {
                    let field = self.root_field(&f, depth)?;
                    out.push(field);
                }
                cst::Selection::InlineFragment(i) => {
                    if let Some(inner) = i.selection_set() {
                        self.collect(&inner, depth + 1, out)?;
                    }
                }
                cst::Selection::FragmentSpread(s) => {
                    let name = fragment_name(&s);
                    if self.stack.contains(&name) {
                        return Err(OperationError::FragmentCycle(name.to_string()).into());
                    }
                    let frag = self
                        .fragments
                        .get(&name)
                        .ok_or_else(|| OperationError::UnknownFragment(name.to_string()))?;
                    if let Some(inner) = frag.selection_set() {
                        self.stack.push(name);
                        self.collect(&inner, depth + 1, out)?;
                        self.stack.pop();
                    }
                }
            }
        }
        Ok(())
    }

    fn root_field(&mut self, f: &cst::Field, depth: usize) -> Result<RootField, GraphqlError> {
        let name = f.name().map(|n| n.text().to_string()).unwrap_or_default();
        let alias = f
            .alias()
            .and_then(|a| a.name())
            .map(|n| n.text().to_string());
        let arguments = args::arguments(f, self.resolver)?;
        let arg = |name: &str| arguments.iter().find(|a| a.name == name);
        let get = |name: &str| arg(name).map(|a| &a.value);
        let schema_default = |arg: &str| -> Option<Vec<String>> {
            let (schema, root) = (self.schema?, self.root_type.as_ref()?);
            schema.arg_default(root, &name, arg).map(<[String]>::to_vec)
        };
        let mut stage = match get("stage") {
            Some(v) => args::single_name(v, "stage")?,
            None => None,
        };
        if self.kind == OperationKind::Mutation && stage.is_none() {
            stage = schema_default("stage").and_then(|v| v.into_iter().next());
        }
        let locales = match get("locales") {
            Some(v) => args::string_list(v, "locales")?.filter(|l| !l.is_empty()),
            None => None,
        };
        let list_or_default = |arg: &str| -> Result<Option<Vec<String>>, GraphqlError> {
            match get(arg) {
                Some(v) => match args::string_list(v, "stage list")? {
                    Some(l) => Ok(Some(l)),
                    None => Ok(schema_default(arg)),
                },
                None => Ok(schema_default(arg)),
            }
        };
        let to = list_or_default("to")?;
        let from = list_or_default("from")?;
        let with_default_locale = get("withDefaultLocale").and_then(serde_json::Value::as_bool);
        // A root `stage:`/`locales:` given as a variable the request did not provide: the CMS
        // coerces the argument to its schema default, while the gateway sends the header's
        // (or principal's) context. Both are checked.
        let unset_default = |name: &str| -> Vec<String> {
            match arg(name) {
                Some(a) if a.unset => schema_default(name).unwrap_or_default(),
                _ => Vec::new(),
            }
        };
        let unset_stages = unset_default("stage");
        let unset_locales = unset_default("locales");
        let mut field = RootField {
            name,
            alias,
            stage,
            locales,
            to,
            from,
            with_default_locale,
            extra_stages: unset_stages.clone(),
            extra_locales: unset_locales.clone(),
            accesses: Vec::new(),
            unresolved: None,
            nested: Vec::new(),
        };
        let (Some(schema), Some(root)) = (self.schema, self.root_type.clone()) else {
            let mut names = std::collections::BTreeSet::new();
            if let Some(set) = f.selection_set() {
                self.names(&set, depth + 1, &mut names)?;
            }
            field.nested = names.into_iter().collect();
            return Ok(field);
        };
        if field.name.starts_with("__") {
            return Ok(field);
        }
        let Some(ty) = schema.field_type(&root, &field.name).cloned() else {
            field.unresolved = Some(format!("{root}.{}", field.name));
            return Ok(field);
        };
        let mut accesses = BTreeSet::new();
        let mut unresolved = None;
        let mut walk = Walk {
            schema,
            fragments: self.fragments,
            resolver: self.resolver,
            accesses: &mut accesses,
            unresolved: &mut unresolved,
            budget: self.budget,
            steps: self.steps,
            max_depth: self.max_depth,
        };
        let mut ctx = Ctx::root(field.stage.iter().cloned().collect());
        // The root's context arguments were read above; the rest are walked by type.
        let mut found = walk.arguments(&arguments, &root, &field.name, &ctx, ROOT_CONTEXT_ARGS)?;
        found.stages.extend(unset_stages);
        found.locales.extend(unset_locales);
        ctx.stages.add(&found.stages);
        ctx.locales.add(&found.locales);
        walk.selection(f, &ty, &ctx, depth)?;
        field.extra_stages = found.stages.into_iter().collect();
        field.extra_locales = found.locales.into_iter().collect();
        field.accesses = accesses.into_iter().collect();
        field.unresolved = unresolved;
        Ok(field)
    }
}

impl RootCtx<'_> {
    /// Every field name of a selection set, through fragments (depth-checked; the document's
    /// expansion was bounded before, and spreads are acyclic).
    fn names(
        &self,
        set: &cst::SelectionSet,
        depth: usize,
        out: &mut std::collections::BTreeSet<String>,
    ) -> Result<(), GraphqlError> {
        if depth > self.max_depth {
            return Err(GraphqlError::too_deep(self.max_depth));
        }
        for sel in set.selections() {
            let inner = match sel {
                cst::Selection::Field(f) => {
                    if let Some(n) = f.name() {
                        out.insert(n.text().to_string());
                    }
                    f.selection_set()
                }
                cst::Selection::InlineFragment(i) => i.selection_set(),
                cst::Selection::FragmentSpread(s) => self
                    .fragments
                    .get(&fragment_name(&s))
                    .and_then(|f| f.selection_set()),
            };
            if let Some(inner) = inner {
                self.names(&inner, depth + 1, out)?;
            }
        }
        Ok(())
    }
}

/// Root arguments that [`RootCtx::root_field`] reads itself.
const ROOT_CONTEXT_ARGS: &[&str] = &["stage", "locales", "to", "from"];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const LIMITS: ParseLimits = ParseLimits::DEFAULT;

    fn req(q: &str, vars: Value, op: Option<&str>) -> GraphqlRequest {
        GraphqlRequest {
            query: q.into(),
            operation_name: op.map(Into::into),
            variables: vars.as_object().cloned().unwrap_or_default(),
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
    fn an_empty_locales_list_names_no_locale() {
        let op = parse_operation(
            &req("{ posts(locales: []) { id } }", Value::Null, None),
            LIMITS,
        )
        .unwrap();
        assert_eq!(op.root_fields[0].locales, None);
        let q = "query Q($l: [Locale!]! = []) { posts(locales: $l) { id } }";
        let op = parse_operation(&req(q, Value::Null, None), LIMITS).unwrap();
        assert_eq!(op.root_fields[0].locales, None);
    }

    #[test]
    fn repeated_arguments_and_variables_are_refused() {
        for q in [
            "{ posts(stage: DRAFT, stage: PUBLISHED) { id } }",
            "query Q($s: Stage, $s: Stage) { posts(stage: $s) { id } }",
            "{ posts(where: {id: \"a\", id: \"b\"}) { id } }",
        ] {
            assert!(
                matches!(
                    parse_operation(&req(q, Value::Null, None), LIMITS),
                    Err(GraphqlError::Operation(_))
                ),
                "{q}"
            );
        }
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

    /// The review's crash: each fragment nests 30 levels and spreads the next. The nesting is
    /// counted across spreads and refused before any walk recurses past `max_depth`.
    #[test]
    fn depth_is_counted_across_fragment_spreads() {
        let mut q = String::from("{ posts { ...f0 } }\n");
        for i in 0..76 {
            q.push_str(&format!(
                "fragment f{i} on Post {{ {} ...f{} {} }}\n",
                "author { posts { ".repeat(15),
                i + 1,
                "} } ".repeat(15)
            ));
        }
        q.push_str("fragment f76 on Post { id }\n");
        assert!(matches!(
            parse_operation(&req(&q, Value::Null, None), LIMITS),
            Err(GraphqlError::Limit { what: "depth", .. })
        ));
        // A chain of spreads without fields nests too.
        let mut q = String::from("{ ...r0 }\n");
        for i in 0..200 {
            q.push_str(&format!("fragment r{i} on Query {{ ...r{} }}\n", i + 1));
        }
        q.push_str("fragment r200 on Query { __typename }\n");
        assert!(matches!(
            parse_operation(&req(&q, Value::Null, None), LIMITS),
            Err(GraphqlError::Limit { what: "depth", .. })
        ));
    }
}
