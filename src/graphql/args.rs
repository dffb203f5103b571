//! Argument values: literals and variables resolved to JSON, the way the CMS will see them.
//!
//! Every value the gateway decides on goes through [`Resolver::resolve`]: a literal as written
//! (objects, lists, enums, numbers), a variable from the request's `variables`, else the
//! variable's default, else null. Repeated argument names and variable definitions are refused
//! (GraphQL's UniqueArgumentNames / UniqueVariableNames): which copy a CMS would use is not the
//! gateway's to guess. [`check_variables`] refuses variables that do not coerce to their
//! declared types before the CMS is called.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use apollo_parser::cst::{self, CstNode};
use serde_json::{Map, Number, Value};

use super::{GraphqlError, OperationError};
use crate::schema::SchemaMap;

/// Depth of a JSON value the gateway walks. serde_json refuses input nested deeper than 128
/// while parsing a body; a literal in the document is bounded by the parser's recursion limit,
/// and a variable inside a literal adds at most this.
pub const MAX_VALUE_DEPTH: usize = 256;

/// An operation's variable definitions with their names (a definition without a name, a
/// syntax error the parser already reported, is skipped).
fn variable_definitions(
    op: &cst::OperationDefinition,
) -> impl Iterator<Item = (String, cst::VariableDefinition)> {
    op.variable_definitions()
        .into_iter()
        .flat_map(|v| v.variable_definitions())
        .filter_map(|d| {
            let name = d.variable()?.name()?.text().to_string();
            Some((name, d))
        })
}

pub struct Resolver<'a> {
    variables: &'a Map<String, Value>,
    defaults: HashMap<String, cst::Value>,
    /// JSON nodes left to build or walk for this document (shared with the input walk): a
    /// variable is copied at every reference, so every reference is charged its size.
    budget: &'a Cell<u64>,
    /// Nodes of each provided variable, counted once.
    sizes: RefCell<HashMap<String, u64>>,
}

/// The JSON nodes of a value (bounded by serde_json's nesting limit).
pub fn nodes(v: &Value) -> u64 {
    match v {
        Value::Array(items) => 1 + items.iter().map(nodes).sum::<u64>(),
        Value::Object(map) => 1 + map.values().map(nodes).sum::<u64>(),
        _ => 1,
    }
}

/// Takes `n` units of a walk's budget; `what` names it in the error once it is spent.
pub(super) fn spend(budget: &Cell<u64>, n: u64, what: &'static str) -> Result<(), GraphqlError> {
    let left = budget.get();
    if left < n {
        return Err(GraphqlError::Limit { what, limit: 0 });
    }
    budget.set(left - n);
    Ok(())
}

impl<'a> Resolver<'a> {
    /// The variable defaults of `op`; a variable defined twice is refused.
    pub fn new(
        op: &cst::OperationDefinition,
        variables: &'a Map<String, Value>,
        budget: &'a Cell<u64>,
    ) -> Result<Self, GraphqlError> {
        let mut defaults = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (name, d) in variable_definitions(op) {
            if !seen.insert(name.clone()) {
                return Err(OperationError::DuplicateVariable(name.clone()).into());
            }
            if let Some(value) = d.default_value().and_then(|v| v.value()) {
                defaults.insert(name, value);
            }
        }
        Ok(Self {
            variables,
            defaults,
            budget,
            sizes: RefCell::new(HashMap::new()),
        })
    }

    fn charge(&self, n: u64) -> Result<(), GraphqlError> {
        spend(self.budget, n, "input value")
    }

    /// Whether `value` is a variable the request did not provide and that has no default:
    /// the CMS then coerces the argument to *its* schema default (GraphQL's
    /// CoerceArgumentValues), not to "absent".
    pub fn is_unset(&self, value: &cst::Value) -> bool {
        match value {
            cst::Value::Variable(v) => {
                let name = v.name().map(|n| n.text().to_string()).unwrap_or_default();
                !self.variables.contains_key(&name) && !self.defaults.contains_key(&name)
            }
            _ => false,
        }
    }

