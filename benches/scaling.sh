#!/usr/bin/env bash
# Scaling: contentgate with 1 and 2 worker threads against nginx with 1 and 2 worker processes.
#
# Two scenarios from benches/side_by_side.sh, same requests and origin:
#   hit   anonymous cache hit, GET /cdn?query=...
#   pass  pass-through, POST /content (contentgate authorizes; nginx proxy_pass, keep-alive)
# Four configurations, each its own process started for the run:
#   contentgate/1  `[server] threads = 1`, pinned to --server-cpu         wrk + origin on --client-cpu
#   nginx/1        `worker_processes 1`, pinned to --server-cpu           wrk + origin on --client-cpu
#   contentgate/2  `[server] threads = 2`, on both cores                  wrk + origin on --client-cpu
#   contentgate/2ns  the same with `work_stealing = false` (a runtime per thread, nginx's model)
#   floor/1        examples/pingora_floor, 1 thread, on --server-cpu: Pingora with nothing of
#                  contentgate: a hit answered from request_filter with a fixed body, and
#                  for the pass-through the leanest upstream exchange behind Pingora's session
#                  (one write on a pooled plain socket, the answer read with httparse, no
#                  timeouts or checks): the floor under both paths
#   nginx/2        `worker_processes 2`, on both cores (one per core)     wrk + origin on --client-cpu
# With two cores, the 2-worker runs share a core with wrk and the origin, so req/s cannot double;
# the figure that says how a server scales is its CPU per request (us/req, from /proc/PID/stat):
# flat from 1 to 2 workers means the per-request work does not grow with the workers (no
# contention). req/s per busy core (rps/core) says the same from the other side.
# Medians of --rounds interleaved rounds (the order rotates each round).
#
# How to run (needs nginx, wrk, curl, taskset; the release binaries):
#   CARGO_TARGET_DIR=/work/bench-target cargo build --release --bin contentgate --example bench_origin \
#       --example pingora_floor
#   CARGO_TARGET_DIR=/work/bench-target bash benches/scaling.sh [--duration 8] [--rounds 3]
# Options: --duration S (8), --rounds N (3), --connections N (64), --base-port P (18600),
#          --client-cpu C (0), --server-cpu C (1), --out FILE (also write the table there),
#          --configs LIST (some of the rows above, comma-separated: e.g. floor/1,contentgate/1,nginx/1)
set -euo pipefail

DURATION=8 ROUNDS=3 CONNS=64 BASE_PORT=18600 CLIENT_CPU=0 SERVER_CPU=1 OUT="" ONLY=""
die() { echo "scaling: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --base-port) BASE_PORT="$2"; shift 2 ;;
        --client-cpu) CLIENT_CPU="$2"; shift 2 ;;
        --server-cpu) SERVER_CPU="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --configs) ONLY="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
for v in DURATION ROUNDS CONNS BASE_PORT CLIENT_CPU SERVER_CPU; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
(( $(nproc) >= 2 )) || die "needs at least 2 cores"
(( CLIENT_CPU != SERVER_CPU )) || die "--client-cpu and --server-cpu must differ"
export PATH="$PATH:/usr/sbin:/sbin"
for t in nginx wrk curl taskset; do command -v "$t" >/dev/null || die "$t not found"; done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="$TARGET_DIR/release/contentgate"
ORIGIN_BIN="$TARGET_DIR/release/examples/bench_origin"
FLOOR_BIN="$TARGET_DIR/release/examples/pingora_floor"
for b in "$BIN" "$ORIGIN_BIN" "$FLOOR_BIN"; do [[ -x "$b" ]] || die "$b not found (build it first)"; done
ulimit -n 65536 2>/dev/null || true

