//! A recording GraphQL-shaped mock origin on 127.0.0.1:0: what it received, how it answers.
#![allow(unused_imports)]
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

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
