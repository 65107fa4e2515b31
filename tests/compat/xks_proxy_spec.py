"""The XKS proxy against AWS's XKS Proxy API specification (v1), from outside: requests
signed by botocore's SigV4 (service kms-xks-proxy), every endpoint, and each refusal with
the spec's status and errorName.
Environment: ENDPOINT (http://HOST:PORT), URI_PATH (prefix + /kms/xks/v1), AKID, SECRET,
KEY (may encrypt and decrypt), ENC_ONLY (may only encrypt), DISABLED (disabled key)."""
import base64, hashlib, json, os, sys, urllib.error, urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

E = os.environ
ENDPOINT, PATH, AKID, SECRET = E["ENDPOINT"], E["URI_PATH"], E["AKID"], E["SECRET"]
KEY, ENC_ONLY, DISABLED = E["KEY"], E["ENC_ONLY"], E["DISABLED"]
b64 = lambda b: base64.b64encode(b).decode()
unb64 = base64.b64decode
failures = []


def call(path, body, creds=None, service="kms-xks-proxy", method="POST", raw=None, base=None, sign=True):
    url = ENDPOINT + (PATH if base is None else base) + path
    data = raw if raw is not None else json.dumps(body).encode()
    req = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"})
    if sign:
        SigV4Auth(Credentials(*(creds or (AKID, SECRET))), service, "us-east-1").add_auth(req)
    p = req.prepare()
    r = urllib.request.Request(p.url, data=p.body if method == "POST" else None, headers=dict(p.headers), method=method)
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, {"raw": text.decode(errors="replace")}


def meta(op="Encrypt", key_arn=True):
    m = {"awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice", "kmsOperation": op,
         "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae", "kmsViaService": "ebs"}
    if key_arn:
        m["kmsKeyArn"] = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    return m


def check(name, got, status, error=None):
    st, body = got
    ok = st == status and (error is None or body.get("errorName") == error)
    if error is not None and ok:
        msg = body.get("errorMessage", "")
        ok = len(msg) < 512 and all(0x20 <= ord(c) <= 0x7e for c in msg)
    print(("ok  " if ok else "FAIL"), name, st, body if not ok else "")
    if not ok:
        failures.append(name)
    return body


