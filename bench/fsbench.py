#!/usr/bin/env python3
"""Side-by-side filesystem benchmark: plain directory vs gocryptfs vs kmsfs (vs bindfs).

Every target lives on the same disk; every workload runs on each target in turn, REPEAT
times, and the table reports medians and the kmsfs / gocryptfs ratio. Run as root (drops
the page cache before cold reads). Usage: bench/run.sh (builds kmsfs, installs nothing).

Environment: BENCH_DIR (work dir, default /var/tmp/kmsfs-bench), BENCH_SIZE_MB (1024),
BENCH_REPEAT (3), BENCH_FILES (5000), BENCH_TREE (a directory to tar for the untar
workload; default the cargo registry sources), BENCH_TARGETS (plain,gocryptfs,kmsfs,bindfs;
kmsfs-plain is kmsfs with --plaintext-names, for the cost of encrypted names),
KMSFS_BIN, KMSFS_OLD_BIN (a second build, target kmsfs-old), KMSFS_CHUNK (kmsfs chunk size), KMSFS_MOUNT_OPTS (extra mount flags), BENCH_SETTLE (pause before each timed
write, seconds, default 5),
BENCH_ONLY (comma list of seqwrite,seqread,randread,randwrite,mix,small,tree; default all).

The "limit" column is plain ÷ gocryptfs: the ratio kmsfs would reach if it were as fast as
the bare disk. Where it is below a goal, the goal cannot be met on this disk.
"""
import os as _os
_os.environ.setdefault("KMSFS_SEAL", "none")  # benchmarks measure the filesystem, not the seal
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

