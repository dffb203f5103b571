//! The gateway's HTTP/1.1 exchange with the upstream, for the pass-through and cache fills
//! alike: the answer's header read with `httparse` straight into the header the client gets
//! (hop-by-hop fields dropped, no second map of spellings), its body framed by
//! `Content-Length`, `chunked` or the upstream's close, and the connection kept in a small pool
//! of its own when the exchange ended cleanly.
//!
//! Pingora's connector still makes every connection (TCP, TLS, SNI, connect timeouts); what
//! this replaces is its HTTP/1 client session and its keep-alive pool, which parse an answer
//! into a map with a second map of each name's spelling, copy it once more for the client, and
//! start a task with a timer for every connection put back.
//!
//! Worst cases, each bounded before the work:
//! - an answer's header: [`MAX_HEADER_BYTES`] and [`MAX_HEADERS`] fields, at most
//!   [`MAX_INFORMATIONAL`] 1xx answers before it; the end of the header is looked for only in
//!   the bytes each read adds (no quadratic rescans of a dribbled header);
//! - a chunk-size line: [`MAX_CHUNK_LINE`] bytes; a trailer section: [`MAX_TRAILER_BYTES`];
//! - each read waits at most the upstream's `read_timeout`; the caller bounds the whole exchange;
//! - the pool holds at most `[server] upstream_keepalive_pool_size` connections, none idle longer
//!   than the upstream's `idle_timeout` once swept.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result};
use tokio::io::AsyncReadExt;

/// Most bytes of one answer header (status line and fields).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most fields in one answer header.
pub const MAX_HEADERS: usize = 128;
/// Most informational (1xx) answers before the answer.
pub const MAX_INFORMATIONAL: usize = 8;
/// Most bytes of one chunk-size line (the size and any extensions).
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of the trailer section after the last chunk.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// What one read asks the socket for.
const READ_SIZE: usize = 16 * 1024;

/// Fields of an answer that never go further (RFC 9110 §7.6.1), besides `Connection`,
/// `Transfer-Encoding` and `Content-Length`, which the framing reads and sets itself.
static HOP_BY_HOP: [HeaderName; 7] = [
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    http::header::PROXY_AUTHORIZATION,
    http::header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// A response header the gateway builds itself (an answer it writes, or one it read from the
/// upstream), in `http`'s map alone: Pingora spells a header without a recorded spelling as it
/// does its own `Date` and `Connection` (the common names capitalized, others in lower case).
pub fn response_header(status: StatusCode, headers: HeaderMap) -> ResponseHeader {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers;
    ResponseHeader::from(parts)
}

fn invalid(why: impl Into<String>) -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, why.into())
}

fn closed(when: &'static str) -> Box<Error> {
    Error::explain(ErrorType::ConnectionClosed, when)
}

/// How the answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// The upstream closes the connection after it.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer bytes read so far.
    Trailer(usize),
}

/// One answer being read, once its header was ([`Exchange::read_answer`]): its body through
/// [`Exchange::read_body_bytes`], then the connection back to the pool it came for.
pub struct Exchange {
    stream: Stream,
    /// The pool key of the peer the connection was made or taken for (`Peer::reuse_hash`);
    /// it goes back under that key, even when the upstream's address changed meanwhile.
    peer: u64,
    /// Bytes read and not yet handed out.
    buf: BytesMut,
    body: Body,
    keep_alive: bool,
    read_timeout: Duration,
}

const MID_BODY: &str = "the upstream closed mid-body";

/// One read into `buf`, within `timeout`. Returns the bytes read (0: the upstream closed).
async fn read_more(stream: &mut Stream, buf: &mut BytesMut, timeout: Duration) -> Result<usize> {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    match pingora_timeout::timeout(timeout, stream.read_buf(buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(Error::because(
            ErrorType::ReadError,
            "reading the upstream answer",
            e,
        )),
        Err(_) => Err(Error::explain(
            ErrorType::ReadTimedout,
            "reading the upstream answer",
        )),
    }
}

/// The end of a header block in `buf` (the index just past its empty line), looking at lines
/// ending at or after `from`.
fn header_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    memchr::memchr_iter(b'\n', &buf[start..])
        .map(|i| start + i)
        .find(|&i| {
            (i >= 1 && buf[i - 1] == b'\n')
                || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n')
        })
        .map(|i| i + 1)
}

