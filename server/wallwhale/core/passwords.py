"""Password hashing with argon2id (argon2-cffi's defaults follow RFC 9106's recommendations).

Hashing and verifying cost about 0.3 s of CPU each. The async forms run them on a small thread
pool of their own (argon2-cffi releases the GIL), one thread per CPU: the event loop never waits
for a hash, and a flood of logins queues there instead of taking every CPU from the other calls.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

MIN_PASSWORD_LENGTH = 12

# At most this many hashes are computed at once, whoever asks.
MAX_CONCURRENT_HASHES = max(1, os.cpu_count() or 1)
_pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_HASHES, thread_name_prefix="argon2")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@functools.cache
def _dummy_hash() -> str:
    """Verified when there is no real hash (an unknown e-mail), so that a wrong e-mail costs the
    same time as a wrong password. Made on first use, not at import (about 0.3 s of every start)."""
    return hash_password(secrets.token_urlsafe(16))


def _verify_or_dummy(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        verify_password(_dummy_hash(), password)
        return False
    return verify_password(password_hash, password)


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """verify_password on the hash pool; None verifies against a dummy hash and answers False."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, _verify_or_dummy, password_hash, password)


async def hash_password_async(password: str) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, hash_password, password)
