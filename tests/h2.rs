//! HTTP/2 on the TLS listener (h2 negotiated by ALPN), through the real binary: a GET whose
//! stream carries DATA frames is refused before the origin, and an h2 connection with no stream
//! in flight — idle after its preface, idle after a response, or stuck in a HEADERS block that
//! never ends — is closed after `client_header_timeout`, while a slow stream in flight is not.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// `{ posts { id } }`, URL-encoded.
const Q: &str = "%7B%20posts%20%7B%20id%20%7D%20%7D";
const SMUGGLED_BODY: &str = r#"{"query":"mutation { deletePost(where: {id: \"p1\"}) { id } }"}"#;
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Far below the old behaviour (an idle h2 connection was kept for 75 s), far above the 1 s
/// timeout on a loaded 2-core machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

struct TlsGateway {
    gw: TestGateway,
    port: u16,
    connector: tokio_rustls::TlsConnector,
    _certs: tempfile::TempDir,
}

/// A gateway with a TLS listener (h2 and http/1.1 by ALPN) and a 1 s header timeout.
async fn tls_gateway(origin: &MockOrigin) -> TlsGateway {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path(), "h2");
    let port = free_port();
    let mut b = GatewayBuilder::new(origin).extra(&format!(
        "\n[[listener]]\naddress = \"127.0.0.1:{port}\"\ntls = {{ cert_file = \"{cert}\", key_file = \"{key}\" }}\n"
    ));
    b.limits = format!(
        "\n[limits]\nclient_header_timeout = \"{}s\"\n",
        HEADER_TIMEOUT.as_secs()
    );
    let gw = b.start().await;

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let t = TlsGateway {
        gw,
        port,
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        _certs: certs,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "TLS listener up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t
}