/// A parsed answer header.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
    keep_alive: bool,
}

/// Parses one complete header block (`raw` ends with its empty line).
fn parse_head(raw: &[u8]) -> Result<Head> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut fields);
    match r.parse(raw) {
        // `httparse` must end the header where `header_end` did, or the two read different
        // answers.
        Ok(httparse::Status::Complete(n)) if n == raw.len() => {}
        Ok(httparse::Status::Complete(_)) | Ok(httparse::Status::Partial) => {
            return Err(invalid("an incomplete answer header"))
        }
        Err(e) => return Err(invalid(format!("the upstream's answer header: {e}"))),
    }
    let code = r
        .code
        .ok_or_else(|| invalid("an answer without a status"))?;
    let status = StatusCode::from_u16(code).map_err(|_| invalid("an answer's status"))?;
    let http10 = r.version == Some(0);
    let mut headers = HeaderMap::with_capacity(r.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    // An HTTP/1.0 answer's connection is never reused, even when it says keep-alive.
    let mut close = http10;
    let mut nominated: Vec<HeaderName> = Vec::new();
    for f in r.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| invalid("an answer field name"))?;
        if name == http::header::CONNECTION {
            for token in f.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    // Its field is hop-by-hop already.
                } else if let Ok(n) = HeaderName::from_bytes(token) {
                    // Fields the upstream named as hop-by-hop (RFC 9110 §7.6.1).
                    nominated.push(n);
                }
            }
        } else if name == http::header::TRANSFER_ENCODING {
            // Only `chunked` is decoded, and only once; any other coding (or none) would leave
            // the body's end to a guess.
            for coding in f.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if !coding.eq_ignore_ascii_case(b"chunked") || chunked {
                    return Err(invalid("a transfer coding other than one chunked"));
                }
                chunked = true;
            }
        } else if name == http::header::CONTENT_LENGTH {
            for n in f.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                let n = std::str::from_utf8(n)
                    .ok()
                    .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| invalid("an answer's Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(invalid("differing Content-Lengths"));
                }
                length = Some(n);
            }
        } else if !HOP_BY_HOP.contains(&name) {
            let value =
                HeaderValue::from_bytes(f.value).map_err(|_| invalid("an answer field value"))?;
            headers.append(name, value);
        }
    }
    for n in &nominated {
        headers.remove(n);
    }
    let body = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        // Bodiless by definition; an upstream that sends one anyway would have it read as the
        // next request's answer, so the connection is not reused.
        close = true;
        Body::Done
    } else if chunked {
        // Both framings (RFC 9112 §6.3): chunked wins, and the connection is not trusted after.
        if length.is_some() {
            close = true;
        }
        Body::Chunked(Chunk::Size)
    } else if let Some(n) = length {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
        Body::Length(n)
    } else {
        close = true;
        Body::Close
    };
    Ok(Head {
        status,
        headers,
        body,
        keep_alive: !close,
    })
}

