"""Opaque page tokens (AIP-158): the next offset, bound to the filters of the first page.

A token used with other filters, or altered, is INVALID_ARGUMENT rather than a wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_MAX_OFFSET = 2**62


@dataclass(frozen=True)
class Page:
    offset: int
    size: int
    fingerprint: str

    def next_token(self, total: int) -> str:
        following = self.offset + self.size
        if following >= total:
            return ""
        raw = json.dumps({"o": following, "f": self.fingerprint}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page(page_size: int, page_token: str, **filters: Any) -> Page:
    if page_size < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    fingerprint = hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]
    if not page_token:
        return Page(0, size, fingerprint)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4)))
        offset, token_fingerprint = decoded["o"], str(decoded["f"])
    except (ValueError, KeyError, TypeError, RecursionError):
        offset = None
    # Only what next_token writes: an int the database takes as OFFSET (not a float, inf or bool).
    if type(offset) is not int or offset > _MAX_OFFSET:
        raise InvalidArgument.field(
            "page_token", "is not a token this server issued", reason="INVALID_PAGE_TOKEN"
        )
    if token_fingerprint != fingerprint or offset < 0:
        raise InvalidArgument.field(
            "page_token", "belongs to a listing with other filters", reason="INVALID_PAGE_TOKEN"
        )
    return Page(offset, size, fingerprint)


async def fetch(
    session: AsyncSession, query: Select[Any], page: Page, *order_by: Any
) -> tuple[list[Any], int]:
    """One page of the query's rows, in a stable order, and the count of all matching rows."""
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(query.order_by(*order_by).offset(page.offset).limit(page.size))
    return list(rows), total
