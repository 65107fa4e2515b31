#!/usr/bin/env python3
"""Cost of one passphrase guess against a sealed keystore, side by side in one run:
kmsfs's Argon2id seal (the default parameters, measured as the extra time of a command
that opens a passphrase-sealed keystore over one that opens a keystore in the clear) vs
scrypt at gocryptfs's default (N=2^16, r=8, p=1: 64 MiB), via OpenSSL (hashlib.scrypt).
Then, sealed vs clear side by side: the time `kmsfs mount` takes (it unseals once), and
KMS operations per second through `kmsfs kms serve` afterwards (GenerateDataKey, boto3,
when the interpreter has it: run with $KMSFS_VENV/bin/python).
Usage: python3 bench/seal.py [KMSFS_BIN] (default target/release/kmsfs)."""
import hashlib, os, statistics, subprocess, sys, tempfile, threading, time

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

    # Mount: the parent unseals once and hands the key to its daemon.
    def mount_time(env, name):
        b, m = f"{d}/{name}.b", f"{d}/{name}.mnt"
        os.makedirs(m, exist_ok=True)
        subprocess.run([BIN, "init", b], env=env, check=True, capture_output=True)
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([BIN, "mount", b, m], env=env, check=True, capture_output=True)
            ts.append(time.perf_counter() - t)
            subprocess.run([BIN, "umount", m], check=True, capture_output=True)
        return statistics.median(ts)
    ms, mc = mount_time(sealed, "sealed"), mount_time(clear, "clear")
    print()
    print("| kmsfs mount (until the mount answers), median of 3 | sealed (passphrase) | clear | difference |")
    print("|---|---|---|---|")
    print(f"| seconds | {ms:.3f} | {mc:.3f} | {ms - mc:.3f} |")

    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        print("\n(boto3 not importable: run with $KMSFS_VENV/bin/python for KMS operations per second)")
        sys.exit(0)
    THREADS, SECS = 4, 5.0

    def ops_per_sec(env):
        srv = subprocess.Popen([BIN, "kms", "serve", "--listen", "127.0.0.1:0"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            addr = srv.stdout.readline().strip().removeprefix("listening on ")
            cred = subprocess.run([BIN, "kms", "principal", "create", f"b{time.time_ns()}"], env=env,
                                  check=True, capture_output=True, text=True).stdout
            akid, secret = [l.split(" = ")[1] for l in cred.splitlines() if " = " in l][:2]
            mk = lambda: boto3.client("kms", endpoint_url=f"http://{addr}", region_name="us-east-1",
                                      aws_access_key_id=akid, aws_secret_access_key=secret,
                                      config=Config(retries={"max_attempts": 1}))
            key = mk().create_key()["KeyMetadata"]["KeyId"]
            clients = [mk() for _ in range(THREADS)]
            for c in clients:
                c.generate_data_key(KeyId=key, KeySpec="AES_256")
            count = [0] * THREADS
            stop = time.perf_counter() + SECS

            def run(i):
                while time.perf_counter() < stop:
                    clients[i].generate_data_key(KeyId=key, KeySpec="AES_256"); count[i] += 1
            ts = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
            t0 = time.perf_counter()
            [t.start() for t in ts]; [t.join() for t in ts]
            return sum(count) / (time.perf_counter() - t0)
        finally:
            srv.kill(); srv.wait()
    os_s, os_c = ops_per_sec(sealed), ops_per_sec(clear)
    print()
    print(f"| GenerateDataKey/s through kmsfs kms serve ({THREADS} threads, {SECS:.0f} s, loopback) | sealed (passphrase) | clear | sealed / clear |")
    print("|---|---|---|---|")
    print(f"| ops/s | {os_s:.0f} | {os_c:.0f} | {os_s / os_c:.2f} |")
