#!/usr/bin/env python3
"""Cluster mode of benches/soak.sh (`--cluster`): three replicas sharing one redis-server under
mixed traffic while the policy set is pushed every 2 s, jtis are revoked with `token revoke`,
mutations and the admin API purge, for --duration seconds. Python 3 standard library only;
the gateway helpers come from benches/cluster_bench.py.

Criteria (exit 1 if one fails): 0 gateway 5xx; 0 requests accepted for a revoked jti when sent
more than 1 s after its revocation was written (the cluster's bound), on any replica; every
revocation refused by all three replicas (lag p50/p99 reported); every push applied or refused
for a stated reason; RSS of each replica's last window within 10 % of its first (after warm-up);
no unexpected status or transport error."""

import argparse
import collections
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_bench as cb  # noqa: E402

BOUND = 1.0
HIT = "{ posts { id title } }"
MUTATION = 'mutation { updatePost(where: { id: "clseedpostcaching00000002" }, data: { title: "soak" }) { id } }'


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class State:
    def __init__(self, a, reps, tokens):
        self.a, self.reps, self.tokens = a, reps, tokens
        self.stop = threading.Event()
        self.lock = threading.Lock()            # folder + Redis writes, one at a time
        self.victims = [j for j in tokens if j.startswith("victim-")]
        self.active = self.victims[:4]
        self.next_victim = 4
        self.revoked_at = {}                    # jti -> monotonic time the writer returned
        self.revoked = []
        self.records = []                       # (jti, t_send, status, replica)
        self.statuses = collections.Counter()
        self.unexpected = collections.Counter()
        self.errors = collections.Counter()
        self.pushes = collections.Counter()
        self.lags = []
        self.rss = {i: [] for i in range(len(reps))}
        self.purges = 0
        self.rec_lock = threading.Lock()


def folder(a):
    return os.path.join(a.work, "policies")


def write_tokens(a, jtis, tick):
    with open(os.path.join(folder(a), "tokens.toml"), "w") as f:
        for j in jtis:
            perms = '[[token.permission]]\naction = "read"\n'
            if j == "writer":
                perms += '[[token.permission]]\naction = "update"\n'
            f.write(f'[[token]]\njti = "{j}"\nname = "{j}"\ndefault_stage = "PUBLISHED"\n{perms}\n')
        # a filler that comes and goes: every push changes the set
        if tick % 2:
            f.write('[[token]]\njti = "filler-rotating"\nname = "rotating"\ndefault_stage = "PUBLISHED"\n\n')


def worker(st, idx):
    rng = random.Random(idx)
    conns = [cb.conn_of(g) for g in st.reps]
    while not st.stop.is_set():
        i = rng.randrange(len(st.reps))
        r = rng.random()
        jti = None
        if r < 0.4:
            cls, path, q, auth = "hit", "/cdn", HIT, None
        elif r < 0.55:
            cls, path, q, auth = "miss", "/cdn", f"{{ m{rng.randrange(50)}: posts {{ id }} }}", None
        elif r < 0.85:
            jti = rng.choice(st.active + st.revoked[-4:]) if st.revoked else rng.choice(st.active)
            cls, path, q, auth = "token", "/cdn", HIT, st.tokens[jti]
        elif r < 0.9:
            cls, path, q, auth = "mutation", "/content", MUTATION, st.tokens["writer"]
        else:
            cls, path, q, auth = "bad", "/cdn", HIT, st.tokens["victim-0"][:-4] + "AAAA"
        t = time.monotonic()
        try:
            s, _ = cb.post(conns[i], path, q, auth)
        except Exception as e:  # noqa: BLE001 - counted, then a fresh connection
            st.errors[f"{cls}:{type(e).__name__}"] += 1
            conns[i] = cb.conn_of(st.reps[i])
            continue
        st.statuses[(cls, s)] += 1
        ok = {"hit": {200}, "miss": {200}, "token": {200, 401}, "mutation": {200},
              "bad": {401}}[cls]
        if s not in ok:
            st.unexpected[(cls, s)] += 1
        if jti:
            with st.rec_lock:
                st.records.append((jti, t, s, i))


def pusher(st):
    tick = 0
    while not st.stop.wait(2.0):
        tick += 1
        with st.lock:
            write_tokens(st.a, list(st.tokens), tick)
            out = subprocess.run([st.a.bin, "policy", "push", folder(st.a), "--config", st.reps[0].config],
                                 capture_output=True, text=True)
        st.pushes["applied" if out.returncode == 0 else "refused: " + out.stderr.strip().splitlines()[-1][:80]] += 1


def revoker(st):
    probes = [cb.conn_of(g) for g in st.reps]
    while not st.stop.wait(st.a.revoke_interval):
        if st.next_victim >= len(st.victims):
            break
        j = st.active[0]
        st.active = st.active[1:] + [st.victims[st.next_victim]]
        st.next_victim += 1
        with st.lock:
            subprocess.run([st.a.bin, "token", "revoke", j, "--config", st.reps[0].config],
                           check=True, capture_output=True)
            t0 = time.monotonic()
            st.revoked_at[j] = t0
            st.revoked.append(j)
            with open(os.path.join(folder(st.a), "revoked.txt"), "a") as f:
                f.write(j + "\n")
        pending = set(range(len(st.reps)))
        while pending and time.monotonic() - t0 < 10:
            for i in list(pending):
                try:
                    s, _ = cb.post(probes[i], "/cdn", HIT, st.tokens[j])
                except Exception:  # noqa: BLE001
                    probes[i] = cb.conn_of(st.reps[i])
                    continue
                if s == 401:
                    st.lags.append(time.monotonic() - t0)
                    pending.discard(i)
            time.sleep(0.001)
        if pending:
            st.errors[f"revocation of {j} not applied on replicas {sorted(pending)} within 10 s"] += 1


