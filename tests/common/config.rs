//! Gateway configuration for tests: the fixture constants, free ports, the config-directory
//! builder, the sample and fixture schemas, TLS certificates.
#![allow(unused_imports)]
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

pub const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
pub const HS_SECRET: &str = "test-hs256-secret-with-at-least-32-bytes!";
pub const SERVICE_TOKEN: &str = "service-token-for-the-cms";
pub const ADMIN_TOKEN: &str = "admin-token-for-purges";
pub const WEBHOOK_SECRET: &str = "webhook-secret";

/// A free port for a gateway listener. Chosen below the kernel's ephemeral range (32768+), so
/// the port-0 binds of mock origins and the clients' outgoing connections can never take it
/// between this check and the gateway's bind; never handed out twice in one test process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::OnceLock;
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(|| Mutex::new(HashSet::new()));
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    let mut x = seed | 1;
    loop {
        // xorshift: a cheap spread over 20000..32000
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        let mut set = taken.lock().unwrap();
        if set.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            set.insert(port);
            return port;
        }
    }
}

/// Builder for a gateway config directory.
pub struct GatewayBuilder {
    pub upstream_url: String,
    pub credential: String,
    pub extra_config: String,
    pub auth: String,
    pub public: String,
    pub tokens: String,
    pub revoked: String,
    pub limits: String,
    pub poll_interval: &'static str,
    /// SDL written to policies/schema.graphql (`None`: introspect the upstream at start-up).
    pub schema: Option<String>,
    /// Extra keys of the `/cdn` endpoint table (cors, allow, deny).
    pub cdn_extra: String,
    pub log: String,
}

pub const PUBLIC_READ: &str =
    "default_stage = \"PUBLISHED\"\n[[permission]]\naction = \"read\"\nstages = [\"PUBLISHED\"]\n";
pub const PUBLIC_NOTHING: &str = "default_stage = \"PUBLISHED\"\n";
/// Public requests may read every stage and delete posts (`deletePost` needs Delete and
/// Unpublish): whatever a wire-level attack smuggles past the gateway would reach the origin.
pub const PUBLIC_READ_DELETE: &str = "default_stage = \"PUBLISHED\"\n\
[[permission]]\naction = \"read\"\n\
[[permission]]\naction = \"delete\"\n\
[[permission]]\naction = \"unpublish\"\n";

impl GatewayBuilder {
    pub fn new(origin: &MockOrigin) -> Self {
        Self::with_upstream(&origin.url())
    }

    pub fn with_upstream(url: &str) -> Self {
        Self {
            upstream_url: url.to_string(),
            credential:
                "credential = { mode = \"replace\", token_env = \"CG_TEST_SERVICE_TOKEN\" }".into(),
            extra_config: String::new(),
            auth: default_auth(),
            public: PUBLIC_READ.into(),
            tokens: token_entry(
                "jti-reader",
                "reader",
                "PUBLISHED",
                "[[token.permission]]\naction = \"read\"\n",
            ),
            revoked: String::new(),
            limits: String::new(),
            poll_interval: "1h",
            schema: Some(sample_sdl()),
            cdn_extra: String::new(),
            // Lines written as they are logged, so a test reading gateway.log right after a
            // request sees its line. tests/logging.rs covers the buffered default.
            log: "buffer_bytes = 0\n".into(),
        }
    }

    /// Replaces the `[log]` keys after level and format (default: `buffer_bytes = 0`).
    pub fn log(mut self, keys: &str) -> Self {
        self.log = keys.into();
        self
    }

    pub fn public(mut self, p: &str) -> Self {
        self.public = p.into();
        self
    }

    pub fn tokens(mut self, t: &str) -> Self {
        self.tokens = t.into();
        self
    }

    pub fn revoked(mut self, r: &str) -> Self {
        self.revoked = r.into();
        self
    }

    pub fn credential(mut self, c: &str) -> Self {
        self.credential = c.into();
        self
    }

    pub fn extra(mut self, e: &str) -> Self {
        self.extra_config.push_str(e);
        self
    }

    pub fn cdn(mut self, extra: &str) -> Self {
        self.cdn_extra = extra.to_string();
        self
    }

    pub fn schema(mut self, s: Option<String>) -> Self {
        self.schema = s;
        self
    }

    pub fn poll(mut self, p: &'static str) -> Self {
        self.poll_interval = p;
        self
    }

