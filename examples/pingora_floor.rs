//! Pingora with nothing of contentgate in it: the floor under the gateway's two hot paths, for
//! `benches/scaling.sh` (the `floor` rows).
//!
//! - `/cdn...`: answered from `request_filter` with the origin's body, fetched once at start-up
//!   (a "cache" of one entry, no key, no lookup, no checks): what Pingora's session, proxy loop
//!   and response writing cost for a hit.
//! - `/content...`: the leanest pass-through Pingora's session allows: the request body read,
//!   a fixed request line and three headers plus that body sent in one write on a pooled plain
//!   socket, the answer read with `httparse` (no timeouts, no checks, no header map but the one
//!   Pingora writes), and written back with its content type and length. The floor under any
//!   upstream client behind Pingora's downstream session.
//! - anything else: Pingora's own proxy flow to the origin (`upstream_peer`, its connection
//!   pool, the client's request header forwarded as it came): Pingora as a plain `proxy_pass`.
//!
//! ```sh
//! cargo run --release --example pingora_floor -- --port 18601 --origin 127.0.0.1:18600 --threads 1
//! ```
//!
//! Tuned as contentgate is, where the tuning is not contentgate's logic: the same `ServerConf`
//! defaults (`threads`, work stealing on), mimalloc, and contentgate's default 16 KiB downstream
//! read and write buffers (Pingora's default write buffer sends a 2 KB answer in two segments).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench tool: a panic is its report

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::listeners::ListenerConfig;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    origin: SocketAddr,
    body: Bytes,
    /// Idle upstream connections (the lean pass-through's keep-alive pool).
    pool: std::sync::Mutex<Vec<tokio::net::TcpStream>>,
}

fn io_error(what: &'static str, e: std::io::Error) -> Box<pingora::Error> {
    pingora::Error::because(pingora::ErrorType::ReadError, what, e)
}

impl Floor {
    /// The lean pass-through: see the module's documentation.
    async fn lean_pass(&self, session: &mut Session) -> Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut body = BytesMut::new();
        while let Some(b) = session.read_request_body().await? {
            body.extend_from_slice(&b);
        }
        let mut wire = Vec::with_capacity(128 + body.len());
        write!(
            wire,
            "POST /graphql HTTP/1.1\r\nHost: origin\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        wire.extend_from_slice(&body);
        let pooled = self.pool.lock().unwrap().pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => tokio::net::TcpStream::connect(self.origin)
                .await
                .map_err(|e| io_error("connect", e))?,
        };
        conn.write_all(&wire)
            .await
            .map_err(|e| io_error("write", e))?;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        // (header length, status, body length) once the header is in.
        let mut framed: Option<(usize, u16, usize)> = None;
        let (head, status, length) = loop {
            if let Some(f @ (head, _, length)) = framed {
                if buf.len() >= head + length {
                    break f;
                }
            }
            if conn
                .read_buf(&mut buf)
                .await
                .map_err(|e| io_error("read", e))?
                == 0
            {
                return Err(pingora::Error::new(pingora::ErrorType::ConnectionClosed));
            }
            if framed.is_none() {
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut resp = httparse::Response::new(&mut headers);
                if let httparse::Status::Complete(n) = resp.parse(&buf).unwrap() {
                    let length = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                        .expect("the origin frames by content-length");
                    framed = Some((n, resp.code.unwrap(), length));
                }
            }
        };
        self.pool.lock().unwrap().push(conn);
        buf.truncate(head + length);
        let answer = buf.split_off(head).freeze();
        let mut h = ResponseHeader::build(status, Some(2))?;
        h.insert_header("content-type", "application/json")?;
        h.insert_header("content-length", answer.len().to_string())?;
        session.write_response_header(Box::new(h), false).await?;
        session.write_response_body(Some(answer), true).await
    }
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        if session.req_header().uri.path().starts_with("/content") {
            self.lean_pass(session).await?;
            return Ok(true);
        }
        if !session.req_header().uri.path().starts_with("/cdn") {
            return Ok(false);
        }
        let mut h = ResponseHeader::build(200, Some(2))?;
        h.insert_header("content-type", "application/json")?;
        h.insert_header("content-length", self.body.len().to_string())?;
        session.write_response_header(Box::new(h), false).await?;
        session
            .write_response_body(Some(self.body.clone()), true)
            .await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.origin, false, String::new())))
    }
}

/// The origin's answer body to one GET, over a plain socket.
fn fetch_body(origin: SocketAddr) -> Bytes {
    let mut s = TcpStream::connect(origin).expect("connect to the origin");
    s.write_all(b"GET /graphql HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response header");
    Bytes::copy_from_slice(&all[at + 4..])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut port, mut origin, mut threads) = (18601u16, None, 1usize);
    while let Some(a) = args.next() {
        let v = args.next().expect("a value after each option");
        match a.as_str() {
            "--port" => port = v.parse().unwrap(),
            "--origin" => origin = Some(v.parse::<SocketAddr>().unwrap()),
            "--threads" => threads = v.parse().unwrap(),
            _ => panic!("usage: pingora_floor --port P --origin IP:PORT [--threads N]"),
        }
    }
    let origin = origin.expect("--origin IP:PORT");
    let body = fetch_body(origin);
    let runtime = std::env::temp_dir().join(format!("pingora-floor-{}", std::process::id()));
    std::fs::create_dir_all(&runtime).unwrap();
    let conf = ServerConf {
        threads,
        pid_file: runtime.join("pid").display().to_string(),
        upgrade_sock: runtime.join("upgrade.sock").display().to_string(),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Floor {
            origin,
            body,
            pool: Default::default(),
        },
    );
    let buffers = L4BufferSettings {
        read: Some(16 * 1024),
        write: Some(16 * 1024),
    };
    proxy.add_listener(ListenerConfig::tcp(format!("127.0.0.1:{port}")).l4_buffer(buffers));
    server.add_service(proxy);
    server.run_forever()
}
