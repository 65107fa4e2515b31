#!/usr/bin/env python3
"""Per-operation budget: FUSE requests, replies and backing-tree system calls per file
operation, kmsfs beside gocryptfs, counted with strace on each daemon (all its threads).

For each target the workload runs on N files (cold cache before each phase) with strace
attached only while the phase runs; every system call of the daemon is attributed to the
phase: reads of /dev/fuse are requests, writes to it replies, the rest are the daemon's
own calls (backing tree, futex, ...). Counts are divided by N (for "read 1 MiB", by the
number of MiB read). Root only; strace, gocryptfs from Debian (bench/run.sh installs).

Usage: bench/budget.py [N]   (default 1000). Writes bench/results/DATE-budget.md.
With KMSFS_OLD_BIN (another kmsfs build) a third column, kmsfs-old: before and after.
"""
import collections
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsbench  # noqa: E402  (Target, drop_caches)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
BIG_MB = 64
LINE = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((\d+)?(<[^>]*>)?")


def traced(pid, fn):
    """Runs fn() with strace on every thread of pid; the daemon's calls by kind."""
    out = f"/tmp/budget-{pid}.trace"
    tids = os.listdir(f"/proc/{pid}/task")
    args = ["strace", "-qq", "-f", "-y", "-o", out]
    for t in tids:
        args += ["-p", t]
    st = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    fn()
    time.sleep(0.5)
    st.send_signal(signal.SIGINT)
    st.wait()
    counts = collections.Counter()
    for line in open(out, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        name, fdpath = m.group(1), m.group(3) or ""
        if "/dev/fuse" in fdpath:
            kind = "FUSE request" if name in ("read", "readv", "splice") else "FUSE reply" if name in ("write", "writev", "splice") else f"{name} /dev/fuse"
        elif name in ("futex", "epoll_pwait", "nanosleep", "sched_yield", "rt_sigreturn", "restart_syscall", "clock_nanosleep", "getpid", "gettid", "tgkill", "madvise", "mmap", "munmap", "mprotect", "rt_sigprocmask", "sigaltstack", "epoll_wait", "epoll_ctl", "pselect6"):
            kind = "(runtime: " + name + ")"
        else:
            kind = name
        counts[kind] += 1
    os.unlink(out)
    return counts


def phases(t):
    d = os.path.join(t.mnt, "b")
    os.makedirs(d, exist_ok=True)
    names = [os.path.join(d, f"f{i}") for i in range(N)]
    payload = os.urandom(4096)
    big = os.path.join(t.mnt, "big")

    def create():
        for n in names:
            with open(n, "wb") as f:
                f.write(payload)

    def stat():
        for n in names:
            os.stat(n)

    def read():
        for n in names:
            with open(n, "rb") as f:
                f.read()

    def unlink():
        for n in names:
            os.unlink(n)

    def readbig():
        with open(big, "rb") as f:
            while f.read(1 << 20):
                pass

    with open(big, "wb") as f:
        for _ in range(BIG_MB):
            f.write(os.urandom(1 << 20))
    os.sync()
    out = {}
    for name, fn, per, cold in [("create 4 KiB", create, N, False), ("stat (cold)", stat, N, True),
                                ("read 4 KiB (cold)", read, N, True), ("unlink", unlink, N, False),
                                ("read 1 MiB (cold, sequential)", readbig, BIG_MB, True)]:
        os.sync()
        if cold:
            fsbench.drop_caches()
        c = traced(t.pid, fn)
        os.sync()
        out[name] = {k: v / per for k, v in c.items()}
    return out


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    os.makedirs(fsbench.D, exist_ok=True)
    res = {}
    names = ["kmsfs", "gocryptfs"] + (["kmsfs-old"] if os.environ.get("KMSFS_OLD_BIN") else [])
    for name in names:
        t = fsbench.Target(name)
        try:
            t.setup()
            res[name] = phases(t)
        finally:
            t.teardown()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"Per-operation budget at {git}, {time.strftime('%Y-%m-%d %H:%M')}: {N} files (4 KiB), a {BIG_MB} MiB file; "
             "system calls of each daemon per operation (strace -f on all its threads).", ""]
    tot = lambda r: sum(v for k, v in r.items() if not k.startswith("("))  # noqa: E731
    for op in res["kmsfs"]:
        lines += [f"### {op}", "", "| per operation | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        kinds = sorted(set().union(*(res[n][op] for n in names)),
                       key=lambda k: (not k.startswith("FUSE"), k.startswith("("), -res["kmsfs"][op].get(k, 0)))
        for k in kinds:
            vals = [res[n][op].get(k, 0) for n in names]
            if max(vals) >= 0.05:
                lines.append(f"| {k} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
        lines += ["| **total (without runtime)** | " + " | ".join(f"**{tot(res[n][op]):.2f}**" for n in names) + " |", ""]
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", time.strftime("%Y-%m-%d-%H%M") + "-budget.md")
    open(out, "w").write(text)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
