//! The schema map: which root field is which action on which model, and which object types are
//! models — built from the upstream schema, never guessed from names.
//!
//! Sources: an SDL file (`policies/schema.graphql`, for air-gapped starts) or the result of an
//! introspection query. A model is an object type implementing `Node` (Hygraph's content models
//! and its system models Asset, User, ScheduledOperation, ScheduledRelease); components do not.
//! Root fields are classified by their return types, so irregular plural API IDs
//! (`productpages`) need no pluralization rules: the plural is read off the Query field that
//! returns `[Model!]!`, and the `…Many…` mutations are matched against it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use apollo_parser::cst::{self, CstNode};
use apollo_parser::Parser;
use serde_json::Value;

/// Why a schema map could not be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SchemaError {
    #[error("SDL syntax error at byte {index}: {message}")]
    Syntax { index: usize, message: String },
    #[error("introspection result: {0}")]
    Introspection(&'static str),
    #[error("the schema has no query type {0:?}")]
    NoQueryType(String),
    #[error("introspecting the upstream failed: {0}")]
    Upstream(#[from] crate::upstream::QueryError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeKind {
    Object,
    Interface,
    Union,
    /// Input objects: the types of argument values.
    Input,
    /// Scalars and enums.
    Leaf,
}

#[derive(Debug, Clone)]
pub struct TypeDef {
    pub kind: TypeKind,
    /// Field name → named return type.
    pub fields: HashMap<Arc<str>, Arc<str>>,
    /// Object types this type can be at run time (itself for an object type).
    pub possible: Vec<Arc<str>>,
    pub is_model: bool,
}

/// What a Query root field is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryRoot {
    /// `posts`, `post`, `postsConnection`: Read on the model, whatever is selected.
    Read(Arc<str>),
    /// `postVersion`: Read versions on the model.
    ReadVersions(Arc<str>),
    /// `node(id:)` and other abstract roots: Read on each possible model selected.
    Abstract,
    /// `__schema`, `__type`.
    Introspection,
    /// `__typename`.
    Typename,
}

/// The action a mutation root field performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutationKind {
    Create,
    Update,
    Upsert,
    Delete,
    Publish,
    Unpublish,
}

impl MutationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Upsert => "upsert",
            Self::Delete => "delete",
            Self::Publish => "publish",
            Self::Unpublish => "unpublish",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MutationRoot {
    Model(MutationKind, Arc<str>),
    Typename,
}

/// A type as read from SDL or introspection, before classification.
#[derive(Debug, Default, Clone)]
pub struct RawType {
    pub name: String,
    pub kind: Option<TypeKind>,
    /// (field name, named return type, whether the type is a list)
    pub fields: Vec<(String, String, bool)>,
    pub interfaces: Vec<String>,
    pub members: Vec<String>,
    /// (field, argument, default value names) for the context arguments the gateway decides on.
    pub arg_defaults: Vec<(String, String, Vec<String>)>,
    /// (field, argument, named type) of every argument, so argument values can be walked.
    pub arg_types: Vec<(String, String, String)>,
    /// Enum types: their values.
    pub enum_values: Vec<String>,
}

/// What an input object type does in Hygraph's generated schema, read off its name
/// (`<Model><suffix>`): the gateway walks argument values by type, and these roles say which
/// access a value of that type makes the CMS perform on the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRole {
    /// `PostWhereInput`, `PostManyWhereInput`, `PostWhereUniqueInput`, `PostWhereStageInput`:
    /// the CMS evaluates the model's data (a relation filter reads the related model).
    Filter,
    /// `PostCreateInput`: creates a document.
    Create,
    /// `PostUpdateInput`, `PostUpdateManyInput`: updates documents.
    Update,
    /// `PostCreateOneInlineInput`, `PostUpdateManyInlineInput`, …: a relation write whose
    /// `delete` key deletes related documents (the other keys carry typed values of their own).
    Relation,
}