O_PORT=$BASE_PORT CG_PORT=$((BASE_PORT + 1)) CG_ADMIN=$((BASE_PORT + 2)) NGX_PORT=$((BASE_PORT + 3))
for p in $O_PORT $CG_PORT $CG_ADMIN $NGX_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is busy (--base-port)"; fi
done
WORK="$(mktemp -d /tmp/scaling.XXXXXX)"
chmod 755 "$WORK"
ORIGIN_PID="" SERVER_PID="" CLIENT_PID=""
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill -INT "$SERVER_PID" 2>/dev/null || true   # contentgate exits at once on SIGINT
    kill -QUIT "$SERVER_PID" 2>/dev/null || true  # nginx: graceful, workers with it
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
cleanup() {
    local rc=$?
    set +e
    [[ -n "$CLIENT_PID" ]] && kill "$CLIENT_PID" 2>/dev/null
    stop_server
    [[ -n "$ORIGIN_PID" ]] && kill "$ORIGIN_PID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

taskset -c "$CLIENT_CPU" "$ORIGIN_BIN" --port "$O_PORT" >"$WORK/origin.log" 2>&1 &
ORIGIN_PID=$!

# contentgate: the side-by-side configuration, threads set per run.
mkdir -p "$WORK/cg/policies" "$WORK/cg/run"
printf 'default_stage = "PUBLISHED"\n[[permission]]\naction = "read"\n' >"$WORK/cg/policies/public.toml"
printf '' >"$WORK/cg/policies/tokens.toml"
: >"$WORK/cg/policies/revoked.txt"
cp "$ROOT/policies/schema.graphql" "$WORK/cg/policies/schema.graphql"
cg_config() { # THREADS WORK_STEALING
    cat >"$WORK/cg/gateway.toml" <<EOF
[server]
threads = $1
work_stealing = $2
runtime_dir = "run"

[[listener]]
address = "127.0.0.1:$CG_PORT"

[admin]
address = "127.0.0.1:$CG_ADMIN"

[upstream.cms]
url = "http://127.0.0.1:$O_PORT/graphql"
credential = { mode = "replace", token_env = "BENCH_SERVICE_TOKEN" }

[[endpoint]]
path = "/cdn"
kind = "cdn"
upstream = "cms"

[[endpoint]]
path = "/content"
kind = "content"
upstream = "cms"

[cms]
stages = ["DRAFT", "PUBLISHED"]
locales = ["en", "de"]

[cache]
max_bytes = 268435456
default_ttl = "3600s"

[log]
level = "warn"
EOF
}
export BENCH_SERVICE_TOKEN=bench-service-token
mkdir -p "$WORK/nginx/cache" "$WORK/nginx/tmp"
ngx_config() { # WORKERS AFFINITY
    cat >"$WORK/nginx/nginx.conf" <<EOF
$([[ $EUID -eq 0 ]] && echo "user root;")
daemon off;
worker_processes $1;
worker_cpu_affinity $2;
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
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    upstream fast { server 127.0.0.1:$O_PORT; keepalive 64; keepalive_requests 100000000; }
    server {
        listen 127.0.0.1:$NGX_PORT backlog=4096;
        location /cdn {
            proxy_pass http://fast;
            proxy_cache bench;
            proxy_cache_key "\$request_uri";
            proxy_cache_valid 200 3600s;
            proxy_cache_lock on;
        }
        location /content { proxy_pass http://fast; }
    }
}
EOF
}
# Core masks for nginx: one core, or one worker per core.
mask_of() { printf '1%*s' "$1" '' | tr ' ' 0; }
NGX_ONE="$(mask_of "$SERVER_CPU")"
NGX_TWO="$(mask_of "$SERVER_CPU") $(mask_of "$CLIENT_CPU")"
BOTH="$CLIENT_CPU,$SERVER_CPU"

start_server() { # SERVER WORKERS (contentgate: 1, 2, or 2ns for two without work stealing)
    local url
    if [[ "$1" == floor ]]; then
        taskset -c "$SERVER_CPU" "$FLOOR_BIN" --port "$CG_PORT" --origin "127.0.0.1:$O_PORT" \
            --threads "$2" >"$WORK/server.log" 2>&1 &
        SERVER_PID=$!
        url="http://127.0.0.1:$CG_PORT/cdn"
    elif [[ "$1" == contentgate ]]; then
        if [[ "$2" == 2ns ]]; then cg_config 2 false; else cg_config "$2" true; fi
        if [[ "$2" == 1 ]]; then
            taskset -c "$SERVER_CPU" "$BIN" serve --config "$WORK/cg/gateway.toml" >"$WORK/server.log" 2>&1 &
        else
            taskset -c "$BOTH" "$BIN" serve --config "$WORK/cg/gateway.toml" >"$WORK/server.log" 2>&1 &
        fi
        SERVER_PID=$!
        url="http://127.0.0.1:$CG_ADMIN/readyz"
    else
        if [[ "$2" == 1 ]]; then ngx_config 1 "$NGX_ONE"; else ngx_config 2 "$NGX_TWO"; fi
        nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/server.log" 2>&1 &
        SERVER_PID=$!
        url="http://127.0.0.1:$NGX_PORT/content"
    fi
    for _ in $(seq 1 300); do
        curl -s -o /dev/null --max-time 1 "$url" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "$1 exited at start-up"; }
        sleep 0.1
    done
    die "$1 not ready"
}
port_of() { if [[ "$1" == nginx ]]; then echo "$NGX_PORT"; else echo "$CG_PORT"; fi; }
proc_ticks() { # PID and its children (nginx workers)
    local total=0 t
    for p in $1 $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
        t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
BODY='{"query":"{ posts { id title slug body } }"}'
QENC='%7B%20posts%20%7B%20id%20title%20slug%20body%20%7D%20%7D'
printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = %s\n' "'$BODY'" >"$WORK/post.lua"
wrk_args() { # SCENARIO SERVER
    if [[ "$1" == hit ]]; then echo "http://127.0.0.1:$(port_of "$2")/cdn?query=$QENC"
    else echo "-s $WORK/post.lua http://127.0.0.1:$(port_of "$2")/content"; fi
}
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
measure() { # ROUND SCENARIO SERVER WORKERS
    local round="$1" scen="$2" server="$3" workers="$4" out="$WORK/wrk.txt" tk0 tk1 w0 w1
    # shellcheck disable=SC2046
    taskset -c "$CLIENT_CPU" wrk -t1 "-c$CONNS" -d2s $(wrk_args "$scen" "$server") >/dev/null 2>&1 # warm-up (and the cache fill)
    tk0=$(proc_ticks "$SERVER_PID"); w0=$EPOCHREALTIME
    # shellcheck disable=SC2046
    taskset -c "$CLIENT_CPU" wrk -t1 "-c$CONNS" "-d${DURATION}s" --latency $(wrk_args "$scen" "$server") >"$out" 2>&1 &
    CLIENT_PID=$!
    wait "$CLIENT_PID" || die "wrk failed: $(cat "$out")"
    CLIENT_PID=""
    tk1=$(proc_ticks "$SERVER_PID"); w1=$EPOCHREALTIME
    local rps reqs bad p99
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    reqs=$(awk '/ requests in / { print $1 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    bad=$(awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
    [[ -n "$rps" && -n "$reqs" ]] || die "could not parse wrk output: $(cat "$out")"
    (( bad == 0 )) || die "$scen $server/$workers: $bad errors or non-2xx answers"
    awk -v r="$round" -v s="$scen" -v sv="$server/$workers" -v rps="$rps" -v n="$reqs" -v p99="$p99" \
        -v t="$((tk1 - tk0))" -v hz="$(getconf CLK_TCK)" -v w0="$w0" -v w1="$w1" 'BEGIN {
            cores = t / hz / (w1 - w0)
            printf "%s\t%s\t%s\t%s\t%.2f\t%.2f\t%.0f\t%s\n", r, s, sv, rps, t / hz * 1e6 / n, cores, (cores > 0 ? rps / cores : 0), p99 }' >>"$RESULTS"
    log "round $round $scen $server/$workers: $(tail -1 "$RESULTS" | cut -f4-8 | tr '\t' ' ')"
}

CONFIGS=("contentgate 1" "nginx 1" "contentgate 2" "nginx 2" "contentgate 2ns" "floor 1")
if [[ -n "$ONLY" ]]; then
    CONFIGS=()
    IFS=, read -ra picked <<<"$ONLY"
    for c in "${picked[@]}"; do
        [[ "$c" =~ ^(contentgate/(1|2|2ns)|nginx/(1|2)|floor/1)$ ]] || die "unknown config $c"
        CONFIGS+=("${c/\// }")
    done
fi
log "machine: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p'), $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    for i in "${!CONFIGS[@]}"; do
        read -r server workers <<<"${CONFIGS[$(( (i + round - 1) % ${#CONFIGS[@]} ))]}"
        start_server "$server" "$workers"
        for scen in hit pass; do measure "$round" "$scen" "$server" "$workers"; done
        stop_server
    done
done

report() {
    echo "scaling — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p')), $(uname -r)"
    echo "wrk -t1 -c$CONNS on core $CLIENT_CPU with the origin; /1 servers on core $SERVER_CPU, /2 servers on both cores"
    echo "runs of ${DURATION}s, medians of $ROUNDS interleaved rounds; cores = server CPU seconds per second"
    echo
    sort -t$'\t' -k2,2 -k3,3 "$RESULTS" | awk -F'\t' '
        function median(a, n,   i, j, t) {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2)
        }
        { k = $2 " " $3; if (!(k in n)) order[++m] = k; n[k]++
          rps[k, n[k]] = $4; us[k, n[k]] = $5; co[k, n[k]] = $6; pc[k, n[k]] = $7 }
        END {
            printf "%-5s %-14s %9s %8s %6s %9s\n", "scen", "server", "req/s", "us/req", "cores", "rps/core"
            for (i = 1; i <= m; i++) {
                k = order[i]
                for (j = 1; j <= n[k]; j++) { a[j] = rps[k, j]; b[j] = us[k, j]; c[j] = co[k, j]; d[j] = pc[k, j] }
                R[k] = median(a, n[k]); U[k] = median(b, n[k]); C[k] = median(c, n[k]); P[k] = median(d, n[k])
                split(k, p, " ")
                printf "%-5s %-14s %9.0f %8.2f %6.2f %9.0f\n", p[1], p[2], R[k], U[k], C[k], P[k]
            }
            print ""
            for (s = 1; s <= 2; s++) {
                sc = (s == 1 ? "hit" : "pass")
                for (v = 1; v <= 2; v++) {
                    sv = (v == 1 ? "contentgate" : "nginx")
                    k1 = sc " " sv "/1"; k2 = sc " " sv "/2"
                    if ((k1 in R) && (k2 in R))
                        printf "%-4s %-11s 1 -> 2 workers: req/s x%.2f, us/req x%.2f, cores %.2f -> %.2f\n", sc, sv, R[k2] / R[k1], U[k2] / U[k1], C[k1], C[k2]
                }
                k1 = sc " contentgate/1"; k2 = sc " contentgate/2ns"
                if ((k1 in R) && (k2 in R))
                    printf "%-4s contentgate 1 -> 2 workers without work stealing: req/s x%.2f, us/req x%.2f, cores %.2f -> %.2f\n", sc, R[k2] / R[k1], U[k2] / U[k1], C[k1], C[k2]
                k1 = sc " contentgate/1"; k2 = sc " nginx/1"; k3 = sc " contentgate/2"; k4 = sc " nginx/2"
                if ((k1 in R) && (k2 in R) && (k3 in R) && (k4 in R))
                    printf "%-4s contentgate/nginx req/s: %.2fx with 1 worker, %.2fx with 2\n", sc, R[k1] / R[k2], R[k3] / R[k4]
                k5 = sc " floor/1"
                if ((k1 in R) && (k2 in R) && (k5 in R))
                    printf "%-4s 1 worker: bare Pingora/nginx req/s %.2fx (us/req %.2f vs %.2f); contentgate/bare Pingora req/s %.2fx (us/req %.2f vs %.2f)\n", sc, R[k5] / R[k2], U[k5], U[k2], R[k1] / R[k5], U[k1], U[k5]
            }
        }'
}
report | tee "${OUT:-/dev/null}"
