//! Enforcement soundness, checked against an access-recording origin.
//!
//! Two gateway + sample-CMS pairs run as real processes (`contentgate serve` in front of
//! `contentgate sample-cms`): one CMS as `SampleContentApi::new()` (root arguments without
//! defaults, PUBLISHED served by default), one publishing a schema whose root `stage`
//! arguments default to DRAFT and serving DRAFT by default (a schema introspected with a
//! DRAFT-default token). Each gateway has a random public policy and 32 tokens with random
//! grants and default stages, all drawn from the fixed seed.
//!
//! Every case is a generated request (document, variables, operationName, headers, principal).
//! The CMS is reset to its seed content, the request goes through the gateway, and the CMS's
//! audit for the request's `x-request-id` lists every `(action, model, stage, locale)` it
//! touched. Each must be covered by the principal's grants — coverage is computed here, from
//! the README's rules, not by the gateway's code. A request refused with 403 is replayed
//! directly against the CMS (with the stage the gateway would have injected): if it succeeds
//! without GraphQL errors and every access is covered, the refusal was an over-denial.
//!
//! `SOUNDNESS_CASES` (default 500) and `SOUNDNESS_SEED` (default fixed) steer the run. Each
//! distinct kind of violation is shrunk with proptest's value trees and printed as a minimal
//! case; the test fails if any violation was found. `benches/soundness.sh` runs it long.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Instant;

use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{json, Value as Json};

const MODELS: [&str; 2] = ["Post", "Author"];
const STAGES: [&str; 2] = ["DRAFT", "PUBLISHED"];
const LOCALES: [&str; 2] = ["en", "de"];
const ACTIONS: [&str; 7] = [
    "read",
    "read_versions",
    "create",
    "update",
    "delete",
    "publish",
    "unpublish",
];
const TOKENS_PER_GATEWAY: usize = 32;
const POST_IDS: [&str; 3] = [
    "clseedposthello0000000001",
    "clseedpostcaching00000002",
    "clseedpostupcoming0000003",
];
const AUTHOR_IDS: [&str; 2] = ["clseedauthorada0000000001", "clseedauthorgrace00000002"];

// ---------------------------------------------------------------------------
// Grants and coverage (independent of the gateway's code)
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Grant {
    action: &'static str,
    models: Option<Vec<&'static str>>,
    stages: Option<Vec<&'static str>>,
    locales: Option<Vec<&'static str>>,
    from: Option<Vec<&'static str>>,
    to: Option<Vec<&'static str>>,
}

fn within(list: &Option<Vec<&'static str>>, item: &str) -> bool {
    list.as_ref().is_none_or(|l| l.contains(&item))
}

