#!/usr/bin/env bash
# Side-by-side benchmark: contentgate vs. nginx (proxy_cache) vs. Varnish, on this machine.
#
# What it measures (all on 127.0.0.1, same requests to every server, wrk as load generator):
#   (a) anonymous cache hit, GET (/cdn?query=...) and POST (/cdn, JSON body)
#   (b) ES256 PAT + permission-checked cache hit (GET with Authorization: Bearer <PAT>), and the
#       anonymous hit padded to the same request size (an X-Pad header as long as the
#       Authorization one), which separates the check's cost from the cost of the longer request
#   (c) pass-through to the upstream (POST /content: contentgate authorizes, nginx proxy_pass
#       with upstream keep-alive, Varnish passes POSTs); the origin alone as a ceiling
#   (d) a 20 ms upstream: cached (GET /slow/cdn) vs. uncached (GET /slow/content) latency
#   (u) the anonymous GET hit unloaded: one connection, latency
#   (e) 1 000 concurrent identical POST misses against a 200 ms upstream: how many reach it
# and prints one table (requests/s, p50, p99, RSS, each as a ratio to nginx) of medians over
# interleaved rounds (every round runs every (scenario, server) once), then the issue's targets.
# It also reports the server's CPU per request (us/req, from /proc/PID/stat) and how busy the
# server core (srv%) and the client core (cli%) were: with two cores wrk and the server run
# neck and neck, and us/req is the figure that does not depend on which one saturated first.
#
# How to run (as root on Debian/Ubuntu: missing nginx, varnish, wrk are apt-get installed):
#   bash benches/side_by_side.sh                      # 10 s runs, 3 rounds (~11 minutes)
#   bash benches/side_by_side.sh --duration 5 --rounds 1 --no-build
# Options:
#   --duration S        seconds per measured run (default 10)
#   --rounds N          interleaved repetitions; the table shows medians (default 3)
#   --connections N     wrk connections for (a)-(c) (default 64)
#   --d-connections N   wrk connections for (d) (default 8: latency, not queueing; see README)
#   --burst N           concurrent requests in (e) (default 1000)
#   --warmup S          unmeasured wrk run per (scenario, server) before round 1 (default 2)
#   --base-port P       ports P..P+40 are used (default 18400)
#   --client-cpu C      core for wrk, the burst client and the origins (default 0)
#   --server-cpu C      core for contentgate, nginx and Varnish (default 1)
#   --load-max L        before starting, wait while the 1-min load average is above L (1.0)
#   --busy-max B        before each run, wait while other processes keep more than B cores
#                       busy (default 0.5); each wait is at most --max-wait S (default 60),
#                       all waits together at most --wait-budget S (default 120), so the whole
#                       script stays under ~13 minutes even on a busy machine
#   --no-build          use the binaries already in $CARGO_TARGET_DIR/release
#   --keep              keep the temporary directory (configs, logs, raw wrk output)
#   --profile DIR       after the rounds, profile contentgate under the GET-hit and pass-through
#                       loads (perf cpu-clock sampling, DWARF call graphs; flamegraph SVGs by
#                       inferno, installed under $CARGO_TARGET_DIR/tools) and count the syscalls
#                       per pass-through request of contentgate and nginx (strace -c)
#   --out DIR           also write the report, results.tsv, rss.tsv, burst.tsv and a chart
#                       (side_by_side.png, by benches/chart.py with matplotlib in a venv) to DIR
# Environment: CARGO_TARGET_DIR (default: target), as for cargo.
# Pinning: wrk and the origins share --client-cpu; every server under test gets --server-cpu
# (contentgate `threads = 1`, nginx `worker_processes 1`, Varnish under taskset).
set -euo pipefail

DURATION=10
ROUNDS=3
CONNS=64
D_CONNS=8
BURST_N=1000
WARMUP=2
BASE_PORT=18400
CLIENT_CPU=0
SERVER_CPU=1
LOAD_MAX=1.0
BUSY_MAX=0.5
MAX_WAIT=60
WAIT_BUDGET=120
BUILD=1
KEEP=0
OUT=""
PROFILE=""

die() { echo "side_by_side: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --d-connections) D_CONNS="$2"; shift 2 ;;
        --burst) BURST_N="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --base-port) BASE_PORT="$2"; shift 2 ;;
        --client-cpu) CLIENT_CPU="$2"; shift 2 ;;
        --server-cpu) SERVER_CPU="$2"; shift 2 ;;
        --load-max) LOAD_MAX="$2"; shift 2 ;;
        --busy-max) BUSY_MAX="$2"; shift 2 ;;
        --max-wait) MAX_WAIT="$2"; shift 2 ;;
        --wait-budget) WAIT_BUDGET="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --profile) PROFILE="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
for v in DURATION ROUNDS CONNS D_CONNS BURST_N WARMUP BASE_PORT CLIENT_CPU SERVER_CPU MAX_WAIT WAIT_BUDGET; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="$TARGET_DIR/release/contentgate"
ORIGIN_BIN="$TARGET_DIR/release/examples/bench_origin"
BURST_BIN="$TARGET_DIR/release/examples/burst"

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
NCPU=$(nproc)
(( NCPU >= 2 )) || die "needs at least 2 cores to pin client and server apart (nproc=$NCPU)"
(( CLIENT_CPU < NCPU && SERVER_CPU < NCPU )) || die "--client-cpu/--server-cpu must be < $NCPU"
(( CLIENT_CPU != SERVER_CPU )) || die "--client-cpu and --server-cpu must differ"

missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v varnishd >/dev/null || [[ -x /usr/sbin/varnishd ]] || missing+=(varnish)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v taskset >/dev/null || missing+=(util-linux)
if (( BUILD )) && ! command -v cmake >/dev/null; then missing+=(cmake); fi
if (( ${#missing[@]} )); then
    [[ $EUID -eq 0 ]] || die "missing ${missing[*]}: run as root or install them (apt-get install ${missing[*]})"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} from Debian"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

if (( BUILD )); then
    log "building release binaries (CARGO_TARGET_DIR=$TARGET_DIR)"
    cargo build --release --bin contentgate --example bench_origin --example burst >&2
fi
for b in "$BIN" "$ORIGIN_BIN" "$BURST_BIN"; do
    [[ -x "$b" ]] || die "$b not found (build it, or drop --no-build)"
done

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) >= 3 * BURST_N + 200 )) || die "open-file limit $(ulimit -n) too low for --burst $BURST_N"

# ---------------------------------------------------------------------------------------------
# Ports, temp dir, cleanup
# ---------------------------------------------------------------------------------------------
O_FAST=$((BASE_PORT + 0)); O_SLOW=$((BASE_PORT + 1)); O_BURST=$((BASE_PORT + 2))
CG_PORT=$((BASE_PORT + 10)); CG_ADMIN=$((BASE_PORT + 11))
NGX_PORT=$((BASE_PORT + 20)); VAR_PORT=$((BASE_PORT + 30))
for p in $O_FAST $O_SLOW $O_BURST $CG_PORT $CG_ADMIN $NGX_PORT $VAR_PORT; do
    (( p < 65536 )) || die "port $p out of range (--base-port)"
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port 127.0.0.1:$p is busy; choose another --base-port"
    fi
done