/// Localization payloads (`…CreateLocalizationDataInput`) have no role of their own: they sit
/// under `localizations` beside the `locale` they write.
const INPUT_ROLES: [(&str, InputRole); 12] = [
    ("ManyWhereInput", InputRole::Filter),
    ("WhereUniqueInput", InputRole::Filter),
    ("WhereStageInput", InputRole::Filter),
    ("WhereComparatorInput", InputRole::Filter),
    ("WhereInput", InputRole::Filter),
    ("CreateInput", InputRole::Create),
    ("UpdateManyInput", InputRole::Update),
    ("UpdateInput", InputRole::Update),
    ("CreateOneInlineInput", InputRole::Relation),
    ("CreateManyInlineInput", InputRole::Relation),
    ("UpdateOneInlineInput", InputRole::Relation),
    ("UpdateManyInlineInput", InputRole::Relation),
];

#[derive(Debug, Clone)]
pub struct InputDef {
    /// Field name → named type.
    pub fields: HashMap<Arc<str>, Arc<str>>,
    /// The model this input type acts on and how, when its name says so.
    pub role: Option<(InputRole, Arc<str>)>,
}

/// Arguments whose value changes what a field reads: their schema defaults apply when a
/// document leaves them out (`documentInStages(stages: … = [DRAFT, PUBLISHED])`).
pub const CONTEXT_ARGS: [&str; 5] = ["stage", "stages", "locales", "to", "from"];

/// (type, field) → [(argument, named type)].
pub type ArgTypes = HashMap<(Arc<str>, Arc<str>), Vec<(Arc<str>, Arc<str>)>>;

/// (type, field) → [(argument, default enum names)].
pub type ArgDefaults = HashMap<(Arc<str>, Arc<str>), Vec<(Arc<str>, Vec<String>)>>;

#[derive(Debug)]
pub struct SchemaMap {
    pub types: HashMap<Arc<str>, TypeDef>,
    pub query_type: Arc<str>,
    pub mutation_type: Option<Arc<str>>,
    pub query_roots: HashMap<Arc<str>, QueryRoot>,
    pub mutation_roots: HashMap<Arc<str>, MutationRoot>,
    pub models: BTreeSet<Arc<str>>,
    /// Schema defaults of context arguments, by (type, field) then argument name.
    pub arg_defaults: ArgDefaults,
    /// Argument types, by (type, field) then argument name.
    pub arg_types: ArgTypes,
    /// Input object types.
    pub inputs: HashMap<Arc<str>, InputDef>,
    /// Enum types and their values.
    pub enums: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// sha256 of the SDL text it was built from (zero for introspection), to reuse it across
    /// reloads that do not change the file.
    pub source_digest: [u8; 32],
}

