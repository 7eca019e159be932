"""Identifiers for stored resources: time-ordered, URL-safe, 26 lower-case characters.

The layout is ULID's: a 48-bit Unix time in milliseconds followed by 80 random bits, written in
Crockford's base32. The time comes first and the alphabet is in ASCII order, so sorting ids as strings
sorts them by creation time (ids made within the same millisecond sort randomly among themselves).
Random bits come from `secrets`, so an id cannot be guessed from its neighbours.
"""

from __future__ import annotations

import re
import secrets
import time

ID_LENGTH = 26

# Crockford's base32 (no i, l, o, u: easily misread), lower-case so ids read well in URLs.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RANDOM_BITS = 80
# 26 characters x 5 bits = 130 bits; the 48 + 80 used leave the first character in 0-7.
_ID_PATTERN = re.compile(rf"[0-7][{_ALPHABET}]{{{ID_LENGTH - 1}}}")


def new_id() -> str:
    """Returns a new id, e.g. '01jd3x5k8q2m7n4p6r9s0t1v2w'."""
    millis = time.time_ns() // 1_000_000
    value = (millis << _RANDOM_BITS) | secrets.randbits(_RANDOM_BITS)
    chars = []
    for _ in range(ID_LENGTH):
        chars.append(_ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


def is_valid_id(value: str) -> bool:
    """Whether `value` has the shape of an id from new_id (for checking ids that arrive in requests)."""
    return _ID_PATTERN.fullmatch(value) is not None
