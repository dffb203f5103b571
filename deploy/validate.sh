#!/usr/bin/env bash
# Offline validation of everything in deploy/: the Kubernetes manifests (kustomize base and
# overlays), the Prometheus rules and their unit tests, the Grafana dashboard and the Dockerfile.
#
#   bash deploy/validate.sh               validate; exit non-zero on any failure
#   bash deploy/validate.sh --sync-rules  regenerate base/prometheusrule.yaml from prometheus/rules.yml
#
# Runs on a fresh Debian machine as root with only Debian's archive and PyPI reachable, and
# installs what is missing:
#   apt:  python3 python3-venv (if absent), prometheus (for promtool; its service is kept from
#         starting), --no-install-recommends
#   pip:  kubernetes-validate, yamllint, checkov (pinned below) into a virtualenv outside the
#         repository, $CONTENTGATE_DEPLOY_VENV (default ~/.cache/contentgate-deploy/venv)
# kubectl is optional: with it the overlays are rendered by `kubectl kustomize` AND by the
# Python renderer in deploy/tools/deploycheck.py, which must agree; without it the Python
# renderer is used alone (CONTENTGATE_NO_KUBECTL=1 forces that path). `contentgate check` runs on the rendered configuration when a built
# binary exists ($CONTENTGATE_BIN, else target/release or target/debug); nothing is compiled.
set -euo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$DEPLOY")"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
VENV="${CONTENTGATE_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/contentgate-deploy/venv}"
PIP_PACKAGES=(kubernetes-validate==1.37.0 yamllint==1.38.0 checkov==3.3.30)

START=$SECONDS
FAILED=()
log() { printf '%s\n' "$*"; }
die() { printf 'validate.sh: %s\n' "$*" >&2; exit 1; }

if [[ "${1:-}" == "--sync-rules" ]]; then
  MODE=sync
