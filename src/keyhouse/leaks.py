"""Leak reports from secret scanning services: pure functions, no state.

GitHub's secret scanning partner program posts the tokens it finds in public (`[{token, type, url,
source}]`) and signs the body: `Github-Public-Key-Signature` is a base64 DER ECDSA signature (P-256,
SHA-256) of the exact bytes sent, by the key `Github-Public-Key-Identifier` names. GitHub publishes its
keys (`https://api.github.com/meta/public_keys/secret_scanning`); keyhouse fetches nothing: the
deployment gives it that document (KEYHOUSE_GITHUB_SECRET_SCANNING_KEYS), and refreshes it when GitHub
rotates them.

The answer is GitHub's feedback format, one label per token: `true_positive` for a key keyhouse issued,
`false_positive` for anything else. Each token is named by its SHA-256 (`token_hash`), never echoed:
a plaintext key is never returned.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

PublicKeys = dict[str, ec.EllipticCurvePublicKey]
# Where keyhouse.middleware.SignedBodies keeps the exact bytes of a signed operation's body, in the ASGI
# scope, for the security function that checks their signature (keyhouse.auth).
SIGNED_BODY = "keyhouse.signed_body"


def load_github_keys(path: str | None) -> PublicKeys:
    """{key identifier: public key} of GitHub's document of secret scanning keys (`{"public_keys":
    [{key_identifier, key}]}`); none when no path is configured. A document that does not parse, or a
    key that is not an elliptic-curve key, stops the start (ValueError)."""
    if path is None:
        return {}
    document = json.loads(Path(path).read_text())
    found: PublicKeys = {}
    for entry in document["public_keys"]:
        key = load_pem_public_key(entry["key"].encode())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(f"{path}: key {entry['key_identifier']} is not an ECDSA key")
        found[entry["key_identifier"]] = key
    return found


def github_signed(keys: PublicKeys, identifier: str | None, signature: str, body: bytes) -> bool:
    """Whether `body` is signed by the GitHub key named `identifier`."""
    key = keys.get(identifier or "")
    if key is None:
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def token_hash(token: str) -> str:
    """How the feedback names a token: the hex SHA-256 of it, as GitHub's `token_hash` is."""
    return hashlib.sha256(token.encode()).hexdigest()