impl SchemaMap {
    pub fn from_sdl(sdl: &str) -> Result<SchemaMap, SchemaError> {
        let tree = Parser::new(sdl).parse();
        if let Some(e) = tree.errors().next() {
            return Err(SchemaError::Syntax {
                index: e.index(),
                message: e.message().to_string(),
            });
        }
        let mut raw: Vec<RawType> = Vec::new();
        let mut query = "Query".to_string();
        let mut mutation = Some("Mutation".to_string());
        let name_of = |n: Option<cst::Name>| n.map(|n| n.text().to_string()).unwrap_or_default();
        let fields_of = |f: Option<cst::FieldsDefinition>| -> Vec<(String, String, bool)> {
            f.map(|f| {
                f.field_definitions()
                    .map(|d| {
                        let ty = d.ty();
                        (
                            name_of(d.name()),
                            ty.as_ref().map(named_type).unwrap_or_default(),
                            ty.as_ref().is_some_and(is_list),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
        };
        let defaults_of = |f: Option<cst::FieldsDefinition>| -> Vec<(String, String, Vec<String>)> {
            let mut out = Vec::new();
            for d in f.iter().flat_map(|f| f.field_definitions()) {
                for arg in d
                    .arguments_definition()
                    .iter()
                    .flat_map(|a| a.input_value_definitions())
                {
                    let arg_name = name_of(arg.name());
                    if !CONTEXT_ARGS.contains(&arg_name.as_str()) {
                        continue;
                    }
                    if let Some(v) = arg.default_value().and_then(|d| d.value()) {
                        out.push((
                            name_of(d.name()),
                            arg_name,
                            enum_names(&v.syntax().text().to_string()),
                        ));
                    }
                }
            }
            out
        };
        let arg_types_of = |f: Option<cst::FieldsDefinition>| -> Vec<(String, String, String)> {
            let mut out = Vec::new();
            for d in f.iter().flat_map(|f| f.field_definitions()) {
                for arg in d
                    .arguments_definition()
                    .iter()
                    .flat_map(|a| a.input_value_definitions())
                {
                    out.push((
                        name_of(d.name()),
                        name_of(arg.name()),
                        arg.ty().as_ref().map(named_type).unwrap_or_default(),
                    ));
                }
            }
            out
        };
        let interfaces_of = |i: Option<cst::ImplementsInterfaces>| -> Vec<String> {
            i.map(|i| i.named_types().map(|n| name_of(n.name())).collect())
                .unwrap_or_default()
        };
        // Object types, their extensions and interfaces carry the same parts.
        let typed = |kind,
                     name: Option<cst::Name>,
                     fields: Option<cst::FieldsDefinition>,
                     interfaces| RawType {
            name: name_of(name),
            kind: Some(kind),
            fields: fields_of(fields.clone()),
            interfaces: interfaces_of(interfaces),
            members: Vec::new(),
            arg_defaults: defaults_of(fields.clone()),
            arg_types: arg_types_of(fields),
            enum_values: Vec::new(),
        };
        for def in tree.document().definitions() {
            match def {
                cst::Definition::SchemaDefinition(s) => {
                    mutation = None;
                    for op in s.root_operation_type_definitions() {
                        let ty = op
                            .named_type()
                            .map(|n| name_of(n.name()))
                            .unwrap_or_default();
                        match op.operation_type() {
                            Some(t) if t.query_token().is_some() => query = ty,
                            Some(t) if t.mutation_token().is_some() => mutation = Some(ty),
                            _ => {}
                        }
                    }
                }
                cst::Definition::ObjectTypeDefinition(o) => raw.push(typed(
                    TypeKind::Object,
                    o.name(),
                    o.fields_definition(),
                    o.implements_interfaces(),
                )),
                cst::Definition::ObjectTypeExtension(o) => raw.push(typed(
                    TypeKind::Object,
                    o.name(),
                    o.fields_definition(),
                    o.implements_interfaces(),
                )),
                cst::Definition::InterfaceTypeDefinition(i) => raw.push(typed(
                    TypeKind::Interface,
                    i.name(),
                    i.fields_definition(),
                    i.implements_interfaces(),
                )),
                cst::Definition::UnionTypeDefinition(u) => raw.push(RawType {
                    name: name_of(u.name()),
                    kind: Some(TypeKind::Union),
                    members: u
                        .union_member_types()
                        .map(|m| m.named_types().map(|n| name_of(n.name())).collect())
                        .unwrap_or_default(),
                    ..RawType::default()
                }),
                cst::Definition::ScalarTypeDefinition(s) => raw.push(RawType {
                    name: name_of(s.name()),
                    kind: Some(TypeKind::Leaf),
                    ..RawType::default()
                }),
                cst::Definition::EnumTypeDefinition(e) => raw.push(RawType {
                    name: name_of(e.name()),
                    kind: Some(TypeKind::Leaf),
                    enum_values: e
                        .enum_values_definition()
                        .iter()
                        .flat_map(|v| v.enum_value_definitions())
                        .filter_map(|v| v.enum_value().and_then(|v| v.name()))
                        .map(|n| n.text().to_string())
                        .collect(),
                    ..RawType::default()
                }),
                cst::Definition::InputObjectTypeDefinition(e) => raw.push(RawType {
                    name: name_of(e.name()),
                    kind: Some(TypeKind::Input),
                    fields: e
                        .input_fields_definition()
                        .iter()
                        .flat_map(|f| f.input_value_definitions())
                        .map(|d| {
                            let ty = d.ty();
                            (
                                name_of(d.name()),
                                ty.as_ref().map(named_type).unwrap_or_default(),
                                ty.as_ref().is_some_and(is_list),
                            )
                        })
                        .collect(),
                    ..RawType::default()
                }),
                _ => {}
            }
        }
        Self::build(raw, &query, mutation.as_deref())
    }

    /// From the `data` of an introspection query (see [`INTROSPECTION_QUERY`]).
    pub fn from_introspection(data: &Value) -> Result<SchemaMap, SchemaError> {
        use SchemaError::Introspection as Bad;
        let schema = data.get("__schema").ok_or(Bad("no __schema"))?;
        let name = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_string);
        let query = schema
            .get("queryType")
            .and_then(name)
            .ok_or(Bad("no queryType"))?;
        let mutation = schema.get("mutationType").and_then(name);
        let types = schema
            .get("types")
            .and_then(Value::as_array)
            .ok_or(Bad("no types"))?;
        let mut raw = Vec::new();
        for t in types {
            let kind = match t.get("kind").and_then(Value::as_str) {
                Some("OBJECT") => TypeKind::Object,
                Some("INTERFACE") => TypeKind::Interface,
                Some("UNION") => TypeKind::Union,
                Some("INPUT_OBJECT") => TypeKind::Input,
                _ => TypeKind::Leaf,
            };
            let list = |key: &str| -> Vec<Value> {
                t.get(key)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            raw.push(RawType {
                name: name(t).ok_or(Bad("a type without name"))?,
                kind: Some(kind),
                fields: list(if kind == TypeKind::Input {
                    "inputFields"
                } else {
                    "fields"
                })
                .iter()
                .filter_map(|f| {
                    let (ty, list) = named_type_json(f.get("type")?)?;
                    Some((name(f)?, ty, list))
                })
                .collect(),
                arg_types: list("fields")
                    .iter()
                    .flat_map(|f| {
                        let field = name(f).unwrap_or_default();
                        f.get("args")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(move |a| {
                                let (ty, _) = named_type_json(a.get("type")?)?;
                                Some((field.clone(), name(&a)?, ty))
                            })
                    })
                    .collect(),
                interfaces: list("interfaces").iter().filter_map(name).collect(),
                enum_values: list("enumValues").iter().filter_map(name).collect(),
                members: list("possibleTypes").iter().filter_map(name).collect(),
                arg_defaults: list("fields")
                    .iter()
                    .flat_map(|f| {
                        let field = name(f).unwrap_or_default();
                        f.get("args")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(move |a| {
                                let arg = name(&a)?;
                                let default = a.get("defaultValue").and_then(Value::as_str)?;
                                CONTEXT_ARGS
                                    .contains(&arg.as_str())
                                    .then(|| (field.clone(), arg, enum_names(default)))
                            })
                    })
                    .collect(),
            });
        }
        Self::build(raw, &query, mutation.as_deref())
    }

    fn build(
        raw: Vec<RawType>,
        query: &str,
        mutation: Option<&str>,
    ) -> Result<SchemaMap, SchemaError> {
        // Merge extensions into their base definitions.
        let mut merged: HashMap<String, RawType> = HashMap::new();
        for t in raw {
            match merged.get_mut(&t.name) {
                Some(existing) => {
                    existing.fields.extend(t.fields);
                    existing.interfaces.extend(t.interfaces);
                    existing.members.extend(t.members);
                    existing.arg_defaults.extend(t.arg_defaults);
                    existing.arg_types.extend(t.arg_types);
                    existing.enum_values.extend(t.enum_values);
                }
                None => {
                    merged.insert(t.name.clone(), t);
                }
            }
        }
        if !merged.contains_key(query) {
            return Err(SchemaError::NoQueryType(query.to_string()));
        }
        let intern = |s: &str| -> Arc<str> { Arc::from(s) };
        let implements_node = |t: &RawType| t.interfaces.iter().any(|i| i == "Node");
        let mut possible_of: HashMap<String, Vec<Arc<str>>> = HashMap::new();
        for t in merged.values() {
            if t.kind == Some(TypeKind::Object) {
                for i in &t.interfaces {
                    possible_of
                        .entry(i.clone())
                        .or_default()
                        .push(intern(&t.name));
                }
            }
        }
        let mut arg_defaults: ArgDefaults = HashMap::new();
        for t in merged.values() {
            for (field, arg, names) in &t.arg_defaults {
                arg_defaults
                    .entry((intern(&t.name), intern(field)))
                    .or_default()
                    .push((intern(arg), names.clone()));
            }
        }
        let mut arg_types: ArgTypes = HashMap::new();
        for t in merged.values() {
            for (field, arg, ty) in &t.arg_types {
                arg_types
                    .entry((intern(&t.name), intern(field)))
                    .or_default()
                    .push((intern(arg), intern(ty)));
            }
        }
        let mut types = HashMap::new();
        let mut models = BTreeSet::new();
        for t in merged.values() {
            let kind = t.kind.unwrap_or(TypeKind::Leaf);
            let is_model = kind == TypeKind::Object && implements_node(t);
            if is_model {
                models.insert(intern(&t.name));
            }
            let mut possible = match kind {
                TypeKind::Object => vec![intern(&t.name)],
                TypeKind::Interface => {
                    let mut p = possible_of.get(&t.name).cloned().unwrap_or_default();
                    p.extend(t.members.iter().map(|m| intern(m)));
                    p
                }
                TypeKind::Union => t.members.iter().map(|m| intern(m)).collect(),
                TypeKind::Input | TypeKind::Leaf => Vec::new(),
            };
            possible.sort();
            possible.dedup();
            types.insert(
                intern(&t.name),
                TypeDef {
                    kind,
                    fields: t
                        .fields
                        .iter()
                        .map(|(f, ty, _)| (intern(f), intern(ty)))
                        .collect(),
                    possible,
                    is_model,
                },
            );
        }

        let inputs = merged
            .values()
            .filter(|t| t.kind == Some(TypeKind::Input))
            .map(|t| {
                let role = INPUT_ROLES.iter().find_map(|(suffix, role)| {
                    let model = t.name.strip_suffix(suffix)?;
                    models.get(model).map(|m| (*role, m.clone()))
                });
                let def = InputDef {
                    fields: t
                        .fields
                        .iter()
                        .map(|(f, ty, _)| (intern(f), intern(ty)))
                        .collect(),
                    role,
                };
                (intern(&t.name), def)
            })
            .collect();

        let enums = merged
            .values()
            .filter(|t| !t.enum_values.is_empty())
            .map(|t| {
                (
                    intern(&t.name),
                    t.enum_values.iter().map(|v| intern(v)).collect(),
                )
            })
            .collect();

        // Query roots, classified by return type.
        let mut query_roots = HashMap::new();
        let mut plural_of: HashMap<String, Arc<str>> = HashMap::new();
        let version_of: HashMap<String, Arc<str>> = models
            .iter()
            .map(|m| (format!("{}Version", lcfirst(m)), m.clone()))
            .collect();
        let q = &merged[query];
        for (field, ty, list) in &q.fields {
            let root = if let Some(m) = version_of.get(field) {
                QueryRoot::ReadVersions(m.clone())
            } else if let Some(def) = types.get(ty.as_str()) {
                if def.is_model {
                    QueryRoot::Read(intern(ty))
                } else if let Some(m) = connection_model(&types, ty) {
                    QueryRoot::Read(m)
                } else if matches!(def.kind, TypeKind::Interface | TypeKind::Union) {
                    QueryRoot::Abstract
                } else {
                    continue; // not a content read: unmapped, so denied
                }
            } else {
                continue;
            };
            if let QueryRoot::Read(m) = &root {
                if *list {
                    plural_of.insert(ucfirst(field), m.clone());
                }
            }
            query_roots.insert(intern(field), root);
        }
        query_roots.insert(intern("__typename"), QueryRoot::Typename);
        query_roots.insert(intern("__schema"), QueryRoot::Introspection);
        query_roots.insert(intern("__type"), QueryRoot::Introspection);

        // Mutation roots: by Hygraph's generated names, checked against the schema's fields.
        let mut mutation_roots = HashMap::new();
        if let Some(mt) = mutation.and_then(|m| merged.get(m)) {
            let fields: BTreeSet<&str> = mt.fields.iter().map(|(f, _, _)| f.as_str()).collect();
            let mut add = |name: String, kind: MutationKind, model: &Arc<str>| {
                if fields.contains(name.as_str()) {
                    mutation_roots.insert(intern(&name), MutationRoot::Model(kind, model.clone()));
                }
            };
            for m in &models {
                use MutationKind::*;
                for (prefix, kind) in [
                    ("create", Create),
                    ("update", Update),
                    ("upsert", Upsert),
                    ("delete", Delete),
                    ("publish", Publish),
                    ("unpublish", Unpublish),
                    ("schedulePublish", Publish),
                    ("scheduleUnpublish", Unpublish),
                ] {
                    add(format!("{prefix}{m}"), kind, m);
                }
            }
            for (plural, m) in &plural_of {
                use MutationKind::*;
                for (prefix, kind) in [
                    ("updateMany", Update),
                    ("deleteMany", Delete),
                    ("publishMany", Publish),
                    ("unpublishMany", Unpublish),
                ] {
                    add(format!("{prefix}{plural}Connection"), kind, m);
                    add(format!("{prefix}{plural}"), kind, m);
                }
            }
            mutation_roots.insert(intern("__typename"), MutationRoot::Typename);
        }
        Ok(SchemaMap {
            types,
            query_type: intern(query),
            mutation_type: mutation.filter(|m| merged.contains_key(*m)).map(intern),
            query_roots,
            mutation_roots,
            models,
            arg_defaults,
            arg_types,
            inputs,
            enums,
            source_digest: [0; 32],
        })
    }

    pub fn field_type(&self, parent: &str, field: &str) -> Option<&Arc<str>> {
        self.types.get(parent).and_then(|t| t.fields.get(field))
    }

    /// The schema default of a context argument of `parent.field`, if it has one.
    pub fn arg_default(&self, parent: &str, field: &str, arg: &str) -> Option<&[String]> {
        self.arg_defaults
            .get(&(Arc::from(parent), Arc::from(field)))
            .and_then(|args| args.iter().find(|(a, _)| &**a == arg))
            .map(|(_, v)| v.as_slice())
    }

    /// The named type of an argument of `parent.field`.
    pub fn arg_type(&self, parent: &str, field: &str, arg: &str) -> Option<&Arc<str>> {
        self.arg_types
            .get(&(Arc::from(parent), Arc::from(field)))
            .and_then(|args| args.iter().find(|(a, _)| &**a == arg))
            .map(|(_, t)| t)
    }

    pub fn is_model(&self, ty: &str) -> bool {
        self.models.contains(ty)
    }
}

/// `PostConnection { edges: [PostEdge!]! }`, `PostEdge { node: Post! }` → Post.
fn connection_model(types: &HashMap<Arc<str>, TypeDef>, ty: &str) -> Option<Arc<str>> {
    let edge = types.get(ty)?.fields.get("edges")?;
    let node = types.get(edge)?.fields.get("node")?;
    types.get(node).filter(|t| t.is_model).map(|_| node.clone())
}

/// Enum value names in a GraphQL default value: `[DRAFT, PUBLISHED]` → ["DRAFT", "PUBLISHED"].
fn enum_names(value: &str) -> Vec<String> {
    value
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn lcfirst(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn ucfirst(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn named_type(t: &cst::Type) -> String {
    match t {
        cst::Type::NamedType(n) => n.name().map(|n| n.text().to_string()).unwrap_or_default(),
        cst::Type::ListType(l) => l.ty().map(|t| named_type(&t)).unwrap_or_default(),
        cst::Type::NonNullType(n) => {
            if let Some(named) = n.named_type() {
                named
                    .name()
                    .map(|n| n.text().to_string())
                    .unwrap_or_default()
            } else if let Some(list) = n.list_type() {
                list.ty().map(|t| named_type(&t)).unwrap_or_default()
            } else {
                n.syntax().text().to_string()
            }
        }
    }
}

fn is_list(t: &cst::Type) -> bool {
    match t {
        cst::Type::ListType(_) => true,
        cst::Type::NonNullType(n) => n.list_type().is_some(),
        cst::Type::NamedType(_) => false,
    }
}

/// Named type and list-ness of an introspection `type { name kind ofType … }`.
fn named_type_json(t: &Value) -> Option<(String, bool)> {
    let mut cur = t;
    let mut list = false;
    for _ in 0..16 {
        if cur.get("kind").and_then(Value::as_str) == Some("LIST") {
            list = true;
        }
        match cur.get("name").and_then(Value::as_str) {
            Some(n) => return Some((n.to_string(), list)),
            None => cur = cur.get("ofType")?,
        }
    }
    None
}

/// Builds the schema map by introspecting the upstream (blocking; used before the server runs).
pub fn introspect(upstream: &crate::config::Upstream) -> Result<SchemaMap, SchemaError> {
    let data = crate::upstream::query_data(upstream, INTROSPECTION_QUERY)?;
    SchemaMap::from_introspection(&data)
}

/// The introspection query the gateway sends at start-up (deprecated fields included: the
/// `…Many…` mutations Hygraph still serves are deprecated).
pub const INTROSPECTION_QUERY: &str = "query ContentgateSchemaMap { __schema { queryType { name } mutationType { name } \
types { kind name fields(includeDeprecated: true) { name args { name defaultValue type { name kind ofType { name kind ofType { name kind ofType { name kind ofType { name kind } } } } } } type { name kind ofType { name kind ofType { name kind ofType { name kind ofType { name kind } } } } } } \
enumValues(includeDeprecated: true) { name } inputFields { name type { name kind ofType { name kind ofType { name kind ofType { name kind ofType { name kind } } } } } } \
interfaces { name } possibleTypes { name } } } }";

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> SchemaMap {
        SchemaMap::from_sdl(include_str!("../tests/fixtures/hygraph.graphql")).unwrap()
    }

    #[test]
    fn root_fields_are_classified_by_return_type() {
        let s = fixture();
        let post: Arc<str> = Arc::from("Post");
        for (field, want) in [
            ("posts", QueryRoot::Read(post.clone())),
            ("post", QueryRoot::Read(post.clone())),
            ("postsConnection", QueryRoot::Read(post.clone())),
            ("postVersion", QueryRoot::ReadVersions(post.clone())),
            ("assets", QueryRoot::Read(Arc::from("Asset"))),
            ("users", QueryRoot::Read(Arc::from("User"))),
            ("node", QueryRoot::Abstract),
            ("entities", QueryRoot::Abstract),
            ("__schema", QueryRoot::Introspection),
        ] {
            assert_eq!(s.query_roots.get(field), Some(&want), "{field}");
        }
        for (field, kind) in [
            ("createPost", MutationKind::Create),
            ("upsertPost", MutationKind::Upsert),
            ("updateManyPostsConnection", MutationKind::Update),
            ("deleteManyPostsConnection", MutationKind::Delete),
            ("publishManyPostsConnection", MutationKind::Publish),
            ("unpublishManyPostsConnection", MutationKind::Unpublish),
        ] {
            assert_eq!(
                s.mutation_roots.get(field),
                Some(&MutationRoot::Model(kind, post.clone())),
                "{field}"
            );
        }
        // Models are object types implementing Node; a union or the Version type is not one.
        assert!(s.is_model("Asset") && s.is_model("User") && !s.is_model("Version"));
        assert!(!s.is_model("PostRelated"));
    }

    #[test]
    fn input_types_get_their_roles_and_arguments_their_types_and_defaults() {
        let s = fixture();
        let role = |t: &str| s.inputs.get(t).and_then(|d| d.role.clone());
        let m = |n: &str| Arc::<str>::from(n);
        assert_eq!(role("PostWhereInput"), Some((InputRole::Filter, m("Post"))));
        assert_eq!(
            role("PostManyWhereInput"),
            Some((InputRole::Filter, m("Post")))
        );
        assert_eq!(
            role("AuthorWhereUniqueInput"),
            Some((InputRole::Filter, m("Author")))
        );
        assert_eq!(
            role("PostCreateInput"),
            Some((InputRole::Create, m("Post")))
        );
        assert_eq!(
            role("PostUpdateManyInput"),
            Some((InputRole::Update, m("Post")))
        );
        assert_eq!(
            role("AuthorUpdateOneInlineInput"),
            Some((InputRole::Relation, m("Author")))
        );
        // Localization payloads have no role: their locale sits beside them.
        assert_eq!(role("PostCreateLocalizationDataInput"), None);
        assert_eq!(role("EntityWhereInput"), None);
        assert_eq!(
            s.arg_type("Query", "posts", "where").map(|t| &**t),
            Some("PostWhereInput")
        );
        assert_eq!(
            s.arg_default("Post", "documentInStages", "stages"),
            Some(&["PUBLISHED".to_string(), "DRAFT".to_string()][..])
        );
        assert_eq!(
            s.arg_default("Query", "posts", "stage"),
            Some(&["DRAFT".to_string()][..])
        );
        assert_eq!(
            s.enums.get("Stage").map(|v| v.len()),
            Some(2),
            "enum values are kept for variable coercion"
        );
    }
}