WORK="$(mktemp -d /tmp/side_by_side.XXXXXX)"
chmod 755 "$WORK"   # nginx workers and Varnish's child drop privileges
PIDS=()
# Set by start(); named here so cleanup and the checks below can rely on them.
PID_origin_fast="" PID_origin_slow="" PID_origin_burst="" PID_contentgate="" PID_nginx="" PID_varnish=""
cleanup() {
    local rc=$?
    set +e
    [[ -n "${CLIENT_PID:-}" ]] && kill -TERM "$CLIENT_PID" 2>/dev/null
    # contentgate drains for its grace period on SIGTERM; SIGINT makes it exit at once.
    [[ -n "${PID_contentgate:-}" ]] && kill -INT "$PID_contentgate" 2>/dev/null
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for _ in $(seq 1 30); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        (( alive )) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    # Only the servers: a bare `wait` also waits for the report's `tee` (bash >= 5.1 waits for
    # process substitutions), which waits for this script's stdout to close: a hang at the end.
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    if (( KEEP )); then echo "side_by_side: kept $WORK" >&2; else rm -rf "$WORK"; fi
    if [[ -n "${TEE_PID:-}" ]]; then
        exec >&-
        wait "$TEE_PID" 2>/dev/null
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CPU CMD... : run in the background pinned to CPU, log to $WORK/NAME.log
start() {
    local name="$1" cpu="$2"; shift 2
    taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    printf -v "PID_${name}" '%s' "$!"
}
wait_http() { # NAME PID URL
    local name="$1" pid="$2" url="$3"
    for _ in $(seq 1 300); do
        curl -s -o /dev/null --max-time 1 "$url" && return 0
        kill -0 "$pid" 2>/dev/null || { tail -20 "$WORK/$name.log" >&2; die "$name exited at start-up"; }
        sleep 0.1
    done
    tail -20 "$WORK/$name.log" >&2
    die "$name not ready at $url after 30 s"
}

# ---------------------------------------------------------------------------------------------
# Origins
# ---------------------------------------------------------------------------------------------
start origin_fast "$CLIENT_CPU" "$ORIGIN_BIN" --port "$O_FAST"
start origin_slow "$CLIENT_CPU" "$ORIGIN_BIN" --port "$O_SLOW" --delay-ms 20
start origin_burst "$CLIENT_CPU" "$ORIGIN_BIN" --port "$O_BURST" --delay-ms 200
wait_http origin_fast "$PID_origin_fast" "http://127.0.0.1:$O_FAST/count"
wait_http origin_slow "$PID_origin_slow" "http://127.0.0.1:$O_SLOW/count"
wait_http origin_burst "$PID_origin_burst" "http://127.0.0.1:$O_BURST/count"
origin_count() { curl -sf --max-time 2 "http://127.0.0.1:$1/count" || echo 0; }

# ---------------------------------------------------------------------------------------------
# contentgate
# ---------------------------------------------------------------------------------------------
CACHE_BYTES=268435456
mkdir -p "$WORK/cg/policies" "$WORK/cg/run"
cat >"$WORK/cg/gateway.toml" <<EOF
[server]
threads = 1
runtime_dir = "run"

[[listener]]
address = "127.0.0.1:$CG_PORT"

[admin]
address = "127.0.0.1:$CG_ADMIN"

[upstream.cms]
url = "http://127.0.0.1:$O_FAST/graphql"
credential = { mode = "replace", token_env = "BENCH_SERVICE_TOKEN" }

[upstream.slow]
url = "http://127.0.0.1:$O_SLOW/graphql"
credential = { mode = "replace", token_env = "BENCH_SERVICE_TOKEN" }

[upstream.burst]
url = "http://127.0.0.1:$O_BURST/graphql"
credential = { mode = "replace", token_env = "BENCH_SERVICE_TOKEN" }

[[endpoint]]
path = "/cdn"
kind = "cdn"
upstream = "cms"

[[endpoint]]
path = "/content"
kind = "content"
upstream = "cms"

[[endpoint]]
path = "/slow/cdn"
kind = "cdn"
upstream = "slow"

[[endpoint]]
path = "/slow/content"
kind = "content"
upstream = "slow"

[[endpoint]]
path = "/burst/cdn"
kind = "cdn"
upstream = "burst"

[auth]
issuers = ["bench"]
audiences = ["bench"]

[[auth.key]]
kid = "es"
algorithm = "ES256"
public_key_file = "$ROOT/tests/fixtures/keys/es256.pub.pem"

[cms]
stages = ["DRAFT", "PUBLISHED"]
locales = ["en", "de"]

[cache]
max_bytes = $CACHE_BYTES
default_ttl = "3600s"

[log]
level = "warn"
EOF
printf 'default_stage = "PUBLISHED"\n[[permission]]\naction = "read"\n' >"$WORK/cg/policies/public.toml"
printf '[[token]]\njti = "bench"\nname = "bench"\ndefault_stage = "PUBLISHED"\n[[token.permission]]\naction = "read"\n' \
    >"$WORK/cg/policies/tokens.toml"
: >"$WORK/cg/policies/revoked.txt"
cp "$ROOT/policies/schema.graphql" "$WORK/cg/policies/schema.graphql"
export BENCH_SERVICE_TOKEN=bench-service-token
"$BIN" check --config "$WORK/cg/gateway.toml" >"$WORK/cg-check.log" 2>&1 \
    || { cat "$WORK/cg-check.log" >&2; die "contentgate check failed"; }
PAT="$("$BIN" token mint --alg ES256 --key "$ROOT/tests/fixtures/keys/es256.key.pem" \
    --kid es --jti bench --iss bench --aud bench 2>/dev/null)"
[[ -n "$PAT" ]] || die "token mint printed nothing"
# b_pad's header: the same length on the wire as "Authorization: Bearer <PAT>".
PAD="$(head -c $(( ${#PAT} + 7 + 13 - 5 )) /dev/zero | tr '\0' x)"
start contentgate "$SERVER_CPU" \
    "$BIN" serve --config "$WORK/cg/gateway.toml"
for _ in $(seq 1 300); do
    curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$CG_ADMIN/readyz" && break
    kill -0 "$PID_contentgate" 2>/dev/null || { tail -20 "$WORK/contentgate.log" >&2; die "contentgate exited at start-up"; }
    sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$CG_ADMIN/readyz" || die "contentgate not ready after 30 s"

# ---------------------------------------------------------------------------------------------
# nginx: one worker on the server core, proxy_cache on disk (page cache), keep-alive upstream
# ---------------------------------------------------------------------------------------------
mkdir -p "$WORK/nginx/cache" "$WORK/nginx/tmp"
NGX_MASK="1$(printf '%*s' "$SERVER_CPU" '' | tr ' ' 0)"
NGX_USER=""
[[ $EUID -eq 0 ]] && NGX_USER="user root;"
cache_loc() { # UPSTREAM
    cat <<EOF
            proxy_pass http://$1;
            proxy_cache bench;
            proxy_cache_methods GET HEAD POST;
            proxy_cache_key "\$request_uri|\$request_body";
            proxy_cache_valid 200 3600s;
            proxy_cache_lock on;
            add_header X-Cache \$upstream_cache_status;
EOF
}
cat >"$WORK/nginx/nginx.conf" <<EOF
$NGX_USER
daemon off;
worker_processes 1;
worker_cpu_affinity $NGX_MASK;
worker_rlimit_nofile 65536;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    proxy_cache_path $WORK/nginx/cache levels=1:2 keys_zone=bench:16m max_size=256m inactive=1h use_temp_path=off;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_body_buffer_size 16k;
    client_max_body_size 64k;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    upstream fast  { server 127.0.0.1:$O_FAST;  keepalive 64; keepalive_requests 100000000; }
    upstream slow  { server 127.0.0.1:$O_SLOW;  keepalive 64; keepalive_requests 100000000; }
    upstream burst { server 127.0.0.1:$O_BURST; keepalive 64; keepalive_requests 100000000; }
    server {
        listen 127.0.0.1:$NGX_PORT backlog=4096;
        location /cdn {
$(cache_loc fast)
        }
        location /content { proxy_pass http://fast; }
        location /slow/cdn {
$(cache_loc slow)
        }
        location /slow/content { proxy_pass http://slow; }
        location /burst/cdn {
$(cache_loc burst)
        }
    }
}
EOF
nginx -t -q -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx-check.log" 2>&1 \
    || { cat "$WORK/nginx-check.log" >&2; die "nginx -t failed"; }
start nginx "$SERVER_CPU" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx"
wait_http nginx "$PID_nginx" "http://127.0.0.1:$NGX_PORT/content"

# ---------------------------------------------------------------------------------------------
# Varnish: default VCL (caches GET/HEAD; passes POST and requests with Authorization)
# ---------------------------------------------------------------------------------------------
start varnish "$SERVER_CPU" varnishd -F -a "127.0.0.1:$VAR_PORT" -b "127.0.0.1:$O_FAST" \
    -s malloc,256m -t 3600 -p thread_pools=1 -n "$WORK/varnish"
wait_http varnish "$PID_varnish" "http://127.0.0.1:$VAR_PORT/content"

# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------
QENC='%7B%20posts%20%7B%20id%20title%20slug%20body%20%7D%20%7D'   # { posts { id title slug body } }
BODY='{"query":"{ posts { id title slug body } }"}'
cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$BODY'
EOF
port_of() {
    case "$1" in
        contentgate) echo "$CG_PORT" ;; nginx) echo "$NGX_PORT" ;; varnish) echo "$VAR_PORT" ;;
        origin) echo "$O_FAST" ;; *) die "unknown server $1" ;;
    esac
}
pid_of() {
    case "$1" in
        contentgate) echo "$PID_contentgate" ;; nginx) echo "$PID_nginx" ;;
        varnish) echo "$PID_varnish" ;; origin) echo "$PID_origin_fast" ;;
    esac
}
# scenario -> "METHOD PATH AUTH(0/1) ORIGIN_PORT CACHED(0/1) CONNS"
spec_of() {
    case "$1" in
        a_get)      echo "GET /cdn?query=$QENC 0 $O_FAST 1 $CONNS" ;;
        a_post)     echo "POST /cdn 0 $O_FAST 1 $CONNS" ;;
        b_pat)      echo "GET /cdn?query=$QENC 1 $O_FAST 1 $CONNS" ;;
        b_pad)      echo "GET /cdn?query=$QENC 2 $O_FAST 1 $CONNS" ;;
        u_get)      echo "GET /cdn?query=$QENC 0 $O_FAST 1 1" ;;
        c_pass)     echo "POST /content 0 $O_FAST 0 $CONNS" ;;
        d_cached)   echo "GET /slow/cdn?query=$QENC 0 $O_SLOW 1 $D_CONNS" ;;
        d_uncached) echo "GET /slow/content?query=$QENC 0 $O_SLOW 0 $D_CONNS" ;;
    esac
}
# The origin answers any path; it stands in for "no proxy at all" in the pass-through row.
path_for() { # SERVER PATH
    if [[ "$1" == origin ]]; then echo "/graphql"; else echo "$2"; fi
}
# Server CPU is read from /proc/PID/stat; us/req is that CPU over the requests wrk completed.
# When srv% is well under 100 and cli% near 100, wrk (not the server) set the req/s figure.
RUNS=(
    "a_get contentgate" "a_get nginx" "a_get varnish"
    "a_post contentgate" "a_post nginx"
    "b_pat contentgate" "b_pat nginx" "b_pad contentgate" "b_pad nginx"
    "c_pass contentgate" "c_pass nginx" "c_pass varnish" "c_pass origin"
    "d_cached contentgate" "d_cached nginx"
    "d_uncached contentgate" "d_uncached nginx"
    "u_get contentgate" "u_get nginx"
)
NOT_RUN=(
    "a_post varnish|POST: the default VCL does not cache POST"
    "b_pat varnish|Authorization: the default VCL passes it (no cache)"
    "b_pad varnish|the PAT row's reference; Varnish has no PAT row"
    "u_get varnish|unloaded latency: contentgate and nginx only"
)

