"""Rows that belong to a user (downloads, batches): their owner and admins see them; to anyone else
they do not exist, so an id reveals nothing about other users' work."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core.identity import Principal
from wallwhale.db.models import Batch, Download
from wallwhale.errors import InvalidArgument, NotFound
from wallwhale.ids import is_valid_id

Owned = TypeVar("Owned", Download, Batch)
_KIND = {Download: "download", Batch: "batch"}  # as NOT_FOUND names them


def visible_to(principal: Principal, row: Download | Batch) -> bool:
    return principal.is_admin or row.owner_user_id == principal.user_id


def checked_id(kind: str, row_id: str) -> NotFound:
    """The NOT_FOUND to raise for `row_id`; raises at once when no id could match."""
    if not row_id:
        raise InvalidArgument.field("id", "is required")
    missing = NotFound(kind, row_id)
    if not is_valid_id(row_id):
        raise missing
    return missing


async def get_visible(
    session: AsyncSession, model: type[Owned], principal: Principal, row_id: str, *, lock: bool = False
) -> Owned:
    """The row if the caller may see it; NOT_FOUND otherwise (whether it exists or not)."""
    missing = checked_id(_KIND[model], row_id)
    query = select(model).where(model.id == row_id)
    if lock:
        query = query.with_for_update()
    row = await session.scalar(query)
    if row is None or not visible_to(principal, row):
        raise missing
    return row
