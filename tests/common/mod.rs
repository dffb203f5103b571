//! Test fixtures: a recording mock origin, a gateway process built from a config, token minting.
//!
//! Every server binds 127.0.0.1. The mock origin binds port 0 directly; the gateway (a real
//! `contentgate serve` process) gets ports found free by binding port 0 just before it starts.
#![allow(dead_code)]

pub mod raw;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

pub const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
pub const HS_SECRET: &str = "test-hs256-secret-with-at-least-32-bytes!";
pub const SERVICE_TOKEN: &str = "service-token-for-the-cms";
pub const ADMIN_TOKEN: &str = "admin-token-for-purges";
pub const WEBHOOK_SECRET: &str = "webhook-secret";

/// What the origin received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How the origin answers.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
}

impl Default for Reply {
    fn default() -> Self {
        Self {
            status: 200,
            body: r#"{"data":{"posts":[{"id":"p1","title":"Hello"}]}}"#.into(),
            delay: Duration::ZERO,
            headers: vec![("content-type".into(), "application/json".into())],
        }
    }
}

#[derive(Clone, Default)]
struct OriginState {
    seen: Arc<Mutex<Vec<Recorded>>>,
    reply: Arc<Mutex<Reply>>,
}

/// A recording GraphQL-shaped origin on 127.0.0.1:0.
pub struct MockOrigin {
    pub addr: SocketAddr,
    state: OriginState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for MockOrigin {
    /// Stops listening and closes kept-alive connections: the origin is really gone.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn handle(
    State(st): State<OriginState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    st.seen.lock().unwrap().push(Recorded {
        method,
        uri,
        headers,
        body,
    });
    let reply = st.reply.lock().unwrap().clone();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

impl MockOrigin {
    pub async fn start() -> MockOrigin {
        let state = OriginState::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        MockOrigin {
            addr,
            state,
            shutdown: Some(tx),
            _task: task,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the origin received a request")
    }

    pub fn reply_with(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
    }

    pub fn url(&self) -> String {
        format!("http://{}/v2/project/master", self.addr)
    }
}

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
        }
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

pub struct ConfigDir {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin: u16,
}

impl ConfigDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    pub async fn start(self) -> TestGateway {
        let child = Command::new(env!("CARGO_BIN_EXE_contentgate"))
            .args(["serve", "--config"])
            .arg(self.config())
            .env("CG_TEST_SERVICE_TOKEN", SERVICE_TOKEN)
            .env("CG_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CG_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
            // CG_TEST_RUST_LOG=debug shows Pingora's own log in gateway.log when debugging a test.
            .env(
                "RUST_LOG",
                std::env::var("CG_TEST_RUST_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.path().join("gateway.log")).unwrap(),
            ))
            .spawn()
            .expect("spawn contentgate");
        let gw = TestGateway {
            cfg: self,
            child,
            client: reqwest::Client::new(),
        };
        gw.wait_ready().await;
        gw
    }
}

/// Replaces a file the way editors and Kubernetes do (write aside, rename over), so a watcher
/// never sees a half-written file.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A running `contentgate serve` process, killed on drop.
pub struct TestGateway {
    pub cfg: ConfigDir,
    pub child: Child,
    pub client: reqwest::Client,
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.cfg.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.cfg.admin)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = self.client.get(self.admin_url("/readyz")).send().await {
                if r.status() == 200 {
                    // The proxy listener starts with the admin one; make sure it accepts too.
                    if std::net::TcpStream::connect(("127.0.0.1", self.cfg.port)).is_ok() {
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("gateway did not become ready; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.cfg.path().join("gateway.log")).unwrap_or_default()
    }

    pub fn policies(&self) -> PathBuf {
        self.cfg.path().join("policies")
    }

    /// POST a GraphQL query as JSON.
    pub async fn query(&self, path: &str, auth: Option<&str>, query: &str) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "query": query }).to_string());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Value of one sample line (`name{labels}`) in /metrics, 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until a metric reaches at least `min`: request metrics are recorded in the logging
    /// phase, just after the response has been sent.
    pub async fn wait_metric(&self, series: &str, min: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metric(series).await;
            if v >= min || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the policy generation reaches `generation`.
    pub async fn wait_generation(&self, generation: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric("contentgate_policy_generation").await < generation as f64 {
            if Instant::now() > deadline {
                panic!(
                    "policy generation {generation} not reached; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// Signs a PAT with one of the fixture keys.
pub fn mint(kid: &str, jti: &str, iss: &str, aud: &str) -> String {
    contentgate::install_crypto_provider();
    let (alg, key): (&str, Vec<u8>) = match kid {
        "es" => (
            "ES256",
            std::fs::read(format!("{KEYS}/es256.key.pem")).unwrap(),
        ),
        "rs" => (
            "RS256",
            std::fs::read(format!("{KEYS}/rsa.key.pem")).unwrap(),
        ),
        "ps" => (
            "PS256",
            std::fs::read(format!("{KEYS}/rsa.key.pem")).unwrap(),
        ),
        "ed" => (
            "EdDSA",
            std::fs::read(format!("{KEYS}/ed25519.key.pem")).unwrap(),
        ),
        "hs" => ("HS256", HS_SECRET.as_bytes().to_vec()),
        other => panic!("no fixture key {other}"),
    };
    let aud = [aud.to_string()];
    contentgate::token::mint(&contentgate::token::MintRequest {
        algorithm: alg,
        key: &key,
        kid: Some(kid),
        jti: Some(jti),
        issuer: Some(iss),
        audiences: &aud,
        subject: None,
        expires_in: None,
    })
    .unwrap()
    .0
}

pub fn bearer(jwt: &str) -> String {
    format!("Bearer {jwt}")
}

/// A valid ES256 token for `jti` with the default issuer and audience.
pub fn es(jti: &str) -> String {
    mint("es", jti, "https://issuer.test", "contentgate")
}

/// base64url(JSON) segment.
pub fn seg(v: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

pub fn seg_raw(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A token with arbitrary header and claims text, HS256-signed with the fixture secret.
pub fn hs_raw(header: &str, claims: &str) -> String {
    contentgate::install_crypto_provider();
    let message = format!("{}.{}", seg_raw(header), seg_raw(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(HS_SECRET.as_bytes());
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
        .unwrap();
    format!("{message}.{sig}")
}