# curl_req SERVER SCENARIO -> prints "status x-cache"
curl_req() {
    local server="$1" method path auth oport cached conns
    read -r method path auth oport cached conns <<<"$(spec_of "$2")"
    path="$(path_for "$server" "$path")"
    local args=(-s -o /dev/null -D - --max-time 5)
    [[ "$auth" == 1 ]] && args+=(-H "Authorization: Bearer $PAT")
    [[ "$auth" == 2 ]] && args+=(-H "X-Pad: $PAD")
    [[ "$method" == POST ]] && args+=(-X POST -H 'content-type: application/json' --data-binary "$BODY")
    curl "${args[@]}" "http://127.0.0.1:$(port_of "$server")$path" | tr -d '\r' | awk '
        NR == 1 { status = $2 } tolower($1) == "x-cache:" { xc = $2 }
        END { printf "%s %s\n", status, (xc == "" ? "-" : xc) }'
}

# Warm a cache and prove the next request is served without the upstream.
warm() { # SCENARIO SERVER
    local method path auth oport cached conns
    read -r method path auth oport cached conns <<<"$(spec_of "$1")"
    local first second before after
    first="$(curl_req "$2" "$1")"
    [[ "${first%% *}" == 200 ]] || die "$1 on $2: status ${first%% *} (expected 200)"
    before="$(origin_count "$oport")"
    second="$(curl_req "$2" "$1")"
    after="$(origin_count "$oport")"
    [[ "${second%% *}" == 200 ]] || die "$1 on $2: status ${second%% *} on the second request"
    if [[ "$cached" == 1 ]]; then
        (( after == before )) || die "$1 on $2: second request reached the upstream (x-cache ${second#* }): not cached"
        [[ "$2" == varnish || "${second#* }" == HIT ]] || die "$1 on $2: x-cache ${second#* }, expected HIT"
    fi
    log "warm $1 $2: first [$first] second [$second] upstream +$((after - before))"
}

