#!/usr/bin/env python3
"""Cold stat by segment: where a cold stat of many small files spends its time.

fsbench's stat phase (5000 files in 100 directories, named round robin, page cache
dropped first) timed in four segments: the first 100 stats (each the first name looked
up in its directory), the next 100, 200-1000 and 1000-5000. Prints µs per stat in each
segment and files/s overall, one row per round, the mounts side by side.
Usage: bench/statseg.py [ROUNDS] DIR...  (each DIR inside a mount; `small/` is made
there once with fsbench's layout and left for the next run).
"""
import os
import sys
import time

N = 5000


def make(d):
    if os.path.exists(d):
        return
    os.mkdir(d)
    for i in range(100):
        os.mkdir(os.path.join(d, str(i)))
    payload = os.urandom(4096)
    for i in range(N):
        with open(os.path.join(d, str(i % 100), f"f{i}"), "wb") as f:
            f.write(payload)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def main():
    args = sys.argv[1:]
    rounds = int(args.pop(0)) if args and args[0].isdigit() else 3
    for m in args:
        make(os.path.join(m, "small"))
    print("| round | " + " | ".join(f"{m}: µs per stat 1-100, 101-200, 201-1000, 1001-5000; files/s" for m in args) + " |")
    print("|---|" + "---|" * len(args))
    for r in range(rounds):
        row = []
        for m in args:
            d = os.path.join(m, "small")
            names = [os.path.join(d, str(i % 100), f"f{i}") for i in range(N)]
            drop_caches()
            marks = []
            t0 = time.perf_counter()
            for k, n in enumerate(names):
                os.stat(n)
                if k in (99, 199, 999, N - 1):
                    marks.append(time.perf_counter())
            segs = [marks[0] - t0] + [b - a for a, b in zip(marks, marks[1:])]
            per = [s / c * 1e6 for s, c in zip(segs, (100, 100, 800, N - 1000))]
            row.append(", ".join(f"{p:.1f}" for p in per) + f"; {N / (marks[-1] - t0):,.0f}")
        print(f"| {r + 1} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
