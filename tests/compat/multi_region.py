"""Multi-Region keys through boto3, across two `kmsfs kms serve` of two Regions sharing one
PostgreSQL store (run by tests/it/cluster.rs), or one server answering as both Regions
(`--region A,B`, run by tests/it/remote.rs).

Environment: ENDPOINT_A, REGION_A (the primary's), ENDPOINT_B, REGION_B, AKID, SECRET;
REGION_NOT_SERVED (optional): a Region neither endpoint serves, which must see nothing.
Prints ALL OK and exits 0 when every check passed; any failure raises.
"""
import os

import boto3

import secrets

from awscheck import expect, wrap_for
import botocore
from botocore.config import Config

# Standard retries, as AWS's SDKs use by default: they retry only throttling, 5xx and
# connection errors, never the refusals checked here. The server meters what one
# principal may cost (GetParametersForImport, which makes an RSA key, weighs 1,000 of a
# 2,000-a-second budget), so the script's burst of imports is throttled at times, as
# AWS throttles it.
CFG = Config(retries={"max_attempts": 10, "mode": "standard"})
RA, RB = os.environ["REGION_A"], os.environ["REGION_B"]


def client(ep, region):
    return boto3.client("kms", endpoint_url=ep, region_name=region,
                        aws_access_key_id=os.environ["AKID"],
                        aws_secret_access_key=os.environ["SECRET"], config=CFG)


a = client(os.environ["ENDPOINT_A"], RA)
b = client(os.environ["ENDPOINT_B"], RB)



def ok(name):
    print("ok:", name, flush=True)


def mrc(c, kid):
    return c.describe_key(KeyId=kid)["KeyMetadata"]