cpu_snapshot() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6 }' /proc/stat; }
WAITED=0
QUIET_LOAD=- QUIET_BUSY=-
# Wait while other processes keep the machine busy; sets QUIET_LOAD (1-min load average) and
# QUIET_BUSY (cores busy over the last second, our idle servers included). No subshell, so a
# signal interrupts it within a second.
wait_quiet() {
    local start=$SECONDS t0 i0 t1 i1 busy la
    while :; do
        read -r t0 i0 <<<"$(cpu_snapshot)"
        sleep 1
        read -r t1 i1 <<<"$(cpu_snapshot)"
        busy=$(awk -v t="$((t1 - t0))" -v i="$((i1 - i0))" -v n="$NCPU" 'BEGIN { printf "%.2f", (t > 0 ? (t - i) / t * n : 0) }')
        la=$(cut -d' ' -f1 /proc/loadavg)
        if awk -v b="$busy" -v m="$BUSY_MAX" 'BEGIN { exit !(b <= m) }'; then break; fi
        if (( SECONDS - start >= MAX_WAIT || WAITED + SECONDS - start >= WAIT_BUDGET )); then
            log "machine still busy ($busy cores, load $la): measuring anyway"
            break
        fi
    done
    WAITED=$((WAITED + SECONDS - start))
    QUIET_LOAD=$la QUIET_BUSY=$busy
}
# Run a client in the background and wait for it, so INT/TERM reach the trap at once.
CLIENT_PID=""
run_client() { # OUTFILE ERRFILE CMD...
    local out="$1" err="$2"; shift 2
    "$@" >"$out" 2>"$err" &
    CLIENT_PID=$!
    local rc=0
    wait "$CLIENT_PID" || rc=$?
    CLIENT_PID=""
    return "$rc"
}

