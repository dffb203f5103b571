#!/usr/bin/env python3
"""Offline checks of contentgate's deployment files, driven by deploy/validate.sh.

Subcommands:
  sync-rules [--check]          generate base/prometheusrule.yaml from prometheus/rules.yml
  render DIR OUT                render a kustomization (the subset deploy/ uses) without kubectl
  compare KUBECTL.yaml OURS.yaml  check the fallback renderer against `kubectl kustomize`
  split RENDERED CORE.yaml      keep the core kinds for kubernetes-validate, list skipped CRDs
  lint RENDERED                 consistency checks of the rendered objects with gateway.toml
  metrics DOCS FILE...          every contentgate_ metric (and label value) used exists in DOCS
  materialize RENDERED DIR KEY SCHEMA
                                write the rendered config, policies and stand-in secrets to DIR
                                for `contentgate check`

Needs PyYAML, and Python >= 3.11 (tomllib) or tomli.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import hashlib
import json
import math
import re
import sys
import urllib.parse
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: validate.sh installs tomli
    import tomli as tomllib

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
RULES = DEPLOY / "prometheus" / "rules.yml"
PROMETHEUSRULE = DEPLOY / "kubernetes" / "base" / "prometheusrule.yaml"

# Kinds whose schemas kubernetes-validate does not bundle (custom resources).
CRD_GROUPS = ("monitoring.coreos.com/",)
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PriorityClass", "StorageClass", "PersistentVolume", "IngressClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
}

errors: list[str] = []


def fail(msg: str) -> None:
    errors.append(msg)
    print(f"  FAIL {msg}")


def ok(msg: str) -> None:
    print(f"  ok   {msg}")


def finish() -> int:
    if errors:
        print(f"{len(errors)} problem(s)")
        return 1
    return 0


def load_all(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def dump_all(docs: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump_all(docs, f, sort_keys=True, default_flow_style=False, width=1000)


# ---------------------------------------------------------------------------------------------
# PrometheusRule <- rules.yml

PROMETHEUSRULE_HEADER = """\
---
# GENERATED from deploy/prometheus/rules.yml by `bash deploy/validate.sh --sync-rules`.
# Edit rules.yml (and its unit tests in rules_test.yml), never this file: validate.sh fails
# when the two differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: contentgate
  namespace: contentgate
  labels:
    app.kubernetes.io/name: contentgate
    app.kubernetes.io/component: gateway
    release: prometheus          # the label your Prometheus' ruleSelector matches
