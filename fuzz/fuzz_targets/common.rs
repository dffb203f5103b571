//! A snapshot built once per fuzzing process: the repository's example policies and the sample
//! API's schema, an HS256 key and an ES256 key.

use std::path::PathBuf;
use std::sync::OnceLock;

use contentgate::config::Config;
use contentgate::policy::compile::{compile, Inputs};
use contentgate::policy::Snapshot;

#[allow(dead_code)] // `config` is used by some targets only
pub struct Fixture {
    pub config: Config,
    pub snapshot: Snapshot,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        contentgate::install_crypto_provider();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
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
        Fixture { config, snapshot }
    })
}
