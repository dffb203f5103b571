//! The access line, written without tracing's formatter.
//!
//! tracing-subscriber's JSON formatter goes field by field through `tracing_serde` and a
//! `serde_json` serializer over a `fmt::Write` adaptor, which checks every piece as UTF-8 again.
//! A line cost +7 µs per hit that way, and +2 µs this way (benches/README.md, "The access log
//! line, batched and written directly").
//! The access line has a fixed set of fields, so with the JSON format it is written directly
//! into a per-thread buffer, with the same keys in the same order as the formatter's, and handed
//! to the sink as one line. tracing's filter still decides whether it is written
//! (`RUST_LOG=access=off`, `[log] level = "warn"`). With the text format, or before [`super::init`],
//! the line goes through tracing as before. The unit tests check that both give the same JSON.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// One request's access line. `None` fields are left out, as tracing leaves out a `None` value.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub endpoint: &'a str,
    pub method: &'a str,
    pub principal: &'a str,
    pub jti: Option<&'a str>,
    pub operation_type: Option<&'a str>,
    pub operation_name: Option<&'a str>,
    pub stage: Option<&'a str>,
    pub cache: &'a str,
    pub status: u16,
    pub refusal: Option<&'a str>,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub error: Option<&'a str>,
}

/// The most bytes of a client-chosen name (the operation name) an access line carries: a
/// 2 MiB name would otherwise make every such request a 2 MiB line, crowding out the others.
pub const MAX_LOGGED_NAME: usize = 128;

/// `name`, cut to at most [`MAX_LOGGED_NAME`] bytes at a character boundary.
pub fn clip(name: &str) -> &str {
    if name.len() <= MAX_LOGGED_NAME {
        return name;
    }
    let mut end = MAX_LOGGED_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Writes the access line (if the `access` target is enabled at `info`).
pub fn access(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    match super::FAST.get() {
        Some(out) => write_fast(out, line),
        None => through_tracing(line),
    }
}

/// The line as tracing's own macro writes it (text format; before init; the tests' reference).
pub(super) fn through_tracing(l: &AccessLine<'_>) {
    tracing::info!(
        target: "access",
        request_id = l.request_id,
        endpoint = l.endpoint,
        method = l.method,
        principal = l.principal,
        jti = l.jti,
        operation_type = l.operation_type,
        operation_name = l.operation_name,
        stage = l.stage,
        cache = l.cache,
        status = l.status,
        refusal = l.refusal,
        duration_ms = l.duration_ms,
        upstream_ms = l.upstream_ms,
        error = l.error,
        "request"
    );
}

thread_local! {
    static LINE: RefCell<Line> = RefCell::new(Line::default());
}

#[derive(Default)]
struct Line {
    buf: Vec<u8>,
    /// `"timestamp":"YYYY-MM-DDTHH:MM:SS.` of `second`, kept for the lines of the same second.
    prefix: Vec<u8>,
    second: u64,
}

/// A line buffer that grew past this (a huge operation name) is given back after its line, so
/// a thread keeps at most this much between lines.
const KEPT_BYTES: usize = 16 * 1024;

fn write_fast(out: &super::Fast, l: &AccessLine<'_>) {
    let written = LINE.try_with(|cell| {
        // Re-entered from inside a write (nothing here logs, so it cannot happen): not written
        // here, but through tracing below.
        let Ok(mut line) = cell.try_borrow_mut() else {
            return false;
        };
        let line = &mut *line;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format(line, now.as_secs(), now.subsec_micros(), l);
        out.write(&line.buf);
        if line.buf.capacity() > KEPT_BYTES {
            line.buf = Vec::new();
        }
        true
    });
    // Also when the thread's locals are being torn down (a line logged at thread exit).
    if written != Ok(true) {
        through_tracing(l);
    }
}

/// The line into `line.buf`: the keys and order of tracing-subscriber's JSON formatter with
/// `flatten_event(true)` and `with_current_span(false)`.
fn format(line: &mut Line, secs: u64, micros: u32, l: &AccessLine<'_>) {
    if line.prefix.is_empty() || line.second != secs {
        line.prefix.clear();
        let (y, mo, d, h, mi, s) = civil(secs);
        let _ = write!(
            line.prefix,
            "{{\"timestamp\":\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}."
        );
        line.second = secs;
    }
    let b = &mut line.buf;
    b.clear();
    b.extend_from_slice(&line.prefix);
    let _ = write!(
        b,
        "{micros:06}Z\",\"level\":\"INFO\",\"message\":\"request\""
    );
    str_field(b, "request_id", l.request_id);
    str_field(b, "endpoint", l.endpoint);
    str_field(b, "method", l.method);
    str_field(b, "principal", l.principal);
    opt_str(b, "jti", l.jti);
    opt_str(b, "operation_type", l.operation_type);
    opt_str(b, "operation_name", l.operation_name);
    opt_str(b, "stage", l.stage);
    str_field(b, "cache", l.cache);
    let _ = write!(b, ",\"status\":{}", l.status);
    opt_str(b, "refusal", l.refusal);
    num_field(b, "duration_ms", l.duration_ms);
    if let Some(v) = l.upstream_ms {
        num_field(b, "upstream_ms", v);
    }
    opt_str(b, "error", l.error);
    b.extend_from_slice(b",\"target\":\"access\"}\n");
}

fn str_field(b: &mut Vec<u8>, key: &str, value: &str) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(b"\":\"");
    escape(b, value);
    b.push(b'"');
}

