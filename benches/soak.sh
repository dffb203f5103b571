#!/usr/bin/env bash
# Soak test under change: one contentgate under mixed traffic while its policies change every
# second and jtis are revoked mid-run. Loopback only, bounded in time (duration + < 60 s).
#
# What runs (all on 127.0.0.1):
#   - `contentgate demo` only for its embedded sample content API (Hygraph-shaped) on
#     --base-port+2 at /v2/demo/master (the demo's own gateway on +0/+1 is not used);
#   - the gateway under test: `contentgate serve --config <tmp>/gw/gateway.toml` on +10 (proxy) and
#     +11 (admin), HS256 PATs, cache on with a cdn endpoint, its own policies folder in <tmp>;
#   - benches/soak.py (Python 3 standard library): 24 concurrent clients with a mix of cache hits
#     and misses (/cdn), reads and mutations (/content), 403s, 401s (bad signature, unknown jti,
#     wrong audience/issuer, expired, malformed), a token whose registry entry comes and goes,
#     toggled grants; every second it rewrites public.toml and tokens.toml (write + rename); every
#     --revoke-interval seconds it revokes a jti in active use (revoked.txt, write + rename) and
#     keeps sending requests with it.
#
# Criteria (exit 1 if one fails): 0 gateway-caused 5xx; 0 requests accepted for a jti when sent
# after the snapshot that revoked it was observed live on /metrics (and 0 accepted after its
# first 401); RSS of the last window within 10 % of the first (after a warm-up); open fds and
# threads not growing; no unexpected status, transport error or rejected reload. It reports the
# revocation lag (file write -> snapshot live, file write -> first 401) p50/p99.
#
# How to run:
#   bash benches/soak.sh                                  # builds, then 300 s
#   CARGO_TARGET_DIR=/work/bench-target bash benches/soak.sh --no-build --duration 300
# Options:
#   --duration S          seconds of traffic (default 300; windows scale with it, >= 60 useful)
#   --concurrency N       concurrent clients (default 24)
#   --revoke-interval S   seconds between revocations (default 10)
#   --base-port P         ports P..P+11 are used (default 18700)
#   --no-build            use $CARGO_TARGET_DIR/release/contentgate as it is
#   --cluster             three replicas sharing one redis-server instead (benches/soak_cluster.py):
#                         the policy set pushed every 2 s, `token revoke` every --revoke-interval,
#                         admin purges every 3 s and mutations purging everywhere; criteria: 0 5xx,
#                         0 requests accepted for a revoked jti later than 1 s after its revocation
#                         on any replica, every revocation seen on all three, RSS flat per replica
# Output: the results table on stdout; the temporary directory /tmp/soak.XXXXXX is kept with
# gateway.log(.gz: gzipped when over 20 MB; JSON lines incl. one access line per request),
# demo.log, results.txt, results.json, samples.csv (one row per 5 s sample), tokens.json and the
# gateway's config folder gw/ (gateway.toml, secrets, policies/). Nothing else is written in gw/
# (before 2026-11-28's watcher fix, a log file there triggered a reload pass on every write).
# Environment: CARGO_TARGET_DIR (default: target), as for cargo.
set -euo pipefail

DURATION=300
CONCURRENCY=24
REVOKE_INTERVAL=10
BASE_PORT=18700
BUILD=1
CLUSTER=0

die() { echo "soak: error: $*" >&2; exit 2; }
log() { echo "[$(date +%H:%M:%S)] soak: $*" >&2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --concurrency) CONCURRENCY="$2"; shift 2 ;;
        --revoke-interval) REVOKE_INTERVAL="$2"; shift 2 ;;
        --base-port) BASE_PORT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --cluster) CLUSTER=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
for v in DURATION CONCURRENCY REVOKE_INTERVAL BASE_PORT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
(( DURATION >= 20 )) || die "--duration must be at least 20 s"
(( CONCURRENCY >= 1 && REVOKE_INTERVAL >= 2 )) || die "--concurrency >= 1, --revoke-interval >= 2"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="$TARGET_DIR/release/contentgate"
DRIVER="$ROOT/benches/soak.py"
command -v python3 >/dev/null || die "python3 is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 8))' || die "python3 >= 3.8 is required"

if (( BUILD )); then
    log "building the release binary (CARGO_TARGET_DIR=$TARGET_DIR)"
    cargo build --release --bin contentgate >&2
fi
[[ -x "$BIN" ]] || die "$BIN not found (build it, or drop --no-build)"

if (( CLUSTER )); then
    command -v redis-server >/dev/null || die "--cluster needs redis-server (apt-get install redis-server)"
    WORK="$(mktemp -d /tmp/soak-cluster.XXXXXX)"
    PIDS=()
    trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; echo "soak: files in $WORK" >&2' EXIT
    redis-server --port 0 --unixsocket "$WORK/redis.sock" --unixsocketperm 700 --dir "$WORK" \
        --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
    PIDS+=($!)
    mkdir -p "$WORK/cms"
    "$BIN" sample-cms --port "$BASE_PORT" --runtime-dir "$WORK/cms" >"$WORK/cms.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do redis-cli -s "$WORK/redis.sock" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
    log "cluster mode: 3 replicas, redis $WORK/redis.sock, sample CMS on 127.0.0.1:$BASE_PORT, ${DURATION} s"
    timeout $((DURATION + 120)) python3 "$ROOT/benches/soak_cluster.py" --bin "$BIN" --work "$WORK" \
        --redis "redis+unix://$WORK/redis.sock" --cms "http://127.0.0.1:$BASE_PORT/v2/sample/master" \
        --base-port "$BASE_PORT" --duration "$DURATION" --concurrency "$CONCURRENCY" \
        --revoke-interval "$REVOKE_INTERVAL" --keys "$ROOT/tests/fixtures/keys" | tee "$WORK/results.txt"
    exit "${PIPESTATUS[0]}"
