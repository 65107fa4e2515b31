#!/usr/bin/env python3
"""What a FUSE round trip's cross-CPU wake-ups cost on this machine: fsbench's small-file
phases (create, cold stat, cold read, unlink of N 4 KiB files in 100 directories) through
one kmsfs mount, alternating two modes round by round:

- free:   the daemon's threads and this process on every CPU (as fsbench runs them);
- pinned: the daemon's threads and this process on CPU 0 only, so each request is served
          on its caller's CPU (what a per-CPU transport such as FUSE-over-io_uring does),
          at the price of every other CPU.

Prints files/s per phase and round, and pinned ÷ free per round.

Usage (root; drops caches): KMSFS_BIN=target/release/kmsfs bench/pinned.py [N] [ROUNDS] [DIR]
(default 5000 files, 3 rounds, /var/tmp/kmsfs-pinned)
"""
import os
import shutil
import statistics
import subprocess
import sys
import time
import types

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
os.environ["BENCH_FILES"] = str(N)
os.environ.setdefault("BENCH_SETTLE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsbench  # noqa: E402  (its small-file step, with N files)

ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
D = sys.argv[3] if len(sys.argv) > 3 else "/var/tmp/kmsfs-pinned"
KMSFS = os.environ.get("KMSFS_BIN", "target/release/kmsfs")
CPUS = os.sched_getaffinity(0)


def pin(pid, cpus):
    """All threads of `pid` (and this process) onto `cpus`."""
    subprocess.run(["taskset", "-a", "-p", "-c", ",".join(map(str, sorted(cpus))), str(pid)],
                   check=True, stdout=subprocess.DEVNULL)
    os.sched_setaffinity(0, cpus)


def phases(mnt):
    """fsbench's small-file step, on the mount at `mnt`."""
    return fsbench.small_files(types.SimpleNamespace(mnt=mnt))


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (drops caches, mounts)")
    shutil.rmtree(D, ignore_errors=True)
    os.makedirs(os.path.join(D, "mnt"))
    back, mnt = os.path.join(D, "backing"), os.path.join(D, "mnt")
    env = dict(os.environ, KMSFS_KMS="local:" + os.path.join(D, "keystore"),
               KMSFS_KNOWN_TREES=os.path.join(D, "known_trees.json"), KMSFS_SEAL="none")
    subprocess.run([KMSFS, "init", back], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([KMSFS, "mount", back, mnt, "--log-file", os.path.join(D, "log")],
                   env=env, check=True)
    pid = int(subprocess.check_output(["pgrep", "-n", "-f", f"kmsfs mount {back}"]).split()[0])
    rows = []
    try:
        for r in range(ROUNDS):
            pin(pid, CPUS)
            free = phases(mnt)
            pin(pid, {min(CPUS)})
            pinned = phases(mnt)
            pin(pid, CPUS)
            rows.append((free, pinned))
            print(f"round {r + 1} done", file=sys.stderr)
    finally:
        os.sched_setaffinity(0, CPUS)
        subprocess.run(["umount", mnt], check=False)
        time.sleep(0.3)
        shutil.rmtree(D, ignore_errors=True)
    print(f"{N} small files through one kmsfs mount ({KMSFS}), {ROUNDS} rounds, "
          f"{time.strftime('%Y-%m-%d %H:%M')}; files/s, free | pinned to CPU {min(CPUS)}\n")
    print("| phase | free (per round) | pinned (per round) | pinned ÷ free (per round) | median |")
    print("|---|---|---|---|---|")
    for ph in ("create", "stat", "read", "unlink"):
        f = [fr[ph] for fr, _ in rows]
        p = [pn[ph] for _, pn in rows]
        q = [b / a for a, b in zip(f, p)]
        print(f"| {ph} | {', '.join(f'{x:,.0f}' for x in f)} | {', '.join(f'{x:,.0f}' for x in p)} "
              f"| {', '.join(f'{x:.2f}' for x in q)} | **{statistics.median(q):.2f}** |")


if __name__ == "__main__":
    main()
