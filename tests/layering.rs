//! The shape of `src/`: dependencies between top-level modules run one way, down the layers
//! below. Every `crate::<module>` path in a file (in `use` lines and inline) is an arrow from
//! the file's top-level module to `<module>`; an arrow to a higher row, or a circle within a
//! row, fails this test with the file and line that drew it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Rows from the top (imports may only point to later rows, or within a row without a cycle).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "app",
        &[
            "cli",
            "server",
            "check",
            "token",
            "demo",
            "policyctl",
            "adminctl",
        ],
    ),
    ("edges", &["proxy", "admin"]),
    ("management", &["manage"]),
    ("decision", &["pipeline"]),
    ("shared", &["cluster"]),
    ("state", &["policy", "cache"]),
    ("domain", &["auth", "permissions"]),
    ("language", &["graphql", "schema"]),
    (
        "infra",
        &[
            "config",
            "upstream",
            "ratelimit",
            "metrics",
            "tls",
            "telemetry",
        ],
    ),
    ("words", &["stage"]),
];

fn row_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/proxy/cached.rs` → `proxy`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// `crate::name` occurrences, including `crate::{a, b::c}` groups, outside comments.
fn references(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn dependencies_between_top_level_modules_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut arrows: BTreeMap<(String, String), String> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for to in references(line) {
                if to != from && row_of(&to).is_some() {
                    arrows
                        .entry((from.clone(), to))
                        .or_insert_with(|| format!("{}:{}", file.display(), n + 1));
                }
            }
        }
    }
    let mut problems = Vec::new();
    for ((from, to), at) in &arrows {
        match (row_of(from), row_of(to)) {
            (None, _) => problems.push(format!("{from} is in no layer (add it to LAYERS)")),
            (Some(a), Some(b)) if b < a => problems.push(format!(
                "{from} ({}) imports {to} ({}), a higher layer, at {at}",
                LAYERS[a].0, LAYERS[b].0
            )),
            _ => {}
        }
    }
    // Circles within a row.
    let modules: BTreeSet<&str> = arrows.keys().map(|(f, _)| f.as_str()).collect();
    for start in &modules {
        let mut stack = vec![(*start).to_string()];
        let mut seen = BTreeSet::new();
        while let Some(m) = stack.pop() {
            for (from, to) in arrows.keys() {
                if *from == m {
                    if to == start {
                        problems.push(format!(
                            "a circle through {start}: {m} -> {start} at {}",
                            arrows[&(m.clone(), to.clone())]
                        ));
                    } else if seen.insert(to.clone()) {
                        stack.push(to.clone());
                    }
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "the layering of src/ is broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_reference_scanner_reads_groups_and_inline_paths() {
    assert_eq!(
        references("use crate::{config::Cms, stage, graphql::x};"),
        ["config", "stage", "graphql"]
    );
    assert_eq!(
        references("let x = crate::proxy::MAX + crate::stage::Stage::new(\"a\"); // crate::no"),
        ["proxy", "stage"]
    );
}
