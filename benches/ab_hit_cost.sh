#!/usr/bin/env bash
# Paired A/B of two contentgate builds on the cache-hit path (MODE=hit, the default: GET /cdn
# hits) or the pass-through path (MODE=pass: POST /content, uncached): both gateways run at once
# with the same config (threads = 1, core 1) in front of bench_origin (core 0); wrk (core 0) loads
# one at a time, alternating which goes first each round; CPU per request from /proc/PID/stat
# (the gateway's own CPU, not the origin's).
#
#   OLD_BIN=/path/old/contentgate NEW_BIN=/path/new/contentgate \
#   ORIGIN_BIN=target/release/examples/bench_origin [MODE=pass] bash benches/ab_hit_cost.sh
#
# OLD_LOG / NEW_LOG replace each side's [log] keys (default `level = "warn"`, no access lines),
# e.g. the same binary twice to compare log settings: OLD_BIN=$B NEW_BIN=$B
# OLD_LOG=$'level = "info"\nbuffer_bytes = 0' NEW_LOG='level = "info"'. Each side's stderr goes
# to a file ($W/old.log, $W/new.log, outside the watched policy directory); their line counts are
# printed at the end.
#
# Build an old binary with e.g. `git worktree add /tmp/old <commit>` and
# `CARGO_TARGET_DIR=/tmp/old-target cargo build --release --bin contentgate` there.
# Ports 19001, 19010-19011, 19020-19021. About 3 minutes. Prints one line per run and the
# per-round new/old ratios' medians.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
: "${OLD_BIN:?set OLD_BIN}" "${NEW_BIN:?set NEW_BIN}"
ORIGIN_BIN="${ORIGIN_BIN:-$ROOT/target/release/examples/bench_origin}"
ROUNDS="${ROUNDS:-6}"
MODE="${MODE:-hit}"
OLD_LOG="${OLD_LOG:-level = \"warn\"}"
NEW_LOG="${NEW_LOG:-level = \"warn\"}"
case "$MODE" in
  hit) EP_PATH=/cdn; EP_KIND=cdn ;;
  pass) EP_PATH=/content; EP_KIND=content ;;
  *) echo "MODE is hit or pass" >&2; exit 2 ;;
esac
W=$(mktemp -d /tmp/ab_hit_cost.XXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
taskset -c 0 "$ORIGIN_BIN" --port 19001 > $W/origin.log 2>&1 &
PIDS+=($!)
mk() { # dir port admin log-keys
  mkdir -p $1/policies $1/run
  cat > $1/gateway.toml <<EOT
[server]
threads = 1
runtime_dir = "run"
[[listener]]
address = "127.0.0.1:$2"
[admin]
address = "127.0.0.1:$3"
[upstream.cms]
url = "http://127.0.0.1:19001/graphql"
credential = { mode = "replace", token_env = "BENCH_SERVICE_TOKEN" }
[[endpoint]]
path = "$EP_PATH"
kind = "$EP_KIND"
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
default_ttl = "3600s"
[log]
$4
EOT
  printf 'default_stage = "PUBLISHED"\n[[permission]]\naction = "read"\n' > $1/policies/public.toml
  printf '[[token]]\njti = "bench"\nname = "bench"\ndefault_stage = "PUBLISHED"\n[[token.permission]]\naction = "read"\n' > $1/policies/tokens.toml
  : > $1/policies/revoked.txt
  cp $ROOT/policies/schema.graphql $1/policies/
}
export BENCH_SERVICE_TOKEN=x
mk $W/old 19010 19011 "$OLD_LOG"; mk $W/new 19020 19021 "$NEW_LOG"
taskset -c 1 "$OLD_BIN" serve --config $W/old/gateway.toml > $W/old.log 2>&1 & P_old=$!
taskset -c 1 "$NEW_BIN" serve --config $W/new/gateway.toml > $W/new.log 2>&1 & P_new=$!
PIDS+=($P_old $P_new)
sleep 2
PAT=$("$NEW_BIN" token mint --alg ES256 --key $ROOT/tests/fixtures/keys/es256.key.pem --kid es --jti bench --iss bench --aud bench 2>/dev/null)
Q='%7B%20posts%20%7B%20id%20title%20slug%20body%20%7D%20%7D'
# MODE=pass: the same query as a POST body (wrk scripts), anonymous and with the PAT.
cat > $W/post.lua <<'EOT'
wrk.method = "POST"
wrk.body = '{"query":"{ posts { id title slug body } }"}'
wrk.headers["Content-Type"] = "application/json"
EOT
{ cat $W/post.lua; printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$PAT"; } > $W/post_pat.lua
load() { # port scenario seconds
  if [ "$MODE" = pass ]; then
    local script=$W/post.lua; [ "$2" = pat ] && script=$W/post_pat.lua
    taskset -c 0 wrk -t1 -c64 -d"$3"s -s "$script" "http://127.0.0.1:$1/content"
  else
    local hdr=(); [ "$2" = pat ] && hdr=(-H "authorization: Bearer $PAT")
    taskset -c 0 wrk -t1 -c64 -d"$3"s "${hdr[@]}" "http://127.0.0.1:$1/cdn?query=$Q"
  fi
}
declare -A PORT=([old]=19010 [new]=19020) PID=([old]=$P_old [new]=$P_new)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
for v in old new; do load "${PORT[$v]}" get 3 > /dev/null; load "${PORT[$v]}" pat 1 > /dev/null; done
TCK=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for scen in get pat; do
    for v in old new; do
      [ $((round % 2)) = 0 ] && { [ $v = old ] && v=new || v=old; }
      c0=$(cpu ${PID[$v]})
      out=$(load "${PORT[$v]}" $scen 6)
      c1=$(cpu ${PID[$v]})
      reqs=$(echo "$out" | awk '/requests in/ {print $1}')
      rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      us=$(awk -v c=$((c1-c0)) -v t=$TCK -v n=$reqs 'BEGIN{printf "%.2f", c/t*1e6/n}')
      echo "$round $scen $v rps=$rps us_per_req=$us"
    done
  done
done | tee $W/runs.txt
for scen in get pat; do
  # per round: new/old; then the median
  awk -v s=$scen '$2 == s { split($5, a, "="); us[$1 " " $3] = a[2]; rounds[$1] = 1 }
    END { for (r in rounds) printf "%.4f\n", us[r " new"] / us[r " old"] }' $W/runs.txt \
    | sort -n | awk -v s=$scen -v mode=$MODE '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%s %s: new/old CPU per request, median of %d rounds: %.3f\n", s, mode, NR, m }'
done
echo "stderr lines: old $(wc -l < $W/old.log), new $(wc -l < $W/new.log)"
