"""External key stores in our KMS, driven by boto3 as against AWS: the store's life
(create, describe, connect, disconnect, update, delete) and keys in it, with the errors
AWS documents. Run in phases around the test stopping and starting the proxy:
  setup  (proxy up)   -> creates the store and a key; writes STATE (JSON)
  down   (proxy down) -> crypto fails, a connection fails with XKS_PROXY_NOT_REACHABLE
  up     (proxy up)   -> reconnects; old ciphertexts decrypt; deletion rules
Environment: ENDPOINT, AKID, SECRET (our KMS), PROXY_ENDPOINT, PROXY_PATH, XKS_AKID,
XKS_SECRET, DEAD_ENDPOINT (nothing listens there), HANG_ENDPOINT (accepts, never
answers), STATE (a file)."""
import json, os, sys

import boto3
from botocore.config import Config

E = os.environ
kms = boto3.client("kms", endpoint_url=E["ENDPOINT"], region_name="us-east-1",
                   aws_access_key_id=E["AKID"], aws_secret_access_key=E["SECRET"],
                   config=Config(retries={"max_attempts": 1}))
failures = []


def expect(name, f, code):
    try:
        f()
    except kms.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        ok = got == code
        print(("ok  " if ok else "FAIL"), name, got, "" if ok else e.response["Error"].get("Message"))
        if not ok:
            failures.append(name)
        return e.response["Error"].get("Message", "")
    print("FAIL", name, "succeeded; expected", code)
    failures.append(name)


def check(name, cond, detail=""):
    print(("ok  " if cond else "FAIL"), name, "" if cond else detail)
    if not cond:
        failures.append(name)


def store(sid):
    return kms.describe_custom_key_stores(CustomKeyStoreId=sid)["CustomKeyStores"][0]


cred = {"AccessKeyId": E["XKS_AKID"], "RawSecretAccessKey": E["XKS_SECRET"]}
phase = sys.argv[1]
state = json.load(open(E["STATE"])) if phase != "setup" else {}