spec:
"""


def prometheusrule_text() -> str:
    lines = RULES.read_text(encoding="utf-8").splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("groups:"))
    body = [("  " + l) if l.strip() else "" for l in lines[start:]]
    return PROMETHEUSRULE_HEADER + "\n".join(body) + "\n"


def cmd_sync_rules(args) -> int:
    want = prometheusrule_text()
    have = PROMETHEUSRULE.read_text(encoding="utf-8") if PROMETHEUSRULE.exists() else ""
    # Semantic check as well as the textual one.
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    if yaml.safe_load(want)["spec"]["groups"] != groups:
        fail("internal: generated PrometheusRule does not parse back to rules.yml's groups")
        return finish()
    if have == want:
        ok(f"{PROMETHEUSRULE.relative_to(DEPLOY.parent)} carries exactly the groups of rules.yml")
        return finish()
    if args.check:
        diff = difflib.unified_diff(have.splitlines(), want.splitlines(), "prometheusrule.yaml",
                                    "generated from rules.yml", lineterm="", n=1)
        print("\n".join(list(diff)[:60]))
        fail("prometheusrule.yaml differs from rules.yml: run `bash deploy/validate.sh --sync-rules`")
        return finish()
    PROMETHEUSRULE.write_text(want, encoding="utf-8")
    ok(f"wrote {PROMETHEUSRULE.relative_to(DEPLOY.parent)}")
    return finish()


# ---------------------------------------------------------------------------------------------
# A small kustomize: the features deploy/ uses, exactly as kustomize v5 renders them.

SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator",
                  "images", "patches"}


def go_json(obj) -> str:
    """json.Marshal: sorted keys, no spaces, HTML-safe escapes."""
    s = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for a, b in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                 ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(a, b)
    return s


def configmap_hash(cm: dict) -> str:
    """kustomize's api/hasher: sha256 of the JSON of kind, name and data; 10 chars, encoded.
    kustomize looks the name up as the single field "metadata/name", finds nothing and hashes
    an empty name: so does this."""
    m = {"kind": "ConfigMap", "name": "", "data": cm.get("data", {})}
    hexd = hashlib.sha256(go_json(m).encode("utf-8")).hexdigest()[:10]
    return hexd.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath", "topologySpreadConstraints": "topologyKey"}


def smp(base, patch, key=None):
    """Strategic merge for the shapes deploy/ patches (maps; lists with a merge key)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            raise SystemExit(f"render: unsupported strategic-merge directive in {sorted(patch)}")
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = smp(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        mk = MERGE_KEYS.get(key)
        if key == "ports" and all(isinstance(p, dict) for p in base + patch):
            mk = "containerPort" if any("containerPort" in p for p in base + patch) else "port"
        if mk is None:
            return copy.deepcopy(patch)
        out = [copy.deepcopy(b) for b in base]
        for p in patch:
            for i, b in enumerate(out):
                if b.get(mk) == p.get(mk):
                    out[i] = smp(b, p, None)
                    break
            else:
                out.append(copy.deepcopy(p))
        return out
    return copy.deepcopy(patch)


def pod_spec(doc):
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return doc.get("spec", {}).get("template", {}).get("spec")
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "Pod":
        return doc.get("spec")
    return None


def split_image(image: str):
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image, tag = image.rsplit(":", 1)
    return image, tag, digest


def build(kdir: Path) -> tuple[list[dict], set[str]]:
    """Returns the documents and the names of generated ConfigMaps that get a hash suffix."""
    kfile = kdir / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text(encoding="utf-8"))
    unknown = set(k) - SUPPORTED_KEYS
    if unknown:
        raise SystemExit(f"render: {kfile}: unsupported fields {sorted(unknown)}; use kubectl")
    docs: list[dict] = []
    hashed: set[str] = set()
    for r in k.get("resources", []):
        p = (kdir / r).resolve()
        if p.is_dir():
            sub, sub_hashed = build(p)
            docs += sub
            hashed |= sub_hashed
        else:
            docs += load_all(p)
    for g in k.get("configMapGenerator", []):
        data = {}
        for f in g.get("files", []):
            name, _, src = f.partition("=") if "=" in f else (Path(f).name, "", f)
            data[name] = (kdir / src).read_text(encoding="utf-8")
        for lit in g.get("literals", []):
            name, _, value = lit.partition("=")
            data[name] = value
        unknown = set(g) - {"name", "files", "literals", "behavior", "options"}
        unknown |= set(g.get("options", {})) - {"disableNameSuffixHash"}
        if unknown:
            raise SystemExit(f"render: {kfile}: unsupported generator fields {sorted(unknown)}")
        behavior = g.get("behavior", "create")
        name = g["name"]
        existing = [d for d in docs if d.get("kind") == "ConfigMap"
                    and d["metadata"]["name"] == name]
        if behavior == "create":
            if existing:
                raise SystemExit(f"render: ConfigMap {name} generated twice")
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                  "data": data}
            if "namespace" in k:
                cm["metadata"]["namespace"] = k["namespace"]
            docs.append(cm)
        else:
            if len(existing) != 1:
                raise SystemExit(f"render: {behavior} of ConfigMap {name} without a base")
            cm = existing[0]
            cm["data"] = data if behavior == "replace" else {**cm.get("data", {}), **data}
        opts = g.get("options", {})
        if behavior != "create" and "disableNameSuffixHash" not in opts:
            pass  # a merge or replace keeps the base generator's choice, as kustomize does
        elif opts.get("disableNameSuffixHash"):
            hashed.discard(name)
        else:
            hashed.add(name)
    for patch in k.get("patches", []):
        target = patch.get("target", {})
        if set(patch) - {"path", "target"} or set(target) - {"kind", "name"}:
            raise SystemExit(f"render: {kfile}: only `patches: [{{path, target: {{kind, name}}}}]`"
                             " is supported")
        for p in load_all(kdir / patch["path"]):
            kind = target.get("kind", p.get("kind"))
            name = target.get("name", p["metadata"]["name"])
            targets = [d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
            if len(targets) != 1:
                raise SystemExit(f"render: patch {patch['path']} matches {len(targets)} objects")
            t = targets[0]
            merged = smp(t, {kk: vv for kk, vv in p.items() if kk not in ("apiVersion", "kind")})
            t.clear()
            t.update(merged)
    if "namespace" in k:
        for d in docs:
            if d.get("kind") not in CLUSTER_SCOPED:
                d.setdefault("metadata", {})["namespace"] = k["namespace"]
    for img in k.get("images", []):
        for d in docs:
            spec = pod_spec(d)
            if not spec:
                continue
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                name, tag, digest = split_image(c["image"])
                if name != img["name"]:
                    continue
                name = img.get("newName", name)
                if "digest" in img:
                    c["image"] = f"{name}@{img['digest']}"
                else:
                    tag = img.get("newTag", tag)
                    c["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest and "newTag" not in img else "")
    return docs, hashed


def render(kdir: Path) -> list[dict]:
    docs, hashed = build(kdir)
    renames = {}
    for d in docs:
        if d.get("kind") == "ConfigMap" and d["metadata"]["name"] in hashed:
            old = d["metadata"]["name"]
            d["metadata"]["name"] = f"{old}-{configmap_hash(d)}"
            renames[old] = d["metadata"]["name"]
    for d in docs:
        spec = pod_spec(d)
        if not spec:
            continue
        for v in spec.get("volumes", []):
            if "configMap" in v and v["configMap"].get("name") in renames:
                v["configMap"]["name"] = renames[v["configMap"]["name"]]
            for src in v.get("projected", {}).get("sources", []):
                if "configMap" in src and src["configMap"].get("name") in renames:
                    src["configMap"]["name"] = renames[src["configMap"]["name"]]
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("configMapKeyRef")
                if ref and ref.get("name") in renames:
                    ref["name"] = renames[ref["name"]]
            for e in c.get("envFrom", []):
                ref = e.get("configMapRef")
                if ref and ref.get("name") in renames:
                    ref["name"] = renames[ref["name"]]
    return docs


def cmd_render(args) -> int:
    docs = render(Path(args.dir))
    dump_all(docs, Path(args.out))
    print(f"  rendered {len(docs)} objects from {args.dir} (Python fallback renderer)")
    return 0


def keyed(docs):
    return {(d.get("kind"), d.get("metadata", {}).get("namespace"), d["metadata"]["name"]): d
            for d in docs}


def cmd_compare(args) -> int:
    theirs, ours = keyed(load_all(Path(args.kubectl))), keyed(load_all(Path(args.ours)))
    if set(theirs) != set(ours):
        fail(f"objects differ: kubectl only {sorted(map(str, set(theirs) - set(ours)))}, "
             f"fallback only {sorted(map(str, set(ours) - set(theirs)))}")
    for key in sorted(set(theirs) & set(ours), key=str):
        if theirs[key] != ours[key]:
            a = yaml.safe_dump(theirs[key], sort_keys=True).splitlines()
            b = yaml.safe_dump(ours[key], sort_keys=True).splitlines()
            print("\n".join(list(difflib.unified_diff(a, b, "kubectl", "fallback", lineterm=""))[:40]))
            fail(f"{key}: the fallback renderer differs from kubectl kustomize")
    if not errors:
        ok(f"the fallback renderer reproduces kubectl kustomize exactly ({len(ours)} objects)")
    return finish()


# ---------------------------------------------------------------------------------------------
# kubernetes-validate input

def cmd_split(args) -> int:
    core, skipped = [], []
    for d in load_all(Path(args.rendered)):
        if str(d.get("apiVersion", "")).startswith(CRD_GROUPS):
            skipped.append(f"{d['kind']}/{d['metadata']['name']} ({d['apiVersion']})")
        else:
            core.append(d)
    dump_all(core, Path(args.core))
    print(f"  {len(core)} core objects to validate strictly")
    for s in skipped:
        print(f"  SKIP {s}: custom resource, no schema bundled with kubernetes-validate "
              "(checked by the consistency checks instead)")
    return 0


# ---------------------------------------------------------------------------------------------
# Consistency checks of the rendered objects

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> float:
    parts = DURATION.findall(text)
    if not parts or DURATION.sub("", text).strip():
        raise ValueError(f"unsupported duration {text!r}")
    return sum(float(n) * UNITS[u] for n, u in parts)


def quantity(q) -> float:
    q = str(q)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6,
                "G": 1e9, "m": 0.001}
    for s, f in suffixes.items():
        if q.endswith(s):
            return float(q[: -len(s)]) * f
    return float(q)


def labels_match(selector: dict, labels: dict) -> bool:
    ml = selector.get("matchLabels", {})
    if selector.get("matchExpressions"):
        return False
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


KUSTOMIZE_HASH = re.compile(r"-[2456789bcdfghkmt]{10}$")
POLICY_FILES = {"public.toml", "tokens.toml", "tokens.json", "revoked.txt", "schema.graphql"}


def cmd_lint(args) -> int:
    docs = load_all(Path(args.rendered))
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    cms = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    deps = by_kind.get("Deployment", [])
    if len(deps) != 1:
        fail(f"expected one Deployment, found {len(deps)}")
        return finish()
    dep = deps[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    containers = {c["name"]: c for c in pod["containers"]}
    c = containers.get("contentgate")
    if not c:
        fail("no container named contentgate")
        return finish()
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"].rstrip("/"): m for m in c.get("volumeMounts", [])}

    # Deployment shape
    (ok if spec.get("replicas", 1) >= 3 else fail)(f"replicas = {spec.get('replicas', 1)} (>= 3)")
    ru = spec.get("strategy", {}).get("rollingUpdate", {})
    (ok if spec.get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate"
     and str(ru.get("maxUnavailable")) == "0" else fail)("rolling update with maxUnavailable: 0")
    (ok if labels_match(spec["selector"], pod_labels) else fail)("Deployment selector matches its pods")
    tsc = pod.get("topologySpreadConstraints", [])
    (ok if tsc and all(labels_match(t.get("labelSelector", {}), pod_labels) for t in tsc) else fail)(
        f"{len(tsc)} topology spread constraint(s) selecting the gateway's pods")

    def probe(name, path):
        p = c.get(name, {}).get("httpGet", {})
        port = p.get("port")
        good = p.get("path") == path and (port == "admin" or port == ports.get("admin"))
        (ok if good else fail)(f"{name} GET {path} on the admin port")

    probe("livenessProbe", "/healthz")
    probe("readinessProbe", "/readyz")
    probe("startupProbe", "/readyz")
    res = c.get("resources", {})
    need = [f"{kind}.{r}" for kind in ("requests", "limits") for r in ("cpu", "memory")
            if r not in res.get(kind, {})]
    (ok if not need else fail)("cpu and memory requests and limits" + (f" (missing {need})" if need else ""))
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    checks = {
        "readOnlyRootFilesystem": csc.get("readOnlyRootFilesystem") is True,
        "allowPrivilegeEscalation: false": csc.get("allowPrivilegeEscalation") is False,
        "runAsNonRoot": (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True),
        "capabilities drop ALL": "ALL" in csc.get("capabilities", {}).get("drop", []),
        "seccomp RuntimeDefault": (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
        "no service account token": pod.get("automountServiceAccountToken") is False,
    }
    bad = [k for k, v in checks.items() if not v]
    (ok if not bad else fail)("restrictive securityContext" + (f" (missing {bad})" if bad else ""))
    tmp = mounts.get("/tmp")
    (ok if tmp and "emptyDir" in volumes.get(tmp["name"], {}) else fail)("emptyDir mounted on /tmp")

    # The gateway's configuration, as mounted
    args_ = c.get("args", []) + c.get("command", [])
    cfg_path = None
    for i, a in enumerate(args_):
        if a in ("--config", "-c") and i + 1 < len(args_):
            cfg_path = args_[i + 1]
        elif a.startswith("--config="):
            cfg_path = a.split("=", 1)[1]
    env = {e["name"]: e for e in c.get("env", [])}
    if cfg_path is None and "CONTENTGATE_CONFIG" in env:
        cfg_path = env["CONTENTGATE_CONFIG"].get("value")
    if not cfg_path:
        fail("the container does not name its gateway.toml (--config)")
        return finish()

    def volume_at(path: str):
        """The (mount, volume) whose mountPath contains path, the deepest one."""
        best = None
        for mp, m in mounts.items():
            if path == mp or path.startswith(mp + "/"):
                if best is None or len(mp) > len(best[0]):
                    best = (mp, m)
        if not best:
            return None, None
        return best[1], volumes.get(best[1]["name"])

    cfg_dir, cfg_file = cfg_path.rsplit("/", 1)
    m, v = volume_at(cfg_path)
    if not v or "configMap" not in v:
        fail(f"{cfg_path} is not on a ConfigMap volume")
        return finish()
    cfg_cm = cms.get(v["configMap"]["name"])
    if not cfg_cm or cfg_file not in cfg_cm.get("data", {}):
        fail(f"ConfigMap {v['configMap']['name']} (mounted for {cfg_path}) has no {cfg_file}")
        return finish()
    (ok if KUSTOMIZE_HASH.search(cfg_cm["metadata"]["name"]) else fail)(
        f"gateway ConfigMap {cfg_cm['metadata']['name']} is name-hashed (an edit rolls the pods)")
    try:
        cfg = tomllib.loads(cfg_cm["data"][cfg_file])
    except tomllib.TOMLDecodeError as e:
        fail(f"{cfg_file} does not parse: {e}")
        return finish()
    server = cfg.get("server", {})
    grace = seconds(server.get("grace_period", "15s"))
    shutdown = seconds(server.get("shutdown_timeout", "5s"))
    pre = c.get("lifecycle", {}).get("preStop", {})
    pre_sleep = 0.0
    if "sleep" in pre:
        pre_sleep = float(pre["sleep"]["seconds"])
    elif "exec" in pre:
        cmd = pre["exec"].get("command", [])
        nums = [x for x in cmd if re.fullmatch(r"\d+(\.\d+)?", str(x))]
        if cmd and "sleep" in " ".join(map(str, cmd)) and nums:
            pre_sleep = float(nums[-1])
    (ok if pre_sleep > 0 else fail)(f"preStop sleeps {pre_sleep:g} s")
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    budget = pre_sleep + grace + shutdown
    (ok if budget < tgps else fail)(
        f"shutdown budget preStop {pre_sleep:g} s + grace_period {grace:g} s + shutdown_timeout "
        f"{shutdown:g} s = {budget:g} s < terminationGracePeriodSeconds {tgps}")

    def port_of(addr: str) -> int:
        return int(addr.rsplit(":", 1)[1])

    def binds_all(addr: str) -> bool:
        return addr.rsplit(":", 1)[0] in ("0.0.0.0", "[::]")

    listeners = [l["address"] for l in cfg.get("listener", [])]
    (ok if any(binds_all(a) and port_of(a) == ports.get("http") for a in listeners) else fail)(
        f"a [[listener]] on 0.0.0.0:{ports.get('http')} (container port http); have {listeners}")
    admin = cfg.get("admin", {}).get("address", "")
    (ok if admin and binds_all(admin) and port_of(admin) == ports.get("admin") else fail)(
        f"[admin] address {admin!r} listens on the pod IP at container port admin ({ports.get('admin')})")
    rd = server.get("runtime_dir")
    m, v = volume_at(rd) if rd else (None, None)
    (ok if rd and v and "emptyDir" in v and not m.get("readOnly") else fail)(
        f"[server] runtime_dir {rd!r} is on a writable emptyDir")
    threads = server.get("threads")
    cpu = quantity(res.get("limits", {}).get("cpu", 0))
    if threads is not None and cpu:
        (ok if threads <= math.ceil(cpu) else fail)(f"[server] threads {threads} <= CPU limit {cpu:g}")
    cache = cfg.get("cache", {})
    if cache.get("enabled", True):
        mb = cache.get("max_bytes", 256 * 2**20)
        mem = quantity(res.get("limits", {}).get("memory", 0))
        (ok if mem >= 2 * mb else fail)(
            f"memory limit {mem / 2**20:g} MiB >= 2 x [cache] max_bytes ({mb / 2**20:g} MiB)")

    # Policies: a directory mount of an unhashed ConfigMap
    pdir = cfg.get("policies", {}).get("dir", "policies")
    if not pdir.startswith("/"):
        pdir = f"{cfg_dir}/{pdir}"
    pdir = pdir.rstrip("/")
    pm = mounts.get(pdir)
    pv = volumes.get(pm["name"]) if pm else None
    if not pm or not pv or "configMap" not in pv:
        fail(f"[policies] dir {pdir} is not the mountPath of a ConfigMap volume")
    else:
        (ok if "subPath" not in pm and "subPathExpr" not in pm else fail)(
            f"policies mounted as a directory at {pdir} (no subPath)")
        (ok if not pv["configMap"].get("items") else fail)(
            "policies volume projects every key (no items list freezing the file set)")
        name = pv["configMap"]["name"]
        pcm = cms.get(name)
        (ok if pcm and not KUSTOMIZE_HASH.search(name) else fail)(
            f"policies ConfigMap {name!r} exists and has no name hash (edits hot-reload)")
        if pcm:
            files = set(pcm.get("data", {})) | set(pcm.get("binaryData", {}))
            if "cluster" in cfg:
                ok("policies come from the cluster's Redis ([cluster]): the folder need not hold public.toml")
            else:
                (ok if "public.toml" in files else fail)("policies hold public.toml")
            stray = files - POLICY_FILES
            (ok if not stray else fail)("policies hold only files the gateway reads" + (f" (stray: {sorted(stray)})" if stray else ""))
            size = sum(len(x.encode()) for x in pcm.get("data", {}).values())
            (ok if size < 900 * 1024 else fail)(f"policies ConfigMap is {size} bytes (< 900 KiB of the 1 MiB limit)")
    for mp, mnt in mounts.items():
        vol = volumes.get(mnt["name"], {})
        if "subPath" in mnt and ("configMap" in vol or "secret" in vol):
            fail(f"{mp} mounts a ConfigMap/Secret with subPath: it never sees updates")

    # Secret and key files referenced by gateway.toml are on mounted volumes
    refs = []
    for up in cfg.get("upstream", {}).values():
        refs.append(("upstream credential", up.get("credential", {})))
    refs.append(("[admin]", {"token_file": cfg.get("admin", {}).get("token_file"),
                             "token_env": cfg.get("admin", {}).get("token_env")}))
    w = cfg.get("webhooks", {})
    refs.append(("[webhooks]", {"secret_file": w.get("secret_file"), "secret_env": w.get("secret_env")}))
    for key in cfg.get("auth", {}).get("key", []):
        refs.append((f"[[auth.key]] {key.get('kid')}", key))
    if cfg.get("auth", {}).get("jwks_file"):
        refs.append(("[auth] jwks_file", {"jwks_file": cfg["auth"]["jwks_file"]}))
    cl = cfg.get("cluster", {})
    refs.append(("[cluster]", {"password_file": cl.get("password_file"), "redis_file": cl.get("redis_file")}))
    for what, ref in refs:
        for field in ("token_file", "secret_file", "public_key_file", "jwks_file", "password_file",
                      "redis_file"):
            p = ref.get(field)
            if not p:
                continue
            if not p.startswith("/"):
                p = f"{cfg_dir}/{p}"
            _, vol = volume_at(p)
            (ok if vol and ("secret" in vol or "configMap" in vol or "projected" in vol) else fail)(
                f"{what} {field} {p} is on a mounted Secret/ConfigMap volume")
        for field in ("token_env", "secret_env"):
            var = ref.get(field)
            if var:
                (ok if var in env else fail)(f"{what} {field} {var} is set in the container's env")

    # Service, HPA, PDB, NetworkPolicy, ServiceMonitor, PrometheusRule, Ingress
    svcs = by_kind.get("Service", [])
    svc = svcs[0] if svcs else None
    if not svc:
        fail("no Service")
    else:
        (ok if labels_match({"matchLabels": svc["spec"].get("selector", {})}, pod_labels) else fail)(
            "Service selects the gateway's pods")
        tps = {p.get("name"): p.get("targetPort") for p in svc["spec"].get("ports", [])}
        (ok if tps.get("http") in ("http", ports.get("http")) and tps.get("admin") in ("admin", ports.get("admin")) else fail)(
            f"Service exposes the proxy (http) and admin ports; have {tps}")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []) or [None]:
        if not hpa:
            fail("no HorizontalPodAutoscaler")
            continue
        ref = hpa["spec"]["scaleTargetRef"]
        (ok if ref.get("kind") == "Deployment" and ref.get("name") == dep["metadata"]["name"]
         and hpa["spec"].get("minReplicas", 1) >= 3 else fail)(
            f"HPA scales {ref.get('kind')}/{ref.get('name')} from {hpa['spec'].get('minReplicas')} to {hpa['spec'].get('maxReplicas')}")
    for pdb in by_kind.get("PodDisruptionBudget", []) or [None]:
        if not pdb:
            fail("no PodDisruptionBudget")
            continue
        (ok if labels_match(pdb["spec"]["selector"], pod_labels) else fail)("PDB selects the gateway's pods")
    nps = [n for n in by_kind.get("NetworkPolicy", []) if labels_match(n["spec"].get("podSelector", {}), pod_labels)]
    if not nps:
        fail("no NetworkPolicy selects the gateway's pods")
    for np in nps:
        types = np["spec"].get("policyTypes", [])
        (ok if {"Ingress", "Egress"} <= set(types) else fail)(f"NetworkPolicy {np['metadata']['name']} isolates ingress and egress")
        for rule in np["spec"].get("ingress", []):
            rports = [p.get("port") for p in rule.get("ports", [])]
            if rule.get("ports") and not any(p in ("admin", ports.get("admin")) for p in rports):
                continue
            peers = rule.get("from", [])
            mon = peers and all(
                p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"
                for p in peers)
            (ok if mon else fail)(f"admin port admitted only from the monitoring namespace (rule ports {rports or 'all'})")
        eg = np["spec"].get("egress", [])
        dns = any({(p.get("port"), p.get("protocol", "TCP")) for p in r.get("ports", [])} >= {(53, "UDP"), (53, "TCP")} for r in eg)
        (ok if dns else fail)("egress allows DNS (53/udp+tcp): upstream hosts are resolved at start-up")
        for uname, up in cfg.get("upstream", {}).items():
            u = urllib.parse.urlsplit(up.get("url", ""))
            uport = u.port or (443 if u.scheme == "https" else 80)
            allowed = any(uport in [p.get("port") for p in r.get("ports", [])] or not r.get("ports")
                          for r in eg)
            (ok if allowed else fail)(f"egress allows upstream {uname} ({u.hostname}:{uport})")
    for sm in by_kind.get("ServiceMonitor", []) or [None]:
        if not sm:
            fail("no ServiceMonitor")
            continue
        eps = sm["spec"].get("endpoints", [])
        (ok if svc and labels_match(sm["spec"]["selector"], svc["metadata"].get("labels", {}))
         and any(e.get("port") == "admin" and e.get("path", "/metrics") == "/metrics" for e in eps) else fail)(
            "ServiceMonitor scrapes the Service's admin port at /metrics")
        ns_sel = sm["spec"].get("namespaceSelector", {})
        (ok if not ns_sel.get("matchNames") or sm["metadata"].get("namespace") in ns_sel["matchNames"] else fail)(
            "ServiceMonitor looks in its own namespace")
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    for pr in by_kind.get("PrometheusRule", []) or [None]:
        (ok if pr and pr["spec"]["groups"] == rules else fail)(
            "PrometheusRule groups are identical to deploy/prometheus/rules.yml")
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                s = path["backend"].get("service", {})
                port = s.get("port", {})
                (ok if svc and s.get("name") == svc["metadata"]["name"] and port.get("name", port.get("number")) in ("http", 80) else fail)(
                    f"Ingress {rule.get('host')}{path['path']} -> Service {s.get('name')} port {port} (the proxy, never admin)")
    return finish()


# ---------------------------------------------------------------------------------------------
# Metric references (Grafana dashboard, alert rules) against docs/metrics.md

def documented_metrics(docs: Path) -> dict[str, dict]:
    out = {}
    row = re.compile(r"^\|\s*`(contentgate_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|(.*?)\|")
    for line in docs.read_text(encoding="utf-8").splitlines():
        m = row.match(line)
        if not m:
            continue
        name, mtype, labels_col = m.groups()
        labels = {}
        for lm in re.finditer(r"`([a-z_]+)`\s*(?:\(([^)]*)\))?", labels_col):
            values = set()
            for item in (lm.group(2) or "").split(","):
                item = item.strip()
                if ":" in item:
                    item = item.split(":", 1)[1].strip()
                rng = re.fullmatch(r"(\d)xx\s*(?:…|\.\.\.?)\s*(\d)xx", item)
                if rng:
                    values |= {f"{d}xx" for d in range(int(rng.group(1)), int(rng.group(2)) + 1)}
                elif item:
                    values.add(item)
            labels[lm.group(1)] = values
        out[name] = {"type": mtype, "labels": labels}
    return out


TARGET_LABELS = {"job", "namespace", "pod", "instance", "service", "container", "le"}
SELECTOR = re.compile(r"(contentgate_[a-z0-9_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def check_expr(expr: str, where: str, metrics: dict, used: set) -> None:
    for m in SELECTOR.finditer(expr):
        name, sel = m.group(1), m.group(2) or ""
        base = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in metrics:
                base = name[: -len(suffix)]
                if metrics[base]["type"] != "histogram":
                    fail(f"{where}: {name}: {base} is a {metrics[base]['type']}, not a histogram")
        if base not in metrics:
            fail(f"{where}: {name} is not in docs/metrics.md")
            continue
        used.add(base)
        known = metrics[base]["labels"]
        for lm in MATCHER.finditer(sel):
            label, op, value = lm.groups()
            if label in TARGET_LABELS or (label == "le" and name.endswith("_bucket")):
                continue
            if label not in known:
                fail(f"{where}: {name} has no label {label!r} (docs/metrics.md: {sorted(known) or 'none'})")
                continue
            if "$" in value or not known[label]:
                continue
            alts = value.split("|") if op in ("=~", "!~") else [value]
            for alt in alts:
                if re.fullmatch(r"[A-Za-z0-9_ -]+", alt) and alt not in known[label]:
                    fail(f"{where}: {name}{{{label}{op}\"{value}\"}}: {alt!r} is not a documented value of {label}")


def exprs_in_dashboard(node, path="dashboard"):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query") and isinstance(v, str):
                yield path, v
            elif k == "query" and isinstance(v, dict) and isinstance(v.get("query"), str):
                yield path, v["query"]
            else:
                title = node.get("title")
                yield from exprs_in_dashboard(v, f"{path} > {title}" if title and k in ("targets", "panels") else path)
    elif isinstance(node, list):
        for item in node:
            yield from exprs_in_dashboard(item, path)


def cmd_metrics(args) -> int:
    metrics = documented_metrics(Path(args.docs))
    if len(metrics) < 10:
        fail(f"only {len(metrics)} metrics parsed from {args.docs}: is the table still there?")
        return finish()
    print(f"  {len(metrics)} metrics documented in {args.docs}")
    for f in args.files:
        path = Path(f)
        used: set[str] = set()
        n_before = len(errors)
        if path.suffix == ".json":
            try:
                dash = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                fail(f"{f} is not valid JSON: {e}")
                continue
            for key in ("title", "uid", "panels", "schemaVersion"):
                if key not in dash:
                    fail(f"{f}: no {key!r}")
            ids = []
            def walk(panels):
                for p in panels:
                    ids.append(p.get("id"))
                    walk(p.get("panels", []))
            walk(dash.get("panels", []))
            if len(ids) != len(set(ids)) or None in ids:
                fail(f"{f}: panel ids must be present and unique")
            n = 0
            for where, expr in exprs_in_dashboard(dash):
                n += 1
                check_expr(expr, f"{path.name}: {where}", metrics, used)
            label = f"{n} queries"
        else:
            n = 0
            for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
                for r in g["rules"]:
                    n += 1
                    check_expr(r["expr"], f"{path.name}: {r.get('alert') or r.get('record')}", metrics, used)
            label = f"{n} rules"
        if len(errors) == n_before:
            ok(f"{path.name}: {label} use {len(used)} metrics, all documented with their labels and values")
        unused = sorted(set(metrics) - used)
        if path.suffix == ".json" and unused:
            print(f"  note {path.name} does not chart: {', '.join(unused)}")
    return finish()


# ---------------------------------------------------------------------------------------------
# Files for `contentgate check`

def cmd_materialize(args) -> int:
    """Writes the rendered gateway.toml and policies under DIR, with the container's mount paths
    moved under DIR, stand-in secrets, the repository's example public key for every PEM key, and the
    upstream pointed at 127.0.0.1 (the check resolves the host; there is no network here)."""
    docs = load_all(Path(args.rendered))
    root = Path(args.dir)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = next(x for x in pod["containers"] if x["name"] == "contentgate")
    cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    cfg_path = None
    for m in c["volumeMounts"]:
        v = volumes[m["name"]]
        target = root / m["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in v:
            for name, text in cms[v["configMap"]["name"]].get("data", {}).items():
                (target / name).write_text(text, encoding="utf-8")
    a = c.get("args", [])
    cfg_path = a[a.index("--config") + 1]
    cfg_file = root / cfg_path.lstrip("/")
    text = cfg_file.read_text(encoding="utf-8")
    cfg = tomllib.loads(text)
    mps = [m["mountPath"].rstrip("/") for m in c["volumeMounts"]]

    def move(mt):
        p = mt.group(1)
        inside = any(p == mp or p.startswith(mp + "/") for mp in mps)
        return f'"{root}{p}"' if inside else mt.group(0)

    text = re.sub(r'"(/[^"]*)"', move, text)
    text = re.sub(r'url = "https?://[^/"]+', 'url = "http://127.0.0.1:9', text)
    cfg_file.write_text(text, encoding="utf-8")
    for up in cfg.get("upstream", {}).values():
        p = up.get("credential", {}).get("token_file")
        if p:
            Path(f"{root}{p}").write_text("stand-in-service-token\n")
    for p in (cfg.get("admin", {}).get("token_file"), cfg.get("webhooks", {}).get("secret_file"),
              cfg.get("cluster", {}).get("password_file")):
        if p:
            Path(f"{root}{p}").write_text("stand-in-secret\n")
    for key in cfg.get("auth", {}).get("key", []):
        if key.get("public_key_file"):
            if key.get("algorithm") != "ES256":
                print(f"  note no stand-in for {key['algorithm']} key {key['kid']}")
                continue
            Path(f"{root}{key['public_key_file']}").write_bytes(Path(args.key).read_bytes())
        if key.get("secret_file"):
            Path(f"{root}{key['secret_file']}").write_text("stand-in-hmac-secret-of-32-bytes!!\n")
    pdir = cfg.get("policies", {}).get("dir", "policies")
    pdir = Path(f"{root}{pdir}") if pdir.startswith("/") else cfg_file.parent / pdir
    if not (pdir / "schema.graphql").exists():
        # Without an SDL file the gateway introspects the upstream at start-up; there is no
        # upstream here, so compile the policies against the repository's sample schema.
        (pdir / "schema.graphql").write_bytes(Path(args.schema).read_bytes())
        print("  note no schema.graphql in these policies (introspection at start-up): "
              "checked against policies/schema.graphql", file=sys.stderr)
    print(str(cfg_file))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sync-rules"); p.add_argument("--check", action="store_true"); p.set_defaults(fn=cmd_sync_rules)
    p = sub.add_parser("render"); p.add_argument("dir"); p.add_argument("out"); p.set_defaults(fn=cmd_render)
    p = sub.add_parser("compare"); p.add_argument("kubectl"); p.add_argument("ours"); p.set_defaults(fn=cmd_compare)
    p = sub.add_parser("split"); p.add_argument("rendered"); p.add_argument("core"); p.set_defaults(fn=cmd_split)
    p = sub.add_parser("lint"); p.add_argument("rendered"); p.set_defaults(fn=cmd_lint)
    p = sub.add_parser("metrics"); p.add_argument("docs"); p.add_argument("files", nargs="+"); p.set_defaults(fn=cmd_metrics)
    p = sub.add_parser("materialize"); p.add_argument("rendered"); p.add_argument("dir"); p.add_argument("key"); p.add_argument("schema"); p.set_defaults(fn=cmd_materialize)
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
