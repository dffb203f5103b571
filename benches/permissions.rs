//! Parse + authorize: what does it cost to turn a GraphQL request into an allow/deny decision,
//! the first time a document is seen and when it repeats?
//!
//! - `decide/first_seen/{typical,200_fields}`: every iteration sends a body the gateway has not
//!   seen (a counter in a trailing comment changes the digest), so JSON parsing, apollo-parser,
//!   operation selection, the schema walk and authorization all run.
//! - `decide/repeat/{typical,200_fields}`: the same body again: a sha256 of the body, a
//!   document-cache hit, the stage decision and authorization against the principal's grants.
//!   Target: < 5 µs.
//!
//! The principal is the public one (no Authorization header), so token verification is not
//! part of these numbers (see benches/auth.rs). Run: `cargo bench --bench permissions`.
//! Results and machine notes: benches/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use contentgate::config::{Config, EndpointKind};
use contentgate::pipeline::{decide, Incoming};
use contentgate::policy::compile::{compile, Inputs};
use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;

const POST_FIELDS: &str = "id stage locale createdAt updatedAt publishedAt title slug body";
const AUTHOR_FIELDS: &str = "id stage locale createdAt updatedAt publishedAt name bio";

/// A typical page query (~1.3 KB): variables, a fragment, nested relations, a connection.
fn typical() -> String {
    let q = r#"query BlogPage($slug: String!, $first: Int = 10, $locales: [Locale!] = [en]) {
  post(where: {slug: $slug}, locales: $locales) {
    ...PostFields
    author { ...AuthorFields posts(first: 3) { id title slug publishedAt } }
    localizations(locales: [de]) { locale title slug }
  }
  latest: posts(first: $first, orderBy: publishedAt_DESC, locales: $locales) {
    ...PostFields
    author { id name }
  }
  postsConnection(first: $first) { aggregate { count } pageInfo { hasNextPage pageSize } edges { cursor node { id slug } } }
  authors(first: 20) { ...AuthorFields }
}
fragment PostFields on Post { id title slug body publishedAt updatedAt createdAt stage locale }
fragment AuthorFields on Author { id name bio createdAt updatedAt }
"#;
    serde_json::json!({"query": q, "variables": {"slug": "hello-edge"}, "operationName": "BlogPage"}).to_string()
}

/// Nested Post/Author selections until 200 fields are selected.
fn two_hundred_fields() -> String {
    let mut q = String::from("{ posts { ");
    let mut fields = 0;
    let mut depth = 1;
    while fields < 200 {
        if depth % 2 == 1 {
            q.push_str(POST_FIELDS);
            fields += 9;
            q.push_str(" author { ");
        } else {
            q.push_str(AUTHOR_FIELDS);
            fields += 8;
            q.push_str(" posts { ");
        }
        fields += 1;
        depth += 1;
    }
    q.push_str("id ");
    q.push_str(&"} ".repeat(depth));
    q.push('}');
    serde_json::json!({ "query": q }).to_string()
}

fn setup(dir: &Path) -> (Config, contentgate::policy::Snapshot) {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("gateway.toml"),
        "[[listener]]\naddress = \"127.0.0.1:1\"\n[upstream.cms]\nurl = \"http://127.0.0.1:1/graphql\"\n[[endpoint]]\npath = \"/content\"\nkind = \"content\"\n[cms]\nstages = [\"DRAFT\", \"PUBLISHED\"]\nlocales = [\"en\", \"de\"]\n[limits]\nmax_depth = 128\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("policies/public.toml"),
        "default_stage = \"PUBLISHED\"\n[[permission]]\naction = \"read\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("policies/schema.graphql"),
        contentgate::demo::content_api::SampleContentApi::new().sdl(),
    )
    .unwrap();
    let config = Config::load(&dir.join("gateway.toml")).expect("bench config");
    let inputs = Inputs::read(&dir.join("gateway.toml")).expect("bench inputs");
    let snap = compile(&inputs, 1, None, None).expect("bench snapshot");
    (config, snap)
}

fn bench(c: &mut Criterion) {
    contentgate::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (config, snap) = setup(dir.path());
    let mut group = c.benchmark_group("decide");
    group
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for (name, body) in [("typical", typical()), ("200_fields", two_hundred_fields())] {
        let input = |body: &[u8]| -> Result<(), String> {
            let incoming = Incoming {
                method: &Method::POST,
                endpoint: EndpointKind::Content,
                authorization: Vec::new(),
                content_type: Some(b"application/json"),
                stage_header: Vec::new(),
                locales_header: Vec::new(),
                query_string: None,
                body: Some(body),
            };
            decide(&incoming, &snap, &config.limits)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        };
        input(body.as_bytes()).unwrap_or_else(|e| panic!("{name} must be allowed: {e}"));
        let mut n = 0u64;
        group.bench_function(format!("first_seen/{name}"), |b| {
            b.iter_batched(
                || {
                    n += 1;
                    // A different comment → a different digest → a cold parse.
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let q = format!("{} # {n}", v["query"].as_str().unwrap());
                    let mut v = v;
                    v["query"] = serde_json::Value::String(q);
                    v.to_string()
                },
                |fresh| black_box(input(fresh.as_bytes())),
                criterion::BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("repeat/{name}"), |b| {
            b.iter(|| black_box(input(body.as_bytes())))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
