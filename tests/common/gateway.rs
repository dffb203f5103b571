//! A real `contentgate serve` process started from a config directory, killed on drop.
#![allow(unused_imports)]
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// Runs `contentgate ARGS` to completion (check, token, serve that fails at start-up) with the
/// test credentials in the environment.
pub fn contentgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_contentgate"))
        .args(args)
        .env("CG_TEST_SERVICE_TOKEN", SERVICE_TOKEN)
        .env("CG_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap()
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
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).unwrap();
        self.start_with_stderr(Stdio::from(log)).await
    }

    /// Starts the gateway with its stderr going to `stderr` instead of gateway.log.
    pub async fn start_with_stderr(self, stderr: Stdio) -> TestGateway {
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
            .stderr(stderr)
            .spawn()
            .expect("spawn contentgate");
        let gw = TestGateway {
            cfg: self,
            child,
            // A hang fails the test instead of holding CI.
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("test client"),
        };
        gw.wait_ready().await;
        gw
    }
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

    /// The gateway's stderr so far (written line by line: the builder's `buffer_bytes = 0`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.cfg.path().join("gateway.log")).unwrap_or_default()
    }

    pub fn policies(&self) -> PathBuf {
        self.cfg.path().join("policies")
    }

    /// POST a GraphQL query as JSON.
    pub async fn query(&self, path: &str, auth: Option<&str>, query: &str) -> reqwest::Response {
        self.post_json(
            path,
            auth,
            serde_json::json!({ "query": query }).to_string(),
        )
        .await
    }

    /// POST a JSON body as it is (bodies the `query` helper cannot build: variables, sizes,
    /// raw bytes).
    pub async fn post_json(
        &self,
        path: &str,
        auth: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send().await.unwrap()
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