fi

DEMO_PORT=$((BASE_PORT + 0)); DEMO_ADMIN=$((BASE_PORT + 1)); UP_PORT=$((BASE_PORT + 2))
GW_PORT=$((BASE_PORT + 10)); GW_ADMIN=$((BASE_PORT + 11))
for p in $DEMO_PORT $DEMO_ADMIN $UP_PORT $GW_PORT $GW_ADMIN; do
    (( p < 65536 )) || die "port $p out of range (--base-port)"
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port 127.0.0.1:$p is busy; choose another --base-port"
    fi
done
ulimit -n 65536 2>/dev/null || true

WORK="$(mktemp -d /tmp/soak.XXXXXX)"
DEMO_PID="" GW_PID="" DRIVER_PID="" RC=2
cleanup() {
    set +e
    [[ -n "$DRIVER_PID" ]] && kill -TERM "$DRIVER_PID" 2>/dev/null
    for pid in $GW_PID $DEMO_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    rm -rf "$WORK/demo-tmp" "$WORK/gw/run" "$WORK/staging"
    echo "soak: files in $WORK (gateway.log, demo.log, results.txt, results.json, samples.csv)" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

gateway_tail() {
    echo "---- last 40 lines of $WORK/gateway.log ----" >&2
    tail -n 40 "$WORK/gateway.log" >&2 || true
    echo "----" >&2
}

# 1. The sample content API (TMPDIR: the demo writes its own files there).
log "starting the sample content API on 127.0.0.1:$UP_PORT"
mkdir -p "$WORK/demo-tmp"
TMPDIR="$WORK/demo-tmp" "$BIN" demo --port "$DEMO_PORT" --admin-port "$DEMO_ADMIN" \
    --upstream-port "$UP_PORT" >"$WORK/demo.log" 2>&1 &
DEMO_PID=$!
python3 "$DRIVER" wait --url "http://127.0.0.1:$UP_PORT/v2/demo/master" --timeout 20 \
    --post-json '{"query":"{ __typename }"}' || { tail -n 20 "$WORK/demo.log" >&2; die "sample API did not start"; }

# 2. Config, policies and tokens for the gateway under test.
python3 "$DRIVER" init --work "$WORK" --bin "$BIN" --gw-port "$GW_PORT" --admin-port "$GW_ADMIN" \
    --upstream-port "$UP_PORT" --duration "$DURATION" --revoke-interval "$REVOKE_INTERVAL"
"$BIN" check --config "$WORK/gw/gateway.toml" >"$WORK/check.out" 2>&1 \
    || { cat "$WORK/check.out" >&2; die "contentgate check failed"; }

# 3. The gateway under test.
log "starting contentgate serve on 127.0.0.1:$GW_PORT (admin $GW_ADMIN)"
"$BIN" serve --config "$WORK/gw/gateway.toml" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
python3 "$DRIVER" wait --url "http://127.0.0.1:$GW_ADMIN/readyz" --timeout 30 \
    || { gateway_tail; die "gateway not ready"; }

# 4. The soak (hard-bounded: the driver stops itself at --duration; timeout is a backstop).
log "soaking for $DURATION s (pid $GW_PID, files in $WORK); load average $(cut -d' ' -f1-3 /proc/loadavg)"
set +e
timeout --signal=TERM --kill-after=10 $((DURATION + 45)) python3 "$DRIVER" run --work "$WORK" \
    --gw-pid "$GW_PID" --gw-port "$GW_PORT" --admin-port "$GW_ADMIN" --duration "$DURATION" \
    --concurrency "$CONCURRENCY" --revoke-interval "$REVOKE_INTERVAL" --log "$WORK/gateway.log" --progress &
DRIVER_PID=$!
wait "$DRIVER_PID"
RC=$?
DRIVER_PID=""
set -e
kill -0 "$GW_PID" 2>/dev/null || { echo "soak: the gateway exited during the run" >&2; RC=1; }

# 5. Graceful stop (grace_period 1 s + shutdown_timeout 2 s in the soak config).
if kill -0 "$GW_PID" 2>/dev/null; then
    t0=$EPOCHREALTIME
    kill -TERM "$GW_PID"
    for _ in $(seq 100); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$GW_PID" 2>/dev/null; then
        echo "soak: the gateway did not exit within 10 s of SIGTERM" >&2
    else
        set +e; wait "$GW_PID"; gw_rc=$?; set -e
        awk -v a="$t0" -v b="$EPOCHREALTIME" -v rc="$gw_rc" \
            'BEGIN { printf "gateway stopped on SIGTERM after %.1f s, exit code %d\n", b - a, rc }'
        GW_PID=""
    fi
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
python3 "$DRIVER" logscan --log "$WORK/gateway.log" || true
if (( RC != 0 )); then
    gateway_tail
    echo "soak: FAILED (exit $RC)" >&2
fi
if (( $(stat -c %s "$WORK/gateway.log") > 20000000 )); then
    gzip -1 "$WORK/gateway.log"
fi
exit "$RC"