    /// The JSON value of an argument: literals as written, variables from the request's
    /// `variables` or else the variable's default (a constant, so this cannot loop). Every
    /// node built is charged to the budget; a repeated input-object field name is refused.
    pub fn resolve(&self, value: &cst::Value) -> Result<Value, GraphqlError> {
        self.resolve_at(value, 0)
    }

    fn resolve_at(&self, value: &cst::Value, depth: usize) -> Result<Value, GraphqlError> {
        if depth > MAX_VALUE_DEPTH {
            return Err(GraphqlError::value_too_deep());
        }
        self.charge(1)?;
        Ok(match value {
            cst::Value::Variable(v) => {
                let name = v.name().map(|n| n.text().to_string()).unwrap_or_default();
                match self.variables.get(&name) {
                    Some(v) => {
                        let size = *self
                            .sizes
                            .borrow_mut()
                            .entry(name)
                            .or_insert_with(|| nodes(v));
                        self.charge(size)?;
                        v.clone()
                    }
                    None => match self.defaults.get(&name) {
                        Some(d) => self.resolve_at(d, depth + 1)?,
                        None => Value::Null,
                    },
                }
            }
            cst::Value::EnumValue(e) => Value::String(e.text().to_string()),
            cst::Value::StringValue(s) => Value::String(String::from(s)),
            cst::Value::BooleanValue(b) => Value::Bool(b.true_token().is_some()),
            cst::Value::IntValue(i) => {
                let text = i.syntax().text().to_string();
                text.parse::<i64>()
                    .map(Value::from)
                    .unwrap_or(Value::String(text))
            }
            cst::Value::FloatValue(f) => f
                .syntax()
                .text()
                .to_string()
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            cst::Value::ListValue(l) => Value::Array(
                l.values()
                    .map(|v| self.resolve_at(&v, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            cst::Value::ObjectValue(o) => {
                let mut map = Map::new();
                for f in o.object_fields() {
                    let (Some(name), Some(v)) = (f.name(), f.value()) else {
                        continue;
                    };
                    let name = name.text().to_string();
                    if map.contains_key(&name) {
                        return Err(OperationError::DuplicateInputField(name.clone()).into());
                    }
                    let v = self.resolve_at(&v, depth + 1)?;
                    map.insert(name, v);
                }
                Value::Object(map)
            }
            cst::Value::NullValue(_) => Value::Null,
        })
    }
}

/// One argument of a field, resolved.
pub struct Argument {
    pub name: String,
    pub value: Value,
    /// A variable the request did not provide (see [`Resolver::is_unset`]).
    pub unset: bool,
}

/// The arguments of a field, resolved. A repeated argument name is refused, and so is a
/// repeated input-object field name anywhere inside a literal.
pub fn arguments(f: &cst::Field, resolver: &Resolver) -> Result<Vec<Argument>, GraphqlError> {
    let mut out: Vec<Argument> = Vec::new();
    let Some(args) = f.arguments() else {
        return Ok(out);
    };
    for arg in args.arguments() {
        let (Some(name), Some(value)) = (arg.name(), arg.value()) else {
            continue;
        };
        let name = name.text().to_string();
        if out.iter().any(|a| a.name == name) {
            return Err(OperationError::DuplicateArgument(name.clone()).into());
        }
        out.push(Argument {
            unset: resolver.is_unset(&value),
            value: resolver.resolve(&value)?,
            name,
        });
    }
    Ok(out)
}

/// A list argument as names: `null` → `None`, a single name → a list of one (input coercion).
pub fn string_list(value: &Value, what: &'static str) -> Result<Option<Vec<String>>, GraphqlError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(vec![s.clone()])),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
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

/// A single name argument (`stage: DRAFT`); `null` → `None`.
pub fn single_name(value: &Value, what: &'static str) -> Result<Option<String>, GraphqlError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(GraphqlError::Argument {
            what,
            message: format!("expected a name, got {other}"),
        }),
    }
}

/// A type reference of a variable definition.
enum TypeRef {
    Named(String),
    List(Box<TypeRef>),
    NonNull(Box<TypeRef>),
}

fn type_ref(t: &cst::Type) -> TypeRef {
    match t {
        cst::Type::NamedType(n) => {
            TypeRef::Named(n.name().map(|n| n.text().to_string()).unwrap_or_default())
        }
        cst::Type::ListType(l) => TypeRef::List(Box::new(
            l.ty()
                .map(|t| type_ref(&t))
                .unwrap_or(TypeRef::Named(String::new())),
        )),
        cst::Type::NonNullType(n) => {
            let inner = if let Some(named) = n.named_type() {
                TypeRef::Named(
                    named
                        .name()
                        .map(|n| n.text().to_string())
                        .unwrap_or_default(),
                )
            } else if let Some(list) = n.list_type() {
                TypeRef::List(Box::new(
                    list.ty()
                        .map(|t| type_ref(&t))
                        .unwrap_or(TypeRef::Named(String::new())),
                ))
            } else {
                TypeRef::Named(String::new())
            };
            TypeRef::NonNull(Box::new(inner))
        }
    }
}

/// Refuses variables that do not coerce to their declared types (GraphQL's input coercion for
/// variables): a missing non-null variable without default, a null for a non-null type, a
/// string for an `Int`, an unknown input-object field. Custom scalars (`DateTime`, `Json`,
/// `RichTextAST`, …) accept any value: only the CMS knows their rules.
pub fn check_variables(
    op: &cst::OperationDefinition,
    variables: &Map<String, Value>,
    schema: &SchemaMap,
) -> Result<(), GraphqlError> {
    for (name, d) in variable_definitions(op) {
        let Some(ty) = d.ty().map(|t| type_ref(&t)) else {
            continue;
        };
        let has_default = d.default_value().is_some();
        match variables.get(&name) {
            None if matches!(ty, TypeRef::NonNull(_)) && !has_default => {
                return Err(bad_variable(&name, "is required and was not provided"));
            }
            None => {}
            Some(v) => coerce(v, &ty, schema, 0).map_err(|m| bad_variable(&name, &m))?,
        }
    }
    Ok(())
}

fn bad_variable(name: &str, message: &str) -> GraphqlError {
    GraphqlError::Argument {
        what: "variable",
        message: format!("${name} {message}"),
    }
}

fn coerce(v: &Value, ty: &TypeRef, schema: &SchemaMap, depth: usize) -> Result<(), String> {
    if depth > MAX_VALUE_DEPTH {
        return Err("is nested too deeply".into());
    }
    match ty {
        TypeRef::NonNull(inner) => {
            if v.is_null() {
                return Err("must not be null".into());
            }
            coerce(v, inner, schema, depth + 1)
        }
        TypeRef::List(inner) => match v {
            Value::Null => Ok(()),
            Value::Array(items) => items
                .iter()
                .try_for_each(|i| coerce(i, inner, schema, depth + 1)),
            // Input coercion: a single value where a list is expected.
            other => coerce(other, inner, schema, depth + 1),
        },
        TypeRef::Named(name) => coerce_named(v, name, schema, depth),
    }
}

fn coerce_named(v: &Value, name: &str, schema: &SchemaMap, depth: usize) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    let ok = match name {
        "Int" => v.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        "Float" => v.is_number(),
        "String" => v.is_string(),
        "Boolean" => v.is_boolean(),
        "ID" => v.is_string() || v.is_i64() || v.is_u64(),
        _ => {
            if let Some(input) = schema.inputs.get(name) {
                let Value::Object(map) = v else {
                    return Err(format!("must be an input object of type {name}"));
                };
                for (k, fv) in map {
                    let Some(fty) = input.fields.get(k.as_str()) else {
                        return Err(format!("has a field {k:?} that {name} does not define"));
                    };
                    // Field list-ness is not kept in the map: a list or a single value.
                    let as_list = TypeRef::List(Box::new(TypeRef::Named(fty.to_string())));
                    coerce(fv, &as_list, schema, depth + 1)?;
                }
                return Ok(());
            }
            if schema.enums.contains_key(name) {
                match v.as_str() {
                    Some(s) if schema.enums[name].iter().any(|e| **e == *s) => true,
                    _ => return Err(format!("is not a value of the enum {name}")),
                }
            } else {
                true
            }
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("does not coerce to {name}"))
    }
}