/// The size on a chunk-size line (`line` up to its LF): one to sixteen hex digits, then
/// nothing or extensions (`;`, optionally after blanks) of visible ASCII and blanks, then CR.
/// Stricter than `httparse::parse_chunk_size`, which reads a line without digits as the last
/// chunk: a body cut short and taken as whole.
fn chunk_size(line: &[u8]) -> Result<u64> {
    let line = line
        .strip_suffix(b"\r")
        .ok_or_else(|| invalid("a chunk-size line without CRLF"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(invalid("a malformed chunk size"));
    }
    let rest = &line[digits..];
    let ext = &rest[rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count()..];
    if !rest.is_empty() && !ext.starts_with(b";") {
        return Err(invalid("a malformed chunk size"));
    }
    if !ext.iter().all(|b| matches!(b, b'\t' | b' '..=b'~')) {
        return Err(invalid("a chunk extension with a control byte"));
    }
    let hex =
        std::str::from_utf8(&line[..digits]).map_err(|_| invalid("a malformed chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| invalid("a malformed chunk size"))
}

/// Whether a trailer line is a field: a token name, a colon, then a value of visible ASCII,
/// blanks and obs-text (as `httparse` allows in a header value).
fn trailer_field(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && HeaderName::from_bytes(name).is_ok()
        && value
            .iter()
            .all(|b| matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff))
}

impl Exchange {
    /// Reads the answer's header from `stream`, a connection to the peer with pool key `peer`
    /// (informational answers skipped; a 101 to a request that asked for no upgrade is a broken
    /// upstream). Returns the header (hop-by-hop fields removed; `Content-Length` only when it
    /// frames the body) and the exchange that reads the body.
    pub async fn read_answer(
        mut stream: Stream,
        peer: u64,
        read_timeout: Duration,
    ) -> Result<(ResponseHeader, Self)> {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let mut informational = 0;
        loop {
            let mut scanned = 0;
            let end = loop {
                if let Some(end) = header_end(&buf, scanned) {
                    break end;
                }
                if buf.len() >= MAX_HEADER_BYTES {
                    return Err(invalid("the upstream's answer header is too large"));
                }
                scanned = buf.len();
                if read_more(&mut stream, &mut buf, read_timeout).await? == 0 {
                    return Err(closed("the upstream closed before its answer's header"));
                }
            };
            if end > MAX_HEADER_BYTES {
                return Err(invalid("the upstream's answer header is too large"));
            }
            let head = parse_head(&buf[..end])?;
            buf.advance(end);
            match head.status.as_u16() {
                101 => return Err(invalid("the upstream switched protocols unasked")),
                100..=199 => {
                    informational += 1;
                    if informational > MAX_INFORMATIONAL {
                        return Err(invalid("too many informational answers"));
                    }
                    continue;
                }
                _ => {}
            }
            let exchange = Self {
                stream,
                peer,
                buf,
                body: head.body,
                keep_alive: head.keep_alive,
                read_timeout,
            };
            return Ok((response_header(head.status, head.headers), exchange));
        }
    }

    /// Whether the body's length is known before it is read (`Content-Length`, or no body).
    pub fn length_known(&self) -> bool {
        matches!(self.body, Body::Length(_) | Body::Done)
    }

    /// One more read into the buffer; the upstream closing here cuts the body.
    async fn fill(&mut self) -> Result<()> {
        if read_more(&mut self.stream, &mut self.buf, self.read_timeout).await? == 0 {
            return Err(closed(MID_BODY));
        }
        Ok(())
    }

    /// Up to `n` bytes of the body, reading once when none are buffered.
    async fn take_up_to(&mut self, n: u64) -> Result<Bytes> {
        if self.buf.is_empty() {
            self.fill().await?;
        }
        let take = self.buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        Ok(self.buf.split_to(take).freeze())
    }

    /// The next piece of the body (`None`: the body is whole).
    pub async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.body {
                Body::Done => return Ok(None),
                Body::Length(0) => self.body = Body::Done,
                Body::Length(n) => {
                    let b = self.take_up_to(n).await?;
                    self.body = Body::Length(n - b.len() as u64);
                    return Ok(Some(b));
                }
                Body::Close => {
                    if self.buf.is_empty()
                        && read_more(&mut self.stream, &mut self.buf, self.read_timeout).await? == 0
                    {
                        self.body = Body::Done;
                        return Ok(None);
                    }
                    return Ok(Some(self.buf.split().freeze()));
                }
                Body::Chunked(Chunk::Size) => {
                    let window = self.buf.len().min(MAX_CHUNK_LINE);
                    let Some(nl) = memchr::memchr(b'\n', &self.buf[..window]) else {
                        if self.buf.len() >= MAX_CHUNK_LINE {
                            return Err(invalid("a chunk-size line too long"));
                        }
                        self.fill().await?;
                        continue;
                    };
                    let size = chunk_size(&self.buf[..nl])?;
                    self.buf.advance(nl + 1);
                    self.body = Body::Chunked(if size == 0 {
                        Chunk::Trailer(0)
                    } else {
                        Chunk::Data(size)
                    });
                }
                Body::Chunked(Chunk::Data(n)) => {
                    let b = self.take_up_to(n).await?;
                    let left = n - b.len() as u64;
                    self.body = Body::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Some(b));
                }
                Body::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() < 2 {
                        self.fill().await?;
                        continue;
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(invalid("a chunk without its CRLF"));
                    }
                    self.buf.advance(2);
                    self.body = Body::Chunked(Chunk::Size);
                }
                Body::Chunked(Chunk::Trailer(seen)) => {
                    let Some(nl) = memchr::memchr(b'\n', &self.buf) else {
                        if seen + self.buf.len() > MAX_TRAILER_BYTES {
                            return Err(invalid("a trailer section too large"));
                        }
                        self.fill().await?;
                        continue;
                    };
                    let field = self.buf[..nl]
                        .strip_suffix(b"\r")
                        .ok_or_else(|| invalid("a trailer line without CRLF"))?;
                    if field.is_empty() {
                        self.buf.advance(nl + 1);
                        self.body = Body::Done;
                        continue;
                    }
                    // A field (dropped: trailers never go further), never a continuation line.
                    if !trailer_field(field) {
                        return Err(invalid("a malformed trailer field"));
                    }
                    if seen + nl + 1 > MAX_TRAILER_BYTES {
                        return Err(invalid("a trailer section too large"));
                    }
                    self.buf.advance(nl + 1);
                    self.body = Body::Chunked(Chunk::Trailer(seen + nl + 1));
                }
            }
        }
    }

    /// The connection and its pool key, when it can carry another request: the answer was read
    /// to its end, the upstream did not say it closes, and nothing came after the answer.
    pub fn into_reusable(self) -> Option<(u64, Stream)> {
        (self.keep_alive && self.body == Body::Done && self.buf.is_empty())
            .then_some((self.peer, self.stream))
    }
}