def purger(st):
    rng = random.Random(7)
    while not st.stop.wait(3.0):
        g = rng.choice(st.reps)
        try:
            c = http.client.HTTPConnection("127.0.0.1", g.admin, timeout=5)
            c.request("POST", "/admin/purge", json.dumps({"model": "Post"}),
                      {"authorization": "Bearer " + cb.ADMIN_TOKEN})
            if c.getresponse().status == 200:
                st.purges += 1
        except OSError as e:
            st.errors[f"purge:{type(e).__name__}"] += 1


def sampler(st):
    while not st.stop.wait(5.0):
        for i, g in enumerate(st.reps):
            st.rss[i].append(rss_kib(g.proc.pid))


def main():
    ap = argparse.ArgumentParser()
    for k in ("bin", "work", "redis", "cms", "keys"):
        ap.add_argument("--" + k, required=True)
    for k, d in (("base-port", 19500), ("duration", 120), ("concurrency", 12), ("revoke-interval", 5)):
        ap.add_argument("--" + k, type=int, default=d)
    a = ap.parse_args()
    # cluster_bench.Gw reads these
    a.connections = 8
    with open(os.path.join(a.work, "hs.secret"), "w") as f:
        f.write("bench-hs256-secret-with-at-least-32-bytes!\n")
    os.makedirs(folder(a), exist_ok=True)
    with open(os.path.join(folder(a), "public.toml"), "w") as f:
        f.write('default_stage = "PUBLISHED"\n[[permission]]\naction = "read"\n')
    n_victims = a.duration // a.revoke_interval + 8
    jtis = ["writer"] + [f"victim-{k}" for k in range(n_victims)] + [f"filler-{k}" for k in range(20)]
    write_tokens(a, jtis, 0)
    with open(os.path.join(folder(a), "revoked.txt"), "w") as f:
        f.write("# revoked during the soak\n")
    cb.wait_for_cms(a)
    reps = [cb.Gw(a, f"replica{i}", i, True, True) for i in range(3)]
    # No SDL in the folder: every push introspects the upstream to check it, which loads the
    # whole gateway.toml (its admin token included).
    os.environ["BENCH_ADMIN_TOKEN"] = cb.ADMIN_TOKEN
    push = subprocess.run([a.bin, "policy", "push", folder(a), "--config", reps[0].config],
                          capture_output=True, text=True)
    if push.returncode != 0:
        sys.exit("push failed: " + push.stderr)
    for g in reps:
        g.start()
    try:
        for g in reps:
            g.wait_ready()
        tokens = {j: cb.mint(a, j) for j in jtis}
        st = State(a, reps, tokens)
        threads = [threading.Thread(target=worker, args=(st, k)) for k in range(a.concurrency)]
        threads += [threading.Thread(target=f, args=(st,)) for f in (pusher, revoker, purger, sampler)]
        t_start = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(a.duration)
        st.stop.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t_start
        violations, within = [], 0
        for jti, t, s, i in st.records:
            at = st.revoked_at.get(jti)
            if at is None or t < at or s != 200:
                continue
            if t > at + BOUND:
                violations.append((jti, round(t - at, 3), i))
            else:
                within += 1
        fails = []
        total = sum(st.statuses.values())
        fivexx = sum(n for (c, s), n in st.statuses.items() if s >= 500)
        print(f"\ncluster soak: 3 replicas, {elapsed:.0f} s, {total} requests ({total / elapsed:.0f}/s), "
              f"{len(st.revoked)} revocations, {sum(st.pushes.values())} pushes, {st.purges} admin purges")
        print("statuses:", dict(sorted(((f"{c} {s}", n) for (c, s), n in st.statuses.items()))))
        print("pushes:", dict(st.pushes))
        lags = sorted(st.lags)
        if lags:
            print(f"revocation lag (writer exit -> first 401, per replica, n={len(lags)}): "
                  f"p50 {cb.pct(lags, 50) * 1e3:.1f} ms, p99 {cb.pct(lags, 99) * 1e3:.1f} ms, max {lags[-1] * 1e3:.1f} ms")
        print(f"accepted for a revoked jti: {within} inside the 1 s bound, {len(violations)} after it")
        for i, series in st.rss.items():
            s = [x for x in series if x]
            if len(s) >= 6:
                first, last = s[1:3], s[-2:]
                growth = (sum(last) / len(last)) / (sum(first) / len(first)) - 1
                print(f"replica {i} RSS: {s[1] / 1024:.1f} MiB -> {s[-1] / 1024:.1f} MiB ({growth * 100:+.1f} %)")
                if growth > 0.10:
                    fails.append(f"replica {i} RSS grew {growth * 100:.1f} %")
        if fivexx:
            fails.append(f"{fivexx} 5xx")
        if violations:
            fails.append(f"{len(violations)} requests accepted after the 1 s bound: {violations[:5]}")
        if st.unexpected:
            fails.append(f"unexpected statuses {dict(st.unexpected)}")
        if st.errors:
            fails.append(f"errors {dict(st.errors)}")
        if len(lags) != 3 * len(st.revoked):
            fails.append(f"{3 * len(st.revoked) - len(lags)} replica revocations never observed")
        bad_pushes = {k: n for k, n in st.pushes.items() if k != "applied" and "CONFLICT" not in k}
        if bad_pushes:
            fails.append(f"pushes refused: {bad_pushes}")
        print("RESULT:", "PASS" if not fails else "FAIL: " + "; ".join(fails))
        sys.exit(1 if fails else 0)
    finally:
        for g in reps:
            g.stop()


if __name__ == "__main__":
    main()
