#!/usr/bin/env python3
"""The XKS proxy with SoftHSM2, side by side in one run:
- latency (p50, p99) and rate of encrypt and decrypt straight to `kmsfs xks serve`
  (botocore-signed, one client thread, loopback) against AWS's 250 ms budget;
- KMS Encrypt/Decrypt through `kmsfs kms serve` with a plain key and with a key in an
  external key store (double encryption: our material, then the proxy).
Usage: $KMSFS_VENV/bin/python bench/xks.py [KMSFS_BIN] [SECONDS]"""
import base64, json, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "target", "release", "kmsfs")
SECS = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
d = tempfile.mkdtemp(prefix="xksbench-")
env = dict(os.environ, SOFTHSM2_CONF=f"{d}/softhsm2.conf", KMSFS_PKCS11_PIN_FILE=f"{d}/pin", KMSFS_SEAL="none",
           KMSFS_KMS=f"local:{d}/ks", KMSFS_XKS_TIMEOUT_MS="250")
os.makedirs(f"{d}/tokens")
open(env["SOFTHSM2_CONF"], "w").write(f"directories.tokendir = {d}/tokens\nobjectstore.backend = file\n")
open(env["KMSFS_PKCS11_PIN_FILE"], "w").write("4321\n")
run = lambda *a: subprocess.run([BIN, *a], env=env, check=True, capture_output=True, text=True).stdout
subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", "4321", "--so-pin", "87654321"],
               env=env, check=True, capture_output=True)
token = f"pkcs11:token=bench?module-path={MODULE}"
run("xks", "key", "create", "k1", "--token", token)
akid = run("xks", "credential", "create", "--secret-file", f"{d}/secret").strip()
secret = open(f"{d}/secret").read().strip()
json.dump({"token": token, "credentials": [{"access_key_id": akid, "secret_file": f"{d}/secret"}]}, open(f"{d}/xks.json", "w"))


def start(*args):
    p = subprocess.Popen([BIN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return p, p.stdout.readline().strip().removeprefix("listening on ")


proxy, paddr = start("xks", "serve", "--config", f"{d}/xks.json", "--listen", "127.0.0.1:0")
run("key", "create")  # the keystore, before the server
cred = run("kms", "principal", "create", "bench")
kakid, ksecret = [l.split(" = ")[1] for l in cred.splitlines() if " = " in l][:2]
server, kaddr = start("kms", "serve", "--listen", "127.0.0.1:0", "--xks-admin", "bench")
try:
    meta = {"awsPrincipalArn": "arn:aws:iam::000000000000:user/bench", "kmsOperation": "Encrypt",
            "kmsRequestId": "r", "kmsKeyArn": "arn:aws:kms:us-east-1:000000000000:key/x"}
    opener = urllib.request.build_opener()

    def xks(op, body):
        req = AWSRequest(method="POST", url=f"http://{paddr}/kms/xks/v1/keys/k1/{op}", data=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
        SigV4Auth(Credentials(akid, secret), "kms-xks-proxy", "us-east-1").add_auth(req)
        p = req.prepare()
        with opener.open(urllib.request.Request(p.url, data=p.body, headers=dict(p.headers), method="POST")) as r:
            return json.loads(r.read())

    pt = base64.b64encode(os.urandom(64)).decode()
    enc_body = {"requestMetadata": meta, "plaintext": pt, "encryptionAlgorithm": "AES_GCM",
                "additionalAuthenticatedData": base64.b64encode(b"aad").decode(),
                "ciphertextDataIntegrityValueAlgorithm": "SHA_256"}
    sample = xks("encrypt", enc_body)
    dec_body = {"requestMetadata": dict(meta, kmsOperation="Decrypt"), "ciphertext": sample["ciphertext"],
                "encryptionAlgorithm": "AES_GCM", "initializationVector": sample["initializationVector"],
                "authenticationTag": sample["authenticationTag"],
                "additionalAuthenticatedData": enc_body["additionalAuthenticatedData"]}

    def measure(f):
        lat = []
        stop = time.perf_counter() + SECS
        t0 = time.perf_counter()
        while time.perf_counter() < stop:
            t = time.perf_counter(); f(); lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        lat.sort()
        return statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99) - 1] * 1e3, len(lat) / wall

    kms = boto3.client("kms", endpoint_url=f"http://{kaddr}", region_name="us-east-1", aws_access_key_id=kakid,
                       aws_secret_access_key=ksecret, config=Config(retries={"max_attempts": 1}))
    sid = kms.create_custom_key_store(CustomKeyStoreName="bench", CustomKeyStoreType="EXTERNAL_KEY_STORE",
                                      XksProxyUriEndpoint=f"http://{paddr}", XksProxyUriPath="/kms/xks/v1",
                                      XksProxyAuthenticationCredential={"AccessKeyId": akid, "RawSecretAccessKey": secret},
                                      XksProxyConnectivity="PUBLIC_ENDPOINT")["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=sid)
    xkey = kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=sid, XksKeyId="k1")["KeyMetadata"]["Arn"]
    pkey = kms.create_key()["KeyMetadata"]["Arn"]
    msg = os.urandom(64)
    rows = []
    rows.append(("proxy encrypt (64 B, AAD, CDIV)", *measure(lambda: xks("encrypt", enc_body))))
    rows.append(("proxy decrypt", *measure(lambda: xks("decrypt", dec_body))))
    for name, key in (("plain key", pkey), ("XKS key", xkey)):
        blob = kms.encrypt(KeyId=key, Plaintext=msg)["CiphertextBlob"]
        rows.append((f"KMS Encrypt, {name}", *measure(lambda: kms.encrypt(KeyId=key, Plaintext=msg))))
        rows.append((f"KMS Decrypt, {name}", *measure(lambda: kms.decrypt(CiphertextBlob=blob))))
    print(f"| operation (1 client thread, loopback, {SECS:.0f} s each) | p50 ms | p99 ms | ops/s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.0f} |")
finally:
    for p in (proxy, server):
        p.kill(); p.wait()
