#!/usr/bin/env python3
"""Cold stat by segment: where a cold stat of many small files spends its time.

fsbench's stat phase (5000 files in 100 directories, named round robin, page cache
dropped first) timed in four segments: the first 100 stats (each the first name looked
up in its directory), the next 100, 200-1000 and 1000-5000. Prints µs per stat in each
segment, files/s overall and the disk reads the stats cost (reads of the disk that holds
the current directory), one row per round, the mounts side by side.
Usage: bench/statseg.py [--fresh] [--settle S] [ROUNDS] DIR...  (each DIR inside a
mount). By default `small/` is made there once with fsbench's layout and left for the
next run; with --fresh it is made anew before every round, as fsbench does (removed,
2 s pause, the 5000 creates, sync), and the row starts with the create rate. --settle S
waits S seconds between dropping the caches and the first stat.
"""
import os
import shutil
import sys
import time

N = 5000


def names(d):
    return [os.path.join(d, str(i % 100), f"f{i}") for i in range(N)]


def make(d, fresh=False):
    """Makes fsbench's layout in `d`; returns the creates per second (fresh only)."""
    if os.path.exists(d):
        if not fresh:
            return None
        shutil.rmtree(d)
    os.mkdir(d)
    for i in range(100):
        os.mkdir(os.path.join(d, str(i)))
    payload = os.urandom(4096)
    if fresh:
        time.sleep(2)
    t = time.perf_counter()
    for n in names(d):
        with open(n, "wb") as f:
            f.write(payload)
    os.sync()
    return N / (time.perf_counter() - t)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def disk_reads():
    """Reads completed by the disk under the current directory (0 if unknown)."""
    st = os.stat(".")
    try:
        with open(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat") as f:
            return int(f.read().split()[0])
    except OSError:
        return 0


def main():
    args = sys.argv[1:]
    fresh = "--fresh" in args
    args = [a for a in args if a != "--fresh"]
    settle = 0.0
    if "--settle" in args:
        i = args.index("--settle")
        settle = float(args[i + 1])
        del args[i:i + 2]
    rounds = int(args.pop(0)) if args and args[0].isdigit() else 3
    if not fresh:
        for m in args:
            make(os.path.join(m, "small"))
    cols = ("create files/s; " if fresh else "") + "µs per stat 1-100, 101-200, 201-1000, 1001-5000; files/s; disk reads"
    print("| round | " + " | ".join(f"{m}: {cols}" for m in args) + " |")
    print("|---|" + "---|" * len(args))
    for r in range(rounds):
        row = []
        for m in args:
            d = os.path.join(m, "small")
            made = make(d, fresh) if fresh else None
            todo = names(d)
            drop_caches()
            time.sleep(settle)
            reads = disk_reads()
            marks = []
            t0 = time.perf_counter()
            for k, n in enumerate(todo):
                os.stat(n)
                if k in (99, 199, 999, N - 1):
                    marks.append(time.perf_counter())
            reads = disk_reads() - reads
            segs = [marks[0] - t0] + [b - a for a, b in zip(marks, marks[1:])]
            per = [s / c * 1e6 for s, c in zip(segs, (100, 100, 800, N - 1000))]
            cell = (f"{made:,.0f}; " if made else "") + ", ".join(f"{p:.1f}" for p in per)
            row.append(cell + f"; {N / (marks[-1] - t0):,.0f}; {reads}")
        print(f"| {r + 1} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
