#!/usr/bin/env bash
# Starts `contentgate demo` on loopback ports, runs the graphql-http server audits against its
# /content and /cdn endpoints (audit.mjs), stops the gateway, and exits with audit.mjs's code.
#
#   scripts/graphql-http-audit/run.sh
#
# Environment (all optional):
#   CONTENTGATE_BIN  gateway binary (default: <repo>/target/release/contentgate, falling back
#                    to <repo>/target/debug/contentgate)
#   AUDIT_PORT       gateway proxy port    (default 18940)
#   AUDIT_ADMIN_PORT admin port, /readyz   (default 18941)
#   AUDIT_UPSTREAM_PORT sample content API (default 18942)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

PORT="${AUDIT_PORT:-18940}"
ADMIN_PORT="${AUDIT_ADMIN_PORT:-18941}"
UPSTREAM_PORT="${AUDIT_UPSTREAM_PORT:-18942}"

if [[ -n "${CONTENTGATE_BIN:-}" ]]; then
  BIN="$CONTENTGATE_BIN"
elif [[ -x "$REPO/target/release/contentgate" ]]; then
  BIN="$REPO/target/release/contentgate"
else
  BIN="$REPO/target/debug/contentgate"
fi
if [[ ! -x "$BIN" ]]; then
  echo "run.sh: no gateway binary at $BIN (build with 'cargo build --release' or set CONTENTGATE_BIN)" >&2
  exit 1
fi
for tool in node npm curl; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 1; }
done

READYZ="http://127.0.0.1:${ADMIN_PORT}/readyz"
# Check first: a demo whose proxy port is already taken still turns ready (observed), and the
# audits would then run against whatever holds that port.
for p in "$PORT" "$ADMIN_PORT" "$UPSTREAM_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "run.sh: 127.0.0.1:$p is already in use; set AUDIT_PORT, AUDIT_ADMIN_PORT, AUDIT_UPSTREAM_PORT" >&2
    exit 1
  fi
done

# The demo writes its config, keys and policies under $TMPDIR/contentgate-demo-<pid>: give it
# a private TMPDIR so cleanup removes exactly what this run created.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/graphql-http-audit.XXXXXX")"
LOG="$WORK/gateway.log"
GW_PID=""
READY=""

cleanup() {
  local rc=$?
  if [[ -n "$GW_PID" ]] && kill -0 "$GW_PID" 2>/dev/null; then
    # SIGINT is Pingora's fast shutdown (SIGTERM waits out the graceful-shutdown period).
    kill -INT "$GW_PID" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$GW_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$GW_PID" 2>/dev/null; then
      kill -KILL "$GW_PID" 2>/dev/null || true
    fi
    wait "$GW_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -z "$READY" && -s "$LOG" ]]; then
    echo "--- last lines of the gateway log ($rc) ---" >&2
    tail -n 20 "$LOG" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "gateway: $BIN demo --port $PORT --admin-port $ADMIN_PORT --upstream-port $UPSTREAM_PORT"
TMPDIR="$WORK" "$BIN" demo --port "$PORT" --admin-port "$ADMIN_PORT" --upstream-port "$UPSTREAM_PORT" \
  >"$LOG" 2>&1 </dev/null &
GW_PID=$!

for _ in $(seq 300); do # up to 30 s
  if ! kill -0 "$GW_PID" 2>/dev/null; then
    echo "run.sh: the gateway exited before it was ready" >&2
    exit 1
  fi
  if curl -fsS -o /dev/null --max-time 1 "$READYZ" 2>/dev/null; then
    READY=1
    break
  fi
  sleep 0.1
done
if [[ -z "$READY" ]]; then
  echo "run.sh: $READYZ did not answer 200 within 30 s" >&2
  exit 1
fi

cd "$HERE"
if [[ ! -d node_modules ]]; then
  npm ci --no-audit --no-fund
fi

rc=0
node audit.mjs "http://127.0.0.1:${PORT}/content" "http://127.0.0.1:${PORT}/cdn" || rc=$?
exit "$rc"
