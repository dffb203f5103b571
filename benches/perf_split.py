#!/usr/bin/env python3
"""Where a server's CPU goes per request, from a perf profile folded by inferno-collapse-perf.

    perf_split.py LABEL FOLDED US_PER_REQ [LABEL FOLDED US_PER_REQ ...]

US_PER_REQ is the server's CPU per request measured without the profiler (the side-by-side
table's us/req); each share of the samples is scaled by it, so the columns read as microseconds
of CPU per request. cpu-clock sampling cannot see inside a VM's host, so "kernel" is what the
guest kernel did on the server's behalf: its own syscalls, and the loopback peer's TCP receive and
wake-up, which run in the sender's context.
"""

import sys
from collections import Counter

# Kernel parts, by the first matching frame from the syscall entry down.
KERNEL = [
    ("send (tcp_sendmsg, incl. loopback receive + wake-up of the peer)", ("tcp_sendmsg",)),
    ("receive (tcp_recvmsg)", ("tcp_recvmsg",)),
    ("epoll_wait / scheduling", ("epoll_wait", "do_epoll_wait", "schedule")),
]
# User parts, by the deepest matching frame (leaf first).
USER = [
    ("allocator", ("mi_", "__rust_alloc", "__rust_dealloc", "__rust_realloc", "malloc", "free")),
    ("memcpy (moves of large futures, buffer copies)", ("__memcpy", "__memmove")),
    ("http::HeaderMap (header maps)", ("http::header",)),
    ("clock and timers", ("clock_gettime", "read_tsc", "pingora_timeout", "tokio::time")),
    ("GraphQL parse, authorize, auth", ("graphql::", "permissions::", "auth::")),
    ("read cache (moka)", ("cache::", "moka")),
    ("metrics", ("prometheus", "metrics::")),
    ("upstream client (pool, request, answer)", ("upstream::", "client::HttpSession", "Connector", "connection_pool")),
    ("contentgate request logic", ("contentgate::",)),
    ("pingora HTTP/1 session and proxy loop", ("pingora",)),
    ("tokio scheduler and I/O driver", ("tokio::", "mio::")),
    ("nginx", ("ngx_", "[nginx]")),
]


def split(path):
    kern, user = Counter(), Counter()
    total = 0
    for line in open(path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        entry = next((i for i, f in enumerate(frames) if f.startswith(("entry_SYSCALL", "asm_"))), None)
        if entry is not None:
            below = frames[entry:]
            part = next((name for name, pats in KERNEL if any(p in f for f in below for p in pats)), "other kernel")
            kern[part] += n
            continue
        part = "other user"
        for f in reversed(frames):
            hit = next((name for name, pats in USER if any(p in f for p in pats)), None)
            if hit:
                part = hit
                break
        user[part] += n
    return total, kern, user


def main(argv):
    if len(argv) < 3 or len(argv) % 3:
        sys.exit(__doc__)
    runs = [(argv[i], argv[i + 1], float(argv[i + 2])) for i in range(0, len(argv), 3)]
    for label, path, us in runs:
        total, kern, user = split(path)
        if total == 0:
            print(f"== {label}: no samples in {path}")
            continue
        k, u = sum(kern.values()), sum(user.values())
        print(f"== {label}: {us:.1f} us CPU/request; sample weight {total}; kernel {100 * k / total:.0f}%, user {100 * u / total:.0f}%")
        print(f"   kernel  {us * k / total:6.2f} us")
        for name, n in kern.most_common():
            print(f"     {us * n / total:6.2f} us  {name}")
        print(f"   user    {us * u / total:6.2f} us")
        for name, n in user.most_common():
            print(f"     {us * n / total:6.2f} us  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
