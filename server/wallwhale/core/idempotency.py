"""request_id (AIP-155) for the creating RPCs whose result has no request_id column of its own.

Downloads and batches keep their request_id on their own rows (core.downloads, core.batches). The
others (RetryDownload, CreateUser, CreateApiKey, CreateSteamAccount) share one table,
IdempotencyRecord, and this module, in the transaction of the work the id guards:

- ids are the caller's (Principal.request_scope), so two callers never share one;
- the first call claims the id before it does anything else and records the id of what it made; a
  later call with the same id gets that id back and answers with the resource as it is now. When
  both run at once, the second waits on the table's primary key until the first commits (then it
  answers like a later call) or rolls back (then it runs as the first);
- another RPC or another request under a used id is ALREADY_EXISTS with reason REQUEST_ID_REUSED,
  as CreateDownload answers;
- a call that fails leaves no record (its transaction rolls back), so its retry runs afresh;
- a record older than LIFETIME is forgotten when its id comes again.

Fingerprints hold no secrets: callers leave passwords out of them and compare a repeated password
with what the resource keeps (an argon2 hash, a sealed password) instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.db.models import IdempotencyRecord
from wallwhale.errors import AlreadyExists, InvalidArgument, NotFound

MAX_REQUEST_ID = 64
LIFETIME = timedelta(days=7)


def check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument.field("request_id", f"must be at most {MAX_REQUEST_ID} characters")


def fingerprint(values: dict[str, Any]) -> str:
    """sha256 of the canonical request (never put a secret in `values`)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def refused() -> AlreadyExists:
    return AlreadyExists("request_id was used before for a different request", reason="REQUEST_ID_REUSED")


def gone(resource_type: str, resource_id: str) -> NotFound:
    """What a repeat answers when the resource the first call made was deleted since."""
    return NotFound(
        resource_type,
        resource_id,
        f"the {resource_type} {resource_id} made with this request_id was deleted since",
    )


@dataclass(frozen=True)
class RequestKey:
    """The caller's scope (Principal.request_scope) and the request_id it sent (empty: none)."""

    scope: str
    request_id: str


NO_REQUEST_ID = RequestKey("", "")


@dataclass(frozen=True)
class Claim:
    # The id of what the first call with this request_id made; None when this call is the first.
    earlier: str | None
    _record: IdempotencyRecord | None = None

    def settle(self, made: str) -> None:
        """Records what this call made, for the calls that repeat it (written with its transaction)."""
        if self._record is not None:
            self._record.response = made.encode()


async def claim(
    session: AsyncSession, key: RequestKey, method: str, request_fingerprint: str, now: datetime
) -> Claim:
    """Claims the request_id for this call, or says what the earlier call with it made."""
    check_request_id(key.request_id)
    if not key.request_id:
        return Claim(None)
    identity = (key.scope, key.request_id)
    record = await session.get(IdempotencyRecord, identity)
    if record is not None and record.expire_time <= now:
        await session.delete(record)
        await session.flush()
        record = None
    if record is None:
        record = IdempotencyRecord(
            scope=key.scope,
            request_id=key.request_id,
            method=method,
            request_hash=request_fingerprint,
            response=b"",
            status_code=0,
            create_time=now,
            expire_time=now + LIFETIME,
        )
        try:
            async with session.begin_nested():
                session.add(record)
                await session.flush()
            return Claim(None, record)
        except IntegrityError:
            # A concurrent call with the same id committed first; answer like a later call.
            record = await session.get(IdempotencyRecord, identity)
            if record is None:
                raise
    if record.method != method or record.request_hash != request_fingerprint:
        raise refused()
    return Claim(record.response.decode())