def enc(key, pt, aad=None, cdiv=False):
    b = {"requestMetadata": meta(), "plaintext": b64(pt), "encryptionAlgorithm": "AES_GCM"}
    if aad is not None:
        b["additionalAuthenticatedData"] = b64(aad)
    if cdiv:
        b["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
    return call(f"/keys/{key}/encrypt", b)


def dec(key, r, aad=None, **over):
    b = {"requestMetadata": meta("Decrypt"), "ciphertext": r["ciphertext"], "encryptionAlgorithm": "AES_GCM",
         "initializationVector": r["initializationVector"], "authenticationTag": r["authenticationTag"]}
    if aad is not None:
        b["additionalAuthenticatedData"] = b64(aad)
    if "ciphertextMetadata" in r:
        b["ciphertextMetadata"] = r["ciphertextMetadata"]
    b.update(over)
    return call(f"/keys/{key}/decrypt", b)


# GetHealthStatus
h = check("health", call("/health", {"requestMetadata": {"kmsRequestId": "r1", "kmsOperation": "KmsHealthCheck"}}), 200)
assert h["xksProxyFleetSize"] >= 1 and h["xksProxyVendor"] and h["xksProxyModel"] and h["ekmVendor"], h
assert 1 <= len(h["ekmFleetDetails"]) <= 10 and h["ekmFleetDetails"][0]["healthStatus"] == "ACTIVE", h
# GetKeyMetadata
m = check("metadata", call(f"/keys/{KEY}/metadata", {"requestMetadata": meta("DescribeKey", key_arn=False)}), 200)
assert m == {"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"}, m
m = check("metadata of an encrypt-only key", call(f"/keys/{ENC_ONLY}/metadata", {"requestMetadata": meta("DescribeKey")}), 200)
assert m["keyUsage"] == ["ENCRYPT"], m
m = check("metadata of a disabled key", call(f"/keys/{DISABLED}/metadata", {"requestMetadata": meta("DescribeKey")}), 200)
assert m["keyStatus"] == "DISABLED", m
check("metadata of an unknown key", call("/keys/no-such-key/metadata", {"requestMetadata": meta("DescribeKey")}), 404, "KeyNotFoundException")
check("metadata of the proxy's own health key", call("/keys/kmsfs-xks-health/metadata", {"requestMetadata": meta("DescribeKey")}), 404, "KeyNotFoundException")
# Encrypt / Decrypt, with AAD and CDIV
aad = b"project=nile,department=marketing"
r = check("encrypt with AAD and CDIV", enc(KEY, b"Hello World!", aad, cdiv=True), 200)
assert len(unb64(r["ciphertext"])) == 12 and len(unb64(r["initializationVector"])) in (12, 16) and len(unb64(r["authenticationTag"])) == 16, r
want = hashlib.sha256(aad + unb64(r.get("ciphertextMetadata", "")) + unb64(r["initializationVector"]) + unb64(r["ciphertext"]) + unb64(r["authenticationTag"])).digest()
assert unb64(r["ciphertextDataIntegrityValue"]) == want, "CDIV"
d = check("decrypt", dec(KEY, r, aad), 200)
assert unb64(d["plaintext"]) == b"Hello World!", d
r2 = check("encrypt without AAD", enc(KEY, b"no aad"), 200)
assert "ciphertextDataIntegrityValue" not in r2
assert unb64(check("decrypt without AAD", dec(KEY, r2), 200)["plaintext"]) == b"no aad"
check("encrypt 4300 bytes (the spec's minimum)", enc(KEY, b"x" * 4300), 200)
r3 = enc(KEY, b"", None)[1]
check("encrypt an empty plaintext", (200, r3) if "ciphertext" in r3 else (400, r3), 200)
# Tampering: each is InvalidCiphertextException
flip = lambda s: b64(bytes([unb64(s)[0] ^ 1]) + unb64(s)[1:])
check("decrypt with another AAD", dec(KEY, r, b"project=nile,department=sales"), 400, "InvalidCiphertextException")
check("decrypt without the AAD", dec(KEY, r), 400, "InvalidCiphertextException")
check("decrypt a tampered ciphertext", dec(KEY, r, aad, ciphertext=flip(r["ciphertext"])), 400, "InvalidCiphertextException")
check("decrypt with a tampered tag", dec(KEY, r, aad, authenticationTag=flip(r["authenticationTag"])), 400, "InvalidCiphertextException")
check("decrypt with another IV", dec(KEY, r, aad, initializationVector=flip(r["initializationVector"])), 400, "InvalidCiphertextException")
# The AAD composition: metadata passed as AAD (or AAD as metadata) does not decrypt.
check("decrypt with the AAD moved into ciphertextMetadata", dec(KEY, r2, None, ciphertextMetadata=b64(b"meta")), 400, "InvalidCiphertextException")
r4 = enc(KEY, b"m", b"meta")[1]
check("decrypt with ciphertextMetadata moved into the AAD", dec(KEY, r4, None, ciphertextMetadata=b64(b"meta")), 400, "InvalidCiphertextException")
check("decrypt under another key", dec(ENC_ONLY, r, aad), 400, "InvalidKeyUsageException")
# Key usage and state
check("encrypt with an encrypt-only key", enc(ENC_ONLY, b"ok"), 200)
check("decrypt with an encrypt-only key", dec(ENC_ONLY, enc(ENC_ONLY, b"ok")[1]), 400, "InvalidKeyUsageException")
check("encrypt with a disabled key", enc(DISABLED, b"no"), 400, "InvalidStateException")
check("encrypt with an unknown key", enc("no-such-key", b"no"), 404, "KeyNotFoundException")
# Sizes
check("encrypt 4301 bytes", enc(KEY, b"x" * 4301), 501, "UnsupportedOperationException")
check("encrypt with 8193 bytes of AAD", enc(KEY, b"x", b"a" * 8193), 501, "UnsupportedOperationException")
check("decrypt with 21 bytes of ciphertextMetadata", dec(KEY, r, aad, ciphertextMetadata=b64(b"m" * 21)), 400, "ValidationException")
check("decrypt with an 8-byte IV", dec(KEY, r, aad, initializationVector=b64(b"12345678")), 400, "ValidationException")
check("decrypt with a 12-byte tag", dec(KEY, r, aad, authenticationTag=b64(b"123456789012")), 400, "ValidationException")
# Validation
check("encrypt without requestMetadata", call(f"/keys/{KEY}/encrypt", {"plaintext": b64(b"x"), "encryptionAlgorithm": "AES_GCM"}), 400, "ValidationException")
check("encrypt without kmsKeyArn", call(f"/keys/{KEY}/encrypt", {"requestMetadata": meta(key_arn=False), "plaintext": b64(b"x"), "encryptionAlgorithm": "AES_GCM"}), 400, "ValidationException")
check("encrypt with another algorithm", call(f"/keys/{KEY}/encrypt", {"requestMetadata": meta(), "plaintext": b64(b"x"), "encryptionAlgorithm": "AES_CBC"}), 400, "ValidationException")
check("encrypt with bad base64", call(f"/keys/{KEY}/encrypt", {"requestMetadata": meta(), "plaintext": "!!!", "encryptionAlgorithm": "AES_GCM"}), 400, "ValidationException")
check("encrypt with another CDIV algorithm", call(f"/keys/{KEY}/encrypt", {"requestMetadata": meta(), "plaintext": b64(b"x"), "encryptionAlgorithm": "AES_GCM", "ciphertextDataIntegrityValueAlgorithm": "MD5"}), 400, "ValidationException")
check("a body that is not JSON", call(f"/keys/{KEY}/encrypt", None, raw=b"{not json"), 400, "ValidationException")
check("an unknown kmsOperation is not refused", call(f"/keys/{KEY}/metadata", {"requestMetadata": meta("BulkDescribeKey")}), 200)
# Authentication
check("wrong secret", call("/health", {"requestMetadata": meta()}, creds=(AKID, "x" * 44)), 401, "AuthenticationFailedException")
check("unknown access key id", call("/health", {"requestMetadata": meta()}, creds=("ABCDEFGHIJKLMNOPQRST", SECRET)), 401, "AuthenticationFailedException")
check("signed for the service kms", call("/health", {"requestMetadata": meta()}, service="kms"), 401, "AuthenticationFailedException")
check("unsigned", call("/health", {"requestMetadata": meta()}, sign=False), 401, "AuthenticationFailedException")
# Paths and methods
check("GET on encrypt", call(f"/keys/{KEY}/encrypt", None, method="GET"), 405)
check("another API version", call("/health", {"requestMetadata": meta()}, base=PATH.replace("/v1", "/v2")), 404, "InvalidUriPathException")
check("an unknown operation", call(f"/keys/{KEY}/sign", {"requestMetadata": meta()}), 404, "InvalidUriPathException")
check("an invalid key id", call("/keys/bad$id/metadata", {"requestMetadata": meta()}), 400, "ValidationException")

print("FAILED: " + ", ".join(failures) if failures else "ALL OK")
sys.exit(1 if failures else 0)