to_ms() { # wrk value with unit -> milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

CLK_TCK=$(getconf CLK_TCK)
# CPU ticks (user + system) of a process, its threads and its children (nginx workers, Varnish's
# cache process). The text after the last ')' of /proc/PID/stat has utime, stime at fields 12, 13.
proc_ticks() {
    local total=0 kids t
    kids="$(ps -o pid= --ppid "$1" 2>/dev/null || true)"
    for p in $1 $kids; do
        t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
core_snapshot() { awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6 }' /proc/stat; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
# run_wrk SCENARIO SERVER DURATION ROUND(or "warmup")
run_wrk() {
    local scen="$1" server="$2" dur="$3" round="$4"
    local method path auth oport cached conns
    read -r method path auth oport cached conns <<<"$(spec_of "$scen")"
    path="$(path_for "$server" "$path")"
    local args=(-t1 "-c$conns" "-d${dur}s" --latency --timeout 5s)
    [[ "$auth" == 1 ]] && args+=(-H "Authorization: Bearer $PAT")
    [[ "$auth" == 2 ]] && args+=(-H "X-Pad: $PAD")
    [[ "$method" == POST ]] && args+=(-s "$WORK/post.lua")
    local out="$WORK/wrk.$scen.$server.$round.txt" before after spid tk0 tk1 w0 w1 st0 si0 st1 si1 ct0 ci0 ct1 ci1
    QUIET_LOAD=- QUIET_BUSY=-
    [[ "$round" == warmup ]] || wait_quiet
    before="$(origin_count "$oport")"
    spid="$(pid_of "$server")"
    tk0=$(proc_ticks "$spid"); w0=$EPOCHREALTIME
    read -r st0 si0 <<<"$(core_snapshot "$SERVER_CPU")"; read -r ct0 ci0 <<<"$(core_snapshot "$CLIENT_CPU")"
    run_client "$out" "$out.err" taskset -c "$CLIENT_CPU" wrk "${args[@]}" "http://127.0.0.1:$(port_of "$server")$path" \
        || { cat "$out" "$out.err" >&2; die "wrk failed for $scen $server"; }
    read -r st1 si1 <<<"$(core_snapshot "$SERVER_CPU")"; read -r ct1 ci1 <<<"$(core_snapshot "$CLIENT_CPU")"
    tk1=$(proc_ticks "$spid"); w1=$EPOCHREALTIME
    after="$(origin_count "$oport")"
    [[ "$round" == warmup ]] && return 0
    local rps p50 p99 bad reqs us_req srv_pct srv_core cli_core
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    bad=$(awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
    [[ -n "$rps" ]] || { cat "$out" >&2; die "could not parse wrk output for $scen $server"; }
    reqs=$(awk '/ requests in / { print $1 }' "$out")
    # CPU the server process spent per request, its share of one core, and how busy each core was.
    read -r us_req srv_pct srv_core cli_core < <(awk -v t="$((tk1 - tk0))" -v hz="$CLK_TCK" -v n="$reqs" \
        -v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" \
        -v sd="$((st1 - st0))" -v si="$((si1 - si0))" -v cd="$((ct1 - ct0))" -v ci="$((ci1 - ci0))" 'BEGIN {
            printf "%.2f %.0f %.0f %.0f\n", (n > 0 ? t / hz * 1e6 / n : 0), (w > 0 ? t / hz / w * 100 : 0),
                (sd > 0 ? (sd - si) / sd * 100 : 0), (cd > 0 ? (cd - ci) / cd * 100 : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$scen" "$server" "$rps" "$p50" "$p99" \
        "$bad" "$((after - before))" "$QUIET_LOAD" "$QUIET_BUSY" "$us_req" "$srv_pct" "$srv_core" "$cli_core" >>"$RESULTS"
    log "round $round $scen $server: $rps req/s p50 ${p50} ms p99 ${p99} ms errors $bad upstream +$((after - before)); server ${us_req} us CPU/req, process ${srv_pct}% of a core, server core ${srv_core}%, client core ${cli_core}% (load $QUIET_LOAD, busy $QUIET_BUSY cores)"
    if [[ "$cached" == 1 && $((after - before)) -gt 0 ]]; then
        log "warning: $scen $server sent $((after - before)) requests upstream during a cached run"
    fi
}

rss_kib() { # PID -> VmRSS of the process and its children, KiB
    local pid="$1" total=0 kids
    kids="$(ps -o pid= --ppid "$pid" 2>/dev/null || true)"
    for p in $pid $kids; do
        total=$((total + $(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------------------------------------
# Measure
# ---------------------------------------------------------------------------------------------
log "machine: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p'), $(uname -r)"
start_wait=$SECONDS
while awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v m="$LOAD_MAX" 'BEGIN { exit !(l > m) }'; do
    (( SECONDS - start_wait < MAX_WAIT )) || { log "load average still $(cut -d' ' -f1 /proc/loadavg) after ${MAX_WAIT}s: starting anyway"; break; }
    sleep 2
done
WAITED=$((SECONDS - start_wait))
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

for r in "${RUNS[@]}"; do read -r sc sv <<<"$r"; warm "$sc" "$sv"; done
if (( WARMUP > 0 )); then
    log "warm-up: ${WARMUP}s per (scenario, server)"
    for r in "${RUNS[@]}"; do read -r sc sv <<<"$r"; run_wrk "$sc" "$sv" "$WARMUP" warmup; done
fi
N_RUNS=${#RUNS[@]}
for round in $(seq 1 "$ROUNDS"); do
    # Rotate the order each round so no server always runs first or last.
    for i in $(seq 0 $((N_RUNS - 1))); do
        r="${RUNS[$(( (i + (round - 1) * 5) % N_RUNS ))]}"
        read -r sc sv <<<"$r"
        run_wrk "$sc" "$sv" "$DURATION" "$round"
    done
done

RSS_FILE="$WORK/rss.tsv"
for s in contentgate nginx varnish origin; do
    printf '%s\t%s\n' "$s" "$(rss_kib "$(pid_of "$s")")" >>"$RSS_FILE"
done

# (e) burst of identical misses: contentgate, and nginx with proxy_cache_lock for reference
BURST_FILE="$WORK/burst.tsv"
: >"$BURST_FILE"
burst() { # SERVER
    local port before after out
    port="$(port_of "$1")"
    before="$(origin_count "$O_BURST")"
    run_client "$WORK/burst.$1.out" "$WORK/burst.$1.err" taskset -c "$CLIENT_CPU" "$BURST_BIN" --n "$BURST_N" \
        --url "http://127.0.0.1:$port/burst/cdn" --warm-url "http://127.0.0.1:$port/cdn?query=$QENC" || true
    out="$(cat "$WORK/burst.$1.out")"
    sleep 0.5
    after="$(origin_count "$O_BURST")"
    [[ -n "$out" ]] || { cat "$WORK/burst.$1.err" >&2; die "burst against $1 printed nothing"; }
    printf '%s\t%s\t%s\n' "$1" "$((after - before))" "$out" >>"$BURST_FILE"
    log "(e) $1: upstream requests $((after - before)); $out"
}
if [[ -n "$PROFILE" ]]; then
    mkdir -p "$PROFILE"
    tools="${TARGET_DIR}/tools"
    [[ -x "$tools/bin/inferno-flamegraph" ]] || cargo install -q --locked --root "$tools" inferno >&2
    # contentgate and nginx (its worker) under the same loads; one flamegraph each, and the split
    # of CPU per request (benches/perf_split.py) scaled by the us/req of the measured rounds.
    split_args=()
    for scen in a_get c_pass; do
        for server in contentgate nginx; do
            spid="$(pid_of "$server")"
            [[ "$server" == nginx ]] && spid="$(pgrep -P "$spid" | head -1)"
            wait_quiet
            log "profiling $server under $scen (${DURATION}s)"
            perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -o "$WORK/perf.$scen.$server.data" \
                -p "$spid" -- sleep "$DURATION" 2>"$WORK/perf.$scen.$server.log" &
            perf_pid=$!
            sleep 0.3
            run_wrk "$scen" "$server" "$DURATION" warmup
            wait "$perf_pid" || true
            perf script -i "$WORK/perf.$scen.$server.data" 2>/dev/null | "$tools/bin/inferno-collapse-perf" >"$WORK/$scen.$server.folded"
            name="flamegraph-$scen.svg"
            [[ "$server" == nginx ]] && name="flamegraph-nginx-$scen.svg"
            "$tools/bin/inferno-flamegraph" --title "$server, $scen ($(date -u +%Y-%m-%d), cpu-clock)" \
                <"$WORK/$scen.$server.folded" >"$PROFILE/$name"
            us="$(awk -F'\t' -v s="$scen" -v v="$server" '$2 == s && $3 == v { print $11 }' "$RESULTS" | sort -n \
                | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : 0) }')"
            split_args+=("$server $scen" "$WORK/$scen.$server.folded" "$us")
        done
    done
    python3 "$(dirname "$0")/perf_split.py" "${split_args[@]}" >"$PROFILE/cpu-split.txt"
    # Syscalls per pass-through request: strace -c on the server while wrk runs 3 s.
    : >"$PROFILE/syscalls-c_pass.txt"
    for server in contentgate nginx; do
        spid="$(pid_of "$server")"
        [[ "$server" == nginx ]] && spid="$(pgrep -P "$spid" | head -1)"
        before="$(origin_count "$O_FAST")"
        strace -c -f -p "$spid" -o "$WORK/strace.$server.txt" &
        st_pid=$!
        sleep 0.3
        run_wrk c_pass "$server" 3 warmup
        kill -INT "$st_pid" 2>/dev/null; wait "$st_pid" 2>/dev/null || true
        n=$(( $(origin_count "$O_FAST") - before ))
        {
            echo "== $server: $n pass-through requests; calls per request (strace -c -f, 3 s at $CONNS connections)"
            # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall
            awk -v n="$n" 'n > 0 && $4 ~ /^[0-9]+$/ && $NF ~ /^[a-z_0-9]+$/ && $NF != "total" {
                printf "  %-16s %6.2f\n", $NF, $4 / n }' "$WORK/strace.$server.txt" | sort -k2 -nr | head -12
        } >>"$PROFILE/syscalls-c_pass.txt"
    done
    log "flamegraphs and syscall counts in $PROFILE"
fi

wait_quiet
burst contentgate
CG_RSS_AFTER_BURST=$(rss_kib "$PID_contentgate")
CG_HWM=$(hwm_kib "$PID_contentgate")
burst nginx

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
if [[ -n "$OUT" ]]; then
    mkdir -p "$OUT"
    cp "$RESULTS" "$RSS_FILE" "$BURST_FILE" "$OUT/"
    exec > >(tee "$OUT/report.txt")
    TEE_PID=$!
fi
versions="nginx $( (nginx -v 2>&1 || true) | sed 's/.*nginx\///'), $( (varnishd -V 2>&1 || true) | sed -n '1s/varnishd (\(varnish-[0-9.]*\).*/\1/p'), $( (wrk -v 2>&1 || true) | awk 'NR == 1 {print "wrk " $2}')"
echo
echo "contentgate side by side — $(date -u +%Y-%m-%dT%H:%MZ), $NCPU cores ($(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p')), kernel $(uname -r)"
echo "$versions; wrk -t1 on core $CLIENT_CPU with the origins; servers on core $SERVER_CPU"
echo "runs of ${DURATION}s, medians of $ROUNDS interleaved rounds; (a)-(c) at $CONNS connections, (d) at $D_CONNS; RSS = VmRSS after all runs"
echo
awk -F'\t' -v rssfile="$RSS_FILE" -v notrun="$(printf '%s\n' "${NOT_RUN[@]}")" '
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function ratio(x, y) { return (y + 0 > 0) ? sprintf("%.2f", x / y) : "-" }
    BEGIN {
        while ((getline line < rssfile) > 0) { split(line, f, "\t"); rss[f[1]] = f[2] / 1024 }
        n = split(notrun, nr, "\n")
        for (i = 1; i <= n; i++) if (nr[i] != "") { split(nr[i], p, "|"); skip[p[1]] = p[2] }
    }
    {
        k = $2 " " $3
        if (!(k in seen)) { seen[k] = 1; order[++cnt] = k }
        rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6
        usr[k] = usr[k] " " $11; spc[k] = spc[k] " " $12; scr[k] = scr[k] " " $13; ccr[k] = ccr[k] " " $14
        bad[k] += $7; up[k] += $8
        load[k] = load[k] (load[k] == "" ? "" : ",") $9; busy[k] = busy[k] (busy[k] == "" ? "" : ",") $10
    }
    END {
        for (i = 1; i <= cnt; i++) {
            k = order[i]; mr[k] = median(rps[k]); m50[k] = median(p50[k]); m99[k] = median(p99[k])
            mus[k] = median(usr[k]); msp[k] = median(spc[k]); msc[k] = median(scr[k]); mcc[k] = median(ccr[k])
        }
        printf "%-11s %-12s %8s %7s %7s %7s | %6s %5s %5s | %6s %6s %6s %6s %6s | %s\n", "scenario", "server", "req/s", "p50 ms", "p99 ms", "RSS MiB",
            "us/req", "srv%", "cli%", "rps/ng", "p50/ng", "p99/ng", "RSS/ng", "cpu/ng", "notes"
        printf "%s\n", "--------------------------------------------------------------------------------------------------------------------------"
        last = ""
        for (i = 1; i <= cnt; i++) {
            k = order[i]; split(k, p, " "); sc = p[1]; sv = p[2]; ng = sc " nginx"
            if (last != "" && sc != last) {
                for (s in skip) { split(s, q, " "); if (q[1] == last) printf "%-11s %-12s %8s | not run: %s\n", last, q[2], "-", skip[s] }
            }
            last = sc
            note = ""
            if (bad[k] > 0) note = note sprintf("%d non-2xx/socket errors; ", bad[k])
            if (sc ~ /cached|a_|b_|u_/ && sc != "d_uncached" && up[k] > 0) note = note sprintf("%d upstream reqs; ", up[k])
            if (sv == "origin") note = note "origin alone (no proxy); "
            if (sv == "nginx" && sc == "b_pat") note = note "no auth check; "
            if (sv == "varnish" && sc == "c_pass") note = note "POST passed by default VCL; "
            printf "%-11s %-12s %8.0f %7.3f %7.3f %7.1f | %6.1f %5.0f %5.0f | %6s %6s %6s %6s %6s | %sload %s\n", sc, sv, mr[k], m50[k], m99[k], rss[sv],
                mus[k], msc[k], mcc[k], ratio(mr[k], mr[ng]), ratio(m50[k], m50[ng]), ratio(m99[k], m99[ng]), ratio(rss[sv], rss["nginx"]),
                ratio(mus[k], mus[ng]), note, load[k] " busy " busy[k]
        }
        for (s in skip) { split(s, q, " "); if (q[1] == last) printf "%-11s %-12s %8s | not run: %s\n", last, q[2], "-", skip[s] }
        # targets
        cg = "contentgate"
        printf "\nTargets (contentgate, from the medians above):\n"
        t = mr["a_get " cg] / mr["a_get nginx"]; printf "  (a) GET hit req/s  %.2fx nginx (target >= 1.25): %s\n", t, (t >= 1.25 ? "met" : "MISSED")
        t = mr["a_post " cg] / mr["a_post nginx"]; printf "  (a) POST hit req/s %.2fx nginx (target >= 1.25): %s\n", t, (t >= 1.25 ? "met" : "MISSED")
        for (j = 1; j <= 3; j++) {
            sc = (j == 1 ? "a_get" : j == 2 ? "a_post" : "c_pass")
            if (mus[sc " " cg] > 0)
                printf "      %s per core: contentgate %.1f us CPU/req vs nginx %.1f -> %.2fx nginx (server core %s%% vs %s%% busy, client core %s%% vs %s%%)\n",
                    sc, mus[sc " " cg], mus[sc " nginx"], mus[sc " nginx"] / mus[sc " " cg], msc[sc " " cg], msc[sc " nginx"], mcc[sc " " cg], mcc[sc " nginx"]
        }
        printf "  (a) GET hit p99 %.3f ms vs nginx %.3f ms (target <=): %s\n", m99["a_get " cg], m99["a_get nginx"], (m99["a_get " cg] <= m99["a_get nginx"] ? "met" : "MISSED")
        printf "  (a) POST hit p99 %.3f ms vs nginx %.3f ms (target <=): %s\n", m99["a_post " cg], m99["a_post nginx"], (m99["a_post " cg] <= m99["a_post nginx"] ? "met" : "MISSED")
        t = mr["b_pat " cg] / mr["a_get " cg]; printf "  (b) PAT hit req/s %.2fx anonymous GET hit (target >= 0.95): %s\n", t, (t >= 0.95 ? "met" : "MISSED")
        if (mr["b_pad " cg] > 0)
            printf "      the request size alone: anonymous hit padded to the size of the PAT request %.2fx the plain one (nginx %.2fx, and %.2fx with the PAT header); PAT hit %.2fx the padded one\n",
                mr["b_pad " cg] / mr["a_get " cg], mr["b_pad nginx"] / mr["a_get nginx"], mr["b_pat nginx"] / mr["a_get nginx"], mr["b_pat " cg] / mr["b_pad " cg]
        if (m99["u_get " cg] > 0)
            printf "  (u) GET hit unloaded (1 connection): p50 %.3f vs nginx %.3f ms, p99 %.3f vs nginx %.3f ms (target p99 <=): %s\n",
                m50["u_get " cg], m50["u_get nginx"], m99["u_get " cg], m99["u_get nginx"], (m99["u_get " cg] <= m99["u_get nginx"] ? "met" : "MISSED")
        t = mr["c_pass " cg] / mr["c_pass nginx"]; printf "  (c) pass-through req/s %.2fx nginx proxy_pass (target >= 1.0): %s\n", t, (t >= 1.0 ? "met" : "MISSED")
        t = m50["d_uncached " cg] / m50["d_cached " cg]; t2 = m99["d_uncached " cg] / m99["d_cached " cg]
        printf "  (d) 20 ms upstream: uncached/cached latency p50 %.1fx, p99 %.1fx (target >= 20): %s\n", t, t2, (t >= 20 && t2 >= 20 ? "met" : "MISSED")
    }' "$RESULTS"
while IFS=$'\t' read -r server ups line; do
    verdict="MISSED"
    [[ "$ups" == 1 ]] && verdict="met"
    [[ "$server" == contentgate ]] || verdict="reference"
    echo "  (e) $server: $BURST_N identical concurrent misses -> $ups upstream request(s) [$verdict]; ${line#burst }"
done <"$BURST_FILE"
budget_mib=$((CACHE_BYTES / 1048576 + 64))
rss_mib=$((CG_RSS_AFTER_BURST / 1024)); hwm_mib=$((CG_HWM / 1024))
verdict="met"; (( hwm_mib <= budget_mib )) || verdict="MISSED"
echo "  (e) contentgate RSS after the burst ${rss_mib} MiB, peak (VmHWM) ${hwm_mib} MiB (target <= cache budget + 64 = ${budget_mib} MiB): $verdict"
echo "  waited ${WAITED}s in total for a quiet machine; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n "$OUT" ]]; then
    venv="${CARGO_TARGET_DIR:-target}/bench-venv"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/python" -c 'import matplotlib' 2>/dev/null || "$venv/bin/pip" install -q 'matplotlib==3.*'
    "$venv/bin/python" "$(dirname "$0")/chart.py" "$OUT/results.tsv" "$OUT/side_by_side.png" \
        --title "contentgate vs nginx $( (nginx -v 2>&1 || true) | sed 's/.*nginx\///'), $(date -u +%Y-%m-%d), $NCPU cores, medians of $ROUNDS rounds"
    echo "side_by_side: report, tables and chart in $OUT" >&2
fi