elif [[ $# -eq 0 ]]; then
  MODE=validate
else
  die "usage: bash deploy/validate.sh [--sync-rules]"
fi

# --- tools --------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
  [[ $(id -u) -eq 0 ]] || die "need root to apt-get install $* (or install it yourself)"
  command -v apt-get >/dev/null || die "no apt-get: install $* yourself"
  if [[ $APT_UPDATED -eq 0 ]]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_python() {
  local py=python3
  if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    log "installing python3 python3-venv (apt)"
    apt_install python3 python3-venv
    py=/usr/bin/python3
  fi
  local want="${PIP_PACKAGES[*]}"
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    want="$want tomli"
  fi
  if [[ -x "$VENV/bin/python" && -f "$VENV/.requirements" && "$(cat "$VENV/.requirements")" == "$want" ]]; then
    return
  fi
  log "installing $want (pip, into $VENV)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check $want
  printf '%s' "$want" >"$VENV/.requirements"
}

ensure_promtool() {
  command -v promtool >/dev/null && return
  if [[ $APT_UPDATED -eq 0 && $(id -u) -eq 0 ]]; then apt-get update -qq; APT_UPDATED=1; fi
  local policy_out
  policy_out="$(apt-cache policy prometheus 2>/dev/null || true)"
  if ! grep -q 'Candidate: [0-9]' <<<"$policy_out"; then
    die "promtool is missing and no Debian package 'prometheus' is available (apt-cache policy prometheus)"
  fi
  log "installing prometheus (apt) for promtool; its service is not started"
  # policy-rc.d 101: maintainer scripts must not start the Prometheus server (it would take
  # port 9090, the gateway's admin port in tests).
  local policy=/usr/sbin/policy-rc.d created=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created=1
  fi
  local rc=0
  apt_install prometheus || rc=$?
  [[ $created -eq 1 ]] && rm -f "$policy"
  [[ $rc -eq 0 ]] || die "apt-get install prometheus failed"
}

ensure_python
PY="$VENV/bin/python"
TOOL="$DEPLOY/tools/deploycheck.py"

if [[ $MODE == sync ]]; then
  "$PY" "$TOOL" sync-rules
  exit 0
fi

ensure_promtool
export PATH="$VENV/bin:$PATH"
# checkov: no update check, no download of guidelines or mappings (offline, deterministic).
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE

have_kubectl() { [[ -z ${CONTENTGATE_NO_KUBECTL:-} ]] && command -v kubectl >/dev/null; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# --- steps --------------------------------------------------------------------------------
# Each step runs in a subshell with errexit on; a failing step is recorded and the others
# still run, so one run reports every problem.
step() {
  local name="$1"; shift
  log ""
  log "== $name"
  local t0=$SECONDS rc=0
  set +e
  ( set -euo pipefail; "$@" )
  rc=$?
  set -e
  if [[ $rc -eq 0 ]]; then
    log "-- ok ($((SECONDS - t0)) s)"
  else
    log "-- FAILED: $name"
    FAILED+=("$name")
  fi
}

tools_versions() {
  log "python    $("$PY" --version 2>&1)"
  log "yamllint  $(yamllint --version 2>&1)"
  log "k8s-validate $(kubernetes-validate --version 2>&1 | tail -n1), schemas for Kubernetes $K8S_VERSION"
  log "checkov   $(checkov --version 2>&1 | tail -n1)"
  log "promtool  $(promtool --version 2>&1 | head -n1)"
  if have_kubectl; then
    log "kubectl   $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
  else
    log "kubectl   absent: overlays rendered by the Python renderer (deploy/tools/deploycheck.py)"
  fi
}

yaml_lint() {
  yamllint -c "$DEPLOY/.yamllint" --strict "$DEPLOY"
  log "yamllint: every YAML file in deploy/ is clean"
}

rules() {
  "$PY" "$TOOL" sync-rules --check
  promtool check rules "$DEPLOY/prometheus/rules.yml"
  promtool test rules "$DEPLOY/prometheus/rules_test.yml"
}

KUSTOMIZATIONS=()
for k in "$DEPLOY"/kubernetes/base "$DEPLOY"/kubernetes/overlays/*/; do
  [[ -f "$k/kustomization.yaml" ]] && KUSTOMIZATIONS+=("${k%/}")
done

# Renders every kustomization to $WORK/<name>.yaml; records the path taken.
render() {
  local k name
  for k in "${KUSTOMIZATIONS[@]}"; do
    name="${k#"$DEPLOY"/kubernetes/}"; name="${name//\//-}"
    if have_kubectl; then
      kubectl kustomize "$k" >"$WORK/$name.yaml"
      log "${k#"$ROOT"/}: rendered by kubectl kustomize"
      "$PY" "$TOOL" render "$k" "$WORK/$name.python.yaml"
      "$PY" "$TOOL" compare "$WORK/$name.yaml" "$WORK/$name.python.yaml"
    elif "$PY" "$TOOL" render "$k" "$WORK/$name.yaml"; then
      log "${k#"$ROOT"/}: rendered by the Python renderer (no kubectl on this machine)"
    else
      log "${k#"$ROOT"/}: DEGRADED: no kubectl and the Python renderer cannot render it:"
      log "  validating its files as they are (patches are not applied)"
      find "$k" -name '*.yaml' ! -name kustomization.yaml ! -path '*/patches/*' -print0 \
        | xargs -0 cat >"$WORK/$name.raw.yaml"
      "$PY" - "$WORK/$name.raw.yaml" "$WORK/$name.yaml" <<'PYEOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
with open(sys.argv[2], "w") as f:
    yaml.safe_dump_all(docs, f)
PYEOF
      touch "$WORK/$name.degraded"
    fi
  done
}

k8s_validate() {
  local k name
  for k in "${KUSTOMIZATIONS[@]}"; do
    name="${k#"$DEPLOY"/kubernetes/}"; name="${name//\//-}"
    log "${k#"$ROOT"/}:"
    "$PY" "$TOOL" split "$WORK/$name.yaml" "$WORK/$name.core.yaml"
    kubernetes-validate --kubernetes-version "$K8S_VERSION" --strict --quiet "$WORK/$name.core.yaml"
    log "  kubernetes-validate --strict against Kubernetes $K8S_VERSION: passed"
  done
}

consistency() {
  local k name
  for k in "${KUSTOMIZATIONS[@]}"; do
    name="${k#"$DEPLOY"/kubernetes/}"; name="${name//\//-}"
    if [[ -e "$WORK/$name.degraded" ]]; then
      log "${k#"$ROOT"/}: SKIP consistency checks (not rendered)"
      continue
    fi
    log "${k#"$ROOT"/}:"
    "$PY" "$TOOL" lint "$WORK/$name.yaml"
  done
}

security_scan() {
  # The files as they are (Dockerfile, base, overlay resources; skips in deploy/.checkov.yaml)...
  (cd "$DEPLOY" && checkov -d . --skip-download --quiet --compact)
  # ...and every rendered overlay, patches applied.
  local k name
  for k in "${KUSTOMIZATIONS[@]}"; do
    [[ $k == */overlays/* ]] || continue
    name="${k#"$DEPLOY"/kubernetes/}"; name="${name//\//-}"
    mkdir -p "$WORK/scan-$name"
    cp "$WORK/$name.yaml" "$WORK/scan-$name/rendered-$name.yaml"
    log "rendered ${k#"$ROOT"/}:"
    checkov -d "$WORK/scan-$name" --framework kubernetes --skip-download --quiet --compact
  done
}

metrics() {
  "$PY" "$TOOL" metrics "$ROOT/docs/metrics.md" "$DEPLOY/grafana/contentgate.json" "$DEPLOY/prometheus/rules.yml"
}

gateway_check() {
  local bin="${CONTENTGATE_BIN:-}"
  if [[ -z $bin ]]; then
    local f
    for f in "$ROOT"/target/release/contentgate "$ROOT"/target/debug/contentgate; do
      if [[ -x $f && ( -z $bin || $f -nt $bin ) ]]; then bin=$f; fi
    done
  fi
  if [[ -z $bin || ! -x $bin ]]; then
    log "SKIP: no contentgate binary (set CONTENTGATE_BIN, or run after cargo build/test); nothing is compiled here"
    return 0
  fi
  log "binary: ${bin#"$ROOT"/}"
  local k name dir cfg
  for k in "${KUSTOMIZATIONS[@]}"; do
    name="${k#"$DEPLOY"/kubernetes/}"; name="${name//\//-}"
    [[ -e "$WORK/$name.degraded" ]] && continue
    dir="$WORK/fs-$name"
    mkdir -p "$dir"
    cfg=$("$PY" "$TOOL" materialize "$WORK/$name.yaml" "$dir" "$ROOT/keys/example-es256.pub.pem" "$ROOT/policies/schema.graphql")
    log "${k#"$ROOT"/}: contentgate check (stand-in secrets, upstream at 127.0.0.1)"
    "$bin" check --config "$cfg" | sed 's/^/  /'
  done
}

step "tools" tools_versions
step "yamllint" yaml_lint
step "Prometheus rules: PrometheusRule in sync, promtool check and unit tests" rules
step "render kustomizations" render
step "kubernetes-validate (core kinds; CRDs skipped)" k8s_validate
step "consistency of the rendered objects with gateway.toml" consistency
step "checkov" security_scan
step "Grafana dashboard and alert rules use documented metrics" metrics
step "contentgate check of the rendered configuration" gateway_check

log ""
if [[ ${#FAILED[@]} -gt 0 ]]; then
  log "deploy/validate.sh: FAILED after $((SECONDS - START)) s:"
  printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
log "deploy/validate.sh: all checks passed in $((SECONDS - START)) s"