/// Whether an idle connection is still usable: the upstream neither closed it nor sent
/// anything on it unasked. One poll with no waiting; tokio answers it from the readiness it
/// already knows, without a system call while nothing arrived.
fn idle_and_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let read = tokio::task::unconstrained(stream.read(&mut byte));
    let mut read = std::pin::pin!(read);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    read.as_mut().poll(&mut cx).is_pending()
}

struct Idle {
    stream: Stream,
    /// When it has idled for its upstream's `idle_timeout`.
    expires: Instant,
}

/// Idle upstream connections by peer (`Peer::reuse_hash`: address, TLS, SNI), newest last.
pub struct Pool {
    idle: Mutex<PoolInner>,
    capacity: usize,
}

#[derive(Default)]
struct PoolInner {
    by_peer: HashMap<u64, VecDeque<Idle>>,
    count: usize,
}

impl Pool {
    pub fn new(capacity: usize) -> Self {
        Self {
            idle: Mutex::new(PoolInner::default()),
            capacity,
        }
    }

    /// The newest idle connection to `peer` that is still open and not expired. Newer ones
    /// found expired or closed on the way are closed. Each is checked outside the lock.
    pub fn take(&self, peer: u64) -> Option<Stream> {
        loop {
            let mut c = {
                let mut inner = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let c = inner.by_peer.get_mut(&peer)?.pop_back()?;
                inner.count -= 1;
                c
            };
            if Instant::now() < c.expires && idle_and_open(&mut c.stream) {
                return Some(c.stream);
            }
        }
    }

