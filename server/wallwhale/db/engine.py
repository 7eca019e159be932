"""Async engine and sessions for SQLite (aiosqlite) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from wallwhale.config import to_async_url

# Applied to every new SQLite connection: SQLite forgets all but journal_mode when a connection closes.
_SQLITE_PRAGMAS = (
    # Off by default in SQLite; without it ON DELETE CASCADE / SET NULL do nothing.
    "PRAGMA foreign_keys=ON",
    # Readers do not block the writer (progress streams read while jobs write).
    "PRAGMA journal_mode=WAL",
    # Wait for a lock instead of failing at once with "database is locked".
    "PRAGMA busy_timeout=5000",
    # Safe with WAL (a power cut can lose the last commits, never corrupt), and much faster.
    "PRAGMA synchronous=NORMAL",
)


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """Creates the engine for a database URL; a plain sqlite:/// or postgresql:// URL gets its driver."""
    parsed = make_url(to_async_url(url))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        _create_sqlite_directory(parsed)
        engine = create_async_engine(parsed, echo=echo)
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
        return engine
    if backend == "postgresql":
        # pre_ping replaces connections the server dropped (restart, idle timeout) before they are used.
        return create_async_engine(parsed, echo=echo, pool_pre_ping=True, pool_size=10)
    raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")


def backend_name(engine: AsyncEngine) -> str:
    """'sqlite' or 'postgresql', for the few places where SQL differs (upserts, row locks)."""
    return engine.dialect.name


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (async code cannot lazy-load expired ones)."""
    return async_sessionmaker(engine, expire_on_commit=False)


# The timeout is a parameter (ruff ASYNC109 prefers the caller's own scope) because the health checker
# must never wait longer than its interval, whatever the caller forgets.
async def ping(engine: AsyncEngine, timeout: float = 2.0) -> float:  # noqa: ASYNC109
    """Runs SELECT 1 and returns the round trip in seconds; raises on failure or TimeoutError."""
    start = time.perf_counter()
    async with asyncio.timeout(timeout), engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return time.perf_counter() - start


def _create_sqlite_directory(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _set_sqlite_pragmas(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()
