//! Wire-level fixtures: a strict recording origin whose failures are scripted, and a raw-socket
//! client that sends bytes exactly as written.
//!
//! The origin parses what the gateway sends with `httparse` and records each request with the
//! connection it came on; anything it cannot frame (a `Transfer-Encoding`, bytes that are not a
//! request) is recorded as garbage, so a test can assert the upstream saw exactly the requests it
//! expects and nothing smuggled behind them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const JSON_OK: &str = r#"{"data":{"posts":[{"id":"p1","title":"Hello"}]}}"#;

/// How the origin answers the next requests.
#[derive(Clone, Debug)]
pub enum Mode {
    /// `200` with a JSON body, kept alive.
    Ok,
    /// Any status, headers and body (Content-Length added), kept alive.
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Reads the request and never answers (a blackholed origin).
    Hang,
    /// Waits this long before the response header.
    SlowHeaders(Duration),
    /// Sends the header and half the body, waits, then the rest.
    SlowBody(Duration),
    /// Sends a header announcing a body, then resets the connection.
    ResetAfterHeaders,
    /// Sends the header and half the body, then resets the connection.
    ResetMidBody,
    /// Answers `200` (keep-alive framing, no `Connection: close`) and closes the connection
    /// right after: the next request must not be written into a dead pooled connection.
    CloseAfterResponse,
}

#[derive(Clone, Debug)]
pub struct RawRequest {
    pub conn: usize,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    requests: Vec<RawRequest>,
    garbage: Vec<Vec<u8>>,
    connections: usize,
}

pub struct RawOrigin {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawOrigin {
    pub async fn start(mode: Mode) -> RawOrigin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            mode: Some(mode),
            ..State::default()
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let conn = {
                    let mut s = st.lock().unwrap();
                    s.connections += 1;
                    s.connections
                };
                tokio::spawn(serve(sock, conn, st.clone()));
            }
        });
        RawOrigin { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v2/project/master", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    pub fn requests(&self) -> Vec<RawRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    pub fn last_body(&self) -> Vec<u8> {
        self.requests().pop().map(|r| r.body).unwrap_or_default()
    }

    pub fn garbage(&self) -> Vec<Vec<u8>> {
        self.state.lock().unwrap().garbage.clone()
    }
}

async fn serve(mut sock: tokio::net::TcpStream, conn: usize, st: Arc<Mutex<State>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Frame one request: header, then exactly Content-Length bytes.
        let (req, used) = loop {
            match parse(&buf, conn) {
                Parsed::Request(r, used) => break (r, used),
                Parsed::Garbage => {
                    st.lock().unwrap().garbage.push(std::mem::take(&mut buf));
                    return;
                }
                Parsed::Partial => {}
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    if !buf.is_empty() {
                        st.lock().unwrap().garbage.push(buf);
                    }
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..used);
        let mode = {
            let mut s = st.lock().unwrap();
            s.requests.push(req);
            s.mode.clone().unwrap_or(Mode::Ok)
        };
        let ok = |body: &str| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        match mode {
            Mode::Ok => {
                if sock.write_all(ok(JSON_OK).as_bytes()).await.is_err() {
                    return;
                }
            }
            Mode::Reply {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                head.push_str(&body);
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
            }
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Mode::SlowHeaders(d) => {
                tokio::time::sleep(d).await;
                if sock.write_all(ok(JSON_OK).as_bytes()).await.is_err() {
                    return;
                }
            }
            Mode::SlowBody(d) => {
                let all = ok(JSON_OK);
                let split = all.len() - JSON_OK.len() / 2;
                if sock.write_all(&all.as_bytes()[..split]).await.is_err() {
                    return;
                }
                tokio::time::sleep(d).await;
                if sock.write_all(&all.as_bytes()[split..]).await.is_err() {
                    return;
                }
            }
            Mode::ResetAfterHeaders | Mode::ResetMidBody => {
                let all = ok(JSON_OK);
                let cut = if matches!(mode, Mode::ResetAfterHeaders) {
                    all.len() - JSON_OK.len()
                } else {
                    all.len() - JSON_OK.len() / 2
                };
                let _ = sock.write_all(&all.as_bytes()[..cut]).await;
                let _ = sock.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                reset(sock);
                return;
            }
            Mode::CloseAfterResponse => {
                let _ = sock.write_all(ok(JSON_OK).as_bytes()).await;
                return;
            }
        }
    }
}

/// Closes with RST instead of FIN.
#[allow(deprecated)]
fn reset(sock: tokio::net::TcpStream) {
    let _ = sock.set_linger(Some(Duration::ZERO));
    drop(sock);
}

enum Parsed {
    Request(RawRequest, usize),
    Partial,
    Garbage,
}

fn parse(buf: &[u8], conn: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Garbage,
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    // The gateway always frames the upstream body with one Content-Length.
    let lengths: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    if headers.iter().any(|(k, _)| k == "transfer-encoding") || lengths.len() > 1 {
        return Parsed::Garbage;
    }
    let len = match lengths.first().map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Parsed::Garbage,
    };
    if buf.len() < head_len + len {
        return Parsed::Partial;
    }
    Parsed::Request(
        RawRequest {
            conn,
            method: req.method.unwrap_or_default().to_string(),
            path: req.path.unwrap_or_default().to_string(),
            headers,
            body: buf[head_len..head_len + len].to_vec(),
        },
        head_len + len,
    )
}

/// What a raw exchange produced.
#[derive(Debug)]
pub struct Exchange {
    pub bytes: Vec<u8>,
    /// The gateway closed the connection (EOF or reset) before the read deadline.
    pub closed: bool,
    pub elapsed: Duration,
}

impl Exchange {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Status codes of every response in the byte stream, in order.
    pub fn statuses(&self) -> Vec<u16> {
        let text = self.text();
        text.match_indices("HTTP/1.")
            .filter_map(|(i, _)| {
                let line = &text[i..];
                let code = line.get(9..12)?;
                // only at a line start
                if i == 0 || text[..i].ends_with('\n') {
                    code.parse().ok()
                } else {
                    None
                }
            })
            .collect()
    }
}

/// Writes `request` on a fresh connection and reads until the gateway closes it or `wait`
/// passes. Blocking std I/O: run it with `spawn_blocking` from async tests.
pub fn exchange(port: u16, request: &[u8], wait: Duration) -> Exchange {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let _ = s.write_all(request);
    read_all(&mut s, wait, started)
}

/// Reads until EOF/reset or `wait` after `started`.
pub fn read_all(s: &mut TcpStream, wait: Duration, started: Instant) -> Exchange {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16384];
    let closed = loop {
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            break false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true,
        }
    };
    Exchange {
        bytes,
        closed,
        elapsed: started.elapsed(),
    }
}

/// [`exchange`] on the blocking pool.
pub async fn exchange_async(port: u16, request: Vec<u8>, wait: Duration) -> Exchange {
    tokio::task::spawn_blocking(move || exchange(port, &request, wait))
        .await
        .unwrap()
}

/// The status line a request declaring `len` body bytes gets before it sends any of them.
pub fn refused_by_length(port: u16, path: &str, len: usize) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    let mut answer = [0u8; 12];
    s.read_exact(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).to_string()
}
