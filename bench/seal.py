#!/usr/bin/env python3
"""Cost of one passphrase guess against a sealed keystore, side by side in one run:
kmsfs's Argon2id seal (the default parameters, measured as the extra time of a command
that opens a passphrase-sealed keystore over one that opens a keystore in the clear) vs
scrypt at gocryptfs's default (N=2^16, r=8, p=1: 64 MiB), via OpenSSL (hashlib.scrypt).
Usage: python3 bench/seal.py [KMSFS_BIN] (default target/release/kmsfs)."""
import hashlib, os, statistics, subprocess, sys, tempfile, time

BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "target", "release", "kmsfs")
N = 5

def timed(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t

with tempfile.TemporaryDirectory() as d:
    pw = os.path.join(d, "pw"); open(pw, "w").write("a benchmark passphrase\n")
    base = dict(os.environ, KMSFS_KNOWN_TREES=os.path.join(d, "known.json"))
    base.pop("KMSFS_ARGON2", None)
    sealed = dict(base, KMSFS_KMS=f"local:{d}/sealed", KMSFS_PASSPHRASE_FILE=pw)
    clear = dict(base, KMSFS_KMS=f"local:{d}/clear", KMSFS_SEAL="none")
    for env in (sealed, clear):
        subprocess.run([BIN, "key", "create"], env=env, check=True, capture_output=True)
    run = lambda env: subprocess.run([BIN, "key", "list"], env=env, check=True, capture_output=True)
    s = [timed(lambda: run(sealed)) for _ in range(N)]
    c = [timed(lambda: run(clear)) for _ in range(N)]
    sc = [timed(lambda: hashlib.scrypt(b"a benchmark passphrase", salt=os.urandom(16), n=2**16, r=8, p=1, maxmem=2**27, dklen=32)) for _ in range(N)]
    argon = statistics.median(s) - statistics.median(c)
    scrypt = statistics.median(sc)
    print(f"| per guess | seconds (median of {N}) | memory |")
    print("|---|---|---|")
    print(f"| kmsfs Argon2id (m=256 MiB, t=3, p=1): open sealed - open clear | {argon:.3f} | 256 MiB |")
    print(f"| scrypt N=2^16 r=8 p=1 (gocryptfs default) | {scrypt:.3f} | 64 MiB |")
    print(f"| ratio (Argon2id / scrypt) | {argon / scrypt:.1f}x time | 4x memory |")
    print(f"(open of a sealed keystore, whole command: {statistics.median(s):.3f} s; clear: {statistics.median(c):.3f} s)")
