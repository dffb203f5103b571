//! Pingora with nothing of contentgate in it: the floor under the gateway's two hot paths, for
//! `benches/scaling.sh` (the `floor` rows).
//!
//! - `/cdn...`: answered from `request_filter` with the origin's body, fetched once at start-up
//!   (a "cache" of one entry, no key, no lookup, no checks): what Pingora's session, proxy loop
//!   and response writing cost for a hit.
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
use bytes::Bytes;
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
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
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
    let mut proxy =
        pingora::proxy::http_proxy_service(&server.configuration, Floor { origin, body });
    let buffers = L4BufferSettings {
        read: Some(16 * 1024),
        write: Some(16 * 1024),
    };
    proxy.add_listener(ListenerConfig::tcp(format!("127.0.0.1:{port}")).l4_buffer(buffers));
    server.add_service(proxy);
    server.run_forever()
}
