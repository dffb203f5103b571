//! Tracing setup: JSON lines by default (one access-log line per request on target `access`,
//! audit events on target `audit`), text for humans. `RUST_LOG` overrides the configured level.
//! Pingora logs through the `log` crate; those records are bridged into the same output.
//!
//! Lines go to stderr through a [`Sink`]: the request thread formats its line and appends it to
//! one bounded buffer (a memcpy under a short lock); a writer thread writes the buffer out in one
//! `write` every `flush_interval`, or as soon as it holds [`WAKE_BYTES`]. The request thread never
//! makes the syscall, and a stderr that stops draining (a stuck log pipe) cannot stall the event
//! loop: once the buffer holds `buffer_bytes`, further lines are dropped and counted
//! ([`dropped_lines`], exported as `contentgate_log_lines_dropped_total`). The memory held is at
//! most twice `buffer_bytes` (the buffer being filled and the one being written).
//!
//! The buffer is written out at process exit (`atexit`, so every `exit`, Pingora's included) and
//! before a panic's message. A `SIGKILL` loses at most one interval's lines, as with any
//! buffering logger. `buffer_bytes = 0` writes each line on the request thread, as before.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// The writer thread is woken early once the buffer holds this much (one `write` per 64 KiB of
/// lines at the most, instead of one per line).
pub const WAKE_BYTES: usize = 64 * 1024;

/// Installs the process's subscriber from `[log]`.
pub fn init(log: &LogSettings) {
    let (json, output) = (log.json, Output::from(log));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    if output.buffer_bytes == 0 {
        install(filter, json, std::io::stderr);
        return;
    }
    match Sink::start(output) {
        Some(sink) => install(filter, json, move || SinkWriter(sink)),
        // Started already (a second init keeps the first subscriber anyway), or no thread
        // could be spawned: then lines are written on the request thread.
        None => install(filter, json, std::io::stderr),
    }
}

fn install<W>(filter: EnvFilter, json: bool, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // A second init (tests, demo) keeps the first subscriber; that is fine.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Lines dropped because the buffer was full or stderr failed, since start.
pub fn dropped_lines() -> u64 {
    SINK.get().map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

/// Bytes of lines waiting in the buffer now.
pub fn buffered_bytes() -> u64 {
    SINK.get()
        .map_or(0, |s| s.pending.lock().bytes.len() as u64)
}

/// Writes out what the buffer holds, from the calling thread (exit paths; also usable by tests).
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.drain(Some(Duration::from_millis(500)));
    }
}

static SINK: OnceLock<Sink> = OnceLock::new();

#[derive(Debug, Clone, Copy)]
struct Output {
    buffer_bytes: usize,
    flush_interval: Duration,
}

impl From<&LogSettings> for Output {
    fn from(log: &LogSettings) -> Self {
        Output {
            buffer_bytes: log.buffer_bytes,
            flush_interval: log.flush_interval,
        }
    }
}

struct Sink {
    cap: usize,
    pending: Mutex<Pending>,
    /// Held while a batch is written, so batches reach stderr in order (the writer thread and
    /// [`flush`] both drain). Keeps the written buffer's allocation for the next swap.
    writing: Mutex<Pending>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: u64,
}

impl Sink {
    /// The process's sink, with its writer thread; `None` if one was started already.
    fn start(output: Output) -> Option<&'static Sink> {
        let mut fresh = false;
        let sink = SINK.get_or_init(|| {
            fresh = true;
            Sink {
                cap: output.buffer_bytes,
                pending: Mutex::new(Pending::default()),
                writing: Mutex::new(Pending::default()),
                wake: Condvar::new(),
                dropped: AtomicU64::new(0),
            }
        });
        if !fresh {
            return None;
        }
        let every = output.flush_interval;
        let spawned = std::thread::Builder::new()
            .name("contentgate-log".into())
            .spawn(move || sink.run(every));
        if spawned.is_err() {
            // No thread: lines would only pile up. Write them on the request thread instead.
            return None;
        }
        // SAFETY: `flush_at_exit` is an `extern "C" fn()` that does not unwind (it catches
        // nothing that can panic: locking with a timeout and writing to stderr).
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

    /// Appends one line, or drops it (counted) when the buffer is full.
    fn push(&self, line: &[u8]) {
        let mut p = self.pending.lock();
        if p.bytes.len() + line.len() > self.cap {
            drop(p);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = p.bytes.len();
        p.bytes.extend_from_slice(line);
        p.lines += 1;
        let crossed = before < WAKE_BYTES && p.bytes.len() >= WAKE_BYTES;
        drop(p);
        if crossed {
            self.wake.notify_one();
        }
    }

    fn run(&self, every: Duration) {
        loop {
            {
                let mut p = self.pending.lock();
                if p.bytes.len() < WAKE_BYTES {
                    self.wake.wait_for(&mut p, every);
                }
            }
            self.drain(None);
        }
    }

    /// Swaps the buffer out and writes it in one `write_all`. With `wait`, gives up after that
    /// long if another drain is stuck on a stderr that does not drain (exit must not hang).
    fn drain(&self, wait: Option<Duration>) {
        let mut out = match wait {
            None => self.writing.lock(),
            Some(d) => match self.writing.try_lock_for(d) {
                Some(g) => g,
                None => return,
            },
        };
        {
            let mut p = self.pending.lock();
            if p.bytes.is_empty() {
                return;
            }
            std::mem::swap(&mut *p, &mut *out);
        }
        if std::io::stderr().lock().write_all(&out.bytes).is_err() {
            self.dropped.fetch_add(out.lines, Ordering::Relaxed);
        }
        out.bytes.clear();
        out.lines = 0;
    }
}

extern "C" fn flush_at_exit() {
    flush();
}

/// The `MakeWriter` product: each formatted line arrives in one `write_all`.
struct SinkWriter(&'static Sink);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
