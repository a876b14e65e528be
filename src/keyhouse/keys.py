"""The key format: pure functions, no I/O.

A key is a prefix (``kh_``, or the deployment's own: KEYHOUSE_KEY_PREFIX, say ``acme_live_``, a pattern
it can register with a secret scanning service) + 32 random base62 characters (190 bits) + a 6-character
base62 CRC-32 of what precedes it. The checksum lets authentication refuse a mistyped or made-up key
without touching the database. Any well-shaped prefix is accepted: keys made before a deployment chose
its own keep working, and a key of a prefix never issued here is simply found nowhere. Keys are stored
only as an HMAC-SHA256 under the server secret, which is what the unique index is built on: a lookup
compares hashes, so it reveals nothing about how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

PREFIX = "kh_"  # keyhouse's own, the default
# A prefix: a lowercase letter, then up to 18 lowercase letters, digits and underscores, and a final
# underscore (which the base62 body never holds, so where the prefix ends is never in doubt).
MAX_PREFIX_LENGTH = 20
PREFIX_PATTERN = rf"[a-z][a-z0-9_]{{0,{MAX_PREFIX_LENGTH - 2}}}_"
BODY_LENGTH = 32
CHECKSUM_LENGTH = 6
TAIL_LENGTH = BODY_LENGTH + CHECKSUM_LENGTH
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SHAPE = re.compile(rf"^{PREFIX_PATTERN}[0-9A-Za-z]{{{TAIL_LENGTH}}}$")


@dataclass(frozen=True)
class NewKey:
    plaintext: str  # shown once, to the creator; never stored
    hash: str
    hint: str


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode()), CHECKSUM_LENGTH)


def generate(prefix: str = PREFIX) -> str:
    body = prefix + "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return body + checksum(body)


def is_well_formed(candidate: str) -> bool:
    """True when the candidate has the key shape (any prefix of PREFIX_PATTERN) and its checksum holds."""
    if len(candidate) > MAX_PREFIX_LENGTH + TAIL_LENGTH or not _SHAPE.match(candidate):
        return False
    return hmac.compare_digest(candidate[-CHECKSUM_LENGTH:], checksum(candidate[:-CHECKSUM_LENGTH]))


def hash_key(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def mask(key: str) -> str:
    """What a list may show of a key: enough to recognise it, far too little to use it."""
    return f"{key[:len(key) - TAIL_LENGTH + 4]}…{key[-4:]}"


def new(secret: bytes, prefix: str = PREFIX) -> NewKey:
    plaintext = generate(prefix)
    return NewKey(plaintext=plaintext, hash=hash_key(secret, plaintext), hint=mask(plaintext))
