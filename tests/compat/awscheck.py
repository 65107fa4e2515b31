"""What the boto3 scripts share: `expect` (a call must fail with AWS's error code), and a
check that every answer a client receives carries only the fields of AWS's output shape
for that operation (botocore's model), member by member and level by level, and that
error bodies are {__type, message}. botocore drops unknown fields silently; a server that
adds fields AWS does not send would pass every other check.

Usage: awscheck.watch(client) for each client, then awscheck.assert_clean().
"""
import json

import botocore.exceptions


def expect(code, fn, *a, **kw):
    """Calls fn, which must fail with AWS error `code`; the ClientError."""
    try:
        fn(*a, **kw)
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"{fn.__name__}: expected {code}, got {got}: {e}"
        return e
    raise AssertionError(f"{fn.__name__}: expected {code}, got success")

def wrap_for(params, alg, material):
    """`material` wrapped for ImportKeyMaterial with GetParametersForImport's answer
    `params`, outside kmsfs (the `cryptography` package), as AWS tells clients to."""
    import secrets
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    pub = serialization.load_der_public_key(params["PublicKey"])
    h = hashes.SHA1() if alg.endswith("SHA_1") else hashes.SHA256()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)
    if alg.startswith("RSAES_OAEP"):
        return pub.encrypt(material, oaep)
    aes = secrets.token_bytes(32)
    return pub.encrypt(aes, oaep) + aes_key_wrap_with_padding(aes, material)


extra_fields = []


def _fields_of(shape, value, path):
    if shape is None:
        return
    if shape.type_name == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k not in shape.members:
                extra_fields.append(f"{path}.{k}")
            else:
                _fields_of(shape.members[k], v, f"{path}.{k}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            _fields_of(shape.member, v, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for k, v in value.items():
            _fields_of(shape.value, v, f"{path}{{{k}}}")


def _check(http_response, model, **_):
    body = http_response.content
    if not body:
        return
    try:
        doc = json.loads(body)
    except ValueError:
        extra_fields.append(f"{model.name}: not JSON")
        return
    if http_response.status_code >= 400:
        if set(doc) - {"__type", "message"}:
            extra_fields.append(f"{model.name} error: {sorted(doc)}")
        return
    _fields_of(model.output_shape, doc, model.name)


def watch(client):
    client.meta.events.register("after-call.kms", _check)


def assert_clean():
    assert not extra_fields, f"fields AWS does not send: {sorted(set(extra_fields))}"
