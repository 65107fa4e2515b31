"""AWS's exact answers and cross-account rules, through boto3 unmodified, against
`kmsfs kms serve` (run by tests/it/remote.rs).

Environment: ENDPOINT, AKID, SECRET (principal alice, the server's own account),
CAROL_AKID, CAROL_SECRET (principal carol of account 444455556666).
Prints ALL OK and exits 0 when every check passed; any failure raises.
"""
import json
import os

import boto3

import awscheck
from awscheck import expect

import botocore
from botocore.config import Config

EP = os.environ["ENDPOINT"]
OTHER = "444455556666"
# client-side validation off, so out-of-range values reach the server as AWS would see them
CFG = Config(parameter_validation=False, retries={"max_attempts": 1})


def client(service, akid, secret):
    return boto3.client(service, endpoint_url=EP, region_name="us-east-1", aws_access_key_id=akid,
                        aws_secret_access_key=secret, config=CFG)


alice = client("kms", os.environ["AKID"], os.environ["SECRET"])
carol = client("kms", os.environ["CAROL_AKID"], os.environ["CAROL_SECRET"])

# Every answer carries AWS's fields only (awscheck.py checks each body).
for c in (alice, carol):
    awscheck.watch(c)



def words(code, fn, *a, **kw):
    """The message of the AWS error `code` fn must fail with."""
    return expect(code, fn, *a, **kw).response["Error"]["Message"]


def same(got, want):
    assert got == want, f"\n got: {got!r}\nwant: {want!r}"


# --- who is who: STS answers each principal's own account ---------------------------------
me = client("sts", os.environ["AKID"], os.environ["SECRET"]).get_caller_identity()
HOME = me["Account"]
them = client("sts", os.environ["CAROL_AKID"], os.environ["CAROL_SECRET"]).get_caller_identity()
same(them["Account"], OTHER)
assert them["Arn"] == f"arn:aws:iam::{OTHER}:user/carol", them
print("ok: GetCallerIdentity names each principal's account")

# --- the model's ValidationException, in AWS's words ----------------------------------------
key = alice.create_key()["KeyMetadata"]
arn = key["Arn"]
same(words("ValidationException", alice.generate_data_key, KeyId=arn, NumberOfBytes=1025),
     "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: "
     "Member must have value less than or equal to 1024")
same(words("ValidationException", alice.generate_random, NumberOfBytes=0),
     "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint: "
     "Member must have value greater than or equal to 1")
same(words("ValidationException", alice.encrypt, KeyId=arn, Plaintext=b"x" * 4097),
     "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
     "Member must have length less than or equal to 4096")
same(words("ValidationException", alice.describe_key),
     "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: "
     "Member must not be null")
same(words("ValidationException", alice.generate_data_key, KeyId=arn, KeySpec="AES_512"),
     "1 validation error detected: Value 'AES_512' at 'keySpec' failed to satisfy constraint: "
     "Member must satisfy enum value set: [AES_256, AES_128]")
same(words("ValidationException", alice.create_alias, AliasName="alias/no spaces", TargetKeyId=arn),
     "1 validation error detected: Value 'alias/no spaces' at 'aliasName' failed to satisfy constraint: "
     "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$")
m = words("ValidationException", alice.encrypt, KeyId="", Plaintext=b"")
assert m.startswith("2 validation errors detected: "), m
print("ok: model validation in AWS's words")

# --- not found, invalid ids, states, usage: AWS's words --------------------------------------
missing = arn[: -36] + "00000000-0000-0000-0000-000000000000"
same(words("NotFoundException", alice.describe_key, KeyId=missing), f"Key '{missing}' does not exist")
same(words("NotFoundException", alice.describe_key, KeyId="not-a-key"), "Invalid keyId 'not-a-key'")
same(words("NotFoundException", alice.describe_key, KeyId="alias/none-such"),
     f"Alias arn:aws:kms:us-east-1:{HOME}:alias/none-such is not found.")
alice.disable_key(KeyId=arn)
same(words("DisabledException", alice.encrypt, KeyId=arn, Plaintext=b"x"), f"{arn} is disabled.")
# AWS checks the state before the key's kind: RotateKeyOnDemand on a disabled key.
expect("DisabledException", alice.rotate_key_on_demand, KeyId=arn)
alice.enable_key(KeyId=arn)
signer = alice.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
same(words("InvalidKeyUsageException", alice.encrypt, KeyId=signer, Plaintext=b"x",
            EncryptionAlgorithm="RSAES_OAEP_SHA_1"),
     f"{signer} key usage is SIGN_VERIFY which is not valid for Encrypt.")
same(words("InvalidKeyUsageException", alice.generate_mac, KeyId=arn, Message=b"x",
            MacAlgorithm="HMAC_SHA_256"),
     f"{arn} key usage is ENCRYPT_DECRYPT which is not valid for GenerateMac.")
rsa = alice.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["Arn"]
same(words("ValidationException", alice.encrypt, KeyId=rsa, Plaintext=b"x" * 215,
            EncryptionAlgorithm="RSAES_OAEP_SHA_1"),
     "Algorithm RSAES_OAEP_SHA_1 and key spec RSA_2048 cannot encrypt data larger than 214 bytes.")
alice.encrypt(KeyId=rsa, Plaintext=b"x" * 214, EncryptionAlgorithm="RSAES_OAEP_SHA_1")
print("ok: not-found, state and usage refusals in AWS's words")

# --- tags ------------------------------------------------------------------------------------
same(words("TagException", alice.tag_resource, KeyId=arn,
            Tags=[{"TagKey": "a", "TagValue": "1"}, {"TagKey": "a", "TagValue": "2"}]), "Duplicate tag keys")
