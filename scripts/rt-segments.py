#!/usr/bin/env python3
"""Splits the UDP request/reply round trip of `msgnet-bench datagrams` into segments, raw UDP
and MsgNet side by side, from system-call tracepoints (a diagnostic for BENCHMARKS.md's
"Where the UDP round trip goes"; it makes no claim about the goals, which the bench tool judges).

Each leg runs alone (`--leg raw`, then `--leg msgnet`) with one request in flight, under
`perf record` of four syscall tracepoints. Every round trip is cut where a system call marks it:

  request hop    client loop enters sendmsg (the request)  -> server loop's recvmmsg returns it
  server         server loop's recvmmsg returns             -> server loop enters sendmsg (reply)
  reply hop      server loop enters sendmsg                 -> client loop's recvmmsg returns it
  client         client loop's recvmmsg returns the reply   -> client loop enters sendmsg (next request)
    of which: to wake-up   ... -> the client loop wakes the requesting task (futex wake)
              after wake-up  futex wake -> next request's sendmsg (the task runs, hops back to
                             the loop, which sends); only round trips with a futex wake

A hop is the kernel's loopback delivery plus the receiving thread's wake-up (up to its
epoll_wait's return), then the event loop's way to the read; "server" and
"client" are user-space work (plus the read system call's return path) on the critical path.
Tracepoints cost about a microsecond each, so absolute values run a little high; compare the
legs. The first fifth of the round trips (handshake, identify, warm-up) is skipped.

Needs `perf` (Debian: linux-perf) and permission for syscall tracepoints (root, or
kernel.perf_event_paranoid <= -1). Usage, from the repository root:

  swift build -c release --product msgnet-bench
  scripts/rt-segments.py [--requests 4000] [--bench .build/release/msgnet-bench]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

EVENTS = [
    "syscalls:sys_exit_recvmmsg",
    "syscalls:sys_enter_sendmsg",
    "syscalls:sys_enter_futex",
    "syscalls:sys_exit_epoll_wait",
]
LINE = re.compile(r"\s*(\S+)\s+(\d+)\s+([\d.]+):\s+syscalls:(\S+):\s*(.*)")
FUTEX_WAKE_PRIVATE = "op: 0x00000081"


def trace(bench, leg, requests, workdir):
    data = os.path.join(workdir, f"{leg}.data")
    command = [
        bench, "datagrams", "--runs", "1", "--requests", str(requests), "--in-flight", "1",
        "--requests-only", "--leg", leg,
    ]
    record = ["perf", "record", "-q", "-o", data]
    for event in EVENTS:
        record += ["-e", event]
    out = subprocess.run(record + command, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"perf record failed ({out.returncode}):\n{out.stderr}")
    p50 = next((l for l in out.stdout.splitlines() if "p50, 1 in flight" in l), "")
    script = subprocess.run(
        ["perf", "script", "-i", data, "-F", "comm,tid,time,event,trace"],
        capture_output=True, text=True, check=True)
    events = []
    for line in script.stdout.splitlines():
        m = LINE.match(line)
        if m:
            comm, tid, t, event, rest = m.groups()
            events.append((float(t) * 1e6, int(tid), comm, event, rest.strip()))
    return events, p50


def loops(events):
    """(server tid, client tid): the event-loop threads that send; the client is the one that
    wakes requesting tasks."""
    senders, wakes = {}, {}
    for _, tid, comm, event, rest in events:
        if not comm.startswith("NIO-"):
            continue
        if event == "sys_enter_sendmsg":
            senders[tid] = senders.get(tid, 0) + 1
        elif event == "sys_enter_futex" and FUTEX_WAKE_PRIVATE in rest:
            wakes[tid] = wakes.get(tid, 0) + 1
    busy = sorted(senders, key=lambda t: -senders[t])[:2]
    if len(busy) < 2:
        sys.exit("fewer than two sending event-loop threads in the trace")
    client = max(busy, key=lambda t: wakes.get(t, 0))
    server = busy[0] if busy[1] == client else busy[1]
    return server, client


def cycles(events, server, client):
    """One tuple per complete round trip: (t0 request sent, t1 server read, t2 reply sent,
    t3 client read, t4 futex wake or None, t5 next request sent, t6 server's epoll_wait return
    before t1 or None, t7 client's epoll_wait return before t3 or None)."""
    out, state, t = [], 0, {}
    for time, tid, _, event, rest in events:
        if event == "sys_exit_epoll_wait":
            if state == 1 and tid == server:
                t[6] = time
            elif state == 3 and tid == client:
                t[7] = time
            continue
        sent = event == "sys_enter_sendmsg"
        # recvmmsg's return value: datagrams read, or a negative errno (EAGAIN after the last).
        read = event == "sys_exit_recvmmsg" and 0 < int(rest, 16) < 1 << 63
        if tid == client and sent:
            if state == 4:
                out.append((t[0], t[1], t[2], t[3], t.get(4), time, t.get(6), t.get(7)))
            state, t = 1, {0: time}
        elif state == 1 and tid == server and read:
            state, t[1] = 2, time
        elif state == 2 and tid == server and sent:
            state, t[2] = 3, time
        elif state == 3 and tid == client and read:
            state, t[3] = 4, time
        elif state == 4 and tid == client and event == "sys_enter_futex" and FUTEX_WAKE_PRIVATE in rest:
            t.setdefault(4, time)
        elif tid == server and sent and state != 2:
            state = 0  # a datagram outside the request/reply pattern (a timer's ack): resynchronize
    return out[len(out) // 5:]


def quartiles(values):
    v = sorted(values)
    if not v:
        return (float("nan"),) * 3
    return v[len(v) // 4], v[len(v) // 2], v[(3 * len(v)) // 4]


def segments(rts):
    woken = [c for c in rts if c[4] is not None]
    polled = [c for c in rts if c[6] is not None and c[7] is not None]
    return [
        ("request hop", [c[1] - c[0] for c in rts]),
        ("  of which: to epoll_wait's return", [c[6] - c[0] for c in polled]),
        ("  of which: epoll_wait's return to the read", [c[1] - c[6] for c in polled]),
        ("server", [c[2] - c[1] for c in rts]),
        ("reply hop", [c[3] - c[2] for c in rts]),
        ("  of which: to epoll_wait's return", [c[7] - c[2] for c in polled]),
        ("  of which: epoll_wait's return to the read", [c[3] - c[7] for c in polled]),
        ("client", [c[5] - c[3] for c in rts]),
        ("  of which: to wake-up", [c[4] - c[3] for c in woken]),
        ("  of which: after wake-up", [c[5] - c[4] for c in woken]),
        ("round trip", [c[5] - c[0] for c in rts]),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per run (two runs per leg)")
    parser.add_argument("--bench", default=".build/release/msgnet-bench")
    args = parser.parse_args()
    if not os.access(args.bench, os.X_OK):
        sys.exit(f"{args.bench} not found: swift build -c release --product msgnet-bench")
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for leg in ("raw", "msgnet"):
            events, p50 = trace(args.bench, leg, args.requests, workdir)
            server, client = loops(events)
            rts = cycles(events, server, client)
            results[leg] = (segments(rts), len(rts), p50)
    print(f"scripts/rt-segments.py --requests {args.requests}")
    for leg, (_, n, p50) in results.items():
        print(f"{leg}: {n} round trips traced; bench line under tracing: {p50.strip()}")
    print()
    print("| segment (µs, p25 / p50 / p75) | raw | MsgNet | p50 difference |")
    print("|---|---|---|---|")
    for i, (name, raw_values) in enumerate(results["raw"][0]):
        msg_values = results["msgnet"][0][i][1]
        r, m = quartiles(raw_values), quartiles(msg_values)
        print(
            f"| {name} | {r[0]:.0f} / {r[1]:.0f} / {r[2]:.0f} | {m[0]:.0f} / {m[1]:.0f} / {m[2]:.0f} "
            f"| {m[1] - r[1]:+.0f} |")


if __name__ == "__main__":
    main()
