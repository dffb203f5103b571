//! Whole-header deadline for client connections (slowloris).
//!
//! Pingora's read timeouts are per read: a client that sends one header byte every few seconds
//! keeps its connection, and a worker's attention, for as long as it likes. [`HeaderDeadline`]
//! wraps each accepted stream and fails the read once a request header has been arriving for
//! longer than `limit` (nginx's `client_header_timeout`): the clock starts at the first byte of
//! a request and stops at the blank line that ends its header. A response written to the
//! client re-arms it for the next request on a kept-alive connection. Body deadlines are the
//! proxy's own (`read_body`), and writes to a client that does not read are bounded by the
//! session's write timeout.
//!
//! [`Guarded`] is the [`ServerApp`] that puts the wrapper under the HTTP proxy.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// Inside a request header: the deadline runs.
    Header,
    /// The header ended; body and response follow.
    Passed,
}

/// A client stream whose request headers must arrive whole within a deadline.
#[derive(Debug)]
pub struct HeaderDeadline {
    inner: Stream,
    limit: Duration,
    phase: Phase,
    end: EndOfHeader,
    sleep: Pin<Box<Sleep>>,
}

impl HeaderDeadline {
    pub fn new(inner: Stream, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            phase: Phase::Idle,
            end: EndOfHeader::default(),
            sleep: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// A response is being written: the next bytes read begin the next request.
    fn responding(&mut self) {
        if self.phase == Phase::Passed {
            self.phase = Phase::Idle;
        }
    }
}

/// Finds the empty line that ends a request header, across reads, the way HTTP parsers read
/// it: empty lines *before* the request line are skipped (RFC 9112 §2.2), so they do not end
/// anything, and a bare LF ends a line as CRLF does (httparse accepts both).
#[derive(Debug, Default)]
struct EndOfHeader {
    /// A byte other than CR/LF has been seen: the request line has begun.
    started: bool,
    /// The last byte ended a line (so the next line may be the empty one).
    at_line_start: bool,
    /// A CR at the start of a line: the empty line's LF may follow.
    cr: bool,
}

impl EndOfHeader {
    /// Whether `bytes` hold the end of the header. Only a line's first bytes and its end
    /// matter, so the scan jumps from one LF to the next (`memchr`).
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if !self.started {
            match bytes.iter().position(|b| *b != b'\r' && *b != b'\n') {
                Some(i) => {
                    self.started = true;
                    bytes = &bytes[i + 1..];
                }
                None => return false,
            }
        }
        loop {
            if self.at_line_start {
                match bytes.first() {
                    None => return false,
                    Some(b'\n') => return true,
                    Some(b'\r') if !self.cr => {
                        self.cr = true;
                        bytes = &bytes[1..];
                        continue;
                    }
                    Some(_) => {
                        self.at_line_start = false;
                        self.cr = false;
                    }
                }
            }
            match memchr::memchr(b'\n', bytes) {
                Some(i) => {
                    self.at_line_start = true;
                    self.cr = false;
                    bytes = &bytes[i + 1..];
                }
                None => return false,
            }
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "client did not send the request header within client_header_timeout",
    )
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.phase == Phase::Header && this.sleep.is_elapsed() {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() && this.phase != Phase::Passed {
                    let first = this.phase == Phase::Idle;
                    if first {
                        this.phase = Phase::Header;
                        this.end = EndOfHeader::default();
                    }
                    if this.end.feed(new) {
                        this.phase = Phase::Passed;
                    } else if first {
                        // The first bytes of a request start the clock. A header that came
                        // whole with them (the usual case) needs none: no clock read, no timer.
                        this.sleep.as_mut().reset(Instant::now() + this.limit);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.phase == Phase::Header
                    && std::future::Future::poll(this.sleep.as_mut(), cx).is_ready()
                {
                    return Poll::Ready(Err(timed_out()));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.responding();
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.responding();
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The proxy application with every HTTP/1 stream wrapped in a [`HeaderDeadline`]. HTTP/2
/// (ALPN) streams are not wrapped: their frames have no blank line to stop a header clock.
///
/// Pipelining stays off (Pingora's default): a request that arrives with the next one behind it
/// is answered, then the connection closes and the client retries the rest on a new one
/// (RFC 9112 §9.3.2). Pingora 0.9's opt-in pipelining left responses unflushed in our tests.
pub struct Guarded<A> {
    pub app: Arc<A>,
    pub header_timeout: Duration,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream: Stream = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            stream
        } else {
            Box::new(HeaderDeadline::new(stream, self.header_timeout))
        };
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::EndOfHeader;

    #[test]
    fn the_header_ends_at_the_first_blank_line_even_across_reads() {
        let mut e = EndOfHeader::default();
        assert!(!e.feed(b"GET / HTTP/1.1\r\nHost: a\r"));
        assert!(!e.feed(b"\n\r"));
        assert!(e.feed(b"\n{\"body\""));
        let mut e = EndOfHeader::default();
        assert!(e.feed(b"GET / HTTP/1.1\r\r\n\r\n"));
        let mut e = EndOfHeader::default();
        assert!(!e.feed(b"GET / HTTP/1.1\r\nX: a\r\n\rb\r\n"));
        let mut e = EndOfHeader::default();
        assert!(e.feed(b"GET / HTTP/1.1\nHost: a\n\n"));
    }

    /// Parsers skip empty lines before the request line: they must not stop the clock.
    #[test]
    fn leading_empty_lines_do_not_end_the_header() {
        let mut e = EndOfHeader::default();
        assert!(!e.feed(b"\r\n\r\n\r\n"));
        assert!(!e.feed(b"\n\n"));
        assert!(!e.feed(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(e.feed(b"\r\n"));
    }

    /// The byte-at-a-time scan this replaced: the oracle for the jumping one.
    #[derive(Default)]
    struct Reference {
        started: bool,
        at_line_start: bool,
        cr: bool,
    }

    impl Reference {
        fn feed(&mut self, bytes: &[u8]) -> bool {
            for &b in bytes {
                if !self.started {
                    if b != b'\r' && b != b'\n' {
                        self.started = true;
                    }
                    continue;
                }
                if self.at_line_start {
                    match b {
                        b'\n' => return true,
                        b'\r' if !self.cr => {
                            self.cr = true;
                            continue;
                        }
                        _ => {
                            self.at_line_start = false;
                            self.cr = false;
                        }
                    }
                }
                if b == b'\n' {
                    self.at_line_start = true;
                    self.cr = false;
                }
            }
            false
        }
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere: the header ends on the same read as with the reference.
        #[test]
        fn jumping_scan_agrees_with_the_byte_scan(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![b'\r', b'\n', b'a', b' ', b':']), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let (mut fast, mut slow, mut from) = (EndOfHeader::default(), Reference::default(), 0);
            for to in cuts {
                let chunk = &bytes[from..to];
                from = to;
                let (f, s) = (fast.feed(chunk), slow.feed(chunk));
                proptest::prop_assert_eq!(f, s, "{:?}", bytes);
                if f {
                    break;
                }
            }
        }
    }
}