fn opt_str(b: &mut Vec<u8>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        str_field(b, key, v);
    }
}

/// A float as serde_json writes it (the shortest text that reads back the same; `null` for NaN
/// and infinities), as the formatter's line has it.
fn num_field(b: &mut Vec<u8>, key: &str, v: f64) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(b"\":");
    // Writing a float into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *b, &v);
}

/// JSON string contents, escaped as serde_json escapes them.
fn escape(b: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let short = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0..=0x1f => 0,
            _ => continue,
        };
        b.extend_from_slice(&bytes[start..i]);
        if short == 0 {
            b.extend_from_slice(b"\\u00");
            b.push(HEX[usize::from(c >> 4)]);
            b.push(HEX[usize::from(c & 0xf)]);
        } else {
            b.push(b'\\');
            b.push(short);
        }
        start = i + 1;
    }
    b.extend_from_slice(&bytes[start..]);
}

/// Seconds since the epoch as UTC year, month, day, hour, minute, second (the proleptic
/// Gregorian calendar; Howard Hinnant's `civil_from_days`).
fn civil(secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d, rem / 3_600, rem % 3_600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What tracing-subscriber's JSON formatter (configured as in `install`) writes for `l`.
    fn reference(l: &AccessLine<'_>) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Capture(sink.clone()))
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || through_tracing(l));
        let bytes = out.lock().map(|v| v.clone()).unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn fast(l: &AccessLine<'_>, secs: u64, micros: u32) -> String {
        let mut line = Line::default();
        format(&mut line, secs, micros, l);
        String::from_utf8(line.buf).unwrap_or_default()
    }

    fn parse(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
    }

    #[test]
    fn the_fast_line_is_the_formatters_line() {
        let full = AccessLine {
            request_id: "466757f3edcc4d36bed9857b4f36ab2f",
            endpoint: "content",
            method: "POST",
            principal: "name \"quoted\" \\ back\tslash\n\u{1}\u{1f} é 😀",
            jti: Some("jti-1"),
            operation_type: Some("mutation"),
            operation_name: Some("Op_1"),
            stage: Some("DRAFT"),
            cache: "BYPASS",
            status: 403,
            refusal: Some("permission_denied"),
            duration_ms: 1.234_567_8,
            upstream_ms: Some(0.000_012_5),
            error: Some("ConnectTimedout"),
        };
        let bare = AccessLine {
            jti: None,
            operation_type: None,
            operation_name: None,
            stage: None,
            refusal: None,
            upstream_ms: None,
            error: None,
            principal: "-",
            duration_ms: 0.017_198,
            status: 200,
            ..full
        };
        let odd = AccessLine {
            duration_ms: 1e-7,
            upstream_ms: Some(123_456_789.5),
            status: 0,
            ..full
        };
        for l in [full, bare, odd] {
            let want = reference(&l);
            let got = fast(&l, 1_796_157_659, 208_975);
            assert!(got.ends_with('\n') && !got[..got.len() - 1].contains('\n'));
            assert_ne!(parse(&want), serde_json::Value::Null, "{want}");
            // Byte for byte, but for the timestamp's value (the reference's is the clock's).
            let untimed = |s: &str| {
                let at = s.find("Z\",").map_or(0, |i| i + 1);
                format!("{{\"timestamp\":\"T\"{}", &s[at + 1..])
            };
            assert_eq!(untimed(&got), untimed(&want));
            assert!(want.starts_with("{\"timestamp\":\""));
        }
    }

    #[test]
    fn client_chosen_names_are_clipped_at_a_character_boundary() {
        assert_eq!(clip("Op_1"), "Op_1");
        let long = "a".repeat(2 * 1024 * 1024);
        assert_eq!(clip(&long).len(), MAX_LOGGED_NAME);
        // 'é' is two bytes: 127 'a's then 'é' would split it at 128.
        let split = format!("{}é", "a".repeat(MAX_LOGGED_NAME - 1));
        assert_eq!(clip(&split), "a".repeat(MAX_LOGGED_NAME - 1));
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let l = AccessLine {
            request_id: "r",
            endpoint: "cdn",
            method: "GET",
            principal: "public",
            jti: None,
            operation_type: None,
            operation_name: None,
            stage: None,
            cache: "HIT",
            status: 200,
            refusal: None,
            duration_ms: 0.1,
            upstream_ms: None,
            error: None,
        };
        let ts = |secs, micros| parse(&fast(&l, secs, micros))["timestamp"].clone();
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(ts(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(ts(1_796_157_659, 208_975), "2026-12-01T20:40:59.208975Z");
        assert_eq!(ts(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
        // The per-second prefix is rebuilt when the second changes.
        let mut line = Line::default();
        format(&mut line, 1_796_157_659, 1, &l);
        format(&mut line, 1_796_157_660, 2, &l);
        let v = parse(&String::from_utf8(line.buf).unwrap_or_default());
        assert_eq!(v["timestamp"], "2026-12-01T20:41:00.000002Z");
    }
}
