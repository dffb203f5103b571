#!/usr/bin/env python3
"""Soak driver for benches/soak.sh: mixed traffic against one contentgate while its policies
change every second and jtis are revoked mid-run. Python 3 standard library only.

Subcommands (soak.sh calls them in this order):
  init  --work DIR --bin BIN --gw-port P --admin-port P --upstream-port P --duration S ...
        writes the gateway's config folder DIR/gw/ (gateway.toml, HS256 secrets, policies/) and
        DIR/tokens.json (minted with `contentgate token mint`)
  wait  --url URL --timeout S            polls until URL answers 200
  run   --work DIR --gw-pid PID --gw-port P --admin-port P --duration S --log GATEWAY_LOG ...
        traffic, policy churn, revocations, sampling; prints the results table, writes
        DIR/results.json and DIR/samples.csv; exit 1 if a criterion fails
  logscan --log FILE                     summary of WARN/ERROR lines of the gateway's JSON log

Time base: time.monotonic() in this process for every send/receive/write/observe instant.
"""

import argparse
import collections
import datetime
import http.client
import json
import multiprocessing
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

ISSUER = "contentgate-soak"
AUDIENCE = "soak"
KID = "soak-hs256"

# Seeded ids of the sample content API (src/demo/content_api.rs, mod seed).
AUTHOR_ADA = "clseedauthorada0000000001"
POST_CACHING = "clseedpostcaching00000002"

N_FILLERS = 200          # extra registry entries, a few of them rotating in and out each tick
ACTIVE_VICTIMS = 4       # victims in use at any time; the oldest is revoked at each revocation
PROBE_TIMEOUT = 30.0     # a revocation not applied within this is a failure

# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def gw_dir(work):
    """The gateway's config folder. The gateway watches it (and policies/ below it) for changes,
    so nothing else is written there: logs and results stay in WORK, temp files in WORK/staging."""
    return os.path.join(work, "gw")


def policies_dir(work):
    return os.path.join(gw_dir(work), "policies")


def staging(work, name):
    d = os.path.join(work, "staging")
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, name)


