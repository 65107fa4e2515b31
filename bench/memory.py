#!/usr/bin/env python3
"""Daemon memory per file: RSS of the kmsfs daemon after creating N small files and after
reading them all back cold, for this build and (KMSFS_OLD_BIN) another, side by side.

Usage (root): KMSFS_OLD_BIN=/path/to/old bench/memory.py [N]   (default 20000 files of
3,000 bytes in 100 directories; BENCH_REPEAT rounds, default 2, alternating the order).
Prints a Markdown table: RSS after mount, after creating, after reading back, peak.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsbench  # noqa: E402  (Target, drop_caches)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
REPEAT = int(os.environ.get("BENCH_REPEAT", "2"))


def rss(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(t):
    t.setup()
    try:
        out = {"mounted": rss(t.pid, "VmRSS")}
        d = os.path.join(t.mnt, "m")
        os.mkdir(d)
        for i in range(100):
            os.mkdir(os.path.join(d, str(i)))
        payload = os.urandom(3000)
        names = [os.path.join(d, str(i % 100), f"f{i}") for i in range(N)]
        for n in names:
            with open(n, "wb") as f:
                f.write(payload)
        out["created"] = rss(t.pid, "VmRSS")
        fsbench.drop_caches()
        for n in names:
            with open(n, "rb") as f:
                f.read()
        out["read back"] = rss(t.pid, "VmRSS")
        out["peak"] = rss(t.pid, "VmHWM")
        return out
    finally:
        t.teardown()


def main():
    targets = ["kmsfs"] + (["kmsfs-old"] if fsbench.KMSFS_OLD else [])
    res = {}
    for r in range(REPEAT):
        order = targets if r % 2 == 0 else targets[::-1]
        for name in order:
            for k, v in run(fsbench.Target(name)).items():
                res.setdefault((name, k), []).append(v)
    cols = ["mounted", "created", "read back", "peak"]
    print(f"{N} files of 3,000 bytes, {REPEAT} rounds (median MiB of daemon RSS)\n")
    print("| build | " + " | ".join(cols) + " | per file (read back − mounted) |")
    print("|---|" + "---|" * (len(cols) + 1))
    for name in targets:
        med = {c: statistics.median(res[(name, c)]) for c in cols}
        per = (med["read back"] - med["mounted"]) * 1024 * 1024 / N
        print(f"| {name} | " + " | ".join(f"{med[c]:.1f}" for c in cols) + f" | {per:,.0f} bytes |")


if __name__ == "__main__":
    main()