impl Grant {
    fn toml(&self, table: &str) -> String {
        let mut out = format!("[[{table}]]\naction = \"{}\"\n", self.action);
        let list = |l: &[&str]| {
            l.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (key, value) in [
            ("models", &self.models),
            ("stages", &self.stages),
            ("locales", &self.locales),
            ("from_stages", &self.from),
            ("to_stages", &self.to),
        ] {
            if let Some(v) = value {
                let _ = writeln!(out, "{key} = [{}]", list(v));
            }
        }
        out
    }

    /// Does this grant allow `action` on model/stage/locale? (stage/locale `None`: not asked)
    fn allows(&self, action: &str, model: &str, stage: Option<&str>, locale: Option<&str>) -> bool {
        if self.action != action || !within(&self.models, model) {
            return false;
        }
        let locale_ok = locale.is_none_or(|l| within(&self.locales, l));
        match action {
            "read_versions" => true,
            "read" | "delete" | "unpublish" => {
                stage.is_none_or(|s| within(&self.stages, s)) && locale_ok
            }
            "publish" => {
                within(&self.from, "DRAFT")
                    && stage.is_none_or(|s| within(&self.to, s))
                    && locale_ok
            }
            _ => locale_ok, // create, update: DRAFT, limited by locale
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Access {
    action: String,
    model: String,
    stage: Option<String>,
    locale: Option<String>,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} stage={} locale={}",
            self.action,
            self.model,
            self.stage.as_deref().unwrap_or("-"),
            self.locale.as_deref().unwrap_or("-")
        )
    }
}

/// The permissions one recorded access needs (README, "Content permissions"): each access
/// needs its own action on its model, stage and locale; deleting a non-DRAFT version also
/// unpublishes it.
fn needs(a: &Access) -> Vec<(&str, Option<&str>, Option<&str>)> {
    let stage = a.stage.as_deref();
    let locale = a.locale.as_deref();
    let mut out = vec![(a.action.as_str(), stage, locale)];
    if a.action == "delete" && stage.is_some_and(|s| s != "DRAFT") {
        out.push(("unpublish", stage, locale));
    }
    out
}

/// Why `a` is not covered, or `None` when it is. The reason names the dimension that fails
/// (no grant of that action on the model at all, or the stage, or the locale).
fn uncovered(a: &Access, grants: &[Grant]) -> Option<String> {
    for (action, stage, locale) in needs(a) {
        let ok = grants
            .iter()
            .any(|g| g.allows(action, &a.model, stage, locale));
        if ok {
            continue;
        }
        let model_ok = grants
            .iter()
            .any(|g| g.allows(action, &a.model, None, None));
        let stage_ok = grants
            .iter()
            .any(|g| g.allows(action, &a.model, stage, None));
        let why = if !model_ok {
            format!("no {action} on {}", a.model)
        } else if !stage_ok {
            format!(
                "{action} on {} not in stage {}",
                a.model,
                stage.unwrap_or("-")
            )
        } else {
            format!(
                "{action} on {} not in locale {}",
                a.model,
                locale.unwrap_or("-")
            )
        };
        return Some(why);
    }
    None
}

#[derive(Clone, Debug)]
struct Principal {
    name: String,
    bearer: Option<String>,
    default_stage: &'static str,
    grants: Vec<Grant>,
}

/// A grant's list: mostly absent (all), otherwise a random non-empty subset.
fn subset(all: &[&'static str]) -> BoxedStrategy<Option<Vec<&'static str>>> {
    let all = all.to_vec();
    prop_oneof![
        3 => Just(None),
        2 => proptest::sample::subsequence(all.clone(), 1..=all.len()).prop_map(Some),
    ]
    .boxed()
}

fn grant_strategy() -> BoxedStrategy<Grant> {
    (
        proptest::sample::select(ACTIONS.to_vec()),
        subset(&MODELS),
        subset(&STAGES),
        subset(&LOCALES),
        subset(&STAGES),
        subset(&STAGES),
    )
        .prop_map(|(action, models, stages, locales, from, to)| {
            let staged = matches!(action, "read" | "delete" | "unpublish");
            Grant {
                action,
                models,
                stages: if staged { stages } else { None },
                locales: if action == "read_versions" {
                    None
                } else {
                    locales
                },
                from: if action == "publish" { from } else { None },
                to: if action == "publish" { to } else { None },
            }
        })
        .boxed()
}

fn grants_strategy() -> BoxedStrategy<(Vec<Grant>, &'static str)> {
    (
        prop_oneof![
            // Reading is the common case: make sure most principals can read something.
            3 => (
                grant_strategy(),
                proptest::collection::vec(grant_strategy(), 0..6)
            )
                .prop_map(|(first, mut rest)| {
                    rest.insert(
                        0,
                        Grant {
                            action: "read",
                            from: None,
                            to: None,
                            ..first
                        },
                    );
                    rest
                }),
            1 => proptest::collection::vec(grant_strategy(), 1..6),
            // Broad principals: every action, each limited in at most a few dimensions.
            2 => proptest::collection::vec(grant_strategy(), 7..8).prop_map(|mut grants| {
                for (grant, action) in grants.iter_mut().zip(ACTIONS) {
                    grant.action = action;
                    if action != "read" && action != "delete" && action != "unpublish" {
                        grant.stages = None;
                    }
                    if action == "read_versions" {
                        grant.locales = None;
                    }
                    if action != "publish" {
                        grant.from = None;
                        grant.to = None;
                    }
                }
                grants
            }),
        ],
        proptest::sample::select(STAGES.to_vec()),
    )
        .boxed()
}

// ---------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------

/// An argument value: a literal or a variable (declared, with or without a value/default).
#[derive(Clone, Debug)]
enum Val {
    Lit(String),
    Var {
        ty: &'static str,
        value: Option<Json>,
        default: Option<String>,
    },
}

#[derive(Clone, Debug)]
enum Dir {
    Include(bool),
    Skip(bool),
    SkipVar(bool),
}

#[derive(Clone, Debug)]
enum Sel {
    Field {
        alias: bool,
        name: &'static str,
        args: Vec<(&'static str, Val)>,
        dir: Option<Dir>,
        sub: Vec<Sel>,
    },
    Inline {
        on: Option<&'static str>,
        dir: Option<Dir>,
        sub: Vec<Sel>,
    },
    /// Becomes `fragment fN on <on> { sub }` and a spread `...fN`.
    Named { on: &'static str, sub: Vec<Sel> },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ty {
    Post,
    Author,
    Node,
    Conn(&'static str),
    Edge(&'static str),
    DocVersion,
    Batch,
}

fn model_ty(model: &str) -> Ty {
    if model == "Post" {
        Ty::Post
    } else {
        Ty::Author
    }
}

fn lit(s: &str) -> Val {
    Val::Lit(s.to_string())
}

fn stage_val() -> BoxedStrategy<Val> {
    let s = || proptest::sample::select(STAGES.to_vec());
    prop_oneof![
        4 => s().prop_map(lit),
        1 => Just(lit("null")),
        2 => s().prop_map(|v| Val::Var { ty: "Stage", value: Some(json!(v)), default: None }),
        1 => s().prop_map(|v| Val::Var { ty: "Stage", value: None, default: Some(v.to_string()) }),
        1 => Just(Val::Var { ty: "Stage", value: Some(Json::Null), default: None }),
        1 => Just(Val::Var { ty: "Stage", value: None, default: None }),
        1 => s().prop_map(|v| Val::Var { ty: "Stage!", value: Some(json!(v)), default: None }),
    ]
    .boxed()
}

fn locale_list() -> BoxedStrategy<Vec<&'static str>> {
    prop_oneof![
        Just(vec![]),
        Just(vec!["en"]),
        Just(vec!["de"]),
        Just(vec!["de", "en"]),
        Just(vec!["en", "de"]),
    ]
    .boxed()
}

fn locales_val() -> BoxedStrategy<Val> {
    prop_oneof![
        4 => locale_list().prop_map(|l| lit(&format!("[{}]", l.join(", ")))),
        1 => Just(lit("null")),
        1 => Just(lit("de")),
        2 => locale_list().prop_map(|l| Val::Var { ty: "[Locale!]", value: Some(json!(l)), default: None }),
        1 => locale_list().prop_map(|l| Val::Var {
            ty: "[Locale!]",
            value: None,
            default: Some(format!("[{}]", l.join(", ")))
        }),
        1 => Just(Val::Var { ty: "[Locale!]", value: Some(Json::Null), default: None }),
        1 => Just(Val::Var { ty: "[Locale!]", value: None, default: None }),
        1 => locale_list().prop_map(|l| Val::Var { ty: "[Locale!]!", value: Some(json!(l)), default: None }),
    ]
    .boxed()
}

fn stages_val() -> BoxedStrategy<Val> {
    prop_oneof![
        Just(lit("[PUBLISHED]")),
        Just(lit("[DRAFT]")),
        Just(lit("[DRAFT, PUBLISHED]")),
        Just(lit("PUBLISHED")),
        Just(lit("[]")),
        Just(Val::Var {
            ty: "[Stage!]!",
            value: Some(json!(["PUBLISHED"])),
            default: None
        }),
        Just(Val::Var {
            ty: "[Stage!]!",
            value: Some(json!(["DRAFT", "PUBLISHED"])),
            default: None
        }),
    ]
    .boxed()
}

/// `where` filters, many of them relation filters that read the related model.
fn where_val(model: &'static str) -> BoxedStrategy<Val> {
    let (lits, ty): (Vec<&'static str>, &'static str) = if model == "Post" {
        (
            vec![
                r#"{author: {name_starts_with: "A"}}"#,
                r#"{author: {bio_contains: "e"}}"#,
                r#"{title_contains: "e"}"#,
                r#"{OR: [{author: {name: "Grace Hopper"}}, {slug: "hello-edge"}]}"#,
                r#"{NOT: [{author: {posts_some: {title_contains: "release"}}}]}"#,
                r#"{author: null}"#,
                r#"{AND: [{slug_not: "x"}]}"#,
            ],
            "PostWhereInput",
        )
    } else {
        (
            vec![
                r#"{posts_some: {title_contains: "e"}}"#,
                r#"{posts_every: {slug_not: "x"}}"#,
                r#"{posts_none: {author: {name: "Ada Lovelace"}}}"#,
                r#"{name_starts_with: "G"}"#,
                r#"{bio_contains: "a"}"#,
            ],
            "AuthorWhereInput",
        )
    };
    let vars: Vec<Json> = if model == "Post" {
        vec![
            json!({"author": {"name_starts_with": "A"}}),
            json!({"author": {"bio_contains": "e"}}),
            json!({"title_contains": "e"}),
        ]
    } else {
        vec![
            json!({"posts_some": {"title_contains": "e"}}),
            json!({"name_starts_with": "A"}),
        ]
    };
    prop_oneof![
        3 => proptest::sample::select(lits).prop_map(lit),
        1 => proptest::sample::select(vars).prop_map(move |v| Val::Var { ty, value: Some(v), default: None }),
    ]
    .boxed()
}

fn dir_strategy() -> BoxedStrategy<Option<Dir>> {
    prop_oneof![
        8 => Just(None),
        1 => any::<bool>().prop_map(|b| Some(Dir::Include(b))),
        1 => any::<bool>().prop_map(|b| Some(Dir::Skip(b))),
        1 => any::<bool>().prop_map(|b| Some(Dir::SkipVar(b))),
    ]
    .boxed()
}

fn scalar(name: &'static str) -> BoxedStrategy<Sel> {
    (any::<bool>(), dir_strategy())
        .prop_map(move |(alias, dir)| Sel::Field {
            alias: alias && name != "__typename",
            name,
            args: vec![],
            dir,
            sub: vec![],
        })
        .boxed()
}

fn field(
    name: &'static str,
    args: BoxedStrategy<Vec<(&'static str, Val)>>,
    sub: BoxedStrategy<Vec<Sel>>,
) -> BoxedStrategy<Sel> {
    (args, sub, dir_strategy(), any::<bool>())
        .prop_map(move |(args, sub, dir, alias)| Sel::Field {
            alias,
            name,
            args,
            dir,
            sub,
        })
        .boxed()
}

fn no_args() -> BoxedStrategy<Vec<(&'static str, Val)>> {
    Just(vec![]).boxed()
}

fn opt_arg(
    name: &'static str,
    v: BoxedStrategy<Val>,
) -> BoxedStrategy<Option<(&'static str, Val)>> {
    prop_oneof![1 => Just(None), 1 => v.prop_map(move |v| Some((name, v)))].boxed()
}

fn args_of(
    parts: Vec<BoxedStrategy<Option<(&'static str, Val)>>>,
) -> BoxedStrategy<Vec<(&'static str, Val)>> {
    parts
        .prop_map(|v| v.into_iter().flatten().collect())
        .boxed()
}

fn bool_lit() -> BoxedStrategy<Val> {
    any::<bool>()
        .prop_map(|b| lit(if b { "true" } else { "false" }))
        .boxed()
}

/// Fields of a document type, nesting at most `depth` more levels.
fn sels(ty: Ty, depth: u32) -> BoxedStrategy<Vec<Sel>> {
    proptest::collection::vec(sel(ty, depth), 1..4).boxed()
}

fn model_specific(model: &'static str, depth: u32) -> Vec<(u32, BoxedStrategy<Sel>)> {
    let mut out: Vec<(u32, BoxedStrategy<Sel>)> = vec![
        (3, scalar("id")),
        (1, scalar("stage")),
        (1, scalar("locale")),
        (1, scalar("__typename")),
        (1, scalar("updatedAt")),
    ];
    if model == "Post" {
        out.push((3, scalar("title")));
        out.push((1, scalar("slug")));
        out.push((1, scalar("body")));
    } else {
        out.push((2, scalar("name")));
        out.push((2, scalar("bio")));
    }
    if depth == 0 {
        return out;
    }
    let d = depth - 1;
    let me = model_ty(model);
    if model == "Post" {
        out.push((4, field("author", no_args(), sels(Ty::Author, d))));
    } else {
        out.push((
            4,
            field(
                "posts",
                args_of(vec![
                    opt_arg("where", where_val("Post")),
                    opt_arg("first", Just(lit("1")).boxed()),
                ]),
                sels(Ty::Post, d),
            ),
        ));
    }
    out.push((
        2,
        field(
            "localizations",
            args_of(vec![
                opt_arg("locales", locales_val()),
                opt_arg("includeCurrent", bool_lit()),
            ]),
            sels(me, d),
        ),
    ));
    out.push((
        2,
        field(
            "documentInStages",
            args_of(vec![
                opt_arg("stages", stages_val()),
                opt_arg("includeCurrent", bool_lit()),
                opt_arg("inheritLocale", bool_lit()),
            ]),
            sels(me, d),
        ),
    ));
    out.push((
        1,
        field(
            "history",
            args_of(vec![
                opt_arg("limit", Just(lit("2")).boxed()),
                opt_arg("stageOverride", stage_val()),
            ]),
            Just(vec![Sel::Field {
                alias: false,
                name: "revision",
                args: vec![],
                dir: None,
                sub: vec![],
            }])
            .boxed(),
        ),
    ));
    out.push((
        1,
        (sels(me, d), dir_strategy())
            .prop_map(move |(sub, dir)| Sel::Inline {
                on: Some(model),
                dir,
                sub,
            })
            .boxed(),
    ));
    out.push((
        1,
        (sels(me, d), dir_strategy())
            .prop_map(|(sub, dir)| Sel::Inline { on: None, dir, sub })
            .boxed(),
    ));
    out.push((
        2,
        sels(me, d)
            .prop_map(move |sub| Sel::Named { on: model, sub })
            .boxed(),
    ));
    out.push((
        1,
        sels(Ty::Node, d)
            .prop_map(|sub| Sel::Named { on: "Node", sub })
            .boxed(),
    ));
    out
}

fn sel(ty: Ty, depth: u32) -> BoxedStrategy<Sel> {
    let options: Vec<(u32, BoxedStrategy<Sel>)> = match ty {
        Ty::Post => model_specific("Post", depth),
        Ty::Author => model_specific("Author", depth),
        Ty::Node => {
            let mut o: Vec<(u32, BoxedStrategy<Sel>)> = vec![
                (2, scalar("id")),
                (1, scalar("stage")),
                (1, scalar("__typename")),
            ];
            if depth > 0 {
                for m in MODELS {
                    o.push((
                        2,
                        (sels(model_ty(m), depth - 1), dir_strategy())
                            .prop_map(move |(sub, dir)| Sel::Inline {
                                on: Some(m),
                                dir,
                                sub,
                            })
                            .boxed(),
                    ));
                    o.push((
                        1,
                        sels(model_ty(m), depth - 1)
                            .prop_map(move |sub| Sel::Named { on: m, sub })
                            .boxed(),
                    ));
                }
            }
            o
        }
        Ty::Conn(m) => vec![
            (3, field("edges", no_args(), sels(Ty::Edge(m), depth))),
            (
                1,
                field(
                    "aggregate",
                    no_args(),
                    Just(vec![Sel::Field {
                        alias: false,
                        name: "count",
                        args: vec![],
                        dir: None,
                        sub: vec![],
                    }])
                    .boxed(),
                ),
            ),
            (
                1,
                field(
                    "pageInfo",
                    no_args(),
                    Just(vec![Sel::Field {
                        alias: false,
                        name: "hasNextPage",
                        args: vec![],
                        dir: None,
                        sub: vec![],
                    }])
                    .boxed(),
                ),
            ),
        ],
        Ty::Edge(m) => vec![
            (3, field("node", no_args(), sels(model_ty(m), depth))),
            (1, scalar("cursor")),
        ],
        Ty::DocVersion => vec![
            (1, scalar("id")),
            (1, scalar("revision")),
            (2, scalar("data")),
        ],
        Ty::Batch => vec![(1, scalar("count"))],
    };
    proptest::strategy::Union::new_weighted(options).boxed()
}

const DEPTH: u32 = 2;

fn root_read(model: &'static str) -> BoxedStrategy<Sel> {
    let plural = if model == "Post" { "posts" } else { "authors" };
    let conn = if model == "Post" {
        "postsConnection"
    } else {
        "authorsConnection"
    };
    let single = if model == "Post" { "post" } else { "author" };
    let version = if model == "Post" {
        "postVersion"
    } else {
        "authorVersion"
    };
    let ids: Vec<&'static str> = if model == "Post" {
        POST_IDS.to_vec()
    } else {
        AUTHOR_IDS.to_vec()
    };
    let stage_locales = || {
        vec![
            opt_arg("stage", stage_val()),
            opt_arg("locales", locales_val()),
        ]
    };
    let mut list_args = stage_locales();
    list_args.push(opt_arg("where", where_val(model)));
    list_args.push(opt_arg("first", Just(lit("2")).boxed()));
    let ids2 = ids.clone();
    let unique = proptest::sample::select(ids.clone())
        .prop_map(|id| ("where", lit(&format!("{{id: \"{id}\"}}"))))
        .boxed();
    let version_where = (
        proptest::sample::select(ids2),
        proptest::sample::select(STAGES.to_vec()),
    )
        .prop_map(|(id, s)| {
            vec![(
                "where",
                lit(&format!("{{id: \"{id}\", stage: {s}, revision: 1}}")),
            )]
        })
        .boxed();
    prop_oneof![
        4 => field(plural, args_of(list_args.clone()), sels(model_ty(model), DEPTH)),
        2 => field(
            single,
            (unique, args_of(stage_locales()))
                .prop_map(|(u, mut rest)| {
                    rest.insert(0, u);
                    rest
                })
                .boxed(),
            sels(model_ty(model), DEPTH)
        ),
        2 => field(conn, args_of(list_args), sels(Ty::Conn(model), DEPTH)),
        1 => field(version, version_where, sels(Ty::DocVersion, 0)),
    ]
    .boxed()
}

fn root_node() -> BoxedStrategy<Sel> {
    let ids: Vec<&'static str> = POST_IDS.iter().chain(AUTHOR_IDS.iter()).copied().collect();
    field(
        "node",
        (
            proptest::sample::select(ids),
            args_of(vec![
                opt_arg("stage", stage_val()),
                opt_arg("locales", locales_val()),
            ]),
        )
            .prop_map(|(id, mut rest)| {
                rest.insert(0, ("id", lit(&format!("\"{id}\""))));
                rest
            })
            .boxed(),
        sels(Ty::Node, DEPTH),
    )
}

fn query_root() -> BoxedStrategy<Sel> {
    prop_oneof![
        4 => root_read("Post"),
        3 => root_read("Author"),
        2 => root_node(),
        1 => scalar("__typename"),
        1 => proptest::collection::vec(root_read("Post"), 1..2)
            .prop_map(|sub| Sel::Named { on: "Query", sub }),
        1 => proptest::collection::vec(root_read("Author"), 1..2)
            .prop_map(|sub| Sel::Inline { on: Some("Query"), dir: None, sub }),
    ]
    .boxed()
}

fn data_val(model: &'static str, create: bool) -> BoxedStrategy<Val> {
    let (field, loc_field) = if model == "Post" {
        ("title", "title")
    } else {
        ("name", "bio")
    };
    let plain: Vec<String> = if model == "Post" {
        vec![
            format!("{field}: \"t\""),
            "body: \"b\"".into(),
            "slug: \"gen-slug\"".into(),
            format!("author: {{connect: {{id: \"{}\"}}}}", AUTHOR_IDS[1]),
        ]
    } else {
        vec![format!("{field}: \"n\""), "bio: \"b\"".into()]
    };
    let locs: Vec<String> = if create {
        vec![format!(
            "localizations: {{create: [{{locale: de, data: {{{loc_field}: \"d\"}}}}]}}"
        )]
    } else {
        vec![
            format!("localizations: {{update: [{{locale: de, data: {{{loc_field}: \"d\"}}}}]}}"),
            format!(
                "localizations: {{upsert: [{{locale: de, create: {{{loc_field}: \"d\"}}, update: {{{loc_field}: \"d\"}}}}]}}"
            ),
            "localizations: {delete: [de]}".to_string(),
            format!("localizations: {{create: [{{locale: de, data: {{{loc_field}: \"d\"}}}}]}}"),
        ]
    };
    let as_json = {
        let mut j = serde_json::Map::new();
        j.insert(field.into(), json!("v"));
        let mut loc = serde_json::Map::new();
        loc.insert(loc_field.into(), json!("d"));
        let op = if create { "create" } else { "update" };
        j.insert(
            "localizations".into(),
            json!({ op: [{"locale": "de", "data": Json::Object(loc)}] }),
        );
        Json::Object(j)
    };
    let ty = match (model, create) {
        ("Post", true) => "PostCreateInput!",
        ("Post", false) => "PostUpdateInput!",
        (_, true) => "AuthorCreateInput!",
        _ => "AuthorUpdateInput!",
    };
    prop_oneof![
        4 => (
            proptest::sample::subsequence(plain.clone(), 0..=plain.len()),
            proptest::sample::subsequence(locs.clone(), 0..=1)
        )
            .prop_map(|(mut p, l)| {
                p.extend(l);
                lit(&format!("{{{}}}", p.join(", ")))
            }),
        1 => Just(Val::Var { ty, value: Some(as_json), default: None }),
    ]
    .boxed()
}

fn mutation_root() -> BoxedStrategy<Sel> {
    let model = proptest::sample::select(MODELS.to_vec());
    model
        .prop_flat_map(|m| {
            let ids: Vec<&'static str> = if m == "Post" {
                POST_IDS.to_vec()
            } else {
                AUTHOR_IDS.to_vec()
            };
            let unique = proptest::sample::select(ids)
                .prop_map(|id| lit(&format!("{{id: \"{id}\"}}")))
                .boxed();
            let unique_or_slug: BoxedStrategy<Val> = if m == "Post" {
                prop_oneof![
                    2 => unique.clone(),
                    1 => Just(lit("{slug: \"hello-edge\"}")),
                    1 => Just(lit("{slug: \"no-such-slug\"}")),
                ]
                .boxed()
            } else {
                unique.clone()
            };
            let many_where: BoxedStrategy<Option<(&'static str, Val)>> = if m == "Post" {
                opt_arg(
                    "where",
                    prop_oneof![
                        Just(lit("{slug_in: [\"hello-edge\"]}")),
                        Just(lit("{author: {name_starts_with: \"A\"}}")),
                        Just(lit("{id: \"clseedpostupcoming0000003\"}")),
                    ]
                    .boxed(),
                )
            } else {
                opt_arg(
                    "where",
                    prop_oneof![
                        Just(lit("{name_starts_with: \"G\"}")),
                        Just(lit("{posts_some: {title_contains: \"e\"}}")),
                    ]
                    .boxed(),
                )
            };
            let cap = if m == "Post" { "Post" } else { "Author" };
            let plural = if m == "Post" { "Posts" } else { "Authors" };
            let name = |verb: &str, suffix: &str| -> &'static str {
                Box::leak(format!("{verb}{suffix}").into_boxed_str())
            };
            let sub = sels(model_ty(m), 1);
            let conn_sub = sels(Ty::Conn(m), 1);
            let batch = sels(Ty::Batch, 0);
            let w = |v: BoxedStrategy<Val>| v.prop_map(|v| ("where", v)).boxed();
            prop_oneof![
                2 => field(
                    name("create", cap),
                    data_val(m, true).prop_map(|d| vec![("data", d)]).boxed(),
                    sub.clone()
                ),
                2 => field(
                    name("update", cap),
                    (w(unique_or_slug.clone()), data_val(m, false))
                        .prop_map(|(w, d)| vec![w, ("data", d)])
                        .boxed(),
                    sub.clone()
                ),
                1 => field(
                    name("upsert", cap),
                    (w(unique_or_slug.clone()), data_val(m, true), data_val(m, false))
                        .prop_map(|(w, c, u)| {
                            let render = |v: &Val| match v {
                                Val::Lit(s) => s.clone(),
                                Val::Var { .. } => "{}".to_string(),
                            };
                            vec![
                                w,
                                (
                                    "upsert",
                                    lit(&format!("{{create: {}, update: {}}}", render(&c), render(&u))),
                                ),
                            ]
                        })
                        .boxed(),
                    sub.clone()
                ),
                1 => field(
                    name("delete", cap),
                    w(unique_or_slug.clone()).prop_map(|w| vec![w]).boxed(),
                    sub.clone()
                ),
                2 => field(
                    name("publish", cap),
                    args_of(vec![
                        w(unique_or_slug.clone()).prop_map(Some).boxed(),
                        opt_arg("to", stages_val()),
                        opt_arg("locales", locales_val()),
                    ]),
                    sub.clone()
                ),
                2 => field(
                    name("unpublish", cap),
                    args_of(vec![
                        w(unique_or_slug.clone()).prop_map(Some).boxed(),
                        opt_arg("from", stages_val()),
                        opt_arg("locales", locales_val()),
                    ]),
                    sub.clone()
                ),
                1 => field(
                    name("schedulePublish", cap),
                    args_of(vec![
                        w(unique_or_slug).prop_map(Some).boxed(),
                        opt_arg("to", stages_val()),
                    ]),
                    sub
                ),
                1 => field(
                    name("updateMany", &format!("{plural}Connection")),
                    (many_where.clone(), data_val(m, false))
                        .prop_map(move |(w, d)| {
                            let mut v: Vec<_> = w.into_iter().collect();
                            // UpdateManyInput has no localizations or unique fields.
                            let plain = if m == "Post" { "{title: \"m\"}" } else { "{name: \"m\"}" };
                            let _ = d;
                            v.push(("data", lit(plain)));
                            v
                        })
                        .boxed(),
                    conn_sub.clone()
                ),
                1 => field(
                    name("deleteMany", &format!("{plural}Connection")),
                    args_of(vec![many_where.clone(), opt_arg("first", Just(lit("1")).boxed())]),
                    conn_sub.clone()
                ),
                1 => field(
                    name("publishMany", &format!("{plural}Connection")),
                    args_of(vec![
                        many_where.clone(),
                        opt_arg("to", stages_val()),
                        opt_arg("locales", locales_val()),
                    ]),
                    conn_sub.clone()
                ),
                1 => field(
                    name("unpublishMany", &format!("{plural}Connection")),
                    args_of(vec![
                        many_where.clone(),
                        opt_arg("from", stages_val()),
                        opt_arg("locales", locales_val()),
                    ]),
                    conn_sub
                ),
                1 => field(
                    name("deleteMany", plural),
                    args_of(vec![many_where.clone()]),
                    batch.clone()
                ),
                1 => field(
                    name("publishMany", plural),
                    args_of(vec![many_where, opt_arg("to", stages_val())]),
                    batch
                ),
            ]
        })
        .boxed()
}

#[derive(Clone, Debug)]
struct Operation {
    mutation: bool,
    named: bool,
    roots: Vec<Sel>,
}

#[derive(Clone, Debug)]
struct Doc {
    ops: Vec<Operation>,
    /// Which operation `operationName` selects (when there are several).
    select: usize,
}

fn doc_strategy() -> BoxedStrategy<Doc> {
    let query = (any::<bool>(), proptest::collection::vec(query_root(), 1..4)).prop_map(
        |(named, roots)| Operation {
            mutation: false,
            named,
            roots,
        },
    );
    let mutation = (
        any::<bool>(),
        proptest::collection::vec(mutation_root(), 1..3),
    )
        .prop_map(|(named, roots)| Operation {
            mutation: true,
            named,
            roots,
        });
    let op = prop_oneof![3 => query.clone(), 2 => mutation.clone()];
    prop_oneof![
        6 => op.prop_map(|o| Doc { ops: vec![o], select: 0 }),
        1 => (prop_oneof![query.clone(), mutation.clone()], prop_oneof![query, mutation], 0..2usize)
            .prop_map(|(mut a, mut b, select)| {
                a.named = true;
                b.named = true;
                Doc { ops: vec![a, b], select }
            }),
    ]
    .boxed()
}

struct Rendered {
    query: String,
    variables: serde_json::Map<String, Json>,
    operation_name: Option<String>,
}

#[derive(Default)]
struct Renderer {
    fragments: Vec<String>,
    vars: Vec<String>,
    values: serde_json::Map<String, Json>,
    alias: usize,
    var: usize,
}

impl Renderer {
    fn val(&mut self, v: &Val) -> String {
        match v {
            Val::Lit(s) => s.clone(),
            Val::Var { ty, value, default } => {
                let name = format!("v{}", self.var);
                self.var += 1;
                let mut decl = format!("${name}: {ty}");
                if let Some(d) = default {
                    let _ = write!(decl, " = {d}");
                }
                self.vars.push(decl);
                if let Some(value) = value {
                    self.values.insert(name.clone(), value.clone());
                }
                format!("${name}")
            }
        }
    }

    fn dir(&mut self, d: &Option<Dir>) -> String {
        match d {
            None => String::new(),
            Some(Dir::Include(b)) => format!(" @include(if: {b})"),
            Some(Dir::Skip(b)) => format!(" @skip(if: {b})"),
            Some(Dir::SkipVar(b)) => {
                let v = self.val(&Val::Var {
                    ty: "Boolean!",
                    value: Some(json!(b)),
                    default: None,
                });
                format!(" @skip(if: {v})")
            }
        }
    }

    fn sels(&mut self, sels: &[Sel]) -> String {
        let mut out = String::from("{ ");
        for s in sels {
            match s {
                Sel::Field {
                    alias,
                    name,
                    args,
                    dir,
                    sub,
                } => {
                    // Fields with arguments are always aliased apart, so that two of them never
                    // conflict (which would only make the CMS answer a validation error).
                    if *alias || !args.is_empty() {
                        self.alias += 1;
                        let _ = write!(out, "a{}: ", self.alias);
                    }
                    out.push_str(name);
                    if !args.is_empty() {
                        let rendered: Vec<String> = args
                            .iter()
                            .map(|(k, v)| format!("{k}: {}", self.val(v)))
                            .collect();
                        let _ = write!(out, "({})", rendered.join(", "));
                    }
                    out.push_str(&self.dir(dir));
                    if !sub.is_empty() {
                        out.push(' ');
                        out.push_str(&self.sels(sub));
                    }
                }
                Sel::Inline { on, dir, sub } => {
                    out.push_str("...");
                    if let Some(on) = on {
                        let _ = write!(out, " on {on}");
                    }
                    out.push_str(&self.dir(dir));
                    out.push(' ');
                    out.push_str(&self.sels(sub));
                }
                Sel::Named { on, sub } => {
                    let body = self.sels(sub);
                    let name = format!("f{}", self.fragments.len());
                    self.fragments
                        .push(format!("fragment {name} on {on} {body}"));
                    let _ = write!(out, "...{name}");
                }
            }
            out.push(' ');
        }
        out.push('}');
        out
    }
}

fn render(doc: &Doc) -> Rendered {
    let mut r = Renderer::default();
    let mut ops = Vec::new();
    let mut names = Vec::new();
    for (i, op) in doc.ops.iter().enumerate() {
        r.vars.clear();
        let body = r.sels(&op.roots);
        let kind = if op.mutation { "mutation" } else { "query" };
        let name = if op.named || doc.ops.len() > 1 {
            format!("Op{i}")
        } else {
            String::new()
        };
        names.push(name.clone());
        let vars = if r.vars.is_empty() {
            String::new()
        } else {
            format!("({})", r.vars.join(", "))
        };
        if name.is_empty() && vars.is_empty() && !op.mutation {
            ops.push(body);
        } else {
            ops.push(format!("{kind} {name}{vars} {body}"));
        }
    }
    let mut query = ops.join("\n");
    for f in &r.fragments {
        query.push('\n');
        query.push_str(f);
    }
    Rendered {
        query,
        variables: r.values,
        operation_name: (doc.ops.len() > 1).then(|| names[doc.select].clone()),
    }
}

// ---------------------------------------------------------------------------
// Headers and cases
// ---------------------------------------------------------------------------

fn header_strategy() -> BoxedStrategy<Vec<(&'static str, Vec<u8>)>> {
    let stage: BoxedStrategy<Vec<(&'static str, Vec<u8>)>> = prop_oneof![
        14 => Just(vec![]),
        4 => proptest::sample::select(STAGES.to_vec()).prop_map(|s| vec![("gcms-stage", s.as_bytes().to_vec())]),
        1 => Just(vec![("gcms-stage", b" draft ".to_vec())]),
        1 => Just(vec![("gcms-stage", b"DRAFT\xc2\xa0".to_vec())]),
        1 => Just(vec![("gcms-stage", b"\tPUBLISHED".to_vec())]),
        1 => Just(vec![("gcms-stage", b"PUBLISHED".to_vec()), ("gcms-stage", b"DRAFT".to_vec())]),
        1 => Just(vec![("gcms-stage", b"".to_vec())]),
    ]
    .boxed();
    let locales: BoxedStrategy<Vec<(&'static str, Vec<u8>)>> = prop_oneof![
        14 => Just(vec![]),
        4 => proptest::sample::select(vec!["de", "en", "de,en", "en,de"])
            .prop_map(|s| vec![("gcms-locales", s.as_bytes().to_vec())]),
        1 => Just(vec![("gcms-locales", b" de , en ".to_vec())]),
        1 => Just(vec![("gcms-locales", b"de\xc2\xa0".to_vec())]),
        1 => Just(vec![("gcms-locales", b"de".to_vec()), ("gcms-locales", b"en".to_vec())]),
        1 => Just(vec![("gcms-locales", b"".to_vec())]),
        1 => Just(vec![("gcms-locales", b",de".to_vec())]),
    ]
    .boxed();
    (stage, locales)
        .prop_map(|(mut a, b)| {
            a.extend(b);
            a
        })
        .boxed()
}

#[derive(Clone, Debug)]
struct Case {
    pair: usize,
    principal: usize,
    doc: Doc,
    headers: Vec<(&'static str, Vec<u8>)>,
}

fn case_strategy() -> BoxedStrategy<Case> {
    (
        0..2usize,
        0..=TOKENS_PER_GATEWAY,
        doc_strategy(),
        header_strategy(),
    )
        .prop_map(|(pair, principal, doc, headers)| Case {
            pair,
            principal,
            doc,
            headers,
        })
        .boxed()
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

struct Pair {
    cms: SampleCms,
    gateway: TestGateway,
    principals: Vec<Principal>,
    label: &'static str,
    /// The gateway's TLS listener (`https://localhost:PORT`), and a client that speaks HTTP/2
    /// to it (ALPN): every other case goes this way, so the properties hold for h1 and h2.
    tls_url: String,
    h2: reqwest::Client,
    _certs: tempfile::TempDir,
}

async fn start_pair(
    runner: &mut TestRunner,
    root_stage_default: Option<&'static str>,
    label: &'static str,
) -> Pair {
    let cms = SampleCms::start(root_stage_default);
    let sdl = match root_stage_default {
        Some(stage) => {
            contentgate::demo::content_api::SampleContentApi::with_root_stage_default(stage)
                .unwrap()
                .sdl()
        }
        None => contentgate::demo::content_api::SampleContentApi::new().sdl(),
    };
    let strategy = grants_strategy();
    let mut principals = Vec::new();
    let (public_grants, public_stage) = strategy.new_tree(runner).unwrap().current();
    let mut public = format!("default_stage = \"{public_stage}\"\n");
    for g in &public_grants {
        public.push_str(&g.toml("permission"));
    }
    principals.push(Principal {
        name: "public".into(),
        bearer: None,
        default_stage: public_stage,
        grants: public_grants,
    });
    let mut tokens = String::new();
    for i in 0..TOKENS_PER_GATEWAY {
        let (grants, stage) = strategy.new_tree(runner).unwrap().current();
        let jti = format!("jti-{label}-{i}");
        let perms: String = grants.iter().map(|g| g.toml("token.permission")).collect();
        tokens.push_str(&token_entry(&jti, &jti, stage, &perms));
        principals.push(Principal {
            name: jti.clone(),
            bearer: Some(bearer(&es(&jti))),
            default_stage: stage,
            grants,
        });
    }
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path(), label);
    let tls_port = free_port();
    let gateway = GatewayBuilder::with_upstream(&cms.url("/v2/sample/master"))
        .public(&public)
        .tokens(&tokens)
        .schema(Some(sdl))
        // Most generated requests are refused: the refusal budget per address must not turn
        // a long run into 429s.
        .extra(&format!(
            "\n[rate_limits]\nrefused_per_ip = {{ requests_per_second = 100000, burst = 1000000 }}\n\
             \n[[listener]]\naddress = \"127.0.0.1:{tls_port}\"\ntls = {{ cert_file = \"{cert}\", key_file = \"{key}\" }}\n"
        ))
        .start()
        .await;
    let h2 = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .tls_built_in_root_certs(false)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    Pair {
        cms,
        gateway,
        principals,
        label,
        tls_url: format!("https://localhost:{tls_port}"),
        h2,
        _certs: certs,
    }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Outcome {
    status: u16,
    request_id: String,
    body: String,
    accesses: Vec<Access>,
    /// Uncovered accesses and why.
    violations: Vec<(Access, String)>,
    /// For a 403: the direct replay succeeded and every access was covered.
    over_denied: Option<bool>,
    forwarded: bool,
    /// A forwarded request whose stage, locales, content type or body differ from what the
    /// gateway checked (the client's valid headers or the principal's defaults, the request
    /// re-serialized).
    mismatch: Option<String>,
}

/// What the gateway must have sent for a forwarded request: the checked `gcms-stage` (the
/// client's, else the principal's default), the checked `gcms-locales` (the client's list,
/// canonical, else the default locale), one `application/json`, and the body re-serialized.
fn upstream_mismatch(
    received: &Json,
    case: &Case,
    default_stage: &str,
    body: &str,
) -> Option<String> {
    let header = |name: &str| {
        case.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .trim_matches([' ', '\t'])
                    .to_string()
            })
    };
    let stage = header("gcms-stage").unwrap_or_else(|| default_stage.to_string());
    let locales = header("gcms-locales")
        .map(|l| {
            l.split(',')
                .map(|p| p.trim_matches([' ', '\t']))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|| "en".to_string());
    let expected = json!({
        "gcms-stage": stage,
        "gcms-locales": locales,
        "content-type": ["application/json"],
        "body_sha256": contentgate::demo::content_api::body_digest(body.as_bytes()),
    });
    for key in ["gcms-stage", "gcms-locales", "content-type", "body_sha256"] {
        if received[key] != expected[key] {
            return Some(format!(
                "{key}: the CMS received {} where the gateway checked {}",
                received[key], expected[key]
            ));
        }
    }
    None
}

fn parse_accesses(v: &Json) -> Vec<Access> {
    v.as_array()
        .map(|list| {
            list.iter()
                .map(|a| Access {
                    action: a["action"].as_str().unwrap_or_default().to_string(),
                    model: a["model"].as_str().unwrap_or_default().to_string(),
                    stage: a["stage"].as_str().map(str::to_string),
                    locale: a["locale"].as_str().map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn audit(client: &reqwest::Client, cms: &SampleCms, id: &str) -> Option<Vec<Access>> {
    let url = format!("{}?request_id={}", cms.url("/__audit"), url_escape(id));
    let r = client.get(url).send().await.unwrap();
    if r.status() == 404 {
        return None;
    }
    Some(parse_accesses(&r.json::<Json>().await.unwrap()))
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn body_of(r: &Rendered) -> String {
    let mut body = json!({ "query": r.query });
    if !r.variables.is_empty() {
        body["variables"] = Json::Object(r.variables.clone());
    }
    if let Some(name) = &r.operation_name {
        body["operationName"] = json!(name);
    }
    body.to_string()
}

async fn evaluate(client: &reqwest::Client, pairs: &[Pair], case: &Case, serial: u64) -> Outcome {
    let pair = &pairs[case.pair];
    let principal = &pair.principals[case.principal];
    let rendered = render(&case.doc);
    let body = body_of(&rendered);
    client.post(pair.cms.url("/__reset")).send().await.unwrap();
    // Every other case over HTTP/2 (TLS, ALPN), the rest over HTTP/1.1.
    let mut req = if serial % 2 == 1 {
        pair.h2.post(format!("{}/content", pair.tls_url))
    } else {
        client.post(pair.gateway.url("/content"))
    }
    .header("content-type", "application/json")
    .body(body.clone());
    for (name, value) in &case.headers {
        req = req.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    if let Some(b) = &principal.bearer {
        req = req.header("authorization", b);
    }
    let resp = req.send().await.unwrap();
    if serial % 2 == 1 {
        assert_eq!(
            resp.version(),
            reqwest::Version::HTTP_2,
            "the h2 half must be h2"
        );
    }
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.unwrap_or_default();
    let mut out = Outcome {
        status,
        request_id: request_id.clone(),
        body: text,
        ..Outcome::default()
    };
    if !request_id.is_empty() {
        if let Some(accesses) = audit(client, &pair.cms, &request_id).await {
            out.forwarded = true;
            let url = format!(
                "{}?request_id={}",
                pair.cms.url("/__received"),
                url_escape(&request_id)
            );
            let received: Json = client.get(url).send().await.unwrap().json().await.unwrap();
            out.mismatch = upstream_mismatch(&received, case, principal.default_stage, &body);
            out.violations = accesses
                .iter()
                .filter_map(|a| uncovered(a, &principal.grants).map(|why| (a.clone(), why)))
                .collect();
            out.accesses = accesses;
        }
    }
    if status == 403 {
        // Replay at the origin with what the gateway would have sent: the client's headers,
        // and the principal's default stage when the client named none.
        client.post(pair.cms.url("/__reset")).send().await.unwrap();
        let id = format!("direct-{}-{serial}", pair.label);
        let mut req = client
            .post(pair.cms.url("/v2/sample/master"))
            .header("content-type", "application/json")
            .header("x-request-id", &id)
            .body(body);
        let mut has_stage = false;
        for (name, value) in &case.headers {
            has_stage |= *name == "gcms-stage";
            req = req.header(
                *name,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        if !has_stage {
            req = req.header("gcms-stage", principal.default_stage);
        }
        let direct: Json = req.send().await.unwrap().json().await.unwrap_or(Json::Null);
        let clean = direct.get("errors").is_none() && !direct["data"].is_null();
        let accesses = audit(client, &pair.cms, &id).await.unwrap_or_default();
        let covered = accesses
            .iter()
            .all(|a| uncovered(a, &principal.grants).is_none());
        out.over_denied = Some(clean && covered);
    }
    out
}

/// The kind of a violation, for counting and for shrinking one example per kind: the first
/// reason, and the root fields of the document (different root fields are usually different
/// bugs in the gateway's classification).
fn signature(case: &Case, o: &Outcome) -> Option<String> {
    let mut kinds: BTreeSet<&str> = o.violations.iter().map(|(_, why)| why.as_str()).collect();
    let why = kinds.pop_first()?;
    let mut roots = BTreeSet::new();
    for op in &case.doc.ops {
        collect_roots(&op.roots, &mut roots);
    }
    let roots: Vec<&str> = roots.into_iter().collect();
    Some(format!("{why} [{}]", roots.join(",")))
}

fn collect_roots(sels: &[Sel], out: &mut BTreeSet<&'static str>) {
    for s in sels {
        match s {
            Sel::Field { name, .. } => {
                out.insert(name);
            }
            Sel::Inline { sub, .. } | Sel::Named { sub, .. } => collect_roots(sub, out),
        }
    }
}

fn describe(pairs: &[Pair], case: &Case, o: &Outcome) -> String {
    let pair = &pairs[case.pair];
    let p = &pair.principals[case.principal];
    let r = render(&case.doc);
    let mut s = String::new();
    let _ = writeln!(s, "gateway/CMS pair: {}", pair.label);
    let _ = writeln!(s, "document:\n{}", r.query);
    if !r.variables.is_empty() {
        let _ = writeln!(s, "variables: {}", Json::Object(r.variables.clone()));
    }
    if let Some(n) = &r.operation_name {
        let _ = writeln!(s, "operationName: {n}");
    }
    let headers: Vec<String> = case
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {:?}", String::from_utf8_lossy(v)))
        .collect();
    let _ = writeln!(s, "headers: [{}]", headers.join(", "));
    let _ = writeln!(
        s,
        "principal: {} (default stage {})",
        p.name, p.default_stage
    );
    let _ = writeln!(s, "grants:");
    if p.grants.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for g in &p.grants {
        let _ = writeln!(s, "  {}", g.toml("permission").replace('\n', "; "));
    }
    let _ = writeln!(s, "gateway answered {} ({})", o.status, o.request_id);
    let body: String = o.body.chars().take(600).collect();
    let _ = writeln!(s, "response: {body}");
    let _ = writeln!(s, "recorded accesses:");
    for a in &o.accesses {
        let _ = writeln!(s, "  {a}");
    }
    let _ = writeln!(s, "uncovered:");
    for (a, why) in &o.violations {
        let _ = writeln!(s, "  {a}   <- {why}");
    }
    s
}

fn cases() -> u64 {
    std::env::var("SOUNDNESS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

fn seed() -> u64 {
    std::env::var("SOUNDNESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_ed0f_c0de)
}

#[test]
fn every_access_the_cms_performs_is_covered_by_the_principals_grants() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        rng_seed: RngSeed::Fixed(seed()),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let pairs = rt.block_on(async {
        vec![
            start_pair(&mut runner, None, "published-default").await,
            start_pair(&mut runner, Some("DRAFT"), "draft-schema-default").await,
        ]
    });
    let client = reqwest::Client::new();
    let strategy = case_strategy();
    let total = cases();
    let shrink_budget: u32 = std::env::var("SOUNDNESS_SHRINK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let max_examples: usize = 48;

    let mut serial = 0u64;
    let mut violations = 0u64;
    let mut mismatches = 0u64;
    let mut first_mismatch: Option<String> = None;
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    let (mut forwarded, mut denied, mut over_denied, mut statuses) =
        (0u64, 0u64, 0u64, BTreeMap::<u16, u64>::new());
    let started = Instant::now();
    for n in 0..total {
        let mut tree = strategy.new_tree(&mut runner).unwrap();
        serial += 1;
        let outcome = rt.block_on(evaluate(&client, &pairs, &tree.current(), serial));
        *statuses.entry(outcome.status).or_default() += 1;
        if std::env::var("SOUNDNESS_DEBUG").is_ok()
            && outcome.status != 200
            && outcome.status != 403
        {
            eprintln!(
                "{} {}\n  {}",
                outcome.status,
                render(&tree.current().doc).query.replace('\n', " "),
                outcome.body
            );
        }
        forwarded += u64::from(outcome.forwarded);
        if let Some(m) = &outcome.mismatch {
            mismatches += 1;
            if first_mismatch.is_none() {
                first_mismatch = Some(format!(
                    "{m}\n{}",
                    describe(&pairs, &tree.current(), &outcome)
                ));
            }
        }
        if outcome.status == 403 {
            denied += 1;
            over_denied += u64::from(outcome.over_denied == Some(true));
        }
        if outcome.violations.is_empty() {
            continue;
        }
        violations += 1;
        let kind = signature(&tree.current(), &outcome).unwrap();
        let reason = outcome
            .violations
            .iter()
            .map(|(_, why)| why.clone())
            .min()
            .unwrap();
        *by_kind.entry(kind.clone()).or_default() += 1;
        if examples.contains_key(&kind) || examples.len() >= max_examples {
            continue;
        }
        // Shrink: keep the simplest case that still shows a violation of this kind.
        let mut minimal = (tree.current(), outcome);
        let still = |o: &Outcome| o.violations.iter().any(|(_, why)| *why == reason);
        if tree.simplify() {
            for _ in 0..shrink_budget {
                serial += 1;
                let candidate = tree.current();
                let o = rt.block_on(evaluate(&client, &pairs, &candidate, serial));
                if still(&o) {
                    minimal = (candidate, o);
                    if !tree.simplify() {
                        break;
                    }
                } else if !tree.complicate() {
                    break;
                }
            }
        }
        let text = describe(&pairs, &minimal.0, &minimal.1);
        eprintln!(
            "\n=== violation #{} (case {n}): {kind}\n{text}",
            examples.len() + 1
        );
        examples.insert(kind, text);
    }
    let rate = if denied == 0 {
        0.0
    } else {
        over_denied as f64 / denied as f64
    };
    eprintln!(
        "\nsoundness: {total} cases in {:.1}s (seed {}), {forwarded} forwarded, statuses {statuses:?}",
        started.elapsed().as_secs_f64(),
        seed()
    );
    eprintln!("violations: {violations} cases");
    for (kind, count) in &by_kind {
        eprintln!("  {count:>6}  {kind}");
    }
    eprintln!(
        "over-denial: {over_denied} of {denied} refusals (403) would have been served safely ({:.1}%)",
        rate * 100.0
    );
    println!("SOUNDNESS cases={total} violations={violations} denied={denied} over_denied={over_denied} over_denial_rate={rate:.4}");
    eprintln!("upstream requests differing from what was checked: {mismatches}");
    assert!(
        mismatches == 0,
        "{mismatches} forwarded requests reached the CMS differently from what was checked; first:\n{}",
        first_mismatch.unwrap_or_default()
    );
    assert!(
        violations == 0,
        "{violations} of {total} cases let the CMS touch content the principal may not; minimal cases:\n{}",
        examples.values().cloned().collect::<Vec<_>>().join("\n---\n")
    );
}