def atomic_write(work, path, text):
    """Write a temp file in WORK/staging (same filesystem, not watched) and rename it into place."""
    tmp = staging(work, os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


def msum(m, name, **labels):
    """Sum of a metric family's samples whose labels include all of `labels`."""
    total = 0.0
    for k, v in m.items():
        if k == name or k.startswith(name + "{"):
            if all(f'{lk}="{lv}"' in k for lk, lv in labels.items()):
                total += v
    return total


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def med(values):
    return statistics.median(values) if values else float("nan")


class Http:
    """One keep-alive HTTP/1.1 connection, reopened on error."""

    def __init__(self, port, timeout=10.0):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
            data = r.read()
        except Exception:
            self.close()
            raise
        if r.will_close:
            self.close()
        return r, data

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None


# --------------------------------------------------------------------------------------------
# Policy files
# --------------------------------------------------------------------------------------------


def render_public(tick):
    return f"""# soak: public policy, tick {tick}
default_stage = "PUBLISHED"
introspection = {"true" if tick % 2 == 0 else "false"}

[[permission]]
action = "read"
models = ["Post", "Author"]
stages = ["PUBLISHED"]
"""


READ = '[[token.permission]]\naction = "read"\n'


def token(jti, name, stage, permissions=READ):
    """One registry entry (TOML)."""
    return f'\n[[token]]\njti = "{jti}"\nname = "{name}"\ndefault_stage = "{stage}"\n{permissions}'


def render_tokens(tick, victims):
    """Changes each tick: the editor's publish grant, the flip token's default stage, the churn
    token's presence (every 3 ticks) and which 10 of the fillers are absent."""
    post_grant = '[[token.permission]]\naction = "{}"\nmodels = ["Post"]\n'.format
    published_only = READ + 'stages = ["PUBLISHED"]\n'
    editor = READ + post_grant("create") + post_grant("update")
    if tick % 2 == 1:
        editor += post_grant("publish")
    out = [f"# soak: token registry, tick {tick}\n"]
    out.append(token("soak-editor", "editor", "DRAFT", editor))
    out.append(token("soak-reader", "reader", "PUBLISHED", published_only))
    out.append(token("soak-flip", "flip", "DRAFT" if tick % 2 == 1 else "PUBLISHED"))
    if (tick // 3) % 2 == 0:
        out.append(token("soak-churn", "churn", "PUBLISHED", published_only))
    for v in victims:
        out.append(token(v, v, "PUBLISHED"))
    gap = (tick * 7) % N_FILLERS
    absent = {(gap + i) % N_FILLERS for i in range(10)}
    for i in range(N_FILLERS):
        if i not in absent:
            out.append(
                token(
                    f"soak-filler-{i:03d}",
                    f"filler-{i:03d}",
                    "PUBLISHED",
                    READ + 'models = ["Author"]\n',
                )
            )
    return "".join(out)


def render_revoked(jtis):
    return "# soak: revoked jtis (a comment line keeps an empty set valid)\n" + "".join(
        j + "\n" for j in jtis
    )


# --------------------------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------------------------


def cmd_init(a):
    work = gw_dir(a.work)
    os.makedirs(os.path.join(work, "policies"), exist_ok=True)
    secret = os.urandom(32).hex()
    other = os.urandom(32).hex()
    for name, text in (("secret", secret), ("other-secret", other), ("service-token", "soak-service-token")):
        with open(os.path.join(work, name), "w") as f:
            f.write(text)
    config = f"""# Generated by benches/soak.py init.
[server]
threads = 2
runtime_dir = "run"
grace_period = "1s"
shutdown_timeout = "2s"

[[listener]]
address = "127.0.0.1:{a.gw_port}"

[admin]
address = "127.0.0.1:{a.admin_port}"

[upstream.cms]
url = "http://127.0.0.1:{a.upstream_port}/v2/demo/master"
connect_timeout = "2s"
read_timeout = "10s"
total_timeout = "15s"
credential = {{ mode = "replace", token_file = "service-token" }}

[[endpoint]]
path = "/content"
kind = "content"

[[endpoint]]
path = "/cdn"
kind = "cdn"

[auth]
issuers = ["{ISSUER}"]
audiences = ["{AUDIENCE}"]
leeway = "1s"

[[auth.key]]
kid = "{KID}"
algorithm = "HS256"
secret_file = "secret"

[cms]
stages = ["DRAFT", "PUBLISHED"]
locales = ["en", "de"]

[policies]
dir = "policies"           # no schema.graphql: the schema map is introspected at start-up
poll_interval = "2s"

[cache]
# Entries live at most TTL + max(stale windows) = 50 s, so the cache is at its steady size
# before the first measurement window (after the warm-up).
max_bytes = 33554432
max_entry_bytes = 262144
default_ttl = "20s"
model_ttl = {{ Post = "10s" }}
stale_while_revalidate = "10s"
stale_if_error = "30s"
fetch_deadline = "10s"
content_reads = false

[log]
level = "info"
format = "json"
"""
    with open(os.path.join(work, "gateway.toml"), "w") as f:
        f.write(config)

    n_victims = a.duration // a.revoke_interval + ACTIVE_VICTIMS + 2
    victims = [f"soak-victim-{i:03d}" for i in range(n_victims)]

    def mint(jti, secret_file="secret", iss=ISSUER, aud=AUDIENCE, extra=()):
        cmd = [a.bin, "token", "mint", "--alg", "HS256", "--secret-file", os.path.join(work, secret_file),
               "--kid", KID, "--jti", jti, "--iss", iss, "--aud", aud, *extra]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
        assert out.count(".") == 2, f"unexpected mint output {out!r}"
        return out

    tokens = {
        "editor": mint("soak-editor"),
        "reader": mint("soak-reader"),
        "flip": mint("soak-flip"),
        "churn": mint("soak-churn"),
        "victims": {v: mint(v) for v in victims},
        "bad": {
            "bad_signature": mint("soak-reader", secret_file="other-secret"),
            "unknown_jti": mint("soak-not-registered"),
            "bad_audience": mint("soak-reader", aud="someone-else"),
            "bad_issuer": mint("soak-reader", iss="https://evil.example"),
            "expired": mint("soak-reader", extra=("--expires-in", "1s")),
            "malformed": "not.a.jwt",
        },
        "expired_exp": time.time() + 1,
    }
    with open(os.path.join(a.work, "tokens.json"), "w") as f:
        json.dump(tokens, f, indent=1)
    pol = policies_dir(a.work)
    atomic_write(a.work, os.path.join(pol, "public.toml"), render_public(0))
    atomic_write(a.work, os.path.join(pol, "tokens.toml"), render_tokens(0, victims))
    atomic_write(a.work, os.path.join(pol, "revoked.txt"), render_revoked([]))
    print(f"soak: init: {len(victims)} victim tokens, {N_FILLERS} filler tokens, config in {work}/gateway.toml",
          file=sys.stderr)


# --------------------------------------------------------------------------------------------
# wait
# --------------------------------------------------------------------------------------------


def cmd_wait(a):
    u = urllib.parse.urlsplit(a.url)
    deadline = time.monotonic() + a.timeout
    last = None
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
            body = u.path or "/"
            if a.post_json:
                c.request("POST", body, body=a.post_json, headers={"content-type": "application/json"})
            else:
                c.request("GET", body)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return 0
            last = f"HTTP {r.status}"
        except Exception as e:  # not listening yet
            last = repr(e)
        time.sleep(0.1)
    print(f"soak: {a.url} not ready after {a.timeout} s ({last})", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------------------------
# run: shared state
# --------------------------------------------------------------------------------------------


class State:
    def __init__(self, a, tokens):
        self.a = a
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.tokens = tokens
        self.victims = list(tokens["victims"])
        self.victim_set = set(self.victims)
        self.active = self.victims[:ACTIVE_VICTIMS]        # replaced, never mutated in place
        self.next_victim = ACTIVE_VICTIMS
        self.revoked = []                                  # jtis written to revoked.txt
        self.revocations = []                              # dicts, see Revoker
        ctx = multiprocessing.get_context("fork")
        self.mp_stop = ctx.Event()
        self.expected = ctx.Value("i", 0, lock=False)      # revoked count the poller waits for
        self.t_live = ctx.Value("d", 0.0, lock=False)      # monotonic instant it was observed
        self.gen_live = ctx.Value("d", 0.0, lock=False)
        self.policy_ticks = 0
        self.policy_write_errors = 0
        self.expired_usable_after = tokens["expired_exp"] + 3  # wall clock: exp + leeway + margin

    def rel(self, t):
        return t - self.t0


# --------------------------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------------------------

HIT_QUERIES = [
    "{ authors { id name } }",
    "{ authors(first: 1) { name bio } }",
    '{ author(where: {id: "%s"}) { name } }' % AUTHOR_ADA,
    "{ posts { id title slug } }",   # Post: purged by every mutation, so HIT/MISS/coalesced
]
CONTENT_QUERY = "{ posts { id title stage author { name } } }"
MISS_AUTHORS = "query Miss($k: Int) { authors(skip: $k, first: 1) { name } }"
MISS_POSTS = "query MissP($k: Int) { posts(skip: $k, first: 1) { title } }"
UPDATE = 'mutation Up($t: String) { updatePost(where: {id: "%s"}, data: {title: $t}) { id title } }' % POST_CACHING
PUBLISH = 'mutation { publishPost(where: {id: "%s"}, to: [PUBLISHED]) { id stage } }' % POST_CACHING
DENIED_MUTATION = UPDATE
DENIED_DRAFT = "{ posts(stage: DRAFT) { id } }"
INTROSPECTION = "{ __schema { queryType { name } } }"
FLIP_QUERY = "{ posts(first: 1) { stage } }"

# class -> (weight, expected statuses); None = decided per request in the analysis (victims)
CLASSES = {
    "cdn_hit_public": (28, {200}),
    "cdn_hit_pat": (14, {200}),
    "cdn_miss": (10, {200}),
    "content_read": (10, {200}),
    "mutation": (3, {200}),
    "publish_toggled": (2, {200, 403}),
    "denied": (8, {403}),
    "unauthenticated": (10, {401}),
    "revoked_jti": (6, None),
    "churn_token": (4, {200, 401}),
    "introspection_toggled": (2, {200, 403}),
    "flip_stage": (3, {200}),
}
CLASS_NAMES = list(CLASSES)
CLASS_WEIGHTS = [CLASSES[c][0] for c in CLASS_NAMES]
GATEWAY_CODES_5XX = {"UPSTREAM_ERROR", "UPSTREAM_TIMEOUT", "SCHEMA_UNAVAILABLE"}
REASON_RE = re.compile(r"\(([a-z_]+)\)$")


def post_json(query, variables=None):
    body = {"query": query}
    if variables is not None:
        body["variables"] = variables
    return json.dumps(body, separators=(",", ":")).encode()


class Stats:
    """Per-worker counters, merged at the end (no locking on the hot path)."""

    def __init__(self):
        self.status = collections.defaultdict(collections.Counter)     # class -> status -> n
        self.cache = collections.defaultdict(collections.Counter)      # class -> x-cache -> n
        self.reason401 = collections.defaultdict(collections.Counter)  # class -> reason -> n
        self.unexpected = collections.defaultdict(collections.Counter) # class -> status -> n
        self.errors200 = collections.Counter()                         # class -> 200 with "errors"
        self.client_errors = collections.Counter()                     # exception name -> n
        self.latency = collections.defaultdict(list)                   # class -> seconds
        self.fivexx = []                                               # (class, status, body[:300], gateway?)
        self.victim_records = []                                       # (jti, t_send, t_recv, status, reason, x-request-id)
        self.per_second = collections.Counter()                        # int(rel time) -> n

    def merge(self, o):
        for d, od in ((self.status, o.status), (self.cache, o.cache), (self.reason401, o.reason401),
                      (self.unexpected, o.unexpected)):
            for k, c in od.items():
                d[k].update(c)
        self.errors200.update(o.errors200)
        self.client_errors.update(o.client_errors)
        for k, v in o.latency.items():
            self.latency[k].extend(v)
        self.fivexx.extend(o.fivexx)
        self.victim_records.extend(o.victim_records)
        self.per_second.update(o.per_second)


def is_gateway_5xx(data):
    """A 5xx is the upstream's when its body is the sample API's error shape (JSON `errors`
    without `extensions.code` and without the gateway's `extensions.requestId`); anything else
    (the gateway's GraphQL-shaped errors, Pingora's own pages, empty bodies) is the gateway's."""
    try:
        j = json.loads(data)
    except Exception:
        return True
    if not isinstance(j, dict) or "errors" not in j:
        return True
    if isinstance(j.get("extensions"), dict) and "requestId" in j["extensions"]:
        return True
    for e in j.get("errors") or []:
        if isinstance(e, dict) and isinstance(e.get("extensions"), dict) and "code" in e["extensions"]:
            return True
    return False


def build_request(st, rng, cls):
    """-> (method, path, body, headers, jti or None)"""
    tk = st.tokens
    json_h = {"content-type": "application/json"}

    def bearer(tok):
        return {"content-type": "application/json", "authorization": "Bearer " + tok}

    def cdn_hit(headers):
        q = rng.choice(HIT_QUERIES)
        if rng.random() < 0.5:
            h = {k: v for k, v in headers.items() if k != "content-type"}
            return "GET", "/cdn?" + urllib.parse.urlencode({"query": q}), None, h
        return "POST", "/cdn", post_json(q), headers

    if cls == "cdn_hit_public":
        return (*cdn_hit(json_h), None)
    if cls == "cdn_hit_pat":
        if rng.random() < 0.5:
            return (*cdn_hit(bearer(tk["reader"])), None)
        j = rng.choice(st.active)
        return (*cdn_hit(bearer(tk["victims"][j])), j)
    if cls == "cdn_miss":
        q = MISS_AUTHORS if rng.random() < 0.7 else MISS_POSTS
        h = json_h if rng.random() < 0.5 else bearer(tk["reader"])
        return "POST", "/cdn", post_json(q, {"k": rng.randrange(10, 2**31 - 1)}), h, None
    if cls == "content_read":
        if rng.random() < 0.4:
            return "POST", "/content", post_json(CONTENT_QUERY), bearer(tk["editor"]), None
        j = rng.choice(st.active)
        return "POST", "/content", post_json(CONTENT_QUERY), bearer(tk["victims"][j]), j
    if cls == "mutation":
        return "POST", "/content", post_json(UPDATE, {"t": f"soak {rng.randrange(10**9)}"}), bearer(tk["editor"]), None
    if cls == "publish_toggled":
        return "POST", "/content", post_json(PUBLISH), bearer(tk["editor"]), None
    if cls == "denied":
        if rng.random() < 0.5:
            return "POST", "/content", post_json(DENIED_MUTATION, {"t": "nope"}), bearer(tk["reader"]), None
        return "POST", "/cdn", post_json(DENIED_DRAFT), json_h, None
    if cls == "unauthenticated":
        bad = dict(tk["bad"])
        if time.time() < st.expired_usable_after:
            bad.pop("expired")
        return (*cdn_hit(bearer(bad[rng.choice(sorted(bad))])), None)
    if cls == "revoked_jti":
        revoked = st.revoked
        j = revoked[-1] if rng.random() < 0.5 else rng.choice(revoked)
        if rng.random() < 0.5:
            return (*cdn_hit(bearer(tk["victims"][j])), j)
        return "POST", "/content", post_json(CONTENT_QUERY), bearer(tk["victims"][j]), j
    if cls == "churn_token":
        return (*cdn_hit(bearer(tk["churn"])), None)
    if cls == "introspection_toggled":
        return "POST", "/content", post_json(INTROSPECTION), json_h, None
    if cls == "flip_stage":
        return "POST", "/content", post_json(FLIP_QUERY), bearer(tk["flip"]), None
    raise ValueError(cls)


def record(stats, st, cls, status, headers_get, data, jti, t_send, t_recv, expected):
    stats.status[cls][status] += 1
    stats.latency[cls].append(t_recv - t_send)
    stats.per_second[int(t_send - st.t0)] += 1
    xc = headers_get("x-cache")
    if xc:
        stats.cache[cls][xc] += 1
    reason = None
    if status == 401:
        try:
            msg = json.loads(data)["errors"][0]["message"]
            m = REASON_RE.search(msg)
            reason = m.group(1) if m else "?"
        except Exception:
            reason = "unparsable"
        stats.reason401[cls][reason] += 1
    if status == 200:
        try:
            if "errors" in json.loads(data):
                stats.errors200[cls] += 1
        except Exception:
            stats.errors200[cls] += 1
    if status >= 500:
        stats.fivexx.append((cls, status, data[:300].decode("utf-8", "replace"), is_gateway_5xx(data)))
    if jti is not None:
        stats.victim_records.append((jti, t_send, t_recv, status, reason, headers_get("x-request-id")))
    elif expected is not None and status not in expected:
        stats.unexpected[cls][status] += 1
    elif expected is None and status not in (200, 401):
        stats.unexpected[cls][status] += 1


def worker(st, idx, stats):
    rng = random.Random(st.a.seed * 1000 + idx)
    conn = Http(st.a.gw_port)
    left = rng.randint(1, 200)   # requests on this connection before it is closed (fd churn)
    while not st.stop.is_set():
        cls = rng.choices(CLASS_NAMES, CLASS_WEIGHTS)[0]
        if cls == "revoked_jti" and not st.revoked:
            cls = "cdn_hit_pat"
        method, path, body, headers, jti = build_request(st, rng, cls)
        t_send = time.monotonic()
        try:
            r, data = conn.request(method, path, body, headers)
        except Exception as e:
            stats.client_errors[f"{cls}:{type(e).__name__}"] += 1
            left = rng.randint(1, 200)
            time.sleep(0.01)
            continue
        t_recv = time.monotonic()
        record(stats, st, cls, r.status, r.getheader, data, jti, t_send, t_recv, CLASSES[cls][1])
        left -= 1
        if left <= 0:
            conn.close()
            left = rng.randint(1, 200)
    conn.close()


# --------------------------------------------------------------------------------------------
# Policy churn, revocations, metrics poller, sampler
# --------------------------------------------------------------------------------------------


def policy_writer(st):
    pol = policies_dir(st.a.work)
    tick = 0
    next_t = st.t0 + 1.0
    while not st.stop.is_set():
        delay = next_t - time.monotonic()
        if delay > 0 and st.stop.wait(delay):
            break
        next_t += 1.0
        tick += 1
        try:
            atomic_write(st.a.work, os.path.join(pol, "public.toml"), render_public(tick))
            atomic_write(st.a.work, os.path.join(pol, "tokens.toml"), render_tokens(tick, st.victims))
            st.policy_ticks = tick
        except OSError:
            st.policy_write_errors += 1


def revoker(st, stats):
    pol = policies_dir(st.a.work)
    probe = Http(st.a.gw_port)
    hdr = {"content-type": "application/json"}
    body = post_json(HIT_QUERIES[0])
    interval = st.a.revoke_interval
    n = 0
    while not st.stop.is_set():
        n += 1
        # every other revocation lands half-way between two policy rewrites, the rest together
        # with one (the same reload then carries both changes)
        delay = st.t0 + n * interval + (0.5 if n % 2 == 0 else 0.0) - time.monotonic()
        if delay > 0 and st.stop.wait(delay):
            break
        if st.next_victim >= len(st.victims) or st.t0 + st.a.duration - time.monotonic() < 5:
            break   # out of victims, or too close to the end to see the revocation through
        j = st.active[0]
        tok = st.tokens["victims"][j]
        h = dict(hdr, authorization="Bearer " + tok)
        rev = {"jti": j, "expected_count": len(st.revoked) + 1, "t_write": None, "t_write_wall": None,
               "t_live": None,
               "gen_live": None, "t_first401_probe": None, "pre_status": None, "probes": 0}
        # 1. the victim is in use and accepted right now
        try:
            t_s = time.monotonic()
            r, data = probe.request("POST", "/cdn", body, h)
            rev["pre_status"] = r.status
            record(stats, st, "revocation_probe", r.status, r.getheader, data, j, t_s, time.monotonic(), None)
        except Exception as e:
            stats.client_errors[f"revoke_probe:{type(e).__name__}"] += 1
        # 2. replace it in the active set, revoke it, note the time
        st.active = st.active[1:] + [st.victims[st.next_victim]]
        st.next_victim += 1
        text = render_revoked(st.revoked + [j])
        tmp = staging(st.a.work, "revoked.txt")
        with open(tmp, "w") as f:
            f.write(text)
        st.t_live.value = 0.0
        st.expected.value = rev["expected_count"]
        rev["t_write_wall"] = time.time()
        rev["t_write"] = time.monotonic()
        os.replace(tmp, os.path.join(pol, "revoked.txt"))
        rev["rename_ms"] = (time.monotonic() - rev["t_write"]) * 1000  # GIL waits show up here
        st.revoked = st.revoked + [j]
        st.revocations.append(rev)
        # 3. keep using it until the first 401
        deadline = rev["t_write"] + PROBE_TIMEOUT
        while time.monotonic() < deadline and not st.stop.is_set():
            t_s = time.monotonic()
            try:
                r, data = probe.request("POST", "/cdn", body, h)
            except Exception as e:
                stats.client_errors[f"revoke_probe:{type(e).__name__}"] += 1
                continue
            t_r = time.monotonic()
            rev["probes"] += 1
            record(stats, st, "revocation_probe", r.status, r.getheader, data, j, t_s, t_r, None)
            if r.status == 401:
                rev["t_first401_probe"] = t_r
                break
            time.sleep(0.002)
        while st.t_live.value == 0.0 and time.monotonic() < deadline and not st.stop.is_set():
            time.sleep(0.005)
        if st.t_live.value:
            rev["t_live"] = st.t_live.value
            rev["gen_live"] = st.gen_live.value
        st.expected.value = 0
    probe.close()


REVOKED_RE = re.compile(rb"^contentgate_registry_revoked_jtis (\S+)$", re.M)
GENERATION_RE = re.compile(rb"^contentgate_policy_generation (\S+)$", re.M)


def metrics_poller(admin_port, expected, t_live, gen_live, stop):
    """A separate process (no GIL shared with the clients): learns when a revoking snapshot is
    live, i.e. when `contentgate_registry_revoked_jtis` reaches the new count (published with
    `contentgate_policy_generation`). Polls back to back (1 ms pause) while a revocation is
    pending; idles otherwise."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Http(admin_port, timeout=5)
    while not stop.is_set():
        want = expected.value
        if want <= 0 or t_live.value != 0.0:
            time.sleep(0.002)
            continue
        try:
            _, data = conn.request("GET", "/metrics")
        except Exception:
            time.sleep(0.01)
            continue
        t = time.monotonic()
        m = REVOKED_RE.search(data)
        if m and float(m.group(1)) >= want and expected.value == want:
            g = GENERATION_RE.search(data)
            gen_live.value = float(g.group(1)) if g else 0.0
            t_live.value = t
        time.sleep(0.001)
    conn.close()


def read_proc(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    fds = sockets = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue   # closed meanwhile
        fds += 1
        sockets += target.startswith("socket:")
    out["fds"] = fds
    out["sockets"] = sockets
    out["other_fds"] = fds - sockets
    out["tasks"] = len(os.listdir(f"/proc/{pid}/task"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def sample(st, conn):
    s = {"t": time.monotonic() - st.t0}
    s.update(read_proc(st.a.gw_pid))
    try:
        _, data = conn.request("GET", "/metrics")
        m = parse_metrics(data.decode())
        s.update({
            "in_flight": msum(m, "contentgate_requests_in_flight"),
            "requests": msum(m, "contentgate_requests_total"),
            "requests_5xx": msum(m, "contentgate_requests_total", status_class="5xx"),
            "cache_entries": msum(m, "contentgate_cache_entries"),
            "cache_bytes": msum(m, "contentgate_cache_bytes"),
            "generation": msum(m, "contentgate_policy_generation"),
            "reloads_applied": msum(m, "contentgate_policy_reloads_total", result="applied"),
            "reloads_rejected": msum(m, "contentgate_policy_reloads_total", result="rejected"),
            "upstream_errors": msum(m, "contentgate_upstream_errors_total"),
            "registry_tokens": msum(m, "contentgate_registry_tokens"),
        })
        s["_metrics"] = m
    except Exception as e:
        s["metrics_error"] = repr(e)
    return s


def sampler(st, samples):
    conn = Http(st.a.admin_port, timeout=5)
    next_t = st.t0
    while not st.stop.is_set():
        delay = next_t - time.monotonic()
        if delay > 0 and st.stop.wait(delay):
            break
        next_t += st.a.sample_interval
        try:
            samples.append(sample(st, conn))
        except FileNotFoundError:
            samples.append({"t": time.monotonic() - st.t0, "gone": True})
            st.stop.set()
        done = time.monotonic() - st.t0
        if st.a.progress and samples and int(done) % 30 < st.a.sample_interval and "rss_kib" in samples[-1]:
            s = samples[-1]
            print(f"soak: t={done:5.0f}s rss={s['rss_kib'] / 1024:.1f}MiB fds={s['fds']} threads={s['threads']} "
                  f"gen={s.get('generation', 0):.0f} requests={s.get('requests', 0):.0f} revoked={len(st.revoked)}",
                  file=sys.stderr, flush=True)
    conn.close()


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def cmd_run(a):
    with open(os.path.join(a.work, "tokens.json")) as f:
        tokens = json.load(f)
    st = State(a, tokens)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: st.stop.set())
    samples = []
    pre = read_proc(a.gw_pid)
    worker_stats = [Stats() for _ in range(a.concurrency)]
    rstats = Stats()
    threads = [threading.Thread(target=worker, args=(st, i, worker_stats[i]), daemon=True, name=f"w{i}")
               for i in range(a.concurrency)]
    threads += [
        threading.Thread(target=policy_writer, args=(st,), daemon=True, name="policy"),
        threading.Thread(target=revoker, args=(st, rstats), daemon=True, name="revoker"),
        threading.Thread(target=sampler, args=(st, samples), daemon=True, name="sampler"),
    ]
    poller = multiprocessing.get_context("fork").Process(
        target=metrics_poller, args=(a.admin_port, st.expected, st.t_live, st.gen_live, st.mp_stop), daemon=True)
    poller.start()
    sys.setswitchinterval(0.001)   # shorter GIL slices: a client's send stamp is closer to its write
    print(f"soak: {a.duration} s, {a.concurrency} concurrent clients, policies rewritten every 1 s, "
          f"a jti revoked every {a.revoke_interval} s", file=sys.stderr, flush=True)
    for t in threads:
        t.start()
    end = st.t0 + a.duration
    while not st.stop.is_set() and time.monotonic() < end:
        st.stop.wait(min(1.0, max(0.0, end - time.monotonic())))
    st.stop.set()
    t_stop = time.monotonic()
    for t in threads:
        t.join(timeout=15)
    st.mp_stop.set()
    poller.join(timeout=5)
    if poller.is_alive():
        poller.kill()
    hung = [t.name for t in threads if t.is_alive()]
    # Quiescence: no client connection is open any more; the gateway should be back to zero.
    time.sleep(3)
    post_conn = Http(a.admin_port, timeout=5)
    post = sample(st, post_conn)
    post_conn.close()

    stats = Stats()
    for s in worker_stats:
        stats.merge(s)
    stats.merge(rstats)
    return report(a, st, stats, samples, pre, post, t_stop, hung)


def log_time(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


RID_RE = re.compile(rb'"request_id":"([^"]+)"')


def analyze_log(path, revocations, victim_records):
    """The gateway's side, from its JSON log, joined to the clients' victim requests by
    x-request-id (a refused request's access line carries no jti). For each request: its start
    (`timestamp - duration_ms`; the request context is created after the header is read and
    before the snapshot is loaded) and its end (`timestamp`, after the response was written).
    For each revocation: the `reload_applied` line with the new revoked count (logged, like the
    gauges, just before the snapshot is swapped in)."""
    rids = {rec[5]: rec for rec in victim_records if rec[5]}
    applied = []                                   # (wall, generation, revoked)
    server = {}                                    # request id -> (start, end, status)
    access = 0
    with open(path, "rb") as f:
        for line in f:
            if b'"target":"access"' in line:
                access += 1
                m = RID_RE.search(line)
                if m and m.group(1).decode() in rids:
                    j = json.loads(line)
                    end = log_time(j["timestamp"])
                    server[j["request_id"]] = (end - j["duration_ms"] / 1000, end, j["status"])
            elif b'"reload_applied"' in line:
                j = json.loads(line)
                applied.append((log_time(j["timestamp"]), j["generation"], j["revoked"]))
    by_jti = collections.defaultdict(list)
    for rid, rec in rids.items():
        if rid in server:
            by_jti[rec[0]].append(server[rid])
    rows = []
    for r in revocations:
        t_app = next(((t, g) for (t, g, n) in applied if n >= r["expected_count"]), None)
        recs = by_jti.get(r["jti"], [])
        w = r["t_write_wall"]
        refused = [x for x in recs if x[2] == 401 and x[0] >= w - 0.001]
        first401 = min(refused, default=None)
        ok_starts = [x[0] for x in recs if 200 <= x[2] < 300]
        row = {"jti": r["jti"], "applied": t_app is not None, "requests_joined": len(recs),
               # accepted although it started after a refused request for the same jti had ended
               "accepted_after_refused": 0 if first401 is None else
               sum(1 for x in ok_starts if x > first401[1]),
               # (info) accepted although it started after the first refused one started; requests
               # read the snapshot a little after their start, so this is not proof of a violation
               "accepted_after_first401_start": 0 if first401 is None else
               sum(1 for x in ok_starts if x > first401[0]),
               "refused_before_write": sum(1 for x in recs if x[2] == 401 and x[1] < w)}
        if t_app is not None:
            t, g = t_app
            row.update({
                "t_applied": t,
                "generation": g,
                "lag_applied_ms": (t - w) * 1000,
                "first401_start_ms": None if first401 is None else (first401[0] - t) * 1000,
                "last_accepted_start_ms": (max(ok_starts) - t) * 1000 if ok_starts else None,
            })
        rows.append(row)
    return {"access_lines": access, "joined": len(server), "victim_requests": len(rids),
            "reloads_applied": len(applied), "revocations": rows, "server": server}


def report(a, st, stats, samples, pre, post, t_stop, hung):
    failures = []
    out = []

    def p(line=""):
        out.append(line)

    # ---- victims: expected statuses and revocation timing ------------------------------
    revs = {r["jti"]: r for r in st.revocations}
    by_jti = collections.defaultdict(list)
    for rec in stats.victim_records:
        by_jti[rec[0]].append(rec)
    rev_rows = []
    violations = flipbacks = premature = window_2xx = post_live_other = wrong_reason = 0
    violation_examples = []
    for j, recs in by_jti.items():
        r = revs.get(j)
        for (_, ts, tr, status, reason, rid) in recs:
            if r is None or ts < r["t_write"]:
                if status != 200:
                    premature += status == 401
                    stats.unexpected["victims_before_revocation"][status] += 1
                continue
            live = r["t_live"]
            if live is not None and ts > live:
                if 200 <= status < 300:
                    violations += 1
                    violation_examples.append((j, status, ts, live, r, rid))
                elif status != 401:
                    post_live_other += 1
                    stats.unexpected["victims_after_snapshot"][status] += 1
                elif reason != "revoked":
                    wrong_reason += 1
            elif 200 <= status < 300:
                window_2xx += 1
            elif status != 401:
                stats.unexpected["victims_in_window"][status] += 1
    for r in st.revocations:
        recs = by_jti.get(r["jti"], [])
        first401 = min((tr for (_, ts, tr, s, _, _) in recs if s == 401 and ts >= r["t_write"]), default=None)
        last2xx_send = max((ts for (_, ts, tr, s, _, _) in recs if 200 <= s < 300), default=None)
        r["t_first401"] = first401
        fb = sum(1 for (_, ts, tr, s, _, _) in recs if 200 <= s < 300 and first401 is not None and ts > first401)
        flipbacks += fb
        rev_rows.append({
            "jti": r["jti"],
            "t_write_s": round(st.rel(r["t_write"]), 3),
            "lag_live_ms": None if r["t_live"] is None else (r["t_live"] - r["t_write"]) * 1000,
            "lag_401_ms": None if first401 is None else (first401 - r["t_write"]) * 1000,
            "gen_live": r["gen_live"],
            "pre_status": r["pre_status"],
            "requests": len(recs),
            "last_2xx_sent_after_write_ms": None if last2xx_send is None or last2xx_send < r["t_write"]
            else (last2xx_send - r["t_write"]) * 1000,
            "flipbacks": fb,
            "rename_ms": r.get("rename_ms"),
        })

    # ---- requests by class and status ------------------------------------------------
    total = sum(sum(c.values()) for c in stats.status.values())
    statuses = sorted({s for c in stats.status.values() for s in c})
    dur = t_stop - st.t0
    p(f"== contentgate soak: {dur:.0f} s, {a.concurrency} clients, {total} requests "
      f"({total / dur:.0f}/s), {st.policy_ticks} policy rewrites, {len(st.revocations)} revocations ==")
    p()
    p("Requests by class and status (x-cache for cached endpoints; latency p50/p99 in ms)")
    hdr = f"{'class':<22}{'total':>8}" + "".join(f"{s:>8}" for s in statuses) + \
        f"{'p50':>8}{'p99':>8}  x-cache / 401 reasons"
    p(hdr)
    p("-" * len(hdr))
    for cls in CLASS_NAMES + ["revocation_probe"]:
        c = stats.status.get(cls) or collections.Counter()
        n = sum(c.values())
        if not n:
            continue
        lat = stats.latency.get(cls, [])
        extra = []
        if stats.cache.get(cls):
            extra.append(" ".join(f"{k}:{v}" for k, v in sorted(stats.cache[cls].items())))
        if stats.reason401.get(cls):
            extra.append("401: " + " ".join(f"{k}:{v}" for k, v in sorted(stats.reason401[cls].items())))
        p(f"{cls:<22}{n:>8}" + "".join(f"{c.get(s, 0):>8}" for s in statuses) +
          (f"{pct(lat, 50) * 1000:>8.2f}{pct(lat, 99) * 1000:>8.2f}" if lat else f"{'':>16}") +
          "  " + "; ".join(extra))
    allc = collections.Counter()
    for c in stats.status.values():
        allc.update(c)
    p(f"{'all':<22}{total:>8}" + "".join(f"{allc.get(s, 0):>8}" for s in statuses))
    gw_count = post.get("requests")
    ce_total = sum(stats.client_errors.values())
    p(f"Gateway counted {gw_count:.0f} requests (contentgate_requests_total), the clients {total} "
      f"answered + {ce_total} transport errors")
    if gw_count is not None and ce_total == 0 and gw_count != total:
        failures.append(f"gateway counted {gw_count:.0f} requests, clients got {total} answers")
    p()

    # ---- 5xx --------------------------------------------------------------------------
    n5 = len(stats.fivexx)
    n5_gw = sum(1 for x in stats.fivexx if x[3])
    p(f"5xx responses: {n5} (gateway-caused: {n5_gw}, upstream: {n5 - n5_gw})")
    for x in stats.fivexx[:5]:
        p(f"  {x[0]} {x[1]} gateway={x[3]} body={x[2]!r}")
    if n5_gw:
        failures.append(f"{n5_gw} gateway-caused 5xx")
    unexpected_total = sum(sum(c.values()) for c in stats.unexpected.values())
    if unexpected_total:
        p("Unexpected statuses: " + "; ".join(
            f"{k}: " + " ".join(f"{s}x{n}" for s, n in sorted(c.items())) for k, c in stats.unexpected.items() if c))
        failures.append(f"{unexpected_total} responses with an unexpected status")
    e200 = sum(stats.errors200.values())
    if e200:
        p("200 with GraphQL errors: " + " ".join(f"{k}:{v}" for k, v in stats.errors200.items()))
        failures.append(f"{e200} 200 responses carrying GraphQL errors")
    ce = sum(stats.client_errors.values())
    if ce:
        p("Client-side transport errors: " + " ".join(f"{k}:{v}" for k, v in stats.client_errors.most_common()))
        failures.append(f"{ce} transport errors (reset/timeout/refused)")
    p()

    # ---- revocations -------------------------------------------------------------------
    lag_live = [r["lag_live_ms"] for r in rev_rows if r["lag_live_ms"] is not None]
    lag_401 = [r["lag_401_ms"] for r in rev_rows if r["lag_401_ms"] is not None]
    ren = [r["rename_ms"] for r in rev_rows if r.get("rename_ms") is not None]
    p(f"Revocations: {len(rev_rows)}; requests carrying a victim jti: {len(stats.victim_records)}"
      + (f"; the write instant is stamped before the rename, which returned within {max(ren):.2f} ms" if ren else ""))
    if rev_rows:
        p(f"  lag file write -> snapshot live (revoked_jtis gauge): p50 {pct(lag_live, 50):.1f} ms, "
          f"p99 {pct(lag_live, 99):.1f} ms, max {max(lag_live or [float('nan')]):.1f} ms (n={len(lag_live)})")
        p(f"  lag file write -> first 401 for the jti:            p50 {pct(lag_401, 50):.1f} ms, "
          f"p99 {pct(lag_401, 99):.1f} ms, max {max(lag_401 or [float('nan')]):.1f} ms (n={len(lag_401)})")
    p(f"  2xx for a revoked jti sent after its snapshot was observed live (violations): {violations}")
    gwlog = analyze_log(a.log, st.revocations, stats.victim_records) \
        if a.log and os.path.exists(a.log) else None
    for (j, status, ts, live, r, rid) in violation_examples[:5]:
        line = (f"    {j}: {status} for a request sent {(ts - live) * 1000:.2f} ms after generation "
                f"{r['gen_live']:.0f} was observed ({(ts - r['t_write']) * 1000:.1f} ms after the write), "
                f"x-request-id {rid}")
        srv = gwlog and gwlog["server"].get(rid)
        rrow = gwlog and next((x for x in gwlog["revocations"] if x["jti"] == j), None)
        if srv and rrow and rrow.get("t_applied"):
            line += (f"; gateway: started {(srv[0] - rrow['t_applied']) * 1000:+.2f} ms after its "
                     f"reload_applied line")
            if rrow.get("first401_start_ms") is not None:
                line += f", the first refusal started {rrow['first401_start_ms']:+.2f} ms after it"
        p(line)
    p(f"  2xx for a revoked jti sent after its first 401 (flip-backs): {flipbacks}")
    p(f"  2xx sent between the write and the observed snapshot (allowed): {window_2xx}")
    p(f"  401 for a victim before its revocation: {premature}; 401 with a reason other than 'revoked' "
      f"after the snapshot: {wrong_reason}")
    gm = post.get("_metrics", {})
    lag_n = msum(gm, "contentgate_revocation_lag_seconds_count")
    if lag_n:
        p(f"  gateway's contentgate_revocation_lag_seconds: n={lag_n:.0f}, mean "
          f"{msum(gm, 'contentgate_revocation_lag_seconds_sum') / lag_n * 1000:.1f} ms")
    if gwlog:
        rows = [r for r in gwlog["revocations"] if r["applied"]]
        lag_app = [r["lag_applied_ms"] for r in rows]
        aar = sum(r["accepted_after_refused"] for r in gwlog["revocations"])
        rbw = sum(r["refused_before_write"] for r in gwlog["revocations"])
        last = [r["last_accepted_start_ms"] for r in rows if r["last_accepted_start_ms"] is not None]
        f401 = [r["first401_start_ms"] for r in rows if r["first401_start_ms"] is not None]
        p(f"  gateway log (server side; {gwlog['joined']} of {gwlog['victim_requests']} victim requests "
          f"joined by x-request-id; {gwlog['access_lines']} access lines for {total} answers):")
        if lag_app:
            p(f"    lag file write -> reload_applied line: p50 {pct(lag_app, 50):.1f} ms, "
              f"p99 {pct(lag_app, 99):.1f} ms, max {max(lag_app):.1f} ms (n={len(lag_app)})")
        p(f"    2xx for a revoked jti that started after a 401 for it had been sent (violations): {aar}")
        p(f"    401 for a victim that ended before its revocation was written: {rbw}")
        p(f"    2xx that started after the first 401 for the jti started (info): "
          f"{sum(r['accepted_after_first401_start'] for r in gwlog['revocations'])}")
        if last and f401:
            late = [x for x in last if x > 0]
            p(f"    relative to the reload_applied line: last accepted request started at max {max(last):+.2f} ms, "
              f"first refused one at min {min(f401):+.2f} / median {med(f401):+.2f} / max {max(f401):+.2f} ms")
            if late:
                p(f"    note: in {len(late)} of {len(last)} revocations a request that started after the "
                  f"reload_applied line (up to {max(late):+.2f} ms) was still accepted: the line and the "
                  f"gauges are published before the snapshot is swapped in")
        if aar:
            failures.append(f"{aar} requests accepted for a revoked jti after a request for it was refused (gateway log)")
        if rbw:
            failures.append(f"{rbw} victim requests refused before their revocation was written (gateway log)")
        missing = [r["jti"] for r in gwlog["revocations"] if not r["applied"]]
        if missing:
            failures.append(f"no reload_applied line covers the revocation of {missing}")
        if gwlog["access_lines"] != total and not stats.client_errors:
            failures.append(f"{gwlog['access_lines']} access-log lines for {total} answers")
    if violations:
        failures.append(f"{violations} requests accepted for a revoked jti after its snapshot was live")
    if flipbacks:
        failures.append(f"{flipbacks} requests accepted for a revoked jti after it was refused")
    if premature or wrong_reason:
        failures.append(f"victim 401s before revocation ({premature}) or with a wrong reason ({wrong_reason})")
    not_applied = [r["jti"] for r in rev_rows if r["lag_live_ms"] is None or r["lag_401_ms"] is None]
    if not_applied:
        failures.append(f"revocations never observed as applied: {not_applied}")
    not_active = [r["jti"] for r in rev_rows if r["pre_status"] != 200]
    if not_active:
        failures.append(f"victims not accepted just before their revocation: {not_active}")
    expected_revs = int(dur // a.revoke_interval)
    if len(rev_rows) < expected_revs - 1:
        failures.append(f"only {len(rev_rows)} revocations (expected ~{expected_revs})")
    p()

    # ---- policy churn ------------------------------------------------------------------
    gen_first = samples[0].get("generation", 0) if samples else 0
    gen_last = post.get("generation", 0)
    rejected = post.get("reloads_rejected", 0)
    p(f"Policy churn: {st.policy_ticks} rewrites (public.toml + tokens.toml) + {len(rev_rows)} revoked.txt "
      f"rewrites; generation {gen_first:.0f} -> {gen_last:.0f} ({gen_last - gen_first:.0f} snapshots); "
      f"reloads applied {post.get('reloads_applied', 0):.0f}, rejected {rejected:.0f}")
    if rejected:
        failures.append(f"{rejected:.0f} policy reloads rejected")
    if st.policy_write_errors:
        failures.append(f"{st.policy_write_errors} policy writes failed")
    if gen_last - gen_first < 0.9 * st.policy_ticks:
        failures.append(f"only {gen_last - gen_first:.0f} snapshots for {st.policy_ticks} policy rewrites")
    p()

    # ---- resources ---------------------------------------------------------------------
    good = [s for s in samples if "rss_kib" in s]
    w = a.window_fraction
    first = [s for s in good if w * dur <= s["t"] < 2 * w * dur]
    last = [s for s in good if s["t"] >= (1 - w) * dur]
    p(f"Resources of the gateway (samples every {a.sample_interval} s; medians of the first window "
      f"[{w * dur:.0f}, {2 * w * dur:.0f}) s after the warm-up and the last window [{(1 - w) * dur:.0f}, {dur:.0f}] s)")
    p(f"{'':<24}{'before':>10}{'first':>10}{'last':>10}{'change':>10}{'after':>10}  limit")
    res_rows = []

    def row(name, key, scale, fmt, limit_text, check):
        f_m = med([s[key] * scale for s in first if key in s])
        l_m = med([s[key] * scale for s in last if key in s])
        b = pre.get(key)
        af = post.get(key)
        ch = (l_m - f_m) / f_m * 100 if f_m else float("nan")
        ok = check(f_m, l_m)
        p(f"{name:<24}{(fmt % (b * scale)) if b is not None else '-':>10}{fmt % f_m:>10}{fmt % l_m:>10}"
          f"{ch:>+9.1f}%{(fmt % (af * scale)) if af is not None else '-':>10}  {limit_text} {'ok' if ok else 'FAIL'}")
        res_rows.append({"metric": name, "before": b, "first": f_m, "last": l_m, "after": af, "ok": ok})
        if not ok:
            failures.append(f"{name}: first {fmt % f_m}, last {fmt % l_m} ({limit_text})")

    if len(first) < 2 or len(last) < 2:
        failures.append("too few samples for the first/last windows (run longer)")
        p("  (too few samples)")
    else:
        row("RSS (MiB)", "rss_kib", 1 / 1024, "%.1f", "within 10%", lambda f, l: abs(l - f) <= 0.10 * f)
        row("open fds", "fds", 1, "%.0f", "(info)", lambda f, l: True)
        row("  sockets", "sockets", 1, "%.0f", "last <= first + max(8, 10%)", lambda f, l: l <= f + max(8, 0.10 * f))
        row("  other fds", "other_fds", 1, "%.0f", "last <= first + 2", lambda f, l: l <= f + 2)
        row("threads (tasks)", "threads", 1, "%.0f", "last <= first + 2", lambda f, l: l <= f + 2)
        row("in-flight gauge", "in_flight", 1, "%.0f", "(info)", lambda f, l: True)
        row("cache entries", "cache_entries", 1, "%.0f", "(info)", lambda f, l: True)
        row("cache MiB", "cache_bytes", 1 / 2**20, "%.1f", "(info)", lambda f, l: True)
        cpu = [s for s in good if "cpu_s" in s]
        if len(cpu) >= 2:
            p(f"gateway CPU: {(cpu[-1]['cpu_s'] - cpu[0]['cpu_s']) / (cpu[-1]['t'] - cpu[0]['t']) * 100:.0f}% "
              f"of one core on average; gateway request rate first/last window: "
              f"{rate(first):.0f}/s, {rate(last):.0f}/s")
    if post.get("in_flight", 0) != 0:
        failures.append(f"in-flight gauge {post.get('in_flight')} after all clients stopped")
    p(f"After the run (clients closed, +3 s): in-flight {post.get('in_flight', float('nan')):.0f}, "
      f"fds {post.get('fds')} ({post.get('sockets')} sockets), threads {post.get('threads')}, RSS {post.get('rss_kib', 0) / 1024:.1f} MiB")
    if hung:
        failures.append(f"driver threads did not stop: {hung}")
    p()

    # ---- verdict -----------------------------------------------------------------------
    if failures:
        p("RESULT: FAIL")
        for f in failures:
            p(f"  - {f}")
    else:
        p("RESULT: PASS (0 gateway 5xx, 0 revocation violations, RSS flat within 10%, no fd/thread growth)")
    text = "\n".join(out)
    print(text, flush=True)

    with open(os.path.join(a.work, "samples.csv"), "w") as f:
        keys = ["t", "rss_kib", "fds", "sockets", "other_fds", "threads", "tasks", "cpu_s", "in_flight", "requests", "requests_5xx",
                "cache_entries", "cache_bytes", "generation", "reloads_applied", "reloads_rejected",
                "upstream_errors", "registry_tokens"]
        f.write(",".join(keys) + "\n")
        for s in good:
            f.write(",".join(str(round(s[k], 3)) if isinstance(s.get(k), float) else str(s.get(k, ""))
                             for k in keys) + "\n")
    results = {
        "duration_s": dur, "concurrency": a.concurrency, "requests": total,
        "by_class": {k: dict(v) for k, v in stats.status.items()},
        "x_cache": {k: dict(v) for k, v in stats.cache.items()},
        "reasons_401": {k: dict(v) for k, v in stats.reason401.items()},
        "unexpected": {k: dict(v) for k, v in stats.unexpected.items() if v},
        "client_errors": dict(stats.client_errors),
        "fivexx": stats.fivexx[:50], "revocations": rev_rows,
        "violations": violations, "flipbacks": flipbacks, "window_2xx": window_2xx,
        "lag_live_ms": {"p50": pct(lag_live, 50), "p99": pct(lag_live, 99)} if lag_live else None,
        "lag_401_ms": {"p50": pct(lag_401, 50), "p99": pct(lag_401, 99)} if lag_401 else None,
        "resources": res_rows, "policy_ticks": st.policy_ticks,
        "generation": [gen_first, gen_last], "failures": failures,
        "gateway_log": {k: v for k, v in gwlog.items() if k != "server"} if gwlog else None,
    }
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(os.path.join(a.work, "results.txt"), "w") as f:
        f.write(text + "\n")
    return 1 if failures else 0


def rate(window):
    if len(window) < 2 or "requests" not in window[0] or "requests" not in window[-1]:
        return float("nan")
    return (window[-1]["requests"] - window[0]["requests"]) / (window[-1]["t"] - window[0]["t"])


# --------------------------------------------------------------------------------------------
# logscan
# --------------------------------------------------------------------------------------------


def cmd_logscan(a):
    levels = collections.Counter()
    notable = collections.Counter()
    other = 0
    level_re = re.compile(rb'"level":"([A-Z]+)"')
    with open(a.log, "rb") as f:
        for line in f:
            m = level_re.search(line, 0, 80)
            if not m:
                other += 1
                if re.search(rb"\b(ERROR|WARN|panick)", line):
                    notable[line.decode("utf-8", "replace").strip()[:200]] += 1
                continue
            lvl = m.group(1).decode()
            levels[lvl] += 1
            if lvl in ("WARN", "ERROR"):
                j = json.loads(line)
                key = f"{lvl} {j.get('target', '')}: {j.get('message', '')}"
                for fld in ("error", "reason", "event"):
                    if fld in j:
                        key += f" {fld}={str(j[fld])[:120]}"
                notable[key[:300]] += 1
    print(f"gateway log: {sum(levels.values())} JSON lines ({', '.join(f'{k} {v}' for k, v in sorted(levels.items()))})"
          + (f", {other} other lines" if other else ""))
    for k, v in notable.most_common(12):
        print(f"  {v:>7} x {k}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("--work", required=True)
    i.add_argument("--bin", required=True)
    i.add_argument("--gw-port", type=int, required=True)
    i.add_argument("--admin-port", type=int, required=True)
    i.add_argument("--upstream-port", type=int, required=True)
    i.add_argument("--duration", type=int, required=True)
    i.add_argument("--revoke-interval", type=int, default=10)
    w = sub.add_parser("wait")
    w.add_argument("--url", required=True)
    w.add_argument("--timeout", type=float, default=30)
    w.add_argument("--post-json")
    r = sub.add_parser("run")
    r.add_argument("--work", required=True)
    r.add_argument("--gw-pid", type=int, required=True)
    r.add_argument("--gw-port", type=int, required=True)
    r.add_argument("--admin-port", type=int, required=True)
    r.add_argument("--duration", type=int, required=True)
    r.add_argument("--concurrency", type=int, default=24)
    r.add_argument("--revoke-interval", type=int, default=10)
    r.add_argument("--sample-interval", type=int, default=5)
    r.add_argument("--window-fraction", type=float, default=0.2,
                   help="warm-up and window length as a fraction of the duration")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--progress", action="store_true")
    r.add_argument("--log", help="the gateway's JSON log, for the server-side revocation check")
    lg = sub.add_parser("logscan")
    lg.add_argument("--log", required=True)
    a = ap.parse_args()
    return {"init": cmd_init, "wait": cmd_wait, "run": cmd_run, "logscan": cmd_logscan}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
