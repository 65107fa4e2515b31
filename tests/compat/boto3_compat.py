"""boto3 and the aws cli, unmodified, against `kmsfs kms serve` (run by tests/remote.rs).

Environment: ENDPOINT, AKID, SECRET (principal alice), BOB_AKID, BOB_SECRET, AWS_CLI,
PREFIX (of the alias names made; optional).
Prints ALL OK and exits 0 when every check passed; any failure raises.
"""
import base64
import json
import os
import subprocess

import boto3

import awscheck
from awscheck import expect

import botocore
from botocore.config import Config

EP = os.environ["ENDPOINT"]
# alias names start with PREFIX, so several runs can share one store (a cluster's servers)
P = os.environ.get("PREFIX", "")
# client-side parameter validation off, so out-of-range values reach the server
CFG = Config(parameter_validation=False, retries={"max_attempts": 1})


def client(akid, secret):
    return boto3.client("kms", endpoint_url=EP, region_name="us-east-1", aws_access_key_id=akid,
                        aws_secret_access_key=secret, config=CFG)


kms = client(os.environ["AKID"], os.environ["SECRET"])
bob = client(os.environ["BOB_AKID"], os.environ["BOB_SECRET"])
# every answer carries only AWS's fields (checked at the end)
awscheck.watch(kms)
awscheck.watch(bob)



checks = []


def check(name):
    checks.append(name)
    print("ok:", name, flush=True)


key = kms.create_key(Description="compat")["KeyMetadata"]
kid, arn = key["KeyId"], key["Arn"]
assert key["KeyState"] == "Enabled" and arn.startswith("arn:aws:kms:"), key
check("CreateKey")
kms.create_alias(AliasName=f"alias/{P}compat", TargetKeyId=kid)
assert kms.describe_key(KeyId=f"alias/{P}compat")["KeyMetadata"]["Arn"] == arn
check("CreateAlias + DescribeKey by alias")
for _ in range(4):
    kms.create_key()
page1 = kms.list_keys(Limit=2)
assert page1["Truncated"] and len(page1["Keys"]) == 2
seen = list(page1["Keys"])
marker = page1["NextMarker"]
while marker:
    p = kms.list_keys(Limit=2, Marker=marker)
    seen += p["Keys"]
    marker = p.get("NextMarker")
assert len({k["KeyId"] for k in seen}) >= 6, seen
pages = list(kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 3}))
assert len(pages) >= 2
check("ListKeys paged (manual and paginator)")

ctx = {"purpose": "compat", "tree": "t1"}
dk = kms.generate_data_key(KeyId=f"alias/{P}compat", KeySpec="AES_256", EncryptionContext=ctx)
assert len(dk["Plaintext"]) == 32 and dk["KeyId"] == arn
check("GenerateDataKey")
dkw = kms.generate_data_key_without_plaintext(KeyId=kid, NumberOfBytes=64, EncryptionContext=ctx)
assert "Plaintext" not in dkw
assert len(kms.decrypt(CiphertextBlob=dkw["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"]) == 64
check("GenerateDataKeyWithoutPlaintext")
enc = kms.encrypt(KeyId=kid, Plaintext=b"attack at dawn", EncryptionContext=ctx)
assert kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == b"attack at dawn"
assert kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=ctx, KeyId=arn)["Plaintext"] == b"attack at dawn"
check("Encrypt + Decrypt with and without KeyId")
expect("InvalidCiphertextException", kms.decrypt, CiphertextBlob=enc["CiphertextBlob"], EncryptionContext={"purpose": "other"})
expect("InvalidCiphertextException", kms.decrypt, CiphertextBlob=enc["CiphertextBlob"])
check("Decrypt with the wrong context -> InvalidCiphertextException")
other = kms.create_key()["KeyMetadata"]["KeyId"]
expect("IncorrectKeyException", kms.decrypt, CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=ctx, KeyId=other)
re = kms.re_encrypt(CiphertextBlob=enc["CiphertextBlob"], SourceEncryptionContext=ctx, DestinationKeyId=other,
                    DestinationEncryptionContext={"moved": "yes"})