same(words("TagException", alice.tag_resource, KeyId=arn, Tags=[{"TagKey": "aws:x", "TagValue": "1"}]),
     "Tags beginning with aws: are reserved")
same(words("TagException", alice.tag_resource, KeyId=arn,
            Tags=[{"TagKey": f"k{i}", "TagValue": ""} for i in range(51)]), "Too many tags")
print("ok: tag refusals")

# --- on-demand rotations: AWS allows 25 per key ------------------------------------------------
rot = alice.create_key()["KeyMetadata"]["Arn"]
for _ in range(25):
    alice.rotate_key_on_demand(KeyId=rot)
expect("LimitExceededException", alice.rotate_key_on_demand, KeyId=rot)
n = len(alice.list_key_rotations(KeyId=rot, Limit=100)["Rotations"])
same(n, 25)
print("ok: 25 on-demand rotations, the 26th refused")

# --- error bodies carry AWS's fields only ---------------------------------------------------------
import urllib.request
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
req = AWSRequest(method="POST", url=EP + "/", data=json.dumps({"KeyId": missing}).encode(),
                 headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.DescribeKey"})
SigV4Auth(Credentials(os.environ["AKID"], os.environ["SECRET"]), "kms", "us-east-1").add_auth(req)
try:
    urllib.request.urlopen(urllib.request.Request(EP + "/", data=req.body, headers=dict(req.headers.items())))
    raise AssertionError("DescribeKey of a missing key succeeded")
except urllib.error.HTTPError as e:
    body = json.loads(e.read())
same(sorted(body), ["__type", "message"])
print("ok: an error body is {__type, message}")

# --- cross-account use ------------------------------------------------------------------------------
policy = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Sid": "admin", "Effect": "Allow", "Principal": {"AWS": me["Arn"]}, "Action": "kms:*", "Resource": "*"},
    {"Sid": "use", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
     "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey", "kms:EnableKey"],
     "Resource": "*"}]})
shared = alice.create_key(Policy=policy)["KeyMetadata"]
alice.create_alias(AliasName="alias/shared", TargetKeyId=shared["KeyId"])
private = alice.create_key()["KeyMetadata"]
# by key ARN: allowed for a cross-account operation the policy grants the account
blob = carol.encrypt(KeyId=shared["Arn"], Plaintext=b"across")
same(blob["KeyId"], shared["Arn"])
same(carol.decrypt(CiphertextBlob=blob["CiphertextBlob"])["Plaintext"], b"across")
same(alice.decrypt(CiphertextBlob=blob["CiphertextBlob"])["Plaintext"], b"across")
carol.generate_data_key(KeyId=f"arn:aws:kms:us-east-1:{HOME}:alias/shared", KeySpec="AES_256")
same(carol.describe_key(KeyId=shared["Arn"])["KeyMetadata"]["AWSAccountId"], HOME)
# by key id or alias name: those mean carol's own account, where no such key is
expect("NotFoundException", carol.encrypt, KeyId=shared["KeyId"], Plaintext=b"x")
m = words("NotFoundException", carol.encrypt, KeyId="alias/shared", Plaintext=b"x")
assert OTHER in m, m
# an operation AWS does not allow across accounts, whatever the policy grants
expect("NotFoundException", carol.enable_key, KeyId=shared["Arn"])
# a key whose policy does not name carol's account
expect("AccessDeniedException", carol.encrypt, KeyId=private["Arn"], Plaintext=b"x")
# carol's own keys are her account's, and each account lists only its own
mine = carol.create_key()["KeyMetadata"]
assert mine["Arn"].startswith(f"arn:aws:kms:us-east-1:{OTHER}:key/"), mine["Arn"]
same(mine["AWSAccountId"], OTHER)
carol.create_alias(AliasName="alias/shared", TargetKeyId=mine["KeyId"])
same(carol.encrypt(KeyId="alias/shared", Plaintext=b"x")["KeyId"], mine["Arn"])
same([k["KeyArn"] for k in carol.list_keys()["Keys"]], [mine["Arn"]])
assert shared["Arn"] in [k["KeyArn"] for k in alice.list_keys(Limit=1000)["Keys"]]
assert mine["Arn"] not in [k["KeyArn"] for k in alice.list_keys(Limit=1000)["Keys"]]
same([a["AliasArn"] for a in carol.list_aliases()["Aliases"]], [f"arn:aws:kms:us-east-1:{OTHER}:alias/shared"])
# alice cannot reach carol's key: its default policy names carol only
expect("AccessDeniedException", alice.encrypt, KeyId=mine["Arn"], Plaintext=b"x")
print("ok: cross-account use by key ARN and alias ARN; ids and alias names stay in their account")

# Fields AWS always sends on these answers (the model marks none required; AWS's API
# reference and its recordings do): a symmetric key's CurrentKeyMaterialId, an HMAC key's
# empty EncryptionAlgorithms, Decrypt's KeyMaterialId.
md = alice.describe_key(KeyId=arn)["KeyMetadata"]
assert md.get("CurrentKeyMaterialId"), md
hmac_md = alice.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
assert hmac_md.get("MacAlgorithms") == ["HMAC_SHA_256"], hmac_md
assert hmac_md.get("EncryptionAlgorithms") == [], hmac_md
dec = alice.decrypt(CiphertextBlob=alice.encrypt(KeyId=arn, Plaintext=b"x")["CiphertextBlob"])
assert dec.get("KeyMaterialId"), dec
awscheck.assert_clean()
print("ok: every answer above carried only fields of AWS's output shapes")

print("ALL OK")
