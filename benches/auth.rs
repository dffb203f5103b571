//! Auth path: what does it cost to turn `Authorization: Bearer <PAT>` into a principal, and does
//! that cost grow with the token registry?
//!
//! Every group answers one question:
//! - `auth/first_seen/{HS256,ES256}`: a token string the gateway has never seen (decode, key by
//!   `kid`, signature, strict claims, registry and revocation lookup, verified-cache insert).
//!   Each iteration gets a freshly minted token (same registry jti, a new `sub`), minted outside
//!   the timed region, so no iteration can hit the verified-token cache. Registry of 1 entry.
//! - `auth/repeat/{HS256,ES256}/registry={1,10000,1000000}`: the same token again (sha256 of the
//!   token, verified-cache hit, time check, revocation and registry lookup). Target: < 2 µs and
//!   flat in the registry size. The 1 000 000 case also carries a 1 000 000-jti revocation set.
//! - `auth/repeat_rotating/...`: like `auth/repeat`, but cycling through 10 000 distinct cached
//!   tokens whose jtis are spread over the registry, so each lookup touches a different part of
//!   the tables instead of one hot cache line — the honest "does it grow with N" check.
//! - `auth/parts/*`: the pieces of the repeat path alone (sha256 of the token, a moka get, the
//!   revocation + registry lookup, `SystemTime::now`), to see where a repeat's time goes.
//! - `auth/reload_under_load/*`: a 1 000 000-entry registry (+ 1 000 000 revoked jtis) reloaded
//!   while requests run; "requests must not stall" is about the worst request. First a plain
//!   timing loop (printed to stdout: criterion reports means, not tails) times every request
//!   (`store.snapshot()` + `authenticate`, repeat tokens) without and during reloads, with 1 and
//!   with 64 requests holding a snapshot at once, and says which stalls came from the request
//!   loop freeing a replaced snapshot. Then criterion measures the mean request while another
//!   thread reloads back to back.
//!
//! Run: `cargo bench --bench auth` (about 4 minutes on 2 cores; writes ~150 MB of registry
//! files to a temp dir, peaks at ~3.5 GB RSS), or one group: `cargo bench --bench auth --
//! auth/repeat/`. Without `--bench` (`cargo test --benches`, or `-- --test`) every bench runs
//! once, on small registries.
//! Results and machine notes: benches/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use contentgate::auth::authenticate;
use contentgate::metrics::Metrics;
use contentgate::policy::compile::{compile, Inputs};
use contentgate::policy::store::{PolicyStore, ReloadOutcome};
use contentgate::policy::Snapshot;
use contentgate::token::{mint, MintRequest};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sha2::{Digest, Sha256};

/// The gateway binary runs on mimalloc; allocation-heavy paths (a reload) differ with glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ISSUER: &str = "bench";
const AUDIENCE: &str = "bench";
const HS_SECRET: &str = "contentgate-bench-hs256-secret-0123456789abcdef";
const ES_PRIVATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/keys/es256.key.pem"
);
const ES_PUBLIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/keys/es256.pub.pem"
);
/// Content endpoints need a schema map; the example policies' SDL spares an introspection.
const SCHEMA_SDL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/schema.graphql");

/// Distinct cached tokens cycled by `auth/repeat_rotating` (the verified cache holds 100 000).
const ROTATING_TOKENS: usize = 10_000;

/// `cargo bench` passes `--bench`; without it criterion runs each bench once as a smoke test, and
/// so do we, on registries small enough not to slow a `cargo test --benches`.
fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}

fn registry_sizes() -> [usize; 3] {
    if bench_mode() {
        [1, 10_000, 1_000_000]
    } else {
        [1, 100, 1_000]
    }
}

fn big_registry() -> usize {
    registry_sizes()[2]
}

/// One signing algorithm with the key a client signs with and the `kid` the gateway knows.
struct Alg {
    name: &'static str,
    kid: &'static str,
    key: Vec<u8>,
}

