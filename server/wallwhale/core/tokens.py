"""Random bearer secrets (API keys, refresh tokens) and the one way they are stored.

A token is a prefix that says what it is plus 43 base62 characters (about 256 random bits). Only
its SHA-256 is stored: with that much entropy a plain hash cannot be reversed by guessing, and a
lookup stays a single indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
_RANDOM_LENGTH = 43


def new_token(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_token(value: str, prefix: str) -> bool:
    """Has the shape new_token(prefix) gives (says nothing about whether it was issued)."""
    body = value[len(prefix) :]
    return value.startswith(prefix) and len(body) == _RANDOM_LENGTH and all(c in _ALPHABET for c in body)
