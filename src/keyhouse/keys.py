"""The key format: pure functions, no I/O.

A key is ``kh_`` + 32 random base62 characters (190 bits) + a 6-character base62 CRC-32 of what
precedes it. The checksum lets authentication refuse a mistyped or made-up key without touching the
database. Keys are stored only as an HMAC-SHA256 under the server secret, which is what the unique
index is built on: a lookup compares hashes, so it reveals nothing about how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

PREFIX = "kh_"
BODY_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + BODY_LENGTH + CHECKSUM_LENGTH
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SHAPE = re.compile(rf"^{PREFIX}[0-9A-Za-z]{{{BODY_LENGTH + CHECKSUM_LENGTH}}}$")


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


def generate() -> str:
    body = PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return body + checksum(body)


def is_well_formed(candidate: str) -> bool:
    """True when the candidate has the key shape and its checksum holds."""
    if len(candidate) != KEY_LENGTH or not _SHAPE.match(candidate):
        return False
    return hmac.compare_digest(candidate[-CHECKSUM_LENGTH:], checksum(candidate[:-CHECKSUM_LENGTH]))


def hash_key(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def mask(key: str) -> str:
    """What a list may show of a key: enough to recognise it, far too little to use it."""
    return f"{key[:len(PREFIX) + 4]}…{key[-4:]}"


def new(secret: bytes) -> NewKey:
    plaintext = generate()
    return NewKey(plaintext=plaintext, hash=hash_key(secret, plaintext), hint=mask(plaintext))
