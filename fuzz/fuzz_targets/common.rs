//! The fuzz targets' bodies, shared with `tests/fuzz_corpus.rs` (which replays the committed
//! corpus on stable in `cargo test`), and their fixture: a snapshot built once per process from
//! the repository's example policies and the sample API's schema, an HS256 and an ES256 key.

use std::path::PathBuf;
use std::sync::OnceLock;

use std::time::{Duration, SystemTime};

use contentgate::config::{Config, EndpointKind};
use contentgate::graphql::request::GraphqlRequest;
use contentgate::pipeline::{decide, Incoming};
use contentgate::policy::compile::{compile, Inputs};
use contentgate::policy::Snapshot;

#[allow(dead_code)] // `config` is used by some targets only
pub struct Fixture {
    pub config: Config,
    pub snapshot: Snapshot,
    /// The files the snapshot was compiled from (read once, not per input).
    pub inputs: Inputs,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        contentgate::install_crypto_provider();
        // The repository root, from the fuzz crate or from the main crate's tests.
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = if manifest.ends_with("fuzz") {
            manifest.join("..")
        } else {
            manifest
        };
        let dir = std::env::temp_dir().join(format!("contentgate-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        for f in ["public.toml", "tokens.toml", "revoked.txt", "schema.graphql"] {
            std::fs::copy(root.join("policies").join(f), dir.join("policies").join(f)).unwrap();
        }
        std::fs::write(dir.join("hs.secret"), "fuzz-secret-with-at-least-32-bytes!!").unwrap();
        std::fs::write(
            dir.join("gateway.toml"),
            format!(
                "[[listener]]\naddress = \"127.0.0.1:1\"\n[upstream.cms]\nurl = \"http://127.0.0.1:1/graphql\"\n\
                 [[endpoint]]\npath = \"/content\"\nkind = \"content\"\n[auth]\nissuers = [\"fuzz\"]\naudiences = [\"fuzz\"]\n\
                 [[auth.key]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret_file = \"hs.secret\"\n\
                 [[auth.key]]\nkid = \"es\"\nalgorithm = \"ES256\"\npublic_key_file = \"{}\"\n\
                 [cms]\nstages = [\"DRAFT\", \"PUBLISHED\"]\nlocales = [\"en\", \"de\"]\n",
                root.join("tests/fixtures/keys/es256.pub.pem").display()
            ),
        )
        .unwrap();
        let config = Config::load(&dir.join("gateway.toml")).unwrap();
        let inputs = Inputs::read(&dir.join("gateway.toml")).unwrap();
        let snapshot = compile(&inputs, 1, None, None).unwrap();
        Fixture {
            config,
            snapshot,
            inputs,
        }
    })
}

/// The Authorization header through JWT decoding, verification and the registry lookup.
pub fn auth_header(data: &[u8]) {
    let f = fixture();
    let _ = contentgate::auth::authenticate(&[data], &f.snapshot.registry, &f.snapshot.verifier);
    // Also as the token of a well-formed header.
    let mut header = b"Bearer ".to_vec();
    header.extend_from_slice(data);
    let _ = contentgate::auth::authenticate(&[&header], &f.snapshot.registry, &f.snapshot.verifier);
}

/// A POST body (and, split at the first NUL, a `gcms-locales` header and a GET query string)
/// through request parsing, document parsing, the schema walk and authorization.
pub fn graphql_decide(data: &[u8]) {
    let f = fixture();
    let (body, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    for endpoint in [
        EndpointKind::Content,
        EndpointKind::Cdn,
        EndpointKind::Management,
    ] {
        let post = Incoming {
            method: &http::Method::POST,
            endpoint,
            authorization: Vec::new(),
            content_type: Some(b"application/json"),
            stage_header: Vec::new(),
            locales_header: if rest.is_empty() {
                Vec::new()
            } else {
                vec![rest]
            },
            query_string: None,
            body: Some(body),
        };
        let _ = decide(&post, &f.snapshot, &f.config.limits);
        // What the gateway forwards for a POST must parse back to exactly what it checked.
        if let Ok(r) = GraphqlRequest::from_json(body) {
            let again = GraphqlRequest::from_json(&r.to_json_body())
                .expect("re-serialized POST body parses");
            assert_eq!(again, r);
        }
    }
    if let Ok(qs) = std::str::from_utf8(rest) {
        // What the gateway forwards for a GET must parse back to exactly what it checked.
        if let Ok(r) = GraphqlRequest::from_query_string(qs) {
            let again = GraphqlRequest::from_query_string(&r.to_query_string())
                .expect("re-encoded GET parameters parse");
            assert_eq!(again, r);
        }
        let get = Incoming {
            method: &http::Method::GET,
            endpoint: EndpointKind::Cdn,
            authorization: Vec::new(),
            content_type: None,
            stage_header: Vec::new(),
            locales_header: Vec::new(),
            query_string: Some(qs),
            body: None,
        };
        let _ = decide(&get, &f.snapshot, &f.config.limits);
    }
}

/// A text as every policy file (registry TOML and JSON, public policy, revocation list, schema
/// SDL) through the compiler.
pub fn policy_files(data: &[u8]) {
    let f = fixture();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = &f.inputs;
    let variants = [
        Inputs {
            tokens: Some((base.dir.join("tokens.toml"), text.to_string())),
            ..clone(base)
        },
        Inputs {
            tokens: Some((base.dir.join("tokens.json"), text.to_string())),
            ..clone(base)
        },
        Inputs {
            public: Some(text.to_string()),
            ..clone(base)
        },
        Inputs {
            revoked: Some(text.to_string()),
            ..clone(base)
        },
        Inputs {
            schema: Some(text.to_string()),
            ..clone(base)
        },
    ];
    for inputs in &variants {
        let _ = compile(inputs, 2, Some(&f.snapshot), None);
    }
}

fn clone(i: &Inputs) -> Inputs {
    Inputs {
        config_path: i.config_path.clone(),
        config_text: i.config_text.clone(),
        file: i.file.clone(),
        restart_digest: i.restart_digest,
        dir: i.dir.clone(),
        public: i.public.clone(),
        tokens: i.tokens.clone(),
        revoked: i.revoked.clone(),
        schema: i.schema.clone(),
        needs_schema: i.needs_schema,
        keys_digest: i.keys_digest,
        revoked_mtime: i.revoked_mtime,
    }
}

/// The `gcms-signature` header, a newline, the webhook body: signature verification.
pub fn webhook_signature(data: &[u8]) {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let _ = contentgate::admin::verify_signature(
        header,
        body,
        b"fuzz-secret",
        Duration::from_secs(300),
        SystemTime::now(),
    );
}