impl TlsGateway {
    /// A TLS connection on which the gateway selected h2.
    async fn connect(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = self
            .connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "h2 negotiated by ALPN"
        );
        tls
    }

    /// An h2 client on a fresh connection; the connection task is returned so a test can
    /// watch it end.
    async fn h2(
        &self,
    ) -> (
        h2::client::SendRequest<Bytes>,
        tokio::task::JoinHandle<Result<(), h2::Error>>,
    ) {
        let (client, conn) = h2::client::handshake(self.connect().await).await.unwrap();
        (client, tokio::spawn(conn))
    }

    fn uri(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

async fn body_text(mut body: h2::RecvStream) -> String {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `req` (with `data` as DATA frames when given, after `data_delay`) and returns the
/// status and body of the answer.
async fn send(
    client: &h2::client::SendRequest<Bytes>,
    req: http::Request<()>,
    data: Option<&'static str>,
    data_delay: Duration,
) -> (u16, String) {
    let mut ready = client.clone().ready().await.unwrap();
    let (resp, mut stream) = ready.send_request(req, data.is_none()).unwrap();
    if let Some(d) = data {
        tokio::time::sleep(data_delay).await;
        // The gateway may already have answered and reset the stream: that is fine.
        let _ = stream.send_data(Bytes::from_static(d.as_bytes()), true);
    }
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let status = resp.status().as_u16();
    (status, body_text(resp.into_body()).await)
}

/// HTTP/2 carries a body in DATA frames; a stream without END_STREAM on its HEADERS has one,
/// with or without a `content-length`. A GET with a body is refused (400) and neither the
/// request nor a byte of its DATA reaches the origin. The same GET with END_STREAM on
/// HEADERS is served.
#[tokio::test]
async fn an_h2_get_with_data_frames_is_refused_and_the_origin_receives_nothing() {
    let origin = MockOrigin::start().await;
    let t = tls_gateway(&origin).await;
    let (client, _conn) = t.h2().await;
    let get = || {
        http::Request::get(t.uri(&format!("/content?query={Q}")))
            .body(())
            .unwrap()
    };

    // Control: END_STREAM on HEADERS, no body — served.
    let (status, body) = send(&client, get(), None, Duration::ZERO).await;
    assert_eq!(status, 200, "{body}\n{}", t.gw.log());
    assert!(body.contains("Hello"), "{body}");
    assert_eq!(origin.count(), 1);
    let served = origin.last();
    assert_eq!(served.method, "GET");
    assert!(served.body.is_empty());

    // DATA frames right behind HEADERS, no content-length.
    let (status, body) = send(&client, get(), Some(SMUGGLED_BODY), Duration::ZERO).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("BAD_REQUEST"), "{body}");
    // HEADERS without END_STREAM, the DATA only later: the stream alone says a body follows.
    let (status, body) = send(
        &client,
        get(),
        Some(SMUGGLED_BODY),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // A repeated Content-Type is as ambiguous on h2 as on HTTP/1.
    let post = http::Request::post(t.uri("/content"))
        .header("content-type", "application/json")
        .header("content-type", "text/plain")
        .header("content-length", SMUGGLED_BODY.len())
        .body(())
        .unwrap();
    let (status, body) = send(&client, post, Some(SMUGGLED_BODY), Duration::ZERO).await;
    assert_eq!(status, 400, "{body}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        origin.count(),
        1,
        "only the control reached the origin: {:?}",
        origin.requests()
    );
    // The connection is still usable after the refusals.
    let (status, _) = send(&client, get(), None, Duration::ZERO).await;
    assert_eq!(status, 200);
    for r in origin.requests() {
        assert!(r.body.is_empty(), "a GET body reached the origin: {r:?}");
    }
}

/// How long the connection task runs from `since`, at most `limit` (`None`: still open).
async fn closed_after(
    conn: tokio::task::JoinHandle<Result<(), h2::Error>>,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    tokio::time::timeout(limit.saturating_sub(since.elapsed()), conn)
        .await
        .ok()
        .map(|_| since.elapsed())
}

fn assert_closed_by_the_header_timeout(what: &str, after: Option<Duration>, log: &str) {
    let after = after.unwrap_or_else(|| panic!("{what}: still open after {CLOSED_WITHIN:?}"));
    assert!(
        after >= HEADER_TIMEOUT.mul_f32(0.8) && after < CLOSED_WITHIN,
        "{what}: closed after {after:?}\n{log}"
    );
}

/// An h2 connection with no stream in flight is closed after the header timeout: straight
/// after its preface, and after its last response. A stream that stays in flight longer than
/// the timeout (a slow origin) is not cut.
#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_the_header_timeout() {
    let origin = MockOrigin::start().await;
    let t = tls_gateway(&origin).await;

    // Nothing after the preface.
    let opened = Instant::now();
    let (_idle_client, idle_conn) = t.h2().await;
    let idle = tokio::spawn(closed_after(idle_conn, opened, CLOSED_WITHIN));

    // A slow answer (longer than the timeout), then nothing.
    origin.reply_with(Reply {
        delay: Duration::from_millis(1500),
        ..Reply::default()
    });
    let (client, conn) = t.h2().await;
    let get = http::Request::get(t.uri(&format!("/content?query={Q}")))
        .body(())
        .unwrap();
    let (status, body) = send(&client, get, None, Duration::ZERO).await;
    assert_eq!(status, 200, "a stream in flight is not idle: {body}");
    let answered = Instant::now();
    let after_response = closed_after(conn, answered, CLOSED_WITHIN).await;

    let log = t.gw.log();
    assert_closed_by_the_header_timeout("idle after the preface", idle.await.unwrap(), &log);
    assert_closed_by_the_header_timeout("idle after a response", after_response, &log);
    drop(client);
}

/// One HTTP/2 frame: 9-byte header then payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Frame types in a server byte stream (a partial last frame is ignored).
fn frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 9 {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        out.push(bytes[at + 3]);
        at += 9 + len;
    }
    out
}

/// A HEADERS frame without END_HEADERS and no CONTINUATION ever: the h2 layer holds the
/// half-received block and no stream is started, so nothing but the idle timeout can end it.
/// The connection is closed after the header timeout and the origin sees nothing.
#[tokio::test]
async fn an_h2_headers_block_that_never_ends_is_closed_after_the_header_timeout() {
    let origin = MockOrigin::start().await;
    let t = tls_gateway(&origin).await;
    let mut tls = t.connect().await;
    let started = Instant::now();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS, defaults
                                       // HPACK: :method GET, :scheme https, :path /, :authority "localhost" (indexed name 1).
    let mut block = vec![0x82, 0x87, 0x84, 0x41, 9];
    block.extend_from_slice(b"localhost");
    // HEADERS on stream 1 with END_STREAM (0x1) and without END_HEADERS (0x4).
    out.extend(frame(0x1, 0x1, 1, &block));
    tls.write_all(&out).await.unwrap();
    tls.flush().await.unwrap();

    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        let left = CLOSED_WITHIN.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, tls.read(&mut chunk)).await {
            Err(_) => break None,
            Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    };
    let types = frame_types(&got);
    assert_closed_by_the_header_timeout(
        &format!("HEADERS without END_HEADERS (server frames {types:?})"),
        closed,
        &t.gw.log(),
    );
    // No HEADERS (a response) came back: the half block was never a request.
    assert!(!types.contains(&0x1), "server frames {types:?}");
    assert_eq!(origin.count(), 0, "{:?}", origin.requests());
}
