//! Parsing the GraphQL document and selecting the operation to run.
//!
//! apollo-parser is run with a recursion and a token limit, so a 10 000-deep or enormous
//! document fails fast without a stack overflow. Root fields are collected through fragment
//! spreads and inline fragments at the root (`... on Query`, named fragments spread at the
//! root), guarding against fragment cycles with an explicit stack.

use std::collections::HashMap;

use apollo_parser::cst::{self, CstNode};
use apollo_parser::Parser;
use serde_json::{Map, Value};

use super::request::GraphqlRequest;
use super::GraphqlError;

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub kind: OperationKind,
    pub name: Option<String>,
    pub root_fields: Vec<RootField>,
}

/// Parses `req.query` and returns the operation selected by `operationName`.
pub fn parse_operation(
    req: &GraphqlRequest,
    limits: ParseLimits,
) -> Result<Operation, GraphqlError> {
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
    let op = select(&operations, req.operation_name.as_deref())?;
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
        collect_root_fields(&set, &fragments, &resolver, &mut stack, &mut root_fields)?;
    }
    Ok(Operation {
        kind,
        name: op.name().map(|n| n.text().to_string()),
        root_fields,
    })
}

fn select<'a>(
    ops: &'a [cst::OperationDefinition],
    name: Option<&str>,
) -> Result<&'a cst::OperationDefinition, GraphqlError> {
    match name {
        Some(wanted) => ops
            .iter()
            .find(|o| o.name().is_some_and(|n| n.text() == wanted))
            .ok_or_else(|| {
                GraphqlError::Operation(format!("no operation named {wanted:?} in the document"))
            }),
        None => match ops {
            [] => Err(GraphqlError::Operation(
                "the document contains no operation".into(),
            )),
            [one] => Ok(one),
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

fn collect_root_fields(
    set: &cst::SelectionSet,
    fragments: &HashMap<String, cst::FragmentDefinition>,
    resolver: &Resolver,
    stack: &mut Vec<String>,
    out: &mut Vec<RootField>,
) -> Result<(), GraphqlError> {
    for sel in set.selections() {
        match sel {
            cst::Selection::Field(f) => out.push(root_field(&f, resolver)?),
            cst::Selection::InlineFragment(i) => {
                if let Some(inner) = i.selection_set() {
                    collect_root_fields(&inner, fragments, resolver, stack, out)?;
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
                let frag = fragments
                    .get(&name)
                    .ok_or_else(|| GraphqlError::Operation(format!("unknown fragment {name:?}")))?;
                if let Some(inner) = frag.selection_set() {
                    stack.push(name);
                    collect_root_fields(&inner, fragments, resolver, stack, out)?;
                    stack.pop();
                }
            }
        }
    }
    Ok(())
}

fn root_field(f: &cst::Field, resolver: &Resolver) -> Result<RootField, GraphqlError> {
    let name = f.name().map(|n| n.text().to_string()).unwrap_or_default();
    let alias = f
        .alias()
        .and_then(|a| a.name())
        .map(|n| n.text().to_string());
    let mut stage = None;
    let mut locales = None;
    if let Some(args) = f.arguments() {
        for arg in args.arguments() {
            let (Some(arg_name), Some(value)) = (arg.name(), arg.value()) else {
                continue;
            };
            match arg_name.text().as_str() {
                "stage" => {
                    stage = match resolver.resolve(&value) {
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
                "locales" => {
                    locales = match resolver.resolve(&value) {
                        Value::Null => None,
                        // GraphQL input coercion: a single value where a list is expected.
                        Value::String(s) => Some(vec![s]),
                        Value::Array(items) => Some(
                            items
                                .into_iter()
                                .map(|v| match v {
                                    Value::String(s) => Ok(s),
                                    other => Err(GraphqlError::Argument {
                                        what: "locales",
                                        message: format!("expected a locale, got {other}"),
                                    }),
                                })
                                .collect::<Result<_, _>>()?,
                        ),
                        other => {
                            return Err(GraphqlError::Argument {
                                what: "locales",
                                message: format!("expected a list of locales, got {other}"),
                            })
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(RootField {
        name,
        alias,
        stage,
        locales,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ParseLimits = ParseLimits {
        recursion: 64,
        tokens: 15_000,
    };

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
