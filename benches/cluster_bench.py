#!/usr/bin/env python3
"""Driver of benches/cluster.sh (Python 3 standard library only): writes the replicas' configs,
pushes the policy set, starts the gateways and measures revocation lag, purge lag, L1/L2/miss
latency and the hit path with [cluster] on vs off. See benches/cluster.sh for what and how."""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time

ADMIN_TOKEN = "bench-admin-token"
QUERY = "{ posts { id title } }"


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))
    return v[k]


def gateway_toml(a, i, cluster, l2):
    port, admin = a.base_port + 10 + 2 * i, a.base_port + 11 + 2 * i
    cl = ""
    if cluster:
        cl = f'''
[cluster]
redis = "{a.redis}"
prefix = "bench"
poll_interval = "1s"
max_staleness = "10s"
expected_replicas = 3
'''
    return port, admin, f'''[server]
threads = 1
runtime_dir = "run"

[[listener]]
address = "127.0.0.1:{port}"

[admin]
address = "127.0.0.1:{admin}"
token_env = "BENCH_ADMIN_TOKEN"

[upstream.cms]
url = "{a.cms}"

[[endpoint]]
path = "/cdn"
kind = "cdn"

[[endpoint]]
path = "/content"
kind = "content"

[auth]
issuers = ["bench"]
audiences = ["bench"]

[[auth.key]]
kid = "hs"
algorithm = "HS256"
secret_file = "{a.work}/hs.secret"

[cms]
stages = ["DRAFT", "PUBLISHED"]
locales = ["en", "de"]

[policies]
dir = "policies"
poll_interval = "1s"

[cache]
content_reads = false
default_ttl = "300s"
{'l2 = "redis"' if l2 else ''}

[log]
level = "warn"
format = "json"

# Every client of the benches is 127.0.0.1: its 401s (revoked and forged tokens, by design) must
# not exhaust the address's refusal budget.
[rate_limits]
refused_per_ip = {{ requests_per_second = 1000000, burst = 1000000 }}
{cl}'''


class Gw:
    def __init__(self, a, name, i, cluster, l2):
        self.dir = os.path.join(a.work, name)
        os.makedirs(os.path.join(self.dir, "policies"), exist_ok=True)
        self.port, self.admin, text = gateway_toml(a, i, cluster, l2)
        with open(os.path.join(self.dir, "gateway.toml"), "w") as f:
            f.write(text)
        for fn in ("public.toml", "tokens.toml", "revoked.txt"):
            with open(os.path.join(a.work, "policies", fn)) as src, open(
                os.path.join(self.dir, "policies", fn), "w"
            ) as dst:
                dst.write(src.read())
        self.config = os.path.join(self.dir, "gateway.toml")
        self.a = a
        self.proc = None

    def start(self):
        env = dict(os.environ, BENCH_ADMIN_TOKEN=ADMIN_TOKEN)
        self.proc = subprocess.Popen(
            [self.a.bin, "serve", "--config", self.config],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "gateway.log"), "w"),
            env=env,
            cwd=self.dir,
        )

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        sys.exit(f"{self.dir}: not ready; see gateway.log")

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()


def post(conn, path, query, auth=None):
    body = json.dumps({"query": query})
    headers = {"content-type": "application/json"}
    if auth:
        headers["authorization"] = "Bearer " + auth
    conn.request("POST", path, body, headers)
    r = conn.getresponse()
    r.read()
    return r.status, r.getheader("x-cache") or ""


def conn_of(gw):
    return http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)


def mint(a, jti):
    out = subprocess.run(
        [a.bin, "token", "mint", "--alg", "HS256", "--secret-file", os.path.join(a.work, "hs.secret"),
         "--kid", "hs", "--jti", jti, "--iss", "bench", "--aud", "bench"],
        check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0]


