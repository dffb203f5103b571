//! A real policies folder in a temp dir, for unit tests of the compile step and the decision.

use std::path::PathBuf;

/// gateway.toml (content and cdn endpoints, an HS256 key, DRAFT/PUBLISHED, en/de), the given
/// policy files and the Hygraph-convention fixture schema: (dir, gateway.toml path).
pub(crate) fn folder(public: &str, tokens: &str, revoked: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("policies")).unwrap();
    std::fs::write(p.join("hs.secret"), "a-test-secret-of-at-least-32-bytes!!").unwrap();
    std::fs::write(
        p.join("gateway.toml"),
        "[[listener]]\naddress = \"127.0.0.1:1\"\n[upstream.cms]\nurl = \"http://127.0.0.1:9/graphql\"\n\
         [[endpoint]]\npath = \"/content\"\nkind = \"content\"\n\
         [[endpoint]]\npath = \"/cdn\"\nkind = \"cdn\"\n\
         [auth]\n[[auth.key]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret_file = \"hs.secret\"\n\
         [cms]\nstages = [\"DRAFT\", \"PUBLISHED\"]\nlocales = [\"en\", \"de\"]\n",
    )
    .unwrap();
    std::fs::write(p.join("policies/public.toml"), public).unwrap();
    std::fs::write(p.join("policies/tokens.toml"), tokens).unwrap();
    std::fs::write(p.join("policies/revoked.txt"), revoked).unwrap();
    std::fs::write(
        p.join("policies/schema.graphql"),
        include_str!("../../tests/fixtures/hygraph.graphql"),
    )
    .unwrap();
    let config = p.join("gateway.toml");
    (dir, config)
}
