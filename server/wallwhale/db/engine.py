"""Async engine and sessions for SQLite (aiosqlite) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from wallwhale.config import to_async_url

# An execution option: the transaction only reads (SQLite then begins it without the write lock).
READ_ONLY = "wallwhale_read_only"

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
        event.listen(engine.sync_engine, "begin", _begin_immediate)
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


def read_only_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reading only: on SQLite they do not queue behind writers for the write lock."""
    return async_sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


# The timeout is a parameter (ruff ASYNC109 prefers the caller's own scope) because the health checker
# must never wait longer than its interval, whatever the caller forgets.
async def ping(engine: AsyncEngine, timeout: float = 2.0) -> float:  # noqa: ASYNC109
    """Runs SELECT 1 and returns the round trip in seconds; raises on failure or TimeoutError."""
    start = time.perf_counter()
    async with (
        asyncio.timeout(timeout),
        engine.execution_options(**{READ_ONLY: True}).connect() as connection,
    ):
        await connection.execute(text("SELECT 1"))
    return time.perf_counter() - start


def _begin_immediate(connection: Connection) -> None:
    # A deferred transaction that read and then writes fails at once ("database is locked", the
    # busy timeout does not apply) when another connection wrote in between; taking the write lock
    # at BEGIN makes concurrent writers wait their turn instead (one writer at a time is SQLite's
    # rule anyway). Sessions from read_only_sessions() take no lock: WAL readers never wait.
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _create_sqlite_directory(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _set_sqlite_pragmas(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    # The driver's own BEGIN is deferred; _begin_immediate issues ours instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()
