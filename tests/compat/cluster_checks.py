"""Several `kmsfs kms serve` on one PostgreSQL store, through boto3 (run by tests/it/cluster.rs).

Environment: ENDPOINTS (comma-separated URLs of the servers), AKID, SECRET.
Prints ALL OK and exits 0 when every check passed; any failure raises.
"""
import os
import threading

import boto3
import botocore
from botocore.config import Config

CFG = Config(retries={"max_attempts": 1})
EPS = os.environ["ENDPOINTS"].split(",")
assert len(EPS) >= 2, EPS


def client(ep):
    return boto3.client("kms", endpoint_url=ep, region_name="us-east-1",
                        aws_access_key_id=os.environ["AKID"],
                        aws_secret_access_key=os.environ["SECRET"], config=CFG)


kms = [client(ep) for ep in EPS]


def code(fn, *a, **kw):
    try:
        fn(*a, **kw)
        return "ok"
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]


# A key made on one server is usable on every other at once: no replication delay.
for i, a in enumerate(kms):
    kid = a.create_key(Description=f"made on {i}")["KeyMetadata"]["KeyId"]
    blob = a.encrypt(KeyId=kid, Plaintext=b"shared")["CiphertextBlob"]
    for j, b in enumerate(kms):
        assert b.decrypt(CiphertextBlob=blob)["Plaintext"] == b"shared", (i, j)
        assert b.describe_key(KeyId=kid)["KeyMetadata"]["Description"] == f"made on {i}"
        listed = [k["KeyId"] for p in b.get_paginator("list_keys").paginate() for k in p["Keys"]]
        assert kid in listed, (i, j)
print("ok: a key made on any server is usable on every other at once", flush=True)

# Two servers racing CreateAlias of one name: exactly one success, one AlreadyExists.
kid = kms[0].create_key()["KeyMetadata"]["KeyId"]
for n in range(20):
    name = f"alias/race-{n}"
    got = [None, None]
    go = threading.Barrier(2)

    def race(k, slot):
        go.wait()
        got[slot] = code(kms[k].create_alias, AliasName=name, TargetKeyId=kid)

    ts = [threading.Thread(target=race, args=(s % len(kms), s)) for s in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(got) == ["AlreadyExistsException", "ok"], (n, got)
print("ok: CreateAlias raced on two servers: one success, one AlreadyExistsException (x20)", flush=True)

# DisableKey on one server is refused by the others from the next request on.
for i, a in enumerate(kms):
    a.disable_key(KeyId=kid)
    for j, b in enumerate(kms):
        assert code(b.encrypt, KeyId=kid, Plaintext=b"x") == "DisabledException", (i, j)
    kms[(i + 1) % len(kms)].enable_key(KeyId=kid)
    for b in kms:
        b.encrypt(KeyId=kid, Plaintext=b"x")
print("ok: DisableKey on one server is refused by every other at the next request", flush=True)
# Many writes at once on one server: each waits for the store's write lock while holding a
# database connection; the one holding the lock must still reach the audit chain.
made, errors = [], []


def create(i):
    try:
        made.append(kms[0].create_key(Description=f"burst {i}")["KeyMetadata"]["KeyId"])
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        errors.append(repr(e))


ts = [threading.Thread(target=create, args=(i,)) for i in range(40)]
for t in ts:
    t.start()
for t in ts:
    t.join()
assert not errors and len(made) == 40, errors[:3]
print("ok: 40 CreateKey at once on one server all answered", flush=True)
print("ALL OK")