    /// Keeps a connection whose exchange ended cleanly, for at most `idle`, if nothing arrived
    /// on it after its answer. Past the capacity, the oldest connection to the same peer is
    /// closed, else the one that expires first among the other peers' oldest.
    pub fn put(&self, peer: u64, mut stream: Stream, idle: Duration) {
        let Some(expires) = Instant::now().checked_add(idle) else {
            return;
        };
        if !idle_and_open(&mut stream) {
            return;
        }
        let evicted = {
            let mut inner = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut evicted = None;
            if inner.count >= self.capacity {
                evicted = inner.by_peer.get_mut(&peer).and_then(VecDeque::pop_front);
                if evicted.is_none() {
                    evicted = inner
                        .by_peer
                        .values_mut()
                        .filter(|q| !q.is_empty())
                        .min_by_key(|q| q.front().map(|c| c.expires))
                        .and_then(VecDeque::pop_front);
                }
                if evicted.is_none() {
                    // A capacity of zero: nothing is kept.
                    return;
                }
                inner.count -= 1;
            }
            inner
                .by_peer
                .entry(peer)
                .or_default()
                .push_back(Idle { stream, expires });
            inner.count += 1;
            evicted
        };
        drop(evicted);
    }

    /// Closes every expired connection; returns how many are left.
    pub fn sweep(&self) -> usize {
        let mut dropped = Vec::new();
        let now = Instant::now();
        let left = {
            let mut inner = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut removed = 0;
            inner.by_peer.retain(|_, q| {
                // The whole queue: two upstreams at one address share a peer key but may have
                // different idle timeouts.
                let mut i = 0;
                while i < q.len() {
                    if q[i].expires <= now {
                        dropped.extend(q.remove(i));
                        removed += 1;
                    } else {
                        i += 1;
                    }
                }
                !q.is_empty()
            });
            inner.count -= removed;
            inner.count
        };
        drop(dropped);
        left
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_end_finds_crlf_and_bare_lf_blocks_from_any_scan_point() {
        let raw = b"HTTP/1.1 200 OK\r\na: b\r\n\r\nbody";
        for from in 0..raw.len() {
            assert_eq!(header_end(&raw[..], from.min(24)), Some(25), "from {from}");
        }
        assert_eq!(header_end(b"HTTP/1.1 200 OK\na: b\n\nx", 0), Some(22));
        assert_eq!(header_end(b"HTTP/1.1 200 OK\r\na: b\r\n", 0), None);
    }

    #[test]
    fn framing_is_read_from_the_header_and_hop_by_hop_fields_dropped() {
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, x-hop\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.body, Body::Length(5));
        assert!(h.keep_alive);
        assert!(h.headers.get("keep-alive").is_none());
        assert!(h.headers.get("connection").is_none());
        assert_eq!(h.headers.get("content-length").unwrap(), "5");
        assert_eq!(h.headers.get("x-kept").unwrap(), "1");

        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
        assert_eq!(h.body, Body::Close);
        assert!(!h.keep_alive);
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(h.body, Body::Chunked(Chunk::Size));
        assert!(h.keep_alive);
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.body, Body::Chunked(Chunk::Size));
        assert!(!h.keep_alive, "both framings: the connection is not reused");
        assert!(h.headers.get("content-length").is_none());
        let h = parse_head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").unwrap();
        assert_eq!(h.body, Body::Done);
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n")
                .unwrap()
                .body,
            Body::Length(3)
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(parse_head(raw).is_err(), "{}", String::from_utf8_lossy(raw));
        }
    }

    /// An answer written by a real socket in `pieces`, read through an [`Exchange`]: its body
    /// and whether the connection came back reusable.
    async fn exchange_over_loopback(pieces: Vec<Vec<u8>>, close: bool) -> Result<(Vec<u8>, bool)> {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            for p in pieces {
                if s.write_all(&p).await.is_err() {
                    return;
                }
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if !close {
                // Hold the connection open until the client is done.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            }
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(tcp));
        let (_, mut ex) = Exchange::read_answer(stream, 0, Duration::from_secs(5)).await?;
        let mut body = Vec::new();
        while let Some(b) = ex.read_body_bytes().await? {
            body.extend_from_slice(&b);
        }
        let reusable = ex.into_reusable().is_some();
        server.abort();
        Ok((body, reusable))
    }

    fn cut(all: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (all.len() + 1)).collect();
        at.sort_unstable();
        at.dedup();
        let mut pieces = Vec::new();
        let mut from = 0;
        for c in at.into_iter().chain([all.len()]) {
            if c > from {
                pieces.push(all[from..c].to_vec());
                from = c;
            }
        }
        pieces
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Whatever the chunking, extensions, trailers and however the bytes arrive, the body
        /// read is the body sent, and a framed answer leaves the connection reusable.
        #[test]
        fn a_chunked_or_framed_body_is_read_exactly_however_it_is_cut(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            sizes in proptest::collection::vec(1usize..700, 1..12),
            framing in 0u8..3,
            ext in proptest::prelude::any::<bool>(),
            trailer in proptest::prelude::any::<bool>(),
            cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..8),
        ) {
            let mut all = Vec::new();
            match framing {
                0 => {
                    all.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                    let mut rest = &body[..];
                    let mut i = 0;
                    while !rest.is_empty() {
                        let n = sizes[i % sizes.len()].min(rest.len());
                        i += 1;
                        all.extend_from_slice(format!("{n:X}").as_bytes());
                        if ext {
                            all.extend_from_slice(b";name=value");
                        }
                        all.extend_from_slice(b"\r\n");
                        all.extend_from_slice(&rest[..n]);
                        all.extend_from_slice(b"\r\n");
                        rest = &rest[n..];
                    }
                    all.extend_from_slice(b"0\r\n");
                    if trailer {
                        all.extend_from_slice(b"x-trailer: 1\r\n");
                    }
                    all.extend_from_slice(b"\r\n");
                }
                1 => {
                    all.extend_from_slice(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes());
                    all.extend_from_slice(&body);
                }
                _ => {
                    all.extend_from_slice(b"HTTP/1.0 200 OK\r\n\r\n");
                    all.extend_from_slice(&body);
                }
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (read, reusable) = rt
                .block_on(exchange_over_loopback(cut(&all, &cuts), framing == 2))
                .unwrap();
            proptest::prop_assert_eq!(read, body);
            proptest::prop_assert_eq!(reusable, framing != 2);
        }
    }

    #[tokio::test]
    async fn bytes_after_the_answer_or_a_cut_body_never_come_back_to_the_pool() {
        let extra = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n".to_vec();
        let (body, reusable) = exchange_over_loopback(vec![extra], false).await.unwrap();
        assert_eq!(body, b"ok");
        assert!(!reusable, "unasked bytes after the answer");
        let cut = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort".to_vec();
        let e = exchange_over_loopback(vec![cut], true).await.unwrap_err();
        assert_eq!(e.etype(), &ErrorType::ConnectionClosed);
        let informational = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx".to_vec();
        let (body, reusable) = exchange_over_loopback(vec![informational], false)
            .await
            .unwrap();
        assert_eq!((body.as_slice(), reusable), (&b"x"[..], true));
        let endless = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INFORMATIONAL + 1);
        assert!(exchange_over_loopback(vec![endless], false).await.is_err());
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        while huge.len() <= MAX_HEADER_BYTES {
            huge.extend_from_slice(
                b"x-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        let e = exchange_over_loopback(vec![huge], false).await.unwrap_err();
        assert_eq!(e.etype(), &ErrorType::InvalidHTTPHeader);
        let long_size = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;{}\r\n",
            "e".repeat(MAX_CHUNK_LINE)
        )
        .into_bytes();
        let e = exchange_over_loopback(vec![long_size], false)
            .await
            .unwrap_err();
        assert_eq!(e.etype(), &ErrorType::InvalidHTTPHeader);
    }

    #[tokio::test]
    async fn the_pool_is_bounded_hands_out_newest_first_and_closes_what_expired_or_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..4 {
                held.push(listener.accept().await.unwrap().0);
            }
            held
        });
        let mut conns = Vec::new();
        for _ in 0..4 {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let port = tcp.local_addr().unwrap().port();
            let s: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(tcp));
            conns.push((port, s));
        }
        let fds: Vec<i32> = { conns.iter().map(|(_, s)| s.id()).collect() };
        let mut server_side = accepted.await.unwrap();
        let pool = Pool::new(3);
        let long = Duration::from_secs(60);
        let ports: Vec<u16> = conns.iter().map(|(p, _)| *p).collect();
        let mut it = conns.into_iter();
        let (_, a) = it.next().unwrap();
        pool.put(1, a, long);
        let (_, b) = it.next().unwrap();
        pool.put(1, b, long);
        let (_, c) = it.next().unwrap();
        pool.put(2, c, Duration::ZERO);
        assert_eq!(pool.len(), 3);
        // Full: the oldest connection to peer 1 makes room.
        let (_, d) = it.next().unwrap();
        pool.put(1, d, long);
        assert_eq!(pool.len(), 3);
        let newest = pool.take(1).unwrap();
        assert_eq!(newest.id(), fds[3], "newest first");
        // Peer 2's connection expired at once: never handed out, and closed.
        assert!(pool.take(2).is_none());
        assert_eq!(pool.len(), 1);
        // A connection the upstream closed while it idled is not handed out.
        server_side.retain(|s| s.peer_addr().unwrap().port() != ports[1]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(1).is_none(), "closed by the upstream");
        assert!(pool.is_empty());
        pool.put(3, newest, Duration::ZERO);
        assert_eq!(pool.sweep(), 0);
        assert!(pool.is_empty());

        // Not kept: a connection with unasked bytes waiting on it, or one whose idle timeout
        // cannot be added to now.
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stray = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.put(
            4,
            Box::new(pingora::protocols::l4::stream::Stream::from(stray)),
            long,
        );
        assert!(pool.is_empty(), "bytes after the answer");
        let forever = tokio::net::TcpStream::connect(addr).await.unwrap();
        pool.put(
            4,
            Box::new(pingora::protocols::l4::stream::Stream::from(forever)),
            Duration::MAX,
        );
        assert!(pool.is_empty(), "an idle timeout past the clock's range");
    }

    #[test]
    fn chunk_size_lines_need_digits_and_clean_extensions() {
        assert_eq!(chunk_size(b"1a\r").unwrap(), 26);
        assert_eq!(chunk_size(b"0\r").unwrap(), 0);
        assert_eq!(chunk_size(b"5 ;a=b\r").unwrap(), 5);
        assert_eq!(chunk_size(b"5;a=\"b c\"\r").unwrap(), 5);
        assert_eq!(chunk_size(b"ffffffffffffffff\r").unwrap(), u64::MAX);
        for bad in [
            &b"\r"[..],
            b" \r",
            b";ext\r",
            b"5",
            b"5 x\r",
            b"5;a\x00\r",
            b"5;a\x0c\r",
            b"5;\xff\r",
            b"-1\r",
            b"10000000000000000\r",
        ] {
            assert!(chunk_size(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn a_line_without_digits_never_ends_a_chunked_body_and_trailers_must_be_fields() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n;x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nnot a field\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n folded: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx: a\x00b\r\n\r\n",
        ] {
            let e = exchange_over_loopback(vec![raw.to_vec()], true).await.unwrap_err();
            assert_eq!(e.etype(), &ErrorType::InvalidHTTPHeader, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[tokio::test]
    async fn bodiless_and_http10_answers_and_nominated_fields_are_never_carried_on() {
        // A 204 (with a body anyway, or not), and an HTTP/1.0 keep-alive: no connection is
        // reused.
        for raw in [
            &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\n\r\nstray",
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
        ] {
            let (_, reusable) = exchange_over_loopback(vec![raw.to_vec()], false)
                .await
                .unwrap();
            assert!(!reusable, "{}", String::from_utf8_lossy(raw));
        }
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nConnection: x-secret, keep-alive\r\nX-Secret: 1\r\nX-Kept: 2\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
        assert!(h.headers.get("x-secret").is_none());
        assert_eq!(h.headers.get("x-kept").unwrap(), "2");
        assert!(h.keep_alive);
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
        assert!(!h.keep_alive, "close wins");
    }
}
