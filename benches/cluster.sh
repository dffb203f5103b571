#!/usr/bin/env bash
# Cluster benchmarks: three contentgate replicas sharing one redis-server (unix socket), all on
# 127.0.0.1, against the embedded sample content API (`contentgate sample-cms`).
#
# What it measures (benches/cluster_bench.py does the work; results in benches/README.md):
#   1. revocation lag: N revocations (`contentgate token revoke`, the real writer) while wrk
#      loads every replica with cache hits; per revocation and replica, the time from the
#      writer's exit to the first 401 for that jti (polled every ms) — p50/p99/max;
#   2. purge lag: a purge through replica 0's admin API, until replicas 1 and 2 answer MISS;
#   3. L1 hit vs L2 hit vs miss latency (unloaded, sequential, keep-alive): a fresh query filled
#      on replica 0 (miss: sample CMS), then asked on replica 1 (L2 hit), then again (L1 hit);
#   4. the hit path with [cluster] on vs off: wrk (1 thread, --connections, POST, anonymous
#      cdn hit) against one gateway in files mode and one in cluster mode, same config
#      otherwise, `threads = 1`, interleaved --rounds, medians and their ratio.
# With two cores nothing is pinned: every number is a loopback number of this machine.
#
# How to run:
#   bash benches/cluster.sh                      # builds the release binary, then ~2 min
#   CARGO_TARGET_DIR=/work/bench-target bash benches/cluster.sh --no-build
# Options: --revocations N (100), --purges N (50), --samples N (200), --duration S (10),
#   --rounds N (3), --connections N (64), --base-port P (19400; P..P+40 are used), --no-build
# Output: the results table on stdout; the temporary directory (logs, configs) is printed.
set -euo pipefail

REVOCATIONS=100
PURGES=50
SAMPLES=200
DURATION=10
ROUNDS=3
CONNS=64
BASE_PORT=19400
BUILD=1

die() { echo "cluster bench: error: $*" >&2; exit 2; }
log() { echo "[$(date +%H:%M:%S)] cluster bench: $*" >&2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --revocations) REVOCATIONS="$2"; shift 2 ;;
        --purges) PURGES="$2"; shift 2 ;;
        --samples) SAMPLES="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --base-port) BASE_PORT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="$TARGET_DIR/release/contentgate"
for t in redis-server redis-cli wrk python3; do
    command -v "$t" >/dev/null || die "$t is missing (apt-get install redis-server wrk python3)"
done
if (( BUILD )); then
    log "building the release binary (CARGO_TARGET_DIR=$TARGET_DIR)"
    cargo build --release --bin contentgate >&2
fi
[[ -x "$BIN" ]] || die "$BIN not found (build it, or drop --no-build)"

WORK="$(mktemp -d /tmp/cluster-bench.XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "cluster bench: files in $WORK" >&2
}
trap cleanup EXIT

log "redis-server on $WORK/redis.sock"
redis-server --port 0 --unixsocket "$WORK/redis.sock" --unixsocketperm 700 --dir "$WORK" \
    --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -s "$WORK/redis.sock" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done

CMS_PORT=$BASE_PORT
log "sample content API on 127.0.0.1:$CMS_PORT"
mkdir -p "$WORK/cms"
"$BIN" sample-cms --port "$CMS_PORT" --runtime-dir "$WORK/cms" >"$WORK/cms.log" 2>&1 &
PIDS+=($!)

python3 "$ROOT/benches/cluster_bench.py" \
    --bin "$BIN" --work "$WORK" --redis "redis+unix://$WORK/redis.sock" \
    --cms "http://127.0.0.1:$CMS_PORT/v2/sample/master" --base-port "$BASE_PORT" \
    --revocations "$REVOCATIONS" --purges "$PURGES" --samples "$SAMPLES" \
    --duration "$DURATION" --rounds "$ROUNDS" --connections "$CONNS" \
    --keys "$ROOT/tests/fixtures/keys"