# CreateKey MultiRegion=true: an mrk- id, a primary with no replicas yet.
md = a.create_key(MultiRegion=True, Description="family")["KeyMetadata"]
kid = md["KeyId"]
assert kid.startswith("mrk-") and len(kid) == 36, kid
assert md["MultiRegion"] is True, md
assert md["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY", md
assert md["MultiRegionConfiguration"]["PrimaryKey"]["Region"] == RA, md
assert md["MultiRegionConfiguration"]["ReplicaKeys"] == [], md
arn_a = md["Arn"]
assert f":{RA}:" in arn_a
ok("CreateKey MultiRegion=true")

# Keys are regional: neither the mrk (not yet replicated) nor a single-Region key is seen in B.
expect("NotFoundException", b.describe_key, KeyId=kid)
single = a.create_key()["KeyMetadata"]
assert single["MultiRegion"] is False and "MultiRegionConfiguration" not in single, single
expect("NotFoundException", b.describe_key, KeyId=single["KeyId"])
expect("NotFoundException", b.encrypt, KeyId=single["KeyId"], Plaintext=b"x")
ok("keys of one Region are not seen in another")

# ReplicateKey, and where AWS refuses it.
r = a.replicate_key(KeyId=kid, ReplicaRegion=RB, Description="replica", Tags=[{"TagKey": "side", "TagValue": "b"}])
rmd = r["ReplicaKeyMetadata"]
assert rmd["KeyId"] == kid and f":{RB}:" in rmd["Arn"], rmd
assert rmd["KeyState"] == "Creating", rmd
assert rmd["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA", rmd
assert r["ReplicaTags"] == [{"TagKey": "side", "TagValue": "b"}], r
arn_b = rmd["Arn"]
expect("AlreadyExistsException", a.replicate_key, KeyId=kid, ReplicaRegion=RB)
expect("ValidationException", a.replicate_key, KeyId=kid, ReplicaRegion=RA)
expect("ValidationException", a.replicate_key, KeyId=kid, ReplicaRegion="Not A Region")
expect("UnsupportedOperationException", a.replicate_key, KeyId=single["KeyId"], ReplicaRegion=RB)
expect("UnsupportedOperationException", b.replicate_key, KeyId=kid, ReplicaRegion="ap-south-1")
ok("ReplicateKey, and its refusals")

ma, mb = mrc(a, kid), mrc(b, kid)
assert mb["KeyState"] == "Enabled" and mb["Description"] == "replica", mb
assert mb["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA", mb
assert mb["MultiRegionConfiguration"]["PrimaryKey"] == {"Arn": arn_a, "Region": RA}, mb
assert ma["MultiRegionConfiguration"]["ReplicaKeys"] == [{"Arn": arn_b, "Region": RB}], ma
assert mb["MultiRegionConfiguration"]["ReplicaKeys"] == [{"Arn": arn_b, "Region": RB}], mb
assert ma["Description"] == "family", ma
ok("DescribeKey: MultiRegionConfiguration on both sides")

# Interchangeable: encrypted in one Region, decrypted in the other, no cross-Region call.
blob = a.encrypt(KeyId=kid, Plaintext=b"from a", EncryptionContext={"c": "1"})["CiphertextBlob"]
d = b.decrypt(CiphertextBlob=blob, EncryptionContext={"c": "1"})
assert d["Plaintext"] == b"from a" and d["KeyId"] == arn_b, d
assert b.decrypt(CiphertextBlob=blob, KeyId=arn_b, EncryptionContext={"c": "1"})["Plaintext"] == b"from a"
blob = b.encrypt(KeyId=kid, Plaintext=b"from b")["CiphertextBlob"]
assert a.decrypt(CiphertextBlob=blob)["Plaintext"] == b"from b"
dk = b.generate_data_key(KeyId=kid, KeySpec="AES_256")
assert a.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
expect("InvalidCiphertextException", b.decrypt, CiphertextBlob=blob[:-1] + bytes([blob[-1] ^ 1]))
ok("ciphertext made in either Region decrypts in the other")

# Independent per Region: aliases, description, tags, enabled state, policy.
a.create_alias(AliasName="alias/family", TargetKeyId=kid)
b.create_alias(AliasName="alias/family", TargetKeyId=kid)
b.create_alias(AliasName="alias/only-b", TargetKeyId=kid)
expect("NotFoundException", a.describe_key, KeyId="alias/only-b")
b.update_key_description(KeyId=kid, Description="replica, renamed")
assert mrc(a, kid)["Description"] == "family"
assert b.list_resource_tags(KeyId=kid)["Tags"] == [{"TagKey": "side", "TagValue": "b"}]
assert a.list_resource_tags(KeyId=kid)["Tags"] == []
b.disable_key(KeyId=kid)
expect("DisabledException", b.encrypt, KeyId=kid, Plaintext=b"x")
a.encrypt(KeyId=kid, Plaintext=b"x")
b.enable_key(KeyId=kid)
assert a.get_key_policy(KeyId=kid, PolicyName="default")["Policy"]
ok("aliases, description, tags and enabled state are per Region")

# Shared: rotation happens on the primary and reaches the replica; refused on a replica.
before = mrc(b, kid)["CurrentKeyMaterialId"]
a.rotate_key_on_demand(KeyId=kid)
after = mrc(b, kid)["CurrentKeyMaterialId"]
assert after != before and after == mrc(a, kid)["CurrentKeyMaterialId"], (before, after)
new = b.encrypt(KeyId=kid, Plaintext=b"rotated")["CiphertextBlob"]
assert a.decrypt(CiphertextBlob=new)["Plaintext"] == b"rotated"
assert len(b.list_key_rotations(KeyId=kid)["Rotations"]) == 1
expect("UnsupportedOperationException", b.rotate_key_on_demand, KeyId=kid)
expect("UnsupportedOperationException", b.enable_key_rotation, KeyId=kid)
a.enable_key_rotation(KeyId=kid, RotationPeriodInDays=100)
assert b.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"] is True
ok("rotation: on the primary, shared with the replica, refused on the replica")

# UpdatePrimaryRegion: B becomes the primary, A a replica.
expect("UnsupportedOperationException", b.update_primary_region, KeyId=kid, PrimaryRegion=RA)
expect("NotFoundException", a.update_primary_region, KeyId=kid, PrimaryRegion="ap-south-1")
a.update_primary_region(KeyId=kid, PrimaryRegion=RB)
assert mrc(b, kid)["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY"
assert mrc(a, kid)["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"
assert mrc(a, kid)["MultiRegionConfiguration"]["ReplicaKeys"] == [{"Arn": arn_a, "Region": RA}]
expect("UnsupportedOperationException", a.rotate_key_on_demand, KeyId=kid)
b.rotate_key_on_demand(KeyId=kid)
assert mrc(a, kid)["CurrentKeyMaterialId"] == mrc(b, kid)["CurrentKeyMaterialId"]
ok("UpdatePrimaryRegion")

# Deletion: a primary with replicas waits for them (PendingReplicaDeletion).
s = b.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
assert s["KeyState"] == "PendingReplicaDeletion" and "DeletionDate" not in s, s
assert mrc(b, kid)["KeyState"] == "PendingReplicaDeletion"
expect("KMSInvalidStateException", b.encrypt, KeyId=kid, Plaintext=b"x")
assert a.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)["KeyState"] == "PendingDeletion"
b.cancel_key_deletion(KeyId=kid)
assert mrc(b, kid)["KeyState"] == "Disabled"
ok("deletion of a primary with replicas")

# Imported key material (Origin=EXTERNAL, MultiRegion=true): a replica is made without
# material and is given the same material by its own import; new material is imported
# into the primary (NEW_KEY_MATERIAL), then into every replica (EXISTING_KEY_MATERIAL),
# and only then can the primary rotate.
def import_into(c, key, material, **kw):
    p = c.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                    WrappingKeySpec="RSA_2048")
    return c.import_key_material(KeyId=key, ImportToken=p["ImportToken"],
                                 EncryptedKeyMaterial=wrap_for(p, "RSAES_OAEP_SHA_256", material),
                                 ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE", **kw)


def pending(c, key):
    return [(r["KeyMaterialId"], r["KeyMaterialState"], r["ImportState"])
            for r in c.list_key_rotations(KeyId=key, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
            if r["KeyMaterialState"].startswith("PENDING")]


xmd = a.create_key(MultiRegion=True, Origin="EXTERNAL")["KeyMetadata"]
xid = xmd["KeyId"]
assert xid.startswith("mrk-") and xmd["KeyState"] == "PendingImport" and xmd["Origin"] == "EXTERNAL", xmd
expect("KMSInvalidStateException", a.replicate_key, KeyId=xid, ReplicaRegion=RB)
m1 = secrets.token_bytes(32)
id1 = import_into(a, xid, m1)["KeyMaterialId"]
r = a.replicate_key(KeyId=xid, ReplicaRegion=RB)["ReplicaKeyMetadata"]
assert r["Origin"] == "EXTERNAL", r
xb = mrc(b, xid)
assert xb["KeyState"] == "PendingImport" and xb["Origin"] == "EXTERNAL", xb
expect("KMSInvalidStateException", b.encrypt, KeyId=xid, Plaintext=b"x")
blob = a.encrypt(KeyId=xid, Plaintext=b"imported")["CiphertextBlob"]
expect("KMSInvalidStateException", b.decrypt, CiphertextBlob=blob)
expect("IncorrectKeyMaterialException", import_into, b, xid, secrets.token_bytes(32))
expect("UnsupportedOperationException", import_into, b, xid, m1, ImportType="NEW_KEY_MATERIAL")
assert import_into(b, xid, m1)["KeyMaterialId"] == id1
assert mrc(b, xid)["KeyState"] == "Enabled" and mrc(b, xid)["CurrentKeyMaterialId"] == id1
assert b.decrypt(CiphertextBlob=blob)["Plaintext"] == b"imported"
ok("imported material: a replica is made without it and imports the same material")

# Each Region's material is its own: deleting it in B leaves A working.
b.delete_imported_key_material(KeyId=xid)
assert mrc(b, xid)["KeyState"] == "PendingImport" and mrc(a, xid)["KeyState"] == "Enabled"
assert a.decrypt(CiphertextBlob=blob)["Plaintext"] == b"imported"
expect("KMSInvalidStateException", b.decrypt, CiphertextBlob=blob)
import_into(b, xid, m1, ImportType="EXISTING_KEY_MATERIAL", KeyMaterialId=id1)
assert b.decrypt(CiphertextBlob=blob)["Plaintext"] == b"imported"
ok("imported material: deleted and reimported per Region")

# On-demand rotation of the family.
m2 = secrets.token_bytes(32)
id2 = import_into(a, xid, m2, ImportType="NEW_KEY_MATERIAL")["KeyMaterialId"]
assert id2 != id1
assert pending(a, xid) == [(id2, "PENDING_MULTI_REGION_IMPORT_AND_ROTATION", "IMPORTED")], pending(a, xid)
assert pending(b, xid) == [(id2, "PENDING_MULTI_REGION_IMPORT_AND_ROTATION", "PENDING_IMPORT")], pending(b, xid)
e = expect("KMSInvalidStateException", a.rotate_key_on_demand, KeyId=xid)
assert RB in str(e), e
assert import_into(b, xid, m2, ImportType="EXISTING_KEY_MATERIAL")["KeyMaterialId"] == id2
assert pending(a, xid) == [(id2, "PENDING_ROTATION", "IMPORTED")], pending(a, xid)
assert pending(b, xid) == [(id2, "PENDING_ROTATION", "IMPORTED")], pending(b, xid)
expect("UnsupportedOperationException", b.rotate_key_on_demand, KeyId=xid)
a.rotate_key_on_demand(KeyId=xid)
assert mrc(a, xid)["CurrentKeyMaterialId"] == id2 == mrc(b, xid)["CurrentKeyMaterialId"]
assert pending(a, xid) == [] and pending(b, xid) == []
new = b.encrypt(KeyId=xid, Plaintext=b"after rotation")["CiphertextBlob"]
assert a.decrypt(CiphertextBlob=new)["Plaintext"] == b"after rotation"
assert b.decrypt(CiphertextBlob=blob)["Plaintext"] == b"imported"
ok("imported material: NEW into the primary, EXISTING into the replica, then the family rotates")

# Deleting the primary's pending material deletes the replicas' too.
m3 = secrets.token_bytes(32)
id3 = import_into(a, xid, m3, ImportType="NEW_KEY_MATERIAL")["KeyMaterialId"]
import_into(b, xid, m3)
assert pending(b, xid) == [(id3, "PENDING_ROTATION", "IMPORTED")], pending(b, xid)
a.delete_imported_key_material(KeyId=xid, KeyMaterialId=id3)
assert pending(a, xid) == [] and pending(b, xid) == [], (pending(a, xid), pending(b, xid))
expect("IncorrectKeyMaterialException", import_into, b, xid, m3)
assert mrc(b, xid)["KeyState"] == "Enabled"
ok("imported material: the primary's pending material deleted in every Region")

# A multi-Region HMAC key with imported material: a MAC made in one Region verifies in the other.
hm = a.create_key(MultiRegion=True, Origin="EXTERNAL", KeySpec="HMAC_256",
                  KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
hkey = secrets.token_bytes(32)
import_into(a, hm, hkey)
a.replicate_key(KeyId=hm, ReplicaRegion=RB)
import_into(b, hm, hkey)
mac = a.generate_mac(KeyId=hm, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
assert b.verify_mac(KeyId=hm, Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=mac)["MacValid"]
import hmac as _hmac, hashlib as _hashlib
assert mac == _hmac.new(hkey, b"m", _hashlib.sha256).digest()
ok("imported material: a multi-Region HMAC key")

# A request signed for another Region sees nothing of this one.
wrong = client(os.environ["ENDPOINT_A"], RB)
expect("NotFoundException", wrong.describe_key, KeyId=arn_a)
if os.environ.get("REGION_NOT_SERVED"):
    away = client(os.environ["ENDPOINT_A"], os.environ["REGION_NOT_SERVED"])
    assert away.list_keys()["Keys"] == [], "a Region not served lists keys"
    expect("NotFoundException", away.describe_key, KeyId=arn_a)
    expect("NotFoundException", away.describe_key, KeyId=arn_a.split("/")[-1])
    ok("a Region not served sees nothing")
print("ALL OK")