def wrk(gw, a, duration, path="/cdn"):
    lua = os.path.join(a.work, "post.lua")
    if not os.path.exists(lua):
        with open(lua, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = \'%s\'\nwrk.headers["content-type"] = "application/json"\n'
                    % json.dumps({"query": QUERY}))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{a.connections}", f"-d{duration}s", "--latency", "-s", lua,
         f"http://127.0.0.1:{gw.port}{path}"], capture_output=True, text=True, check=True).stdout
    rps = float(next(l for l in out.splitlines() if l.startswith("Requests/sec")).split()[1])
    p99 = next(l for l in out.splitlines() if l.strip().startswith("99%")).split()[1]
    return rps, p99


def wait_for_cms(a):
    host, port = a.cms.split("/")[2].split(":")
    path = "/" + a.cms.split("/", 3)[3]
    deadline = time.time() + 20
    while True:
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=1)
            c.request("POST", path, json.dumps({"query": "{ __typename }"}), {"content-type": "application/json"})
            c.getresponse().read()
            return
        except OSError:
            if time.time() > deadline:
                sys.exit("the sample CMS did not start")
            time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser()
    for k in ("bin", "work", "redis", "cms", "keys"):
        ap.add_argument("--" + k, required=True)
    for k, d in (("base-port", 19400), ("revocations", 100), ("purges", 50), ("samples", 200),
                 ("duration", 10), ("rounds", 3), ("connections", 64)):
        ap.add_argument("--" + k, type=int, default=d)
    a = ap.parse_args()
    with open(os.path.join(a.work, "hs.secret"), "w") as f:
        f.write("bench-hs256-secret-with-at-least-32-bytes!\n")
    os.makedirs(os.path.join(a.work, "policies"), exist_ok=True)
    with open(os.path.join(a.work, "policies", "public.toml"), "w") as f:
        f.write('default_stage = "PUBLISHED"\n[[permission]]\naction = "read"\n')
    jtis = [f"bench-{k}" for k in range(a.revocations)]
    with open(os.path.join(a.work, "policies", "tokens.toml"), "w") as f:
        for j in jtis:
            f.write(f'[[token]]\njti = "{j}"\nname = "{j}"\ndefault_stage = "PUBLISHED"\n'
                    '[[token.permission]]\naction = "read"\n\n')
    with open(os.path.join(a.work, "policies", "revoked.txt"), "w") as f:
        f.write("# none yet\n")

    # Wait for the sample CMS, then push the set (introspected to check it: no SDL in the folder).
    wait_for_cms(a)
    reps = [Gw(a, f"replica{i}", i, True, True) for i in range(3)]
    files = Gw(a, "files", 3, False, False)
    # No SDL in the folder: the push introspects the upstream to check it, which loads the
    # whole gateway.toml (secrets included).
    push = subprocess.run([a.bin, "policy", "push", os.path.join(a.work, "policies"), "--config", reps[0].config],
                          capture_output=True, text=True, env=dict(os.environ, BENCH_ADMIN_TOKEN=ADMIN_TOKEN))
    if push.returncode != 0:
        sys.exit("push failed: " + push.stderr)
    for g in reps + [files]:
        g.start()
    try:
        for g in reps + [files]:
            g.wait_ready()
        results = {}
        tokens = {j: mint(a, j) for j in jtis}

        # 1. Revocation lag under load.
        for g in reps:
            c = conn_of(g)
            post(c, "/cdn", QUERY)
        load = [threading.Thread(target=wrk, args=(g, a, max(5, a.revocations // 4 + 10))) for g in reps]
        for t in load:
            t.start()
        time.sleep(1)
        lags = []
        conns = [[conn_of(g) for g in reps]]
        for j in jtis:
            for c in conns[0]:
                s, _ = post(c, "/cdn", QUERY, tokens[j])
                assert s == 200, f"token {j} refused before its revocation: {s}"
            subprocess.run([a.bin, "token", "revoke", j, "--config", reps[0].config], check=True,
                           capture_output=True)
            t0 = time.perf_counter()
            pending = set(range(3))
            while pending:
                for i in list(pending):
                    s, _ = post(conns[0][i], "/cdn", QUERY, tokens[j])
                    if s == 401:
                        lags.append(time.perf_counter() - t0)
                        pending.discard(i)
                    elif time.perf_counter() - t0 > 5:
                        sys.exit(f"replica {i} still accepts {j} 5 s after its revocation")
                time.sleep(0.001)
        for t in load:
            t.join()
        results["revocation lag (writer exit -> first 401), ms"] = (
            len(lags), pct(lags, 50) * 1e3, pct(lags, 99) * 1e3, max(lags) * 1e3)

        # 2. Purge lag.
        plags = []
        for k in range(a.purges):
            q = f"{{ p{k}: posts {{ id }} }}"
            cs = [conn_of(g) for g in reps]
            for c in cs:
                post(c, "/cdn", q)
            for c in cs:
                assert post(c, "/cdn", q)[1] == "HIT"
            ac = http.client.HTTPConnection("127.0.0.1", reps[0].admin, timeout=5)
            ac.request("POST", "/admin/purge", json.dumps({"model": "Post"}),
                       {"authorization": "Bearer " + ADMIN_TOKEN})
            assert ac.getresponse().status == 200
            t0 = time.perf_counter()
            pending = {1, 2}
            while pending:
                for i in list(pending):
                    if post(cs[i], "/cdn", q)[1] == "MISS":
                        plags.append(time.perf_counter() - t0)
                        pending.discard(i)
                time.sleep(0.001)
        results["purge lag (admin purge on replica 0 -> MISS on 1 and 2), ms"] = (
            len(plags), pct(plags, 50) * 1e3, pct(plags, 99) * 1e3, max(plags) * 1e3)

        # 3. L1 / L2 / miss latency.
        miss, l2, l1 = [], [], []
        c0, c1 = conn_of(reps[0]), conn_of(reps[1])
        for k in range(a.samples):
            q = f"{{ s{k}: posts {{ id title }} }}"
            t = time.perf_counter(); s, x = post(c0, "/cdn", q); miss.append(time.perf_counter() - t)
            assert (s, x) == (200, "MISS"), (s, x)
            t = time.perf_counter(); s, x = post(c1, "/cdn", q); l2.append(time.perf_counter() - t)
            t = time.perf_counter(); s, x = post(c1, "/cdn", q); l1.append(time.perf_counter() - t)
            assert x == "HIT", x
        for name, v in (("L1 hit", l1), ("L2 hit (another replica's fill)", l2), ("miss (sample CMS)", miss)):
            results[f"{name} latency, ms"] = (len(v), pct(v, 50) * 1e3, pct(v, 99) * 1e3, max(v) * 1e3)

        # 4. Hit path, cluster on vs off (interleaved rounds).
        for g in (reps[0], files):
            post(conn_of(g), "/cdn", QUERY)
            wrk(g, a, 2)
        on, off = [], []
        for _ in range(a.rounds):
            off.append(wrk(files, a, a.duration))
            on.append(wrk(reps[0], a, a.duration))
        mon, moff = statistics.median(r for r, _ in on), statistics.median(r for r, _ in off)
        print()
        print(f"{'measure':64} {'n':>5} {'p50':>9} {'p99':>9} {'max':>9}")
        for k, (n, p50, p99, mx) in results.items():
            print(f"{k:64} {n:5d} {p50:9.2f} {p99:9.2f} {mx:9.2f}")
        print()
        print(f"hit path, wrk -t1 -c{a.connections} {a.duration}s x {a.rounds} rounds (req/s; p99):")
        print(f"  files mode:   {[round(r) for r, _ in off]} p99 {[p for _, p in off]}  median {moff:.0f}")
        print(f"  cluster mode: {[round(r) for r, _ in on]} p99 {[p for _, p in on]}  median {mon:.0f}")
        print(f"  ratio cluster/files: {mon / moff:.3f}")
    finally:
        for g in reps + [files]:
            g.stop()


if __name__ == "__main__":
    main()
