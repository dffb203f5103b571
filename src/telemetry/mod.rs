//! Tracing setup: JSON lines by default (one access-log line per request on target `access`,
//! audit events on target `audit`), text for humans. `RUST_LOG` overrides the configured level.
//! Pingora logs through the `log` crate; those records are bridged into the same output.
//!
//! Lines go to stderr through a [`Sink`]: the request thread formats its line and appends it to
//! one bounded buffer (a memcpy under a short lock); a writer thread writes the buffer out every
//! `flush_interval`, or as soon as it holds [`WAKE_BYTES`]. The request thread never makes the
//! syscall, and a stderr that stops draining (a stuck log pipe) cannot stall the event loop:
//! once the buffer is full, further lines are dropped whole and counted ([`dropped_lines`],
//! exported as `contentgate_log_lines_dropped_total`).
//!
//! - **Audit and warnings keep room.** Access lines may fill three quarters of the buffer; the
//!   last quarter is for everything else (`audit` events, warnings, errors), so a flood of
//!   requests cannot push out the audit line of a refused credential.
//! - **Memory**: each of the two buffers (the one being filled, the one being written) is
//!   allocated at most `buffer_bytes`, so the sink holds at most twice that.
//! - **Whole lines on the wire**: a batch is written in pieces of whole lines of at most
//!   [`PIPE_BUF`] bytes, which a pipe writes atomically: two processes sharing stderr (the old
//!   and the new during a zero-downtime upgrade) never interleave inside a line.
//! - **Exit**: the held lines are written at every exit (`atexit`, Pingora's own `exit` calls
//!   included), before a start-up error's message and before a panic's message, within
//!   [`EXIT_WAIT`]: a stderr that does not drain cannot hold the process. A `SIGKILL` loses at
//!   most one interval's lines, as with any buffering logger.
//!
//! `buffer_bytes = 0` writes each line on the request thread, as before.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

mod access;
mod metrics;
pub use access::{access, clip, AccessLine, MAX_LOGGED_NAME};
pub use metrics::LogMetrics;

/// The writer thread is woken early once the buffer holds this much (one batch per 64 KiB of
/// lines at the most, instead of one `write` per line).
pub const WAKE_BYTES: usize = 64 * 1024;
/// A pipe writes this much in one piece (POSIX `PIPE_BUF` on Linux).
pub const PIPE_BUF: usize = 4096;
/// How long an exit or a panic waits for stderr to take the held lines.
pub const EXIT_WAIT: Duration = Duration::from_millis(500);

/// Installs the process's subscriber from `[log]`.
pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let sink = match log.buffer_bytes {
        0 => None,
        // None: started already (a second init keeps the first subscriber anyway), or no
        // thread could be spawned: then lines are written on the request thread.
        cap => Sink::start(cap, log.flush_interval),
    };
    let installed = match sink {
        Some(sink) => install(filter, log.json, SinkMaker(sink)),
        None => install(filter, log.json, std::io::stderr),
    };
    if installed && log.json {
        let _ = FAST.set(match sink {
            Some(sink) => Fast::Sink(sink),
            None => Fast::Stderr,
        });
    }
}

/// Whether this call installed the subscriber (a second init, in tests or the demo, keeps the
/// first one).
fn install<W>(filter: EnvFilter, json: bool, writer: W) -> bool
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    installed.is_ok()
}

/// Where [`access`] writes its JSON line (set once the JSON subscriber is installed).
static FAST: OnceLock<Fast> = OnceLock::new();