if phase == "setup":
    expect("a store whose proxy does not answer", lambda: kms.create_custom_key_store(
        CustomKeyStoreName="dead", CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint=E["DEAD_ENDPOINT"], XksProxyUriPath=E["PROXY_PATH"],
        XksProxyAuthenticationCredential=cred, XksProxyConnectivity="PUBLIC_ENDPOINT"),
        "XksProxyUriUnreachableException")
    import time
    t = time.monotonic()
    expect("a store whose proxy accepts and never answers", lambda: kms.create_custom_key_store(
        CustomKeyStoreName="hang", CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint=E["HANG_ENDPOINT"], XksProxyUriPath=E["PROXY_PATH"],
        XksProxyAuthenticationCredential=cred, XksProxyConnectivity="PUBLIC_ENDPOINT"),
        "XksProxyUriUnreachableException")
    check("... within the deadline", time.monotonic() - t < 5, time.monotonic() - t)
    expect("a store with a wrong credential", lambda: kms.create_custom_key_store(
        CustomKeyStoreName="wrong", CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint=E["PROXY_ENDPOINT"], XksProxyUriPath=E["PROXY_PATH"],
        XksProxyAuthenticationCredential={"AccessKeyId": E["XKS_AKID"], "RawSecretAccessKey": "A" * 44},
        XksProxyConnectivity="PUBLIC_ENDPOINT"),
        "XksProxyIncorrectAuthenticationCredentialException")
    expect("a store with a wrong path", lambda: kms.create_custom_key_store(
        CustomKeyStoreName="path", CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint=E["PROXY_ENDPOINT"], XksProxyUriPath="/other/kms/xks/v1",
        XksProxyAuthenticationCredential=cred, XksProxyConnectivity="PUBLIC_ENDPOINT"),
        "XksProxyInvalidConfigurationException")
    sid = kms.create_custom_key_store(
        CustomKeyStoreName="hyok", CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint=E["PROXY_ENDPOINT"], XksProxyUriPath=E["PROXY_PATH"],
        XksProxyAuthenticationCredential=cred, XksProxyConnectivity="PUBLIC_ENDPOINT")["CustomKeyStoreId"]
    check("store id", sid.startswith("cks-") and len(sid) == 21, sid)
    s = store(sid)
    check("a new store is DISCONNECTED", s["ConnectionState"] == "DISCONNECTED", s)
    check("its configuration, no secret", s["XksProxyConfiguration"] == {
        "Connectivity": "PUBLIC_ENDPOINT", "AccessKeyId": E["XKS_AKID"],
        "UriEndpoint": E["PROXY_ENDPOINT"], "UriPath": E["PROXY_PATH"]} and E["XKS_SECRET"] not in json.dumps(s, default=str), s)
    expect("the same name again", lambda: kms.create_custom_key_store(
        CustomKeyStoreName="hyok", CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint=E["PROXY_ENDPOINT"], XksProxyUriPath=E["PROXY_PATH"] .replace("/kms", "x/kms"),
        XksProxyAuthenticationCredential=cred, XksProxyConnectivity="PUBLIC_ENDPOINT"),
        "CustomKeyStoreNameInUseException")
    expect("a key in a disconnected store", lambda: kms.create_key(
        Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=sid, XksKeyId="k1"), "CustomKeyStoreInvalidStateException")
    kms.connect_custom_key_store(CustomKeyStoreId=sid)
    check("connected", store(sid)["ConnectionState"] == "CONNECTED", store(sid))
    expect("an external key the proxy does not know", lambda: kms.create_key(
        Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=sid, XksKeyId="nope"), "XksKeyNotFoundException")
    expect("an external key that may only encrypt", lambda: kms.create_key(
        Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=sid, XksKeyId="enc-only"), "XksKeyInvalidConfigurationException")
    expect("a disabled external key", lambda: kms.create_key(
        Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=sid, XksKeyId="off"), "XksKeyInvalidConfigurationException")
    expect("an unknown store", lambda: kms.create_key(
        Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId="cks-00000000000000000", XksKeyId="k1"), "CustomKeyStoreNotFoundException")
    md = kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=sid, XksKeyId="k1",
                        Description="hold your own key")["KeyMetadata"]
    check("the key's metadata", md["Origin"] == "EXTERNAL_KEY_STORE" and md["CustomKeyStoreId"] == sid
          and md["XksKeyConfiguration"] == {"Id": "k1"} and md["KeyState"] == "Enabled", md)
    expect("the same external key twice", lambda: kms.create_key(
        Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=sid, XksKeyId="k1"), "XksKeyAlreadyInUseException")
    expect("automatic rotation of an XKS key", lambda: kms.enable_key_rotation(KeyId=md["KeyId"]), "UnsupportedOperationException")
    key = md["Arn"]
    ct = kms.encrypt(KeyId=key, Plaintext=b"held by our own HSM", EncryptionContext={"a": "b"})["CiphertextBlob"]
    check("decrypt", kms.decrypt(CiphertextBlob=ct, EncryptionContext={"a": "b"})["Plaintext"] == b"held by our own HSM")
    expect("decrypt under another context", lambda: kms.decrypt(CiphertextBlob=ct, EncryptionContext={"a": "c"}), "InvalidCiphertextException")
    bad = ct[:-1] + bytes([ct[-1] ^ 1])
    expect("decrypt a tampered blob", lambda: kms.decrypt(CiphertextBlob=bad, EncryptionContext={"a": "b"}), "KMSInvalidStateException")
    dk = kms.generate_data_key(KeyId=key, KeySpec="AES_256")
    check("data key round trip", kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"])
    plain_key = kms.create_key()["KeyMetadata"]["Arn"]
    re = kms.re_encrypt(CiphertextBlob=ct, SourceEncryptionContext={"a": "b"}, DestinationKeyId=plain_key)["CiphertextBlob"]
    check("re-encrypt out of the store", kms.decrypt(CiphertextBlob=re)["Plaintext"] == b"held by our own HSM")
    back = kms.re_encrypt(CiphertextBlob=re, DestinationKeyId=key)["CiphertextBlob"]
    check("re-encrypt into the store", kms.decrypt(CiphertextBlob=back)["Plaintext"] == b"held by our own HSM")
    expect("delete a connected store", lambda: kms.delete_custom_key_store(CustomKeyStoreId=sid), "CustomKeyStoreInvalidStateException")
    expect("move a connected store", lambda: kms.update_custom_key_store(CustomKeyStoreId=sid, XksProxyUriPath="/x/kms/xks/v1"), "CustomKeyStoreInvalidStateException")
    kms.update_custom_key_store(CustomKeyStoreId=sid, NewCustomKeyStoreName="hyok-renamed")
    check("renamed while connected", store(sid)["CustomKeyStoreName"] == "hyok-renamed", store(sid))
    expect("a credential the proxy refuses", lambda: kms.update_custom_key_store(
        CustomKeyStoreId=sid, XksProxyAuthenticationCredential={"AccessKeyId": E["XKS_AKID"], "RawSecretAccessKey": "B" * 44}),
        "XksProxyIncorrectAuthenticationCredentialException")
    check("... leaves the store working", kms.decrypt(CiphertextBlob=ct, EncryptionContext={"a": "b"})["Plaintext"] == b"held by our own HSM")
    json.dump({"store": sid, "key": key, "ct": ct.hex()}, open(E["STATE"], "w"))

elif phase == "down":
    sid, key = state["store"], state["key"]
    ct = bytes.fromhex(state["ct"])
    msg = expect("decrypt with the proxy stopped", lambda: kms.decrypt(CiphertextBlob=ct, EncryptionContext={"a": "b"}), "KMSInvalidStateException")
    check("the message names the store", sid in (msg or ""), msg)
    expect("encrypt with the proxy stopped", lambda: kms.encrypt(KeyId=key, Plaintext=b"x"), "KMSInvalidStateException")
    kms.disconnect_custom_key_store(CustomKeyStoreId=sid)
    expect("encrypt in a disconnected store", lambda: kms.encrypt(KeyId=key, Plaintext=b"x"), "KMSInvalidStateException")
    kms.connect_custom_key_store(CustomKeyStoreId=sid)
    s = store(sid)
    check("connecting with the proxy down: FAILED, XKS_PROXY_NOT_REACHABLE",
          s["ConnectionState"] == "FAILED" and s.get("ConnectionErrorCode") == "XKS_PROXY_NOT_REACHABLE", s)
    expect("connect a FAILED store", lambda: kms.connect_custom_key_store(CustomKeyStoreId=sid), "CustomKeyStoreInvalidStateException")
    expect("delete a FAILED store", lambda: kms.delete_custom_key_store(CustomKeyStoreId=sid), "CustomKeyStoreInvalidStateException")
    kms.disconnect_custom_key_store(CustomKeyStoreId=sid)

elif phase == "up":
    sid, key = state["store"], state["key"]
    ct = bytes.fromhex(state["ct"])
    kms.connect_custom_key_store(CustomKeyStoreId=sid)
    check("reconnected", store(sid)["ConnectionState"] == "CONNECTED", store(sid))
    check("an old ciphertext decrypts again", kms.decrypt(CiphertextBlob=ct, EncryptionContext={"a": "b"})["Plaintext"] == b"held by our own HSM")
    kms.disconnect_custom_key_store(CustomKeyStoreId=sid)
    expect("delete a store that holds keys", lambda: kms.delete_custom_key_store(CustomKeyStoreId=sid), "CustomKeyStoreHasCMKsException")
    kms.connect_custom_key_store(CustomKeyStoreId=sid)
    check("connected for the mount", store(sid)["ConnectionState"] == "CONNECTED", store(sid))

print("FAILED: " + ", ".join(failures) if failures else "ALL OK")
sys.exit(1 if failures else 0)
