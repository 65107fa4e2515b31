#!/usr/bin/env python3
"""The floor of a cold stat through each mount: a LOOKUP that finds nothing.

stat(2) of N names that do not exist, twice (the second pass finds the backing
filesystem's negative dentries, so it is the FUSE round trip plus the daemon's own work
and little else). Usage: bench/miss.py DIR... (each DIR inside a mount, or on the bare
disk); prints one markdown row per DIR and pass.
"""
import os
import sys
import time

N = int(os.environ.get("MISS_N", "20000"))


def per_miss(d, names):
    t = time.perf_counter()
    for p in names:
        try:
            os.stat(p)
        except FileNotFoundError:
            pass
    return (time.perf_counter() - t) / len(names) * 1e6


def main():
    print(f"| dir | µs per missing name, pass 1 | pass 2 | ({N} names, {time.strftime('%Y-%m-%d %H:%M')}) |")
    print("|---|---|---|---|")
    for d in sys.argv[1:]:
        names = [os.path.join(d, f"missing-{i}") for i in range(N)]
        a, b = per_miss(d, names), per_miss(d, names)
        print(f"| {d} | {a:.1f} | {b:.1f} | |")


if __name__ == "__main__":
    main()