assert re["SourceKeyId"] == arn and re["KeyId"].endswith(other)
assert kms.decrypt(CiphertextBlob=re["CiphertextBlob"], EncryptionContext={"moved": "yes"})["Plaintext"] == b"attack at dawn"
check("ReEncrypt")

expect("ValidationException", kms.enable_key_rotation, KeyId=kid, RotationPeriodInDays=30)
kms.enable_key_rotation(KeyId=kid, RotationPeriodInDays=180)
st = kms.get_key_rotation_status(KeyId=kid)
assert st["KeyRotationEnabled"] and st["RotationPeriodInDays"] == 180, st
before = kms.describe_key(KeyId=kid)["KeyMetadata"].get("CurrentKeyMaterialId")
kms.rotate_key_on_demand(KeyId=kid)
after = kms.describe_key(KeyId=kid)["KeyMetadata"].get("CurrentKeyMaterialId")
assert before != after
rots = kms.list_key_rotations(KeyId=kid)["Rotations"]
assert len(rots) == 1 and rots[0]["RotationType"] == "ON_DEMAND", rots
assert rots[0]["KeyMaterialState"] == "CURRENT" and rots[0]["KeyMaterialId"] == after, rots
allm = kms.list_key_rotations(KeyId=kid, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
assert [r["KeyMaterialState"] for r in allm] == ["NON_CURRENT", "CURRENT"], allm
assert allm[0]["KeyMaterialId"] == before and "RotationType" not in allm[0], allm
assert kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == b"attack at dawn"
check("Enable/GetKeyRotationStatus/RotateKeyOnDemand/ListKeyRotations; old blob still decrypts")

kms.disable_key(KeyId=kid)
expect("DisabledException", kms.decrypt, CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=ctx)
expect("DisabledException", kms.generate_data_key, KeyId=kid, KeySpec="AES_256")
check("DisableKey -> DisabledException")
kms.enable_key(KeyId=kid)
expect("ValidationException", kms.schedule_key_deletion, KeyId=kid, PendingWindowInDays=3)
sd = kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
assert sd["KeyState"] == "PendingDeletion" and sd["PendingWindowInDays"] == 7, sd
expect("KMSInvalidStateException", kms.decrypt, CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=ctx)
kms.cancel_key_deletion(KeyId=kid)
assert kms.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Disabled"
kms.enable_key(KeyId=kid)
check("ScheduleKeyDeletion (3 -> ValidationException, 7 -> PendingDeletion) / CancelKeyDeletion -> Disabled")

pol = json.loads(kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"])
assert pol["Statement"], pol
expect("AccessDeniedException", bob.decrypt, CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=ctx)
pol["Statement"].append({"Effect": "Allow", "Principal": {"AWS": "bob"}, "Action": "kms:Decrypt", "Resource": "*",
                         "Condition": {"StringEquals": {"kms:EncryptionContext:tree": "t1"}}})
kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=json.dumps(pol))
assert bob.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == b"attack at dawn"
expect("AccessDeniedException", bob.encrypt, KeyId=kid, Plaintext=b"x")
expect("MalformedPolicyDocumentException", kms.put_key_policy, KeyId=kid, PolicyName="default",
       Policy=json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Bogus": 1}]}))
check("Get/PutKeyPolicy; a principal denied by policy -> AccessDeniedException")

# Aliases: the caller needs kms:*Alias on the key an alias points at now *and* on the new
# one, so bob cannot repoint alice's alias at his own key (and then receive her data keys).
bob_kid = bob.create_key(Description="bob's own")["KeyMetadata"]["KeyId"]
expect("AccessDeniedException", bob.update_alias, AliasName=f"alias/{P}compat", TargetKeyId=bob_kid)
expect("AccessDeniedException", bob.delete_alias, AliasName=f"alias/{P}compat")
expect("AccessDeniedException", bob.create_alias, AliasName=f"alias/{P}bobs-view-of-alice", TargetKeyId=kid)
expect("AccessDeniedException", kms.update_alias, AliasName=f"alias/{P}compat", TargetKeyId=bob_kid)
assert kms.describe_key(KeyId=f"alias/{P}compat")["KeyMetadata"]["Arn"] == arn
other = kms.create_key(Description="alice's second")["KeyMetadata"]["KeyId"]
kms.update_alias(AliasName=f"alias/{P}compat", TargetKeyId=other)
kms.update_alias(AliasName=f"alias/{P}compat", TargetKeyId=kid)
assert kms.describe_key(KeyId=f"alias/{P}compat")["KeyMetadata"]["Arn"] == arn
bob.create_alias(AliasName=f"alias/{P}bob", TargetKeyId=bob_kid)
expect("AccessDeniedException", kms.update_alias, AliasName=f"alias/{P}bob", TargetKeyId=kid)
check("UpdateAlias/DeleteAlias/CreateAlias need rights on the old and the new key")

# A DescribeKey signed over host;x-amz-date only, sent as DisableKey (accepted on e663627).
import urllib.error
import urllib.request
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
areq = AWSRequest(method="POST", url=EP + "/", data=json.dumps({"KeyId": kid}).encode())
SigV4Auth(Credentials(os.environ["AKID"], os.environ["SECRET"]), "kms", "us-east-1").add_auth(areq)
assert "SignedHeaders=host;x-amz-date," in areq.headers["Authorization"], areq.headers["Authorization"]
hdrs = dict(areq.headers.items())
hdrs["X-Amz-Target"] = "TrentService.DisableKey"
hdrs["Content-Type"] = "application/x-amz-json-1.1"
try:
    urllib.request.urlopen(urllib.request.Request(EP + "/", data=areq.body, headers=hdrs, method="POST"))
    raise AssertionError("a request whose operation is not signed was accepted")
except urllib.error.HTTPError as e:
    assert e.code == 400, e.code
    assert json.loads(e.read())["__type"] == "IncompleteSignatureException"
assert kms.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Enabled"
check("the operation must be signed: X-Amz-Target outside SignedHeaders -> IncompleteSignatureException")

wrong = client(os.environ["AKID"], "not-the-secret")
expect("InvalidSignatureException", wrong.list_keys)
stranger = client("AKKFUNKNOWN000000000", "whatever")
expect("UnrecognizedClientException", stranger.list_keys)
check("wrong secret -> InvalidSignatureException; unknown key id -> UnrecognizedClientException")

if os.environ.get("SHARED_STORE"):
    # servers of several Regions may share this store: multi-Region keys are made
    assert kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"].startswith("mrk-")
else:
    expect("UnsupportedOperationException", kms.create_key, MultiRegion=True)
expect("UnsupportedOperationException", kms.create_key, Origin="AWS_CLOUDHSM")
expect("TagException", kms.create_key, Tags=[{"TagKey": "aws:reserved", "TagValue": "x"}])
check("CreateKey refuses MultiRegion, custom key stores and aws: tags (never silently ignored)")

tagged = kms.create_key(Tags=[{"TagKey": "team", "TagValue": "storage"}])["KeyMetadata"]["KeyId"]
kms.tag_resource(KeyId=tagged, Tags=[{"TagKey": "env", "TagValue": "prod"}])
tags = kms.list_resource_tags(KeyId=tagged)["Tags"]
assert tags == [{"TagKey": "team", "TagValue": "storage"}, {"TagKey": "env", "TagValue": "prod"}], tags
kms.untag_resource(KeyId=tagged, TagKeys=["team"])
assert kms.list_resource_tags(KeyId=tagged)["Tags"] == [{"TagKey": "env", "TagValue": "prod"}]
check("TagResource / ListResourceTags / UntagResource")

kms.update_key_description(KeyId=tagged, Description="renamed")
assert kms.describe_key(KeyId=tagged)["KeyMetadata"]["Description"] == "renamed"
assert kms.list_key_policies(KeyId=tagged)["PolicyNames"] == ["default"]
rnd = kms.generate_random(NumberOfBytes=64)["Plaintext"]
assert len(rnd) == 64, len(rnd)
expect("ValidationException", kms.generate_random, NumberOfBytes=1025)
check("UpdateKeyDescription, ListKeyPolicies, GenerateRandom")

expect("DryRunOperationException", kms.encrypt, KeyId=tagged, Plaintext=b"x", DryRun=True)
expect("DryRunOperationException", kms.generate_data_key, KeyId=tagged, KeySpec="AES_256", DryRun=True)
expect("InvalidGrantTokenException", kms.encrypt, KeyId=tagged, Plaintext=b"x", GrantTokens=["no-such-grant"])
check("DryRun -> DryRunOperationException; unknown grant tokens -> InvalidGrantTokenException")

hk = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
assert hk["KeySpec"] == "HMAC_256" and hk["MacAlgorithms"] == ["HMAC_SHA_256"], hk
mac = kms.generate_mac(KeyId=hk["KeyId"], Message=b"msg", MacAlgorithm="HMAC_SHA_256")["Mac"]
assert kms.verify_mac(KeyId=hk["KeyId"], Message=b"msg", MacAlgorithm="HMAC_SHA_256", Mac=mac)["MacValid"]
expect("KMSInvalidMacException", kms.verify_mac, KeyId=hk["KeyId"], Message=b"other", MacAlgorithm="HMAC_SHA_256", Mac=mac)
expect("InvalidKeyUsageException", kms.encrypt, KeyId=hk["KeyId"], Plaintext=b"x")
expect("UnsupportedOperationException", kms.enable_key_rotation, KeyId=hk["KeyId"])
check("HMAC keys: GenerateMac / VerifyMac; no Encrypt, no rotation")

# Asymmetric signing keys, cross-checked with an independent implementation (the
# `cryptography` package, which moto brings) over the public key GetPublicKey returns.
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
for spec, alg in [("ECC_NIST_P256", "ECDSA_SHA_256"), ("ECC_NIST_P384", "ECDSA_SHA_384"),
                  ("RSA_2048", "RSASSA_PSS_SHA_256"), ("RSA_3072", "RSASSA_PKCS1_V1_5_SHA_384")]:
    ak = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert alg in ak["SigningAlgorithms"], ak
    pub = serialization.load_der_public_key(kms.get_public_key(KeyId=ak["KeyId"])["PublicKey"])
    sig = kms.sign(KeyId=ak["KeyId"], Message=b"signed", MessageType="RAW", SigningAlgorithm=alg)["Signature"]
    h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[-3:]]
    if spec.startswith("ECC"):
        pub.verify(sig, b"signed", ec.ECDSA(h))
    elif "PSS" in alg:
        pub.verify(sig, b"signed", padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    else:
        pub.verify(sig, b"signed", padding.PKCS1v15(), h)
    assert kms.verify(KeyId=ak["KeyId"], Message=b"signed", SigningAlgorithm=alg, Signature=sig)["SignatureValid"]
    expect("KMSInvalidSignatureException", kms.verify, KeyId=ak["KeyId"], Message=b"other", SigningAlgorithm=alg,
           Signature=sig)
    expect("InvalidKeyUsageException", kms.encrypt, KeyId=ak["KeyId"], Plaintext=b"x")
check("asymmetric keys: Sign / Verify / GetPublicKey, verified by the cryptography package")

rk = kms.create_key(KeySpec="RSA_3072", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
assert rk["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"], rk
rpub = serialization.load_der_public_key(kms.get_public_key(KeyId=rk["KeyId"])["PublicKey"])
for alg, h in [("RSAES_OAEP_SHA_1", hashes.SHA1()), ("RSAES_OAEP_SHA_256", hashes.SHA256())]:
    ct = rpub.encrypt(b"wrapped offline", padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None))
    out = kms.decrypt(KeyId=rk["KeyId"], CiphertextBlob=ct, EncryptionAlgorithm=alg)
    assert out["Plaintext"] == b"wrapped offline" and out["EncryptionAlgorithm"] == alg, out
    ct2 = kms.encrypt(KeyId=rk["KeyId"], Plaintext=b"via kms", EncryptionAlgorithm=alg)["CiphertextBlob"]
    assert kms.decrypt(KeyId=rk["KeyId"], CiphertextBlob=ct2, EncryptionAlgorithm=alg)["Plaintext"] == b"via kms"
expect("InvalidKeyUsageException", kms.encrypt, KeyId=rk["KeyId"], Plaintext=b"x")
check("RSA ENCRYPT_DECRYPT keys: OAEP SHA-1/SHA-256; a ciphertext made offline with the public key decrypts")

# AWS's documented rule (API_Decrypt, EncryptionAlgorithm: "Specify the same algorithm that
# was used to encrypt the data. If you specify a different algorithm, the Decrypt operation
# fails"): a ciphertext made with one OAEP hash, named with the other, fails both ways.
for made, named, h in [("RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1", hashes.SHA256()),
                       ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", hashes.SHA1())]:
    ct = rpub.encrypt(b"which hash?", padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None))
    expect("InvalidCiphertextException", kms.decrypt, KeyId=rk["KeyId"], CiphertextBlob=ct, EncryptionAlgorithm=named)
check("RSA Decrypt naming another OAEP hash than the ciphertext's fails (AWS's documented rule)")

# Every RSA and ECC signing algorithm, RAW and DIGEST, verified by the cryptography package.
curves = {"ECC_NIST_P256": ("ECDSA_SHA_256",), "ECC_NIST_P384": ("ECDSA_SHA_384",),
          "ECC_NIST_P521": ("ECDSA_SHA_512",), "ECC_SECG_P256K1": ("ECDSA_SHA_256",),
          "RSA_2048": ("RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
                       "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512")}
import hashlib
for spec, algs in curves.items():
    ak = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    pub = serialization.load_der_public_key(kms.get_public_key(KeyId=ak["KeyId"])["PublicKey"])
    for alg in algs:
        h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[-3:]]
        digest = hashlib.new(h.name, b"every algorithm").digest()
        for mtype, msg in [("RAW", b"every algorithm"), ("DIGEST", digest)]:
            sig = kms.sign(KeyId=ak["KeyId"], Message=msg, MessageType=mtype, SigningAlgorithm=alg)["Signature"]
            if spec.startswith("ECC"):
                pub.verify(sig, b"every algorithm", ec.ECDSA(h))
            elif "PSS" in alg:
                pub.verify(sig, b"every algorithm", padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
            else:
                pub.verify(sig, b"every algorithm", padding.PKCS1v15(), h)
check("every RSA and ECC signing algorithm, RAW and DIGEST: signatures verified by the cryptography package")

pair = kms.generate_data_key_pair(KeyId=kid, KeyPairSpec="ECC_NIST_P256", EncryptionContext={"app": "compat"})
priv = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], password=None)
assert priv.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo) == pair["PublicKey"]
unwrapped = kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"], EncryptionContext={"app": "compat"})
assert unwrapped["Plaintext"] == pair["PrivateKeyPlaintext"]
nopt = kms.generate_data_key_pair_without_plaintext(KeyId=kid, KeyPairSpec="RSA_2048")
assert "PrivateKeyPlaintext" not in nopt and nopt["KeyPairSpec"] == "RSA_2048"
check("GenerateDataKeyPair(WithoutPlaintext): the pair matches, the wrapped private key decrypts")

