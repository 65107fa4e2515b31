"""Post-quantum keys of `kmsfs kms serve` cross-checked outside kmsfs, with Python's
`cryptography` (OpenSSL's ML-DSA and ML-KEM) through boto3 (run by tests/it/remote.rs).

Environment: ENDPOINT, AKID, SECRET. Prints ALL OK and exits 0 when every check passed.
"""
import hashlib
import os

import boto3

from awscheck import expect, wrap_for
import botocore
from botocore.config import Config
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                          PublicFormat, load_der_public_key)

kms = boto3.client("kms", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
                   aws_access_key_id=os.environ["AKID"],
                   aws_secret_access_key=os.environ["SECRET"],
                   config=Config(retries={"max_attempts": 1}))



# ML-DSA: a signature made by kmsfs verifies in OpenSSL, and one OpenSSL made with another
# key does not verify in kmsfs.
outside = {"ML_DSA_44": mldsa.MLDSA44PrivateKey, "ML_DSA_65": mldsa.MLDSA65PrivateKey,
           "ML_DSA_87": mldsa.MLDSA87PrivateKey}
for spec, other in outside.items():
    kid = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    pub = load_der_public_key(kms.get_public_key(KeyId=kid)["PublicKey"])
    msg = b"harvest now, decrypt later: not this one"
    sig = kms.sign(KeyId=kid, Message=msg, SigningAlgorithm="ML_DSA_SHAKE_256")["Signature"]
    pub.verify(sig, msg)
    try:
        pub.verify(sig, msg + b"!")
        raise AssertionError("a changed message verified")
    except InvalidSignature:
        pass
    assert kms.verify(KeyId=kid, Message=msg, Signature=sig,
                      SigningAlgorithm="ML_DSA_SHAKE_256")["SignatureValid"] is True
    foreign = other.generate().sign(msg)
    expect("KMSInvalidSignatureException", kms.verify, KeyId=kid, Message=msg, Signature=foreign,
           SigningAlgorithm="ML_DSA_SHAKE_256")
    # EXTERNAL_MU: the caller computes FIPS 204's mu (here with hashlib, from the raw
    # public key in the SPKI), kmsfs signs it, and OpenSSL verifies that signature as the
    # ordinary ML-DSA signature of the message.
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    tr = hashlib.shake_256(raw).digest(64)
    mu = hashlib.shake_256(tr + b"\x00\x00" + msg).digest(64)
    by_mu = kms.sign(KeyId=kid, Message=mu, MessageType="EXTERNAL_MU",
                     SigningAlgorithm="ML_DSA_SHAKE_256")["Signature"]
    pub.verify(by_mu, msg)
    assert kms.verify(KeyId=kid, Message=mu, MessageType="EXTERNAL_MU", Signature=sig,
                      SigningAlgorithm="ML_DSA_SHAKE_256")["SignatureValid"] is True
    expect("ValidationException", kms.sign, KeyId=kid, Message=mu[:63], MessageType="EXTERNAL_MU",
           SigningAlgorithm="ML_DSA_SHAKE_256")
    print("ok:", spec, "signature (of the message and of its external mu) verified by OpenSSL; "
          "OpenSSL's refused under another key", flush=True)

# ML-KEM: a ciphertext encapsulated by OpenSSL to kmsfs's public key decapsulates in kmsfs
# to the same shared secret; kmsfs's own encapsulation round-trips.
for spec in ["ML_KEM_768", "ML_KEM_1024"]:
    md = kms.create_key(KeySpec=spec, KeyUsage="ENCAPSULATE_DECAPSULATE")["KeyMetadata"]
    assert md["EncapsulationAlgorithms"] == ["ML_KEM"], md
    kid = md["KeyId"]
    pk = kms.get_public_key(KeyId=kid)
    pub = load_der_public_key(pk["PublicKey"])
    assert isinstance(pub, (mlkem.MLKEM768PublicKey, mlkem.MLKEM1024PublicKey)), type(pub)
    ss, ct = pub.encapsulate()
    got = kms.decapsulate(KeyId=kid, SharedSecretCiphertextBlob=ct, EncapsulationAlgorithm="ML_KEM")
    assert got["SharedSecret"] == ss, spec
    e = kms.encapsulate(KeyId=kid, EncapsulationAlgorithm="ML_KEM")
    d = kms.decapsulate(KeyId=kid, SharedSecretCiphertextBlob=e["SharedSecretCiphertextBlob"],
                        EncapsulationAlgorithm="ML_KEM")
    assert d["SharedSecret"] == e["SharedSecret"] and len(d["SharedSecret"]) == 32
    expect("InvalidCiphertextException", kms.decapsulate, KeyId=kid, SharedSecretCiphertextBlob=ct[:-1],
           EncapsulationAlgorithm="ML_KEM")
    print("ok:", spec, "OpenSSL's encapsulation decapsulates in kmsfs", flush=True)

# ML-KEM key import: a key made by OpenSSL, imported as its PKCS#8 (RFC 9935's seed form,
# as OpenSSL writes it), shows OpenSSL's public key and decapsulates OpenSSL's
# encapsulations; OpenSSL decapsulates kmsfs's.
for spec, cls in [("ML_KEM_768", mlkem.MLKEM768PrivateKey), ("ML_KEM_1024", mlkem.MLKEM1024PrivateKey)]:
    key = cls.generate()
    kid = kms.create_key(KeySpec=spec, KeyUsage="ENCAPSULATE_DECAPSULATE", Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    p = kms.get_parameters_for_import(KeyId=kid, WrappingAlgorithm="RSA_AES_KEY_WRAP_SHA_256",
                                      WrappingKeySpec="RSA_3072")
    der = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    kms.import_key_material(KeyId=kid, ImportToken=p["ImportToken"],
                            EncryptedKeyMaterial=wrap_for(p, "RSA_AES_KEY_WRAP_SHA_256", der),
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    shown = kms.get_public_key(KeyId=kid)["PublicKey"]
    assert shown == key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo), spec
    ss, ct = key.public_key().encapsulate()
    assert kms.decapsulate(KeyId=kid, SharedSecretCiphertextBlob=ct, EncapsulationAlgorithm="ML_KEM")["SharedSecret"] == ss
    e = kms.encapsulate(KeyId=kid, EncapsulationAlgorithm="ML_KEM")
    assert key.decapsulate(e["SharedSecretCiphertextBlob"]) == e["SharedSecret"], spec
    print("ok:", spec, "imported from OpenSSL: its public key, encapsulations both ways", flush=True)

# ML_KEM_512 (not in this cryptography): its public key is a DER SPKI of OID 2.16.840.1.101.3.4.4.1
kid = kms.create_key(KeySpec="ML_KEM_512", KeyUsage="ENCAPSULATE_DECAPSULATE")["KeyMetadata"]["KeyId"]
der = kms.get_public_key(KeyId=kid)["PublicKey"]
assert bytes.fromhex("0609608648016503040401") in der and len(der) == 800 + 22, len(der)

# Every operation botocore knows is answered by this server (not UnknownOperationException).
raw = boto3.client("kms", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
                   aws_access_key_id=os.environ["AKID"],
                   aws_secret_access_key=os.environ["SECRET"],
                   config=Config(retries={"max_attempts": 1}, parameter_validation=False))
names = raw.meta.service_model.operation_names
for op in names:
    try:
        raw._make_api_call(op, {})
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] != "UnknownOperationException", op
print("ok: all", len(names), "operations of botocore's KMS model are answered", flush=True)
print("ALL OK")