D = os.environ.get("BENCH_DIR", "/var/tmp/kmsfs-bench")
SIZE_MB = int(os.environ.get("BENCH_SIZE_MB", "1024"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
NFILES = int(os.environ.get("BENCH_FILES", "5000"))
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
TARGETS = os.environ.get("BENCH_TARGETS", "plain,gocryptfs,kmsfs,bindfs").split(",")
KMSFS = os.environ.get("KMSFS_BIN", os.path.join(os.path.dirname(__file__), "..", "target", "release", "kmsfs"))
# Another kmsfs build (target "kmsfs-old"), for a before/after in the same interleaved run.
KMSFS_OLD = os.environ.get("KMSFS_OLD_BIN")
TREE = os.environ.get("BENCH_TREE") or next(
    (os.path.join(os.path.expanduser("~/.cargo/registry/src"), d) for d in sorted(os.listdir(os.path.expanduser("~/.cargo/registry/src")))),
    None,
)


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


SETTLE = float(os.environ.get("BENCH_SETTLE", "5"))


def settle():
    """Before a timed write: let the disk finish what the previous target left behind
    (its fsync returned, but the device keeps writing for a while)."""
    os.sync()
    time.sleep(SETTLE)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


class Target:
    def __init__(self, name):
        self.name = name
        self.root = os.path.join(D, name)
        self.mnt = os.path.join(self.root, "mnt")
        self.pid = None

    def setup(self):
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.mnt)
        back = os.path.join(self.root, "backing")
        if self.name == "plain":
            return
        if self.name == "gocryptfs":
            pw = os.path.join(self.root, "pw")
            open(pw, "w").write("benchmark-password\n")
            os.makedirs(back)
            sh("gocryptfs", "-q", "-init", "-passfile", pw, back)
            sh("gocryptfs", "-q", "-nosyslog", "-passfile", pw, back, self.mnt)
            self.pid = int(subprocess.check_output(["pgrep", "-n", "-f", f"gocryptfs.*{back}"]).split()[0])
        elif self.name in ("kmsfs", "kmsfs-plain", "kmsfs-old"):
            binary = KMSFS_OLD if self.name == "kmsfs-old" else KMSFS
            env = dict(os.environ, KMSFS_KMS="local:" + os.path.join(self.root, "keystore"),
                       KMSFS_KNOWN_TREES=os.path.join(self.root, "known_trees.json"))
            args = [binary, "init", back]
            if self.name == "kmsfs-plain":
                args.append("--plaintext-names")
            if os.environ.get("KMSFS_CHUNK"):
                args += ["--chunk-size", os.environ["KMSFS_CHUNK"]]
            sh(*args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            extra = os.environ.get("KMSFS_MOUNT_OPTS", "").split()
            sh(binary, "mount", back, self.mnt, "--log-file", os.path.join(self.root, "log"), *extra, env=env)
            self.pid = int(subprocess.check_output(["pgrep", "-n", "-f", f"kmsfs mount {back}"]).split()[0])
        elif self.name == "bindfs":
            os.makedirs(back)
            sh("bindfs", "--multithreaded", back, self.mnt)
            self.pid = int(subprocess.check_output(["pgrep", "-n", "-f", f"bindfs.*{back}"]).split()[0])

    def teardown(self):
        if self.name != "plain":
            subprocess.run(["umount", self.mnt], check=False)
            time.sleep(0.3)
        shutil.rmtree(self.root, ignore_errors=True)

    def daemon_stats(self):
        if not self.pid:
            return None
        try:
            st = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()
            cpu = (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
            rss = next(int(l.split()[1]) for l in open(f"/proc/{self.pid}/status") if l.startswith("VmHWM"))
            return cpu, rss
        except (OSError, StopIteration):
            return None


def fio(path, name, rw, bs, size_mb, extra=(), runtime=None):
    args = ["fio", "--name=" + name, "--filename=" + path, "--rw=" + rw, "--bs=" + bs, f"--size={size_mb}M",
            "--ioengine=psync", "--output-format=json", "--group_reporting"] + list(extra)
    if runtime:
        args += ["--time_based", f"--runtime={runtime}"]
    out = json.loads(subprocess.check_output(args, stderr=subprocess.DEVNULL))
    j = out["jobs"][0]
    return j


def w_seqwrite(t):
    f = os.path.join(t.mnt, "big")
    if os.path.exists(f):
        os.unlink(f)
    settle()
    start = time.time()
    fio(f, "seqwrite", "write", "1M", SIZE_MB, ["--end_fsync=1"])
    return SIZE_MB / (time.time() - start), "MiB/s"


def w_seqread(t):
    f = os.path.join(t.mnt, "big")
    drop_caches()
    j = fio(f, "seqread", "read", "1M", SIZE_MB)
    return j["read"]["bw"] / 1024, "MiB/s"


def w_randread(t):
    f = os.path.join(t.mnt, "big")
    drop_caches()
    j = fio(f, "randread", "randread", "4k", SIZE_MB, runtime=10)
    return j["read"]["iops"], "IOPS"


def w_randwrite(t):
    # Cold, like the reads: what is cached otherwise depends on the workloads before it,
    # and a 4 KiB write into a cold encrypted file costs reads of its neighbours' pages.
    f = os.path.join(t.mnt, "big")
    settle()
    drop_caches()
    start = time.time()
    j = fio(f, "randwrite", "randwrite", "4k", SIZE_MB, ["--end_fsync=1", "--io_size=64M"])
    ios = j["write"]["total_ios"]
    return ios / (time.time() - start), "IOPS"


def w_concurrent(t):
    f = os.path.join(t.mnt, "big")
    drop_caches()
    j = fio(f, "mixed4", "randrw", "4k", SIZE_MB, ["--numjobs=4", "--rwmixread=70"], runtime=10)
    return j["read"]["iops"] + j["write"]["iops"], "IOPS"


def small_files(t):
    d = os.path.join(t.mnt, "small")
    if os.path.exists(d):
        shutil.rmtree(d)
    os.mkdir(d)
    for i in range(100):
        os.mkdir(os.path.join(d, str(i)))
    payload = os.urandom(4096)
    names = [os.path.join(d, str(i % 100), f"f{i}") for i in range(NFILES)]
    res = {}
    settle()
    start = time.time()
    for n in names:
        with open(n, "wb") as f:
            f.write(payload)
    os.sync()
    res["create"] = NFILES / (time.time() - start)
    drop_caches()
    start = time.time()
    for n in names:
        os.stat(n)
    res["stat"] = NFILES / (time.time() - start)
    drop_caches()
    start = time.time()
    for n in names:
        with open(n, "rb") as f:
            f.read()
    res["read"] = NFILES / (time.time() - start)
    start = time.time()
    for n in names:
        os.unlink(n)
    os.sync()
    res["unlink"] = NFILES / (time.time() - start)
    return res


TARBALL = os.path.join(D, "tree.tar")


def w_untar(t):
    d = os.path.join(t.mnt, "tree")
    if os.path.exists(d):
        shutil.rmtree(d)
    os.mkdir(d)
    settle()
    start = time.time()
    sh("tar", "-xf", TARBALL, "-C", d)
    os.sync()
    untar = time.time() - start
    drop_caches()
    start = time.time()
    sh("tar", "-cf", "/dev/null", "-C", d, ".")  # GNU tar skips reading for /dev/null
    n = 0
    for root, _, files in os.walk(d):
        for fn in files:
            p = os.path.join(root, fn)
            if not os.path.islink(p):
                with open(p, "rb") as f:
                    while f.read(1 << 20):
                        pass
                n += 1
    readback = time.time() - start
    return {"untar": TREE_MB / untar, "readback": TREE_MB / readback}


WORKLOADS = [
    ("seq write 1 MiB + fsync", w_seqwrite, "seqwrite"),
    ("seq read, cold", w_seqread, "seqread"),
    ("rand read 4 KiB, cold", w_randread, "randread"),
    ("rand write 4 KiB + fsync, cold", w_randwrite, "randwrite"),
    ("4 jobs rand 4 KiB 70/30", w_concurrent, "mix"),
]


def wanted(key):
    return not ONLY or key in ONLY


def run_step(t, wname, fn, key):
    v = fn(t)
    return {wname: v} if wanted(key) else {}

TREE_MB = 0.0


def main():
    global TREE_MB
    if os.geteuid() != 0:
        sys.exit("run as root (drops caches, mounts)")
    os.makedirs(D, exist_ok=True)
    with tarfile.open(TARBALL, "w") as tf:
        tf.add(TREE, arcname=".")
    TREE_MB = os.path.getsize(TARBALL) / 2**20
    nfiles = sum(len(f) for _, _, f in os.walk(TREE))
    results = {}  # (workload, target) -> [values]
    units = {}
    daemon = {}
    # One step at a time on every target, the targets' order rotating with each repeat,
    # so a slow spell of the shared disk hits every target alike.
    need_file = any(wanted(k) for _, _, k in WORKLOADS)
    steps = []
    for wname, fn, key in WORKLOADS:
        # The read workloads need the file the sequential write makes (run, not reported).
        if wanted(key) or (key == "seqwrite" and need_file):
            steps.append(lambda t, wname=wname, fn=fn, key=key: run_step(t, wname, fn, key))
    if wanted("small"):
        steps.append(lambda t: {f"{NFILES} small files: {k}": (v, "files/s") for k, v in small_files(t).items()})
    if wanted("tree"):
        steps.append(lambda t: {f"source tree ({nfiles} files): {k}": (v, "MiB/s") for k, v in w_untar(t).items()})
    for rep in range(REPEAT):
        k = rep % len(TARGETS)
        targets = [Target(name) for name in TARGETS[k:] + TARGETS[:k]]
        try:
            for t in targets:
                t.setup()
            for step in steps:
                for t in targets:
                    for w, (v, unit) in step(t).items():
                        results.setdefault((w, t.name), []).append(v)
                        units[w] = unit
            for t in targets:
                ds = t.daemon_stats()
                if ds:
                    daemon.setdefault(t.name, []).append(ds)
        finally:
            for t in targets:
                t.teardown()
        print(f"repeat {rep + 1}/{REPEAT} done", file=sys.stderr, flush=True)
    order = [w for w, _, _ in WORKLOADS if w in units] + [w for w in units if w not in [x[0] for x in WORKLOADS]]
    cols = TARGETS
    # a second kmsfs (plaintext names, or another build) gets its own ratio column
    variant = next((c for c in cols if c in ("kmsfs-plain", "kmsfs-old")), None)
    names_col = variant is not None
    # ratio columns only for the targets that ran (no "nan" or "0.00" columns)
    vs_g = "gocryptfs" in cols and "kmsfs" in cols
    limit_col = vs_g and "plain" in cols
    head = ["workload", "unit"] + cols
    if vs_g:
        head += ["kmsfs ÷ gocryptfs"] + (["limit (plain ÷ gocryptfs)"] if limit_col else []) + ["kmsfs ÷ gocryptfs per repeat"]
    if names_col:
        head.append(f"kmsfs ÷ {variant} (per repeat)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in order:
        med = {c: statistics.median(results[(w, c)]) for c in cols if (w, c) in results}
        row = [w, units[w]] + [f"{med.get(c, float('nan')):,.0f}" for c in cols]
        if vs_g:
            g = med.get("gocryptfs")
            row.append(f"**{med.get('kmsfs', 0) / g:.2f}**" if g else "")
            if limit_col:
                row.append(f"{med.get('plain', 0) / g:.2f}" if g else "")
            row.append(", ".join(f"{k / r:.2f}" for k, r in zip(results.get((w, "kmsfs"), []), results.get((w, "gocryptfs"), [])) if r))
        if names_col:
            if med.get(variant):
                per_n = ", ".join(f"{k / p:.2f}" for k, p in zip(results.get((w, "kmsfs"), []), results.get((w, variant), [])) if p)
                row.append(f"**{med.get('kmsfs', 0) / med[variant]:.2f}** ({per_n})")
            else:
                row.append("")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    written_gib = (SIZE_MB + 64 + NFILES * 4 / 1024 + TREE_MB) / 1024
    for name, stats in daemon.items():
        cpu = statistics.median(s[0] for s in stats)
        rss = max(s[1] for s in stats)
        per_gib = "" if ONLY else f" ({cpu / written_gib:.1f} CPU s per GiB written)"
        lines.append(f"- {name} daemon: {cpu:.1f} CPU s per run{per_gib}, peak RSS {rss / 1024:.0f} MiB")
    header = (f"Run {time.strftime('%Y-%m-%d %H:%M')} on {os.uname().nodename}: {REPEAT} repeats (medians), "
              f"file {SIZE_MB} MiB, {NFILES} small files, tree {TREE_MB:.0f} MiB / {nfiles} files, dir {D}.")
    text = header + "\n\n" + "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", time.strftime("%Y-%m-%d-%H%M") + ".md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    open(out, "w").write(text)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
