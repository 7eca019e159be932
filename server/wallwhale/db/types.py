"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the only kind the database accepts)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always an aware datetime in UTC.

    Writing a naive datetime raises: its meaning depends on the machine that made it. Values are
    converted to UTC before they are stored, so on SQLite (which keeps text without an offset) stored
    values compare correctly as strings, and reads are marked UTC again on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: give it a timezone (UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL (indexable, compact), JSON (text) on SQLite. The ORM does not see in-place changes
# to a loaded list or dict: assign a new value to have it saved.
JSONType: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


def to_signed64(value: int) -> int:
    """An unsigned 64-bit Steam number (a content handle) as the signed BIGINT the databases store."""
    return value - 2**64 if value >= 2**63 else value


def from_signed64(value: int) -> int:
    return value + 2**64 if value < 0 else value
