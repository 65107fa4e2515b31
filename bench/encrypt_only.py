"""Encrypt-only trees (RSA and ML-KEM keys) vs a symmetric tree, same binary, same run,
rounds alternating the order: create N (5000) 4 KB files, then (remounted, so no key is
cached) read them back. Five trees: symmetric (default key); RSA_3072 mounted by a
principal allowed Decrypt, and by a backup principal allowed only GetPublicKey (creates
only); ML_KEM_768 likewise (Decapsulate; GetPublicKey). Embedded KMS.
Usage: python3 bench/encrypt_only.py [BIN [N]]"""
import os as _os
_os.environ.setdefault("KMSFS_SEAL", "none")  # benchmarks measure the filesystem, not the seal
import os, subprocess, sys, time, shutil, statistics
BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/kmsfs"
D = "/var/tmp/kmsfs-eo"; shutil.rmtree(D, ignore_errors=True); os.makedirs(D)
env = dict(os.environ, KMSFS_KNOWN_TREES=D + "/known.json", KMSFS_KMS=f"local:{D}/ks")
def run(*a, who=None):
    e = dict(env, KMSFS_PRINCIPAL=who) if who else env
    return subprocess.run([BIN, *a], env=e, check=True, capture_output=True, text=True).stdout
key = [w for w in run("key", "create", "--spec", "RSA_3072", "--usage", "ENCRYPT_DECRYPT").split() if w.startswith("arn:")][0]
run("grant", "create", key, "--grantee", "backup", "--operation", "GetPublicKey")
kem = [w for w in run("key", "create", "--spec", "ML_KEM_768", "--usage", "ENCAPSULATE_DECAPSULATE").split() if w.startswith("arn:")][0]
run("grant", "create", kem, "--grantee", "backup", "--operation", "GetPublicKey")
trees = {"symmetric": (None, []), "rsa-decrypt": (None, ["--key", key]), "rsa-backup": ("backup", ["--key", key]),
         "mlkem-decap": (None, ["--key", kem]), "mlkem-backup": ("backup", ["--key", kem])}
for t, (who, args) in trees.items():
    os.makedirs(f"{D}/{t}/m"); run("init", f"{D}/{t}/b", *args, who=who)
N = int(sys.argv[2]) if len(sys.argv) > 2 else 5000; data = os.urandom(4000)
res = {(t, p): [] for t in trees for p in ("create", "read")}
def mount(t): run("mount", f"{D}/{t}/b", f"{D}/{t}/m", who=trees[t][0])
def umount(t): subprocess.run(["umount", f"{D}/{t}/m"], check=True)
def phase(t):
    mount(t); d = f"{D}/{t}/m/w{len(res[(t,'create')])}"; os.mkdir(d)
    s = time.perf_counter()
    for i in range(N):
        with open(f"{d}/f{i}", "wb") as f: f.write(data)
    res[(t, "create")].append(N / (time.perf_counter() - s)); umount(t)
    if t.endswith("-backup"): return
    mount(t); s = time.perf_counter()
    for i in range(N):
        with open(f"{d}/f{i}", "rb") as f: f.read()
    res[(t, "read")].append(N / (time.perf_counter() - s)); umount(t)
order = list(trees)
for r in range(4):
    for t in (order if r % 2 == 0 else order[::-1]): phase(t)
base = {p: statistics.median(res[("symmetric", p)]) for p in ("create", "read")}
for (t, p), v in res.items():
    if v:
        m = statistics.median(v)
        print(f"{t:12} {p:6} {m:8.0f} files/s  ÷ symmetric {m/base[p]:.2f}   rounds {[round(x) for x in v]}")