    /// Writes the files into a fresh directory.
    pub fn write(&self) -> ConfigDir {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin = free_port();
        let config = format!(
            r#"[server]
threads = 2
grace_period = "1s"
shutdown_timeout = "1s"
runtime_dir = "run"

[[listener]]
address = "127.0.0.1:{port}"

[admin]
address = "127.0.0.1:{admin}"
token_env = "CG_TEST_ADMIN_TOKEN"

[upstream.cms]
url = "{url}"
connect_timeout = "1s"
read_timeout = "2s"
total_timeout = "3s"
{credential}

[[endpoint]]
path = "/content"
kind = "content"

[[endpoint]]
path = "/cdn"
kind = "cdn"
{cdn_extra}

{auth}

[cms]
stages = ["DRAFT", "PUBLISHED"]
locales = ["en", "de"]

[policies]
dir = "policies"
poll_interval = "{poll}"

[log]
level = "info"
format = "json"
{log}
{limits}
{extra}
"#,
            url = self.upstream_url,
            credential = self.credential,
            auth = self.auth,
            poll = self.poll_interval,
            limits = self.limits,
            extra = self.extra_config,
            cdn_extra = self.cdn_extra,
            log = self.log,
        );
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("policies")).unwrap();
        std::fs::write(root.join("gateway.toml"), config).unwrap();
        std::fs::write(root.join("hs.secret"), HS_SECRET).unwrap();
        std::fs::write(root.join("policies/public.toml"), &self.public).unwrap();
        std::fs::write(root.join("policies/tokens.toml"), &self.tokens).unwrap();
        std::fs::write(root.join("policies/revoked.txt"), &self.revoked).unwrap();
        if let Some(sdl) = &self.schema {
            std::fs::write(root.join("policies/schema.graphql"), sdl).unwrap();
        }
        ConfigDir { dir, port, admin }
    }

    pub async fn start(&self) -> TestGateway {
        self.write().start().await
    }
}

/// The schema of the sample content API (Post, Author, Hygraph's generated fields).
pub fn sample_sdl() -> String {
    contentgate::demo::content_api::SampleContentApi::new().sdl()
}

pub fn default_auth() -> String {
    format!(
        r#"[auth]
issuers = ["https://issuer.test", "https://issuer-new.test"]
audiences = ["contentgate", "contentgate-v2"]
leeway = "5s"

[[auth.key]]
kid = "es"
algorithm = "ES256"
public_key_file = "{KEYS}/es256.pub.pem"

[[auth.key]]
kid = "rs"
algorithm = "RS256"
public_key_file = "{KEYS}/rsa.pub.pem"

[[auth.key]]
kid = "ps"
algorithm = "PS256"
public_key_file = "{KEYS}/rsa.pub.pem"

[[auth.key]]
kid = "ed"
algorithm = "EdDSA"
public_key_file = "{KEYS}/ed25519.pub.pem"

[[auth.key]]
kid = "hs"
algorithm = "HS256"
secret_file = "hs.secret"
"#
    )
}

pub fn token_entry(jti: &str, name: &str, stage: &str, perms: &str) -> String {
    format!("[[token]]\njti = \"{jti}\"\nname = \"{name}\"\ndefault_stage = \"{stage}\"\n{perms}\n")
}

/// Replaces a file the way editors and Kubernetes do (write aside, rename over), so a watcher
/// never sees a half-written file.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A self-signed certificate for localhost / 127.0.0.1 (openssl CLI): (cert file, key file).
pub fn self_signed(dir: &Path, name: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ])
        .args([
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

/// `{ posts { ...f0 } }` and `fragments` fragments on Post, each nesting `pairs`
/// `author { posts {` levels and spreading the next; the last selects `title`. The nesting
/// shows only across spreads: 2 × `pairs` × `fragments` levels.
pub fn fragment_chain(fragments: usize, pairs: usize) -> String {
    let mut q = String::from("{ posts { ...f0 } }\n");
    for i in 0..fragments {
        q.push_str(&format!(
            "fragment f{i} on Post {{ {} ...f{} {} }}\n",
            "author { posts { ".repeat(pairs),
            i + 1,
            "} } ".repeat(pairs)
        ));
    }
    q.push_str(&format!("fragment f{fragments} on Post {{ title }}\n"));
    q
}