xk = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]
assert xk["KeyAgreementAlgorithms"] == ["ECDH"], xk
xpub = serialization.load_der_public_key(kms.get_public_key(KeyId=xk["KeyId"])["PublicKey"])
mine = ec.generate_private_key(ec.SECP384R1())
mine_der = mine.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
z = kms.derive_shared_secret(KeyId=xk["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=mine_der)["SharedSecret"]
assert z == mine.exchange(ec.ECDH(), xpub)
check("KEY_AGREEMENT keys: DeriveSharedSecret agrees with an ECDH computed by the cryptography package")

gk = kms.create_key()["KeyMetadata"]["KeyId"]
expect("AccessDeniedException", bob.encrypt, KeyId=gk, Plaintext=b"x", EncryptionContext={"team": "a"})
g = kms.create_grant(KeyId=gk, GranteePrincipal="bob", Operations=["Encrypt", "Decrypt"],
                     Constraints={"EncryptionContextSubset": {"team": "a"}}, Name="compat-grant")
blob = bob.encrypt(KeyId=gk, Plaintext=b"x", EncryptionContext={"team": "a"},
                   GrantTokens=[g["GrantToken"]])["CiphertextBlob"]
assert bob.decrypt(CiphertextBlob=blob, EncryptionContext={"team": "a"})["Plaintext"] == b"x"
expect("AccessDeniedException", bob.encrypt, KeyId=gk, Plaintext=b"x", EncryptionContext={"team": "b"})
assert [x["GrantId"] for x in kms.list_grants(KeyId=gk)["Grants"]] == [g["GrantId"]]
assert kms.create_grant(KeyId=gk, GranteePrincipal="bob", Operations=["Decrypt", "Encrypt"],
                        Constraints={"EncryptionContextSubset": {"team": "a"}},
                        Name="compat-grant")["GrantId"] == g["GrantId"]
kms.revoke_grant(KeyId=gk, GrantId=g["GrantId"])
expect("AccessDeniedException", bob.encrypt, KeyId=gk, Plaintext=b"x", EncryptionContext={"team": "a"})
check("grants: CreateGrant with constraints, grant tokens, ListGrants, Name idempotence, RevokeGrant")

# Key import (BYOK), wrapped outside kmsfs by the `cryptography` package as AWS tells clients to.
import secrets
from awscheck import wrap_for


for alg in ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_1", "RSA_AES_KEY_WRAP_SHA_256"]:
    ext = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    assert ext["KeyState"] == "PendingImport" and ext["Origin"] == "EXTERNAL", ext
    xid = ext["KeyId"]
    expect("KMSInvalidStateException", kms.encrypt, KeyId=xid, Plaintext=b"x")
    material = secrets.token_bytes(32)
    params = kms.get_parameters_for_import(KeyId=xid, WrappingAlgorithm=alg, WrappingKeySpec="RSA_2048")
    kms.import_key_material(KeyId=xid, ImportToken=params["ImportToken"],
                            EncryptedKeyMaterial=wrap_for(params, alg, material),
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    md = kms.describe_key(KeyId=xid)["KeyMetadata"]
    assert md["KeyState"] == "Enabled" and md["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE", md
    ct = kms.encrypt(KeyId=xid, Plaintext=b"byok")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"byok"
    expect("InvalidImportTokenException", kms.import_key_material, KeyId=xid, ImportToken=params["ImportToken"],
           EncryptedKeyMaterial=wrap_for(params, alg, material), ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
kms.delete_imported_key_material(KeyId=xid)
assert kms.describe_key(KeyId=xid)["KeyMetadata"]["KeyState"] == "PendingImport"
expect("KMSInvalidStateException", kms.decrypt, CiphertextBlob=ct)
params = kms.get_parameters_for_import(KeyId=xid, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_3072")
expect("IncorrectKeyMaterialException", kms.import_key_material, KeyId=xid, ImportToken=params["ImportToken"],
       EncryptedKeyMaterial=wrap_for(params, "RSAES_OAEP_SHA_256", secrets.token_bytes(32)),
       ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
kms.import_key_material(KeyId=xid, ImportToken=params["ImportToken"],
                        EncryptedKeyMaterial=wrap_for(params, "RSAES_OAEP_SHA_256", material),
                        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
assert kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"byok"
expect("UnsupportedOperationException", kms.get_parameters_for_import, KeyId=kid,
       WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
check("key import: Origin EXTERNAL is PendingImport; GetParametersForImport, ImportKeyMaterial (4 wrappings, "
      "done by cryptography), DeleteImportedKeyMaterial, reimport only of the same material")

lu = kms.get_key_last_usage(KeyId=xid)
assert lu["KeyLastUsage"]["Operation"] == "Decrypt" and lu["KeyId"].endswith(xid), lu
assert lu["TrackingStartDate"].timestamp() >= lu["KeyCreationDate"].timestamp() - 1, lu
fresh = kms.create_key()["KeyMetadata"]["KeyId"]
assert "Operation" not in kms.get_key_last_usage(KeyId=fresh)["KeyLastUsage"]
check("GetKeyLastUsage: the last successful cryptographic operation, from the audit log")

# The server is one region and account (defaults us-east-1, 000000000000): ARNs say so,
# a client signing for another region sees no key, and STS tells a client who it is.
assert arn == f"arn:aws:kms:us-east-1:000000000000:key/{kid}", arn
away = boto3.client("kms", endpoint_url=EP, region_name="eu-west-1", aws_access_key_id=os.environ["AKID"],
                    aws_secret_access_key=os.environ["SECRET"], config=CFG)
expect("NotFoundException", away.describe_key, KeyId=kid)
expect("NotFoundException", away.describe_key, KeyId=f"alias/{P}compat")
assert away.list_keys()["Keys"] == []
expect("NotFoundException", kms.describe_key, KeyId=arn.replace("us-east-1", "eu-west-1"))
expect("NotFoundException", kms.describe_key, KeyId=arn.replace("000000000000", "999999999999"))
sts = boto3.client("sts", endpoint_url=EP, region_name="us-east-1", aws_access_key_id=os.environ["AKID"],
                   aws_secret_access_key=os.environ["SECRET"], config=CFG)
ident = sts.get_caller_identity()
assert ident["Arn"] == "arn:aws:iam::000000000000:user/alice" and ident["Account"] == "000000000000", ident
try:
    boto3.client("sts", endpoint_url=EP, region_name="us-east-1", aws_access_key_id=os.environ["AKID"],
                 aws_secret_access_key="wrong", config=CFG).get_caller_identity()
    raise AssertionError("GetCallerIdentity with a wrong secret succeeded")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "SignatureDoesNotMatch", e.response
# AWS's default key policy: the account root, i.e. every principal of this server.
root_policy = json.dumps({"Version": "2012-10-17", "Id": "key-default-1", "Statement": [{
    "Sid": "Enable IAM User Permissions", "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ident['Account']}:root"}, "Action": "kms:*", "Resource": "*"}]})
rk = kms.create_key(Policy=root_policy)["KeyMetadata"]["KeyId"]
blob = bob.encrypt(KeyId=rk, Plaintext=b"root")["CiphertextBlob"]
assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"root"
user_policy = json.dumps({"Statement": [{"Effect": "Allow", "Principal": {"AWS": ident["Arn"]},
                                         "Action": "kms:*", "Resource": "*"}]})
uk = kms.create_key(Policy=user_policy)["KeyMetadata"]["KeyId"]
expect("AccessDeniedException", bob.encrypt, KeyId=uk, Plaintext=b"x")
check("region and account in ARNs, other regions see nothing, STS GetCallerIdentity, root and user ARNs in policies")

env = dict(os.environ, AWS_ACCESS_KEY_ID=os.environ["AKID"], AWS_SECRET_ACCESS_KEY=os.environ["SECRET"],
           AWS_DEFAULT_REGION="us-east-1", AWS_PAGER="")
cli = [os.environ["AWS_CLI"], "kms", "--endpoint-url", EP, "--output", "json"]
made = json.loads(subprocess.check_output(cli + ["create-key", "--description", "from the aws cli"], env=env))
cli_kid = made["KeyMetadata"]["KeyId"]
desc = json.loads(subprocess.check_output(cli + ["describe-key", "--key-id", cli_kid], env=env))
assert desc["KeyMetadata"]["Description"] == "from the aws cli"
listed = json.loads(subprocess.check_output(cli + ["list-keys"], env=env))
assert any(k["KeyId"] == cli_kid for k in listed["Keys"])
# blobs through files: the same spelling for aws cli v1 and v2
import tempfile
with tempfile.TemporaryDirectory() as td:
    pf, cf = os.path.join(td, "plain"), os.path.join(td, "ct")
    open(pf, "wb").write(b"from cli")
    out = json.loads(subprocess.check_output(cli + ["encrypt", "--key-id", cli_kid, "--plaintext", "fileb://" + pf], env=env))
    open(cf, "wb").write(base64.b64decode(out["CiphertextBlob"]))
    plain = json.loads(subprocess.check_output(cli + ["decrypt", "--ciphertext-blob", "fileb://" + cf], env=env))
    assert base64.b64decode(plain["Plaintext"]) == b"from cli", plain
who = json.loads(subprocess.check_output([os.environ["AWS_CLI"], "sts", "get-caller-identity", "--endpoint-url", EP,
                                          "--output", "json"], env=env))
assert who["Arn"] == "arn:aws:iam::000000000000:user/alice", who
r = subprocess.run(cli + ["schedule-key-deletion", "--key-id", cli_kid, "--pending-window-in-days", "7"], env=env,
                   capture_output=True, text=True)
assert r.returncode == 0, r.stderr
check("aws cli: sts get-caller-identity, create-key, describe-key, list-keys, encrypt, decrypt, schedule-key-deletion")

awscheck.assert_clean()
check("every answer carried only fields of AWS's output shapes")
print(f"ALL OK ({len(checks)} checks)")
