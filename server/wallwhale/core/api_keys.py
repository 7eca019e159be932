"""API key material: generation, the stored hash, the visible prefix.

A key is "ww_" + 43 base62 characters (about 256 random bits). Only its SHA-256 is stored: with
that much entropy a plain hash cannot be reversed by guessing, and lookups stay a single indexed
equality. The first characters are kept in clear so people can tell their keys apart in a list.
"""

from __future__ import annotations

import hashlib
import secrets
import string

KEY_PREFIX = "ww_"
_ALPHABET = string.ascii_letters + string.digits
_RANDOM_LENGTH = 43
_VISIBLE_LENGTH = len(KEY_PREFIX) + 6

SCOPES = frozenset({"download:read", "download:write", "download:*", "admin:read", "admin:write", "admin:*"})


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def visible_prefix(key: str) -> str:
    return key[:_VISIBLE_LENGTH]


def looks_like_key(value: str) -> bool:
    return (
        value.startswith(KEY_PREFIX)
        and len(value) == len(KEY_PREFIX) + _RANDOM_LENGTH
        and all(c in _ALPHABET for c in value[len(KEY_PREFIX) :])
    )