enum Fast {
    Sink(&'static Sink),
    /// `buffer_bytes = 0`: one write per line, on the request thread.
    Stderr,
}

impl Fast {
    fn write(&self, line: &[u8]) {
        match self {
            Fast::Sink(sink) => sink.push(Class::Access, line),
            Fast::Stderr => {
                let _ = std::io::stderr().write_all(line);
            }
        }
    }
}

/// Lines dropped since start, by cause: an access line found its three quarters of the buffer
/// full; another line found the whole buffer full; stderr failed (or did not drain within
/// [`EXIT_WAIT`] at exit).
pub fn dropped_lines() -> [(&'static str, u64); 3] {
    let n = |i: usize| {
        SINK.get()
            .map_or(0, |s| s.dropped[i].load(Ordering::Relaxed))
    };
    [
        ("access_full", n(ACCESS_FULL)),
        ("full", n(FULL)),
        ("stderr", n(STDERR)),
    ]
}

const ACCESS_FULL: usize = 0;
const FULL: usize = 1;
const STDERR: usize = 2;

/// Bytes of lines held now: waiting in the buffer, or in the batch being written.
pub fn buffered_bytes() -> u64 {
    SINK.get().map_or(0, |s| s.held.load(Ordering::Relaxed))
}

/// Writes out what the buffer holds from the calling thread, within [`EXIT_WAIT`] (exit paths:
/// a start-up error, a panic, `atexit`).
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.drain(Some(Instant::now() + EXIT_WAIT));
    }
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Which share of the buffer a line may use.
#[derive(Clone, Copy)]
enum Class {
    /// `access` lines: up to three quarters.
    Access,
    /// Everything else (audit, warnings, errors, start-up): the whole buffer.
    Other,
}

struct Sink {
    cap: usize,
    /// The most an access line may fill the buffer to.
    access_cap: usize,
    wake_at: usize,
    pending: Mutex<Vec<u8>>,
    /// Held while a batch is written, so batches reach stderr in order (the writer thread and
    /// [`flush`] both drain). Keeps the written buffer's allocation for the next swap.
    writing: Mutex<Writing>,
    wake: Condvar,
    held: AtomicU64,
    dropped: [AtomicU64; 3],
}

#[derive(Default)]
struct Writing {
    batch: Vec<u8>,
    /// The last write stopped inside a line: start the next one on a new line.
    torn: bool,
}

impl Sink {
    /// The process's sink, with its writer thread; `None` if one was started already.
    fn start(cap: usize, every: Duration) -> Option<&'static Sink> {
        let mut fresh = false;
        let sink = SINK.get_or_init(|| {
            fresh = true;
            Sink::new(cap)
        });
        if !fresh {
            return None;
        }
        let spawned = std::thread::Builder::new()
            .name("contentgate-log".into())
            .spawn(move || sink.run(every));
        if spawned.is_err() {
            // No thread: lines would only pile up. Write them on the request thread instead.
            return None;
        }
        // SAFETY: registering a handler has no precondition. `flush_at_exit` cannot unwind
        // into C: it locks with a timeout and writes to stderr, and nothing in it panics (a
        // panic in an `extern "C"` fn would abort, not unwind).
        unsafe {
            libc::atexit(flush_at_exit);
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            previous(info);
        }));
        Some(sink)
    }

    fn new(cap: usize) -> Sink {
        Sink {
            cap,
            access_cap: cap - cap / 4,
            wake_at: WAKE_BYTES.min(cap / 2),
            pending: Mutex::new(Vec::new()),
            writing: Mutex::new(Writing::default()),
            wake: Condvar::new(),
            held: AtomicU64::new(0),
            dropped: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Appends one line, or drops it (counted) when its share of the buffer is full.
    fn push(&self, class: Class, line: &[u8]) {
        let (limit, cause) = match class {
            Class::Access => (self.access_cap, ACCESS_FULL),
            Class::Other => (self.cap, FULL),
        };
        let mut p = self.pending.lock();
        let (before, after) = (p.len(), p.len() + line.len());
        if after > limit {
            drop(p);
            self.dropped[cause].fetch_add(1, Ordering::Relaxed);
            return;
        }
        if after > p.capacity() {
            // Grow by doubling, but never past the cap: the allocation is the bound.
            let want = (2 * p.capacity()).clamp(after, self.cap);
            p.reserve_exact(want - before);
        }
        p.extend_from_slice(line);
        drop(p);
        self.held.fetch_add(line.len() as u64, Ordering::Relaxed);
        if before < self.wake_at && after >= self.wake_at {
            self.wake.notify_one();
        }
    }

    fn run(&self, every: Duration) {
        loop {
            {
                let mut p = self.pending.lock();
                if p.len() < self.wake_at {
                    self.wake.wait_for(&mut p, every);
                }
            }
            self.drain(None);
        }
    }

    /// Swaps the buffer out and writes it. With a deadline (exit paths), gives up when it
    /// passes, whether waiting for another drain or for stderr to take bytes.
    fn drain(&self, deadline: Option<Instant>) {
        let mut out = match deadline {
            None => self.writing.lock(),
            Some(d) => match self.writing.try_lock_until(d) {
                Some(g) => g,
                None => return,
            },
        };
        let out = &mut *out;
        {
            let mut p = self.pending.lock();
            if p.is_empty() {
                return;
            }
            std::mem::swap(&mut *p, &mut out.batch);
        }
        let held = out.batch.len() as u64;
        out.torn = match write_lines(&out.batch, out.torn, deadline) {
            None => false,
            Some(lost) => {
                self.dropped[STDERR].fetch_add(lost.lines, Ordering::Relaxed);
                lost.torn
            }
        };
        out.batch.clear();
        self.held.fetch_sub(held, Ordering::Relaxed);
    }
}

/// What a batch's write did not deliver.
struct Lost {
    lines: u64,
    torn: bool,
}

/// Writes `bytes` (whole lines) to stderr in pieces of whole lines of at most [`PIPE_BUF`]
/// (a longer line alone). With a deadline, waits for stderr to take each piece at most until
/// then. `None` when everything was written.
fn write_lines(bytes: &[u8], torn: bool, deadline: Option<Instant>) -> Option<Lost> {
    let mut err = std::io::stderr().lock();
    if torn && err.write_all(b"\n").is_err() {
        return Some(Lost {
            lines: count_lines(bytes),
            torn: true,
        });
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        let piece = piece_len(rest);
        if let Some(d) = deadline {
            if !writable_before(d) {
                return Some(Lost {
                    lines: count_lines(rest),
                    torn: false,
                });
            }
        }
        let mut chunk = &rest[..piece];
        while !chunk.is_empty() {
            match err.write(chunk) {
                Ok(0) | Err(_) => {
                    let left = &rest[piece - chunk.len()..];
                    return Some(Lost {
                        lines: count_lines(left),
                        torn: chunk.len() < piece,
                    });
                }
                Ok(n) => chunk = &chunk[n..],
            }
        }
        rest = &rest[piece..];
    }
    None
}

/// The length of the longest run of whole lines at the start of `bytes` within [`PIPE_BUF`], or
/// of the first line when it alone is longer.
fn piece_len(bytes: &[u8]) -> usize {
    let window = &bytes[..bytes.len().min(PIPE_BUF)];
    if window.len() == bytes.len() {
        return bytes.len();
    }
    match window.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1),
    }
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Whether stderr can take a write before `deadline` (poll: a pipe with room for `PIPE_BUF`
/// bytes; a file always).
fn writable_before(deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut fd = libc::pollfd {
        fd: libc::STDERR_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, its count 1; poll only writes its `revents`.
    let ready = unsafe { libc::poll(&mut fd, 1, ms) };
    ready == 1 && fd.revents & libc::POLLOUT != 0
}

extern "C" fn flush_at_exit() {
    flush();
}

/// Hands out writers that know which share of the buffer their line may use.
struct SinkMaker(&'static Sink);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SinkMaker {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter(self.0, Class::Other)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SinkWriter {
        let class = if meta.target() == "access" && *meta.level() > tracing::Level::WARN {
            Class::Access
        } else {
            Class::Other
        };
        SinkWriter(self.0, class)
    }
}

/// The `MakeWriter` product: each formatted line arrives in one `write_all`.
struct SinkWriter(&'static Sink, Class);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(self.1, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_whole_lines_within_pipe_buf() {
        let line = |n: usize| {
            let mut l = vec![b'x'; n - 1];
            l.push(b'\n');
            l
        };
        // Three 1 500-byte lines: the first two fit in 4 096, the third does not.
        let batch = [line(1500), line(1500), line(1500)].concat();
        assert_eq!(piece_len(&batch), 3000);
        assert_eq!(piece_len(&batch[3000..]), 1500);
        // A line longer than PIPE_BUF goes alone, whole.
        let long = [line(9000), line(10)].concat();
        assert_eq!(piece_len(&long), 9000);
        assert_eq!(count_lines(&long), 2);
    }

    #[test]
    fn a_buffer_never_allocates_past_its_cap_and_access_lines_leave_a_quarter() {
        // Not a power of two: a Vec grown by plain doubling would pass it (131 072 > 100 000).
        let cap = 100_000;
        let sink = Sink::new(cap);
        let line = [b'a'; 350];
        for _ in 0..1000 {
            sink.push(Class::Access, &line);
        }
        let access_held = sink.pending.lock().len();
        assert!(access_held <= cap - cap / 4);
        assert!(sink.dropped[ACCESS_FULL].load(Ordering::Relaxed) > 0);
        assert_eq!(sink.dropped[FULL].load(Ordering::Relaxed), 0);
        for _ in 0..1000 {
            sink.push(Class::Other, &line);
        }
        let p = sink.pending.lock();
        assert!(p.len() > access_held, "the reserved quarter took lines");
        assert!(p.len() <= cap);
        assert!(p.capacity() <= cap, "{} > {cap}", p.capacity());
        assert!(sink.dropped[FULL].load(Ordering::Relaxed) > 0);
        assert_eq!(sink.held.load(Ordering::Relaxed), p.len() as u64);
    }
}
