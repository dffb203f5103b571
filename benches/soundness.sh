#!/usr/bin/env bash
# The long soundness run: SOUNDNESS_CASES generated requests (default 100000) through the real
# gateway against the access-recording sample CMS (tests/soundness.rs). Prints the number of
# cases, violations (with one shrunk minimal case per kind) and the over-denial rate.
#
#   benches/soundness.sh                     # 100000 cases, the fixed seed
#   SOUNDNESS_CASES=1000000 SOUNDNESS_SEED=7 benches/soundness.sh
#
# Uses CARGO_TARGET_DIR if set. Exit status: 0 if no violation was found, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOUNDNESS_CASES="${SOUNDNESS_CASES:-100000}"
log="$(mktemp -t soundness.XXXXXX.log)"
echo "soundness: ${SOUNDNESS_CASES} cases, seed ${SOUNDNESS_SEED:-fixed}; full output in $log"
status=0
cargo test --test soundness -- --nocapture >"$log" 2>&1 || status=$?
grep -E '^=== violation' "$log" || true
sed -n '/^soundness: /,/^over-denial:/p' "$log"
line="$(grep '^SOUNDNESS ' "$log" || true)"
if [ -z "$line" ]; then
  echo "the run did not finish; see $log" >&2
  tail -40 "$log" >&2
  exit 2
fi
echo "$line"
exit $(( status == 0 ? 0 : 1 ))