fn algs() -> [Alg; 2] {
    [
        Alg {
            name: "HS256",
            kid: "hs",
            key: HS_SECRET.as_bytes().to_vec(),
        },
        Alg {
            name: "ES256",
            kid: "es",
            key: fs::read(ES_PRIVATE).expect("read the ES256 test key"),
        },
    ]
}

impl Alg {
    /// `Authorization` header value for a PAT with `jti`; a distinct `subject` makes a distinct
    /// token string (and sha256) for the same registry entry.
    fn header(&self, jti: &str, subject: Option<&str>) -> String {
        let audiences = [AUDIENCE.to_string()];
        let (jwt, _) = mint(&MintRequest {
            algorithm: self.name,
            key: &self.key,
            kid: Some(self.kid),
            jti: Some(jti),
            issuer: Some(ISSUER),
            audiences: &audiences,
            subject,
            expires_in: None,
        })
        .expect("mint a bench token");
        format!("Bearer {jwt}")
    }
}

/// splitmix64: deterministic, well-spread ids without a rand dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A UUID-shaped jti (36 characters, like `contentgate token mint` produces); `domain` keeps
/// registry and revoked jtis apart.
fn jti(domain: u64, i: usize) -> String {
    let a = mix((domain << 40) ^ i as u64);
    let b = mix(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn registry_jti(i: usize) -> String {
    jti(1, i)
}

fn revoked_jti(i: usize) -> String {
    jti(2, i)
}

/// A gateway config dir: gateway.toml, the HS256 secret, policies/{public.toml,tokens.json,revoked.txt}.
struct Files {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Files {
    fn new(tokens: usize, revoked: usize) -> Files {
        let dir = tempfile::Builder::new()
            .prefix("contentgate-bench-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        let config = root.join("gateway.toml");
        fs::write(
            &config,
            format!(
                r#"[[listener]]
address = "127.0.0.1:1"

[upstream.cms]
url = "http://127.0.0.1:1/graphql"

[[endpoint]]
path = "/content"
kind = "content"

[auth]
issuers = ["{ISSUER}"]
audiences = ["{AUDIENCE}"]

[[auth.key]]
kid = "es"
algorithm = "ES256"
public_key_file = '{ES_PUBLIC}'

[[auth.key]]
kid = "hs"
algorithm = "HS256"
secret_file = "hs.secret"

[cms]
stages = ["DRAFT", "PUBLISHED"]
locales = ["en", "de"]

[policies]
dir = "policies"
"#
            ),
        )
        .expect("write gateway.toml");
        fs::write(root.join("hs.secret"), HS_SECRET).expect("write hs.secret");
        let policies = root.join("policies");
        fs::create_dir(&policies).expect("mkdir policies");
        fs::write(
            policies.join("public.toml"),
            "default_stage = \"PUBLISHED\"\n",
        )
        .expect("write public.toml");
        fs::copy(SCHEMA_SDL, policies.join("schema.graphql"))
            .expect("copy policies/schema.graphql");

        let mut w = BufWriter::new(
            fs::File::create(policies.join("tokens.json")).expect("create tokens.json"),
        );
        w.write_all(b"{\"token\":[\n").expect("write");
        for i in 0..tokens {
            let sep = if i + 1 == tokens { "" } else { "," };
            writeln!(
                w,
                r#"{{"jti":"{}","name":"bench-{i}","default_stage":"PUBLISHED","permission":[{{"action":"read"}}]}}{sep}"#,
                registry_jti(i)
            )
            .expect("write");
        }
        w.write_all(b"]}\n").expect("write");
        w.flush().expect("flush tokens.json");

        let mut w = BufWriter::new(
            fs::File::create(policies.join("revoked.txt")).expect("create revoked.txt"),
        );
        w.write_all(b"# bench revocations\n").expect("write");
        for i in 0..revoked {
            writeln!(w, "{}", revoked_jti(i)).expect("write");
        }
        w.flush().expect("flush revoked.txt");
        Files { dir, config }
    }

    fn snapshot(&self) -> Snapshot {
        let inputs = Inputs::read(&self.config).unwrap_or_else(|e| panic!("bench inputs: {e}"));
        compile(&inputs, 1, None, None).unwrap_or_else(|e| panic!("bench snapshot: {e}"))
    }

    fn revoked_path(&self) -> PathBuf {
        self.dir.path().join("policies/revoked.txt")
    }
}

/// Asserts the header authenticates as `jti`: a bench that silently measured an error path
/// would be worthless.
fn expect_token(header: &str, snap: &Snapshot, jti: &str) {
    match authenticate(&[header.as_bytes()], &snap.registry, &snap.verifier) {
        Ok(p) => assert_eq!(p.jti(), Some(jti), "authenticated as the wrong token"),
        Err(e) => panic!("bench token refused: {e}"),
    }
}

/// A registry of `n` tokens; the largest one also carries as many revoked jtis.
struct Fixture {
    _files: Files,
    snap: Snapshot,
    /// The jti the repeat benches use, from the middle of the registry.
    jti: String,
    /// Per algorithm: one warm token (`auth/repeat`) and `ROTATING_TOKENS` warm ones.
    repeat: BTreeMap<&'static str, String>,
    rotating: BTreeMap<&'static str, Vec<String>>,
}

impl Fixture {
    fn new(n: usize) -> Fixture {
        let revoked = if n == big_registry() { n } else { 0 };
        let started = Instant::now();
        let files = Files::new(n, revoked);
        let snap = files.snapshot();
        assert_eq!(
            (snap.registry.tokens.len(), snap.registry.revoked.len()),
            (n, revoked)
        );
        eprintln!(
            "fixture: registry {n}, revoked {revoked}: written and compiled in {:.2?}",
            started.elapsed()
        );
        Fixture {
            _files: files,
            snap,
            jti: registry_jti(n / 2),
            repeat: BTreeMap::new(),
            rotating: BTreeMap::new(),
        }
    }

    /// Mints one token for `alg` and authenticates it once, so the next use is a cache hit.
    fn warm_repeat(&mut self, alg: &Alg) {
        let (snap, jti) = (&self.snap, &self.jti);
        self.repeat.entry(alg.name).or_insert_with(|| {
            let h = alg.header(jti, None);
            expect_token(&h, snap, jti);
            h
        });
    }

    /// Mints `ROTATING_TOKENS` tokens for `alg` whose jtis are spread evenly over the registry
    /// (with one entry they all share it and differ by `sub`), each authenticated once.
    fn warm_rotating(&mut self, alg: &Alg) {
        let snap = &self.snap;
        let n = snap.registry.tokens.len();
        let count = if bench_mode() { ROTATING_TOKENS } else { 100 };
        self.rotating.entry(alg.name).or_insert_with(|| {
            (0..count)
                .map(|i| {
                    let jti = registry_jti(i * n / count);
                    let h = alg.header(&jti, Some(&format!("rotating-{i}")));
                    expect_token(&h, snap, &jti);
                    h
                })
                .collect()
        });
    }
}

/// The value the verifier caches per token digest (its own type is private). Only its size and
/// clone cost matter here, so the fields are never read.
#[allow(dead_code)]
#[derive(Clone)]
struct CachedClaims {
    jti: Arc<str>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

fn first_seen(c: &mut Criterion) {
    let mut fixture: Option<Fixture> = None;
    let mut group = c.benchmark_group("auth/first_seen");
    for alg in algs() {
        // Survives criterion's repeated calls of the closure: every minted token is new.
        let mut minted: u64 = 0;
        group.bench_function(alg.name, |b| {
            let fx = fixture.get_or_insert_with(|| Fixture::new(1));
            let (snap, jti) = (&fx.snap, fx.jti.as_str());
            b.iter_batched_ref(
                || {
                    minted += 1;
                    alg.header(jti, Some(&format!("first-seen-{minted}")))
                },
                |h| {
                    authenticate(&[h.as_bytes()], &snap.registry, &snap.verifier)
                        .expect("first-seen token authenticates")
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn repeat(c: &mut Criterion) {
    let mut fixtures: BTreeMap<usize, Fixture> = BTreeMap::new();
    let algs = algs();

    let mut group = c.benchmark_group("auth/repeat");
    for n in registry_sizes() {
        for alg in &algs {
            group.bench_function(format!("{}/registry={n}", alg.name), |b| {
                let fx = fixtures.entry(n).or_insert_with(|| Fixture::new(n));
                fx.warm_repeat(alg);
                let (h, snap) = (&fx.repeat[alg.name], &fx.snap);
                b.iter(|| authenticate(&[black_box(h.as_bytes())], &snap.registry, &snap.verifier))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("auth/repeat_rotating");
    for n in registry_sizes() {
        for alg in &algs {
            group.bench_function(format!("{}/registry={n}", alg.name), |b| {
                let fx = fixtures.entry(n).or_insert_with(|| Fixture::new(n));
                fx.warm_rotating(alg);
                let (headers, snap) = (&fx.rotating[alg.name], &fx.snap);
                let mut i = 0;
                b.iter(|| {
                    i = if i + 1 == headers.len() { 0 } else { i + 1 };
                    authenticate(
                        &[black_box(headers[i].as_bytes())],
                        &snap.registry,
                        &snap.verifier,
                    )
                })
            });
        }
    }
    group.finish();

    // The pieces of a repeat, to attribute its time.
    let mut group = c.benchmark_group("auth/parts");
    for alg in &algs {
        group.bench_function(format!("sha256/{}", alg.name), |b| {
            let fx = fixtures.entry(1).or_insert_with(|| Fixture::new(1));
            fx.warm_repeat(alg);
            let token = fx.repeat[alg.name]
                .strip_prefix("Bearer ")
                .expect("bearer header");
            b.iter(|| -> [u8; 32] { Sha256::digest(black_box(token).as_bytes()).into() })
        });
    }
    // Shaped like the verifier's cache: sha256 key, (jti, exp, nbf) value, 100 000 capacity.
    let cache: moka::sync::Cache<[u8; 32], CachedClaims> =
        moka::sync::Cache::builder().max_capacity(100_000).build();
    let keys: Vec<[u8; 32]> = (0..10_000u32)
        .map(|i| Sha256::digest(i.to_be_bytes()).into())
        .collect();
    for k in &keys {
        cache.insert(
            *k,
            CachedClaims {
                jti: Arc::from(registry_jti(0)),
                exp: None,
                nbf: None,
            },
        );
    }
    let key = keys[keys.len() / 2];
    group.bench_function("moka_get/entries=10000", |b| {
        b.iter(|| cache.get(black_box(&key)))
    });
    group.bench_function("system_time_now", |b| b.iter(std::time::SystemTime::now));
    for n in registry_sizes() {
        group.bench_function(format!("registry_lookup/registry={n}"), |b| {
            let fx = fixtures.entry(n).or_insert_with(|| Fixture::new(n));
            let (snap, jti) = (&fx.snap, fx.jti.as_str());
            b.iter(|| {
                let jti = black_box(jti);
                if snap.registry.revoked.contains(jti) {
                    None
                } else {
                    snap.registry.tokens.get(jti).cloned()
                }
            })
        });
    }
    group.finish();
}

/// Request latencies: log2 buckets split into 32 linear sub-buckets (~3% resolution), exact max.
struct Latencies {
    counts: Vec<u64>,
    total: u64,
    max: Duration,
    /// When the max happened, from the start of the phase.
    max_at: Duration,
    over_100us: u64,
    over_1ms: u64,
    /// Requests over `STALL`: (end, from the phase start; latency).
    stalls: Vec<(Duration, Duration)>,
    /// Times this loop held the last reference to a replaced snapshot and so freed it: (when,
    /// how long the `drop` took).
    freed: Vec<(Duration, Duration)>,
}

/// A request this slow is listed one by one.
const STALL: Duration = Duration::from_millis(10);

const SUB: u64 = 32;

impl Latencies {
    fn new() -> Latencies {
        Latencies {
            counts: vec![0; 64 * SUB as usize],
            total: 0,
            max: Duration::ZERO,
            max_at: Duration::ZERO,
            over_100us: 0,
            over_1ms: 0,
            stalls: Vec::new(),
            freed: Vec::new(),
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < SUB {
            return ns as usize;
        }
        let shift = 63 - u64::from(ns.leading_zeros()) - 5;
        ((shift + 1) * SUB + (ns >> shift) - SUB) as usize
    }

    fn bucket_floor(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            i
        } else {
            (SUB + i % SUB) << (i / SUB - 1)
        }
    }

    fn record(&mut self, d: Duration, at: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
        if d > self.max {
            self.max = d;
            self.max_at = at;
        }
        self.over_100us += u64::from(ns > 100_000);
        self.over_1ms += u64::from(ns > 1_000_000);
        if d > STALL && self.stalls.len() < 32 {
            self.stalls.push((at, d));
        }
    }

    fn quantile(&self, q: f64) -> Duration {
        let rank = ((self.total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(Self::bucket_floor(i));
            }
        }
        self.max
    }
}

/// Runs the request loop (`store.snapshot()` + `authenticate`, alternating the warm tokens) until
/// `stop` says so. A request's latency is the time between consecutive completions, so a stall
/// anywhere in the loop shows. `in_flight`: how many requests hold a snapshot at once — the loop
/// keeps the last `in_flight - 1` requests' snapshots alive, as a proxy's concurrent requests
/// do (Pingora keeps the snapshot in the request context until the response is sent).
fn request_loop(
    store: &PolicyStore,
    headers: &[String],
    in_flight: usize,
    start: Instant,
    stop: impl Fn(Duration) -> bool,
) -> (Latencies, Duration) {
    let mut lat = Latencies::new();
    let mut held: VecDeque<Arc<Snapshot>> = VecDeque::with_capacity(in_flight);
    let mut prev = Instant::now();
    let mut i = 0;
    loop {
        let snap = store.snapshot();
        let principal = authenticate(&[headers[i].as_bytes()], &snap.registry, &snap.verifier);
        assert!(principal.is_ok(), "a warm token was refused during the run");
        drop(black_box(principal));
        held.push_back(snap);
        while held.len() >= in_flight.max(1) {
            let Some(done) = held.pop_front() else { break };
            // One reference left: the store has moved on and this drop frees the whole old
            // snapshot. Timed to attribute stalls (a rare race can hide one, never invent one).
            if Arc::strong_count(&done) == 1 {
                let t = Instant::now();
                drop(done);
                lat.freed.push((t - start, t.elapsed()));
            }
        }
        i = (i + 1) % headers.len();
        let now = Instant::now();
        lat.record(now - prev, now - start);
        prev = now;
        if i == 0 && stop(now - start) {
            return (lat, now - start);
        }
    }
}

fn us(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}

/// Appends a revoked jti (the change a revocation makes) and reloads the full-size inputs.
fn revoke_and_reload(store: &PolicyStore, revoked: &Path, jti: &str) -> Duration {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(revoked)
        .expect("open revoked.txt");
    writeln!(f, "{jti}").expect("append to revoked.txt");
    drop(f);
    let started = Instant::now();
    let outcome = store
        .reload("bench")
        .unwrap_or_else(|e| panic!("bench reload: {e}"));
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "reload did not apply: {outcome:?}"
    );
    started.elapsed()
}

/// One phase of the plain timing loop.
struct Phase {
    name: String,
    lat: Latencies,
    wall: Duration,
    /// Reloads during the phase: (start, duration), from the phase start.
    reloads: Vec<(Duration, Duration)>,
}

/// Requests with `in_flight` concurrent holders, first for `quiet_for` without a reload, then
/// while another thread performs `reloads` reloads back to back.
fn phases(
    store: &Arc<PolicyStore>,
    revoked: &Path,
    headers: &[String],
    in_flight: usize,
    reloads: usize,
) -> [Phase; 2] {
    let quiet_for = if bench_mode() {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(100)
    };
    let (lat, wall) = request_loop(store, headers, in_flight, Instant::now(), |t| {
        t >= quiet_for
    });
    let quiet = Phase {
        name: format!("no reload, {in_flight} in flight"),
        lat,
        wall,
        reloads: Vec::new(),
    };

    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let reloader = {
        let (store, done, revoked) = (store.clone(), done.clone(), revoked.to_path_buf());
        thread::spawn(move || {
            let spans: Vec<(Duration, Duration)> = (0..reloads)
                .map(|k| {
                    (
                        start.elapsed(),
                        revoke_and_reload(&store, &revoked, &jti(3 + in_flight as u64, k)),
                    )
                })
                .collect();
            done.store(true, Ordering::Release);
            spans
        })
    };
    // Run on briefly after the last reload: the snapshots still held then are dropped in the loop.
    let done_at = std::cell::Cell::new(None);
    let (lat, wall) = request_loop(store, headers, in_flight, start, |t| {
        if done_at.get().is_none() && done.load(Ordering::Acquire) {
            done_at.set(Some(t));
        }
        done_at
            .get()
            .is_some_and(|d| t >= d + Duration::from_millis(200))
    });
    let spans = reloader.join().expect("reloader thread");
    let busy = Phase {
        name: format!("reloading, {in_flight} in flight"),
        lat,
        wall,
        reloads: spans,
    };
    [quiet, busy]
}

/// The plain timing loop: request latencies without and with 1 000 000-entry reloads in flight.
fn tail_latency_report(
    store: &Arc<PolicyStore>,
    revoked: &Path,
    headers: &[String],
    n: usize,
) -> String {
    let reloads = if bench_mode() { 3 } else { 1 };
    let verifier_before = store.snapshot().verifier.clone();
    let mut all = Vec::new();
    for in_flight in [1, 64] {
        all.extend(phases(store, revoked, headers, in_flight, reloads));
    }
    let reused = Arc::ptr_eq(&verifier_before, &store.snapshot().verifier);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nauth/reload_under_load: request = store.snapshot() + authenticate(repeat token), registry {n} + {n} revoked, {reloads} reloads per phase"
    );
    let _ = writeln!(
        out,
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>7} {:>5}",
        "phase", "requests", "req/s", "median", "p99", "p99.9", "max", ">100µs", ">1ms"
    );
    for p in &all {
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>9.0} {:>7}µs {:>7}µs {:>7}µs {:>10}µs {:>7} {:>5}",
            p.name,
            p.lat.total,
            p.lat.total as f64 / p.wall.as_secs_f64(),
            us(p.lat.quantile(0.5)),
            us(p.lat.quantile(0.99)),
            us(p.lat.quantile(0.999)),
            us(p.lat.max),
            p.lat.over_100us,
            p.lat.over_1ms
        );
    }
    let list = |v: &[(Duration, Duration)]| -> String {
        v.iter()
            .map(|(at, d)| format!("{d:.2?} at {at:.3?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for p in &all {
        let _ = writeln!(out, "{}:", p.name);
        for (i, (at, took)) in p.reloads.iter().enumerate() {
            let _ = writeln!(
                out,
                "  reload {}: {at:.3?} .. {:.3?} ({took:.2?})",
                i + 1,
                *at + *took
            );
        }
        let _ = writeln!(
            out,
            "  requests over {STALL:?} (latency at end time): [{}]",
            list(&p.lat.stalls)
        );
        let _ = writeln!(
            out,
            "  the request loop freed a replaced snapshot {} time(s): [{}]",
            p.lat.freed.len(),
            list(&p.lat.freed)
        );
    }
    let _ = writeln!(
        out,
        "verified-token cache kept across reloads (same Verifier): {reused}"
    );

    // What a request pays when it holds the last reference to the replaced snapshot.
    let old = store.snapshot();
    let took = revoke_and_reload(store, revoked, &jti(3, 1_000_000));
    let started = Instant::now();
    drop(old);
    let _ = writeln!(
        out,
        "dropping the replaced {n}-entry snapshot (last Arc): {:.2?} (that reload took {took:.2?})",
        started.elapsed()
    );
    out
}

/// Reloads back to back on its own thread until stopped.
struct Reloader {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<usize>,
}

impl Reloader {
    fn start(store: &Arc<PolicyStore>, revoked: &Path, domain: u64) -> Reloader {
        let stop = Arc::new(AtomicBool::new(false));
        let (store, flag, revoked) = (store.clone(), stop.clone(), revoked.to_path_buf());
        let thread = thread::spawn(move || {
            let mut k = 0;
            while !flag.load(Ordering::Acquire) {
                revoke_and_reload(&store, &revoked, &jti(domain, k));
                k += 1;
            }
            k
        });
        Reloader { stop, thread }
    }

    /// Waits for the reload in flight; returns how many completed.
    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("reloader thread")
    }
}

fn reload_under_load(c: &mut Criterion) {
    let n = big_registry();
    let algs = algs();
    // Built on first use: a filter that skips this group skips the 150 MB setup too.
    let mut setup: Option<(Files, Arc<PolicyStore>, Vec<String>)> = None;
    let mut reported = false;
    let mut group = c.benchmark_group("auth/reload_under_load");
    for (a, alg) in algs.iter().enumerate() {
        let mut reloader: Option<Reloader> = None;
        group.bench_function(format!("{}/registry={n}", alg.name), |b| {
            let (files, store, headers) = setup.get_or_insert_with(|| {
                let started = Instant::now();
                let files = Files::new(n, n);
                let store = PolicyStore::load(&files.config, Arc::new(Metrics::new()), None)
                    .unwrap_or_else(|e| panic!("bench store: {e}"));
                let jti = registry_jti(n / 2);
                let headers: Vec<String> = algs.iter().map(|a| a.header(&jti, None)).collect();
                for h in &headers {
                    expect_token(h, &store.snapshot(), &jti);
                }
                eprintln!(
                    "fixture: store with registry {n}, revoked {n}: loaded in {:.2?}",
                    started.elapsed()
                );
                (files, store, headers)
            });
            if !reported {
                reported = true;
                println!(
                    "{}",
                    tail_latency_report(store, &files.revoked_path(), headers, n)
                );
            }
            // Criterion calls this closure once per sample; the reloader runs across all of them.
            reloader.get_or_insert_with(|| {
                Reloader::start(store, &files.revoked_path(), 10 + a as u64)
            });
            let (h, store) = (&headers[a], &**store);
            b.iter(|| {
                let snap = store.snapshot();
                authenticate(&[black_box(h.as_bytes())], &snap.registry, &snap.verifier)
            });
        });
        if let Some(r) = reloader {
            eprintln!(
                "auth/reload_under_load/{}: {} reloads completed while measuring",
                alg.name,
                r.finish()
            );
        }
    }
    group.finish();
}

/// Modest times: 2 cores, and ~20 benches plus fixtures must stay within a few minutes.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = first_seen, repeat, reload_under_load
}
criterion_main!(benches);
