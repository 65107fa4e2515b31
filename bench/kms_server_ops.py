"""Operations per second through the server: `kmsfs kms serve` and moto side by side, one
run, the same boto3 clients (THREADS threads, SECS seconds per operation, loopback).
Usage: $KMSFS_VENV/bin/python bench/kms_server_ops.py KMSFS_BIN [THREADS] [SECS]
kmsfs audits every call durably (fsync'd, group commit); moto keeps nothing on disk."""
import os as _os
_os.environ.setdefault("KMSFS_SEAL", "none")  # benchmarks measure the filesystem, not the seal
import os, subprocess, sys, tempfile, threading, time, socket

import boto3
from botocore.config import Config

BIN = sys.argv[1]
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
SECS = float(sys.argv[3]) if len(sys.argv) > 3 else 5
VENV = os.path.dirname(os.path.dirname(sys.executable))
CFG = Config(retries={"max_attempts": 1}, max_pool_connections=THREADS * 2)
tmp = tempfile.mkdtemp(prefix="kmsbench-")
env = dict(os.environ, KMSFS_KMS=f"local:{tmp}/ks")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


ours = subprocess.Popen([BIN, "kms", "serve", "--listen", "127.0.0.1:0",
                         # one principal is the whole load: lift its per-principal bounds
                         "--max-rate", "100000000", "--max-request-bytes", "100000000000"], env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
addr = ours.stdout.readline().strip().removeprefix("listening on ")
cred = subprocess.run([BIN, "kms", "principal", "create", "bench"], env=env, check=True,
                      capture_output=True, text=True).stdout
akid, secret = [l.split(" = ")[1] for l in cred.splitlines() if " = " in l][:2]
mport = free_port()
moto = subprocess.Popen([f"{VENV}/bin/moto_server", "-H", "127.0.0.1", "-p", str(mport)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
servers = {"kmsfs": (f"http://{addr}", akid, secret), "moto": (f"http://127.0.0.1:{mport}", "x", "y")}


def client(name):
    ep, a, s = servers[name]
    return boto3.client("kms", endpoint_url=ep, region_name="us-east-1", aws_access_key_id=a,
                        aws_secret_access_key=s, config=CFG)


for _ in range(100):
    try:
        client("moto").list_keys(); break
    except Exception:
        time.sleep(0.1)

MSG = b"m" * 256


def setup(c):
    rsa = c.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    ec = c.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    mac = c.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    sym = c.create_key()["KeyMetadata"]["KeyId"]
    ops = {
        "Sign RSA_2048 PSS_SHA_256": lambda c: c.sign(KeyId=rsa, Message=MSG, SigningAlgorithm="RSASSA_PSS_SHA_256"),
        "Sign ECC_NIST_P256": lambda c: c.sign(KeyId=ec, Message=MSG, SigningAlgorithm="ECDSA_SHA_256"),
        "GenerateMac HMAC_256": lambda c: c.generate_mac(KeyId=mac, Message=MSG, MacAlgorithm="HMAC_SHA_256"),
        "Encrypt (symmetric)": lambda c: c.encrypt(KeyId=sym, Plaintext=MSG),
    }
    # Keys a server may not have (moto): their operation is measured where they exist.
    def maybe(name, spec, usage, op):
        try:
            kid = c.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
            op(c, kid)
            ops[name] = lambda c: op(c, kid)
        except Exception:
            ops[name] = None
    maybe("Sign ECC_NIST_EDWARDS25519", "ECC_NIST_EDWARDS25519", "SIGN_VERIFY",
          lambda c, k: c.sign(KeyId=k, Message=MSG, SigningAlgorithm="ED25519_SHA_512"))
    maybe("Sign ML_DSA_65", "ML_DSA_65", "SIGN_VERIFY",
          lambda c, k: c.sign(KeyId=k, Message=MSG, SigningAlgorithm="ML_DSA_SHAKE_256"))
    maybe("Encapsulate ML_KEM_768", "ML_KEM_768", "ENCAPSULATE_DECAPSULATE",
          lambda c, k: c.encapsulate(KeyId=k, EncapsulationAlgorithm="ML_KEM"))
    return ops


def rate(name, op):
    clients = [client(name) for _ in range(THREADS)]
    for c in clients:
        op(c)  # warm the connection
    count = [0] * THREADS
    stop = time.perf_counter() + SECS

    def run(i):
        while time.perf_counter() < stop:
            op(clients[i]); count[i] += 1

    ts = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    t0 = time.perf_counter()
    [t.start() for t in ts]; [t.join() for t in ts]
    return sum(count) / (time.perf_counter() - t0)


try:
    ops = {n: setup(client(n)) for n in servers}
    print(f"| operation ({THREADS} boto3 threads, {SECS:.0f} s) | kmsfs ops/s | moto ops/s | kmsfs / moto |")
    print("|---|---:|---:|---:|")
    for op in ops["kmsfs"]:
        r = {n: rate(n, ops[n][op]) if ops[n].get(op) else None for n in servers}
        if r["moto"] is None:
            print(f"| {op} | {r['kmsfs']:.0f} | (moto has no such key) | |", flush=True)
        else:
            print(f"| {op} | {r['kmsfs']:.0f} | {r['moto']:.0f} | {r['kmsfs'] / r['moto']:.2f} |", flush=True)
finally:
    ours.terminate(); moto.terminate()
