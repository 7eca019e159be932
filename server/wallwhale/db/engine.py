"""Async engine and sessions for SQLite (aiosqlite) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import event, make_url, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from wallwhale.config import to_async_url
from wallwhale.private import private_directory, private_file

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
        _create_sqlite_file(parsed)
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


T = TypeVar("T")


class ConnectionRunner:
    """Runs short work of a busy RPC (a SELECT or two, or one self-contained write), written against
    a synchronous Connection, in one go.

    SQLite: the whole function runs in a worker thread on connections of its own, one thread hop
    per piece of work; through aiosqlite every cursor, execute, fetch, close, BEGIN, commit and
    rollback is a hop of its own (nine for a one-row read). Reads take no lock (WAL); writes begin
    with BEGIN IMMEDIATE like every writer here. PostgreSQL: an autocommit connection, so each
    statement is one round trip with no BEGIN and COMMIT/ROLLBACK around it: each statement sees
    its own snapshot and commits alone, so work that needs one transaction uses a session instead.
    """

    _SQLITE_THREADS = 4

    def __init__(self, engine: AsyncEngine):
        self._reads = self._writes = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sync: Engine | None = None
        self._threads: ThreadPoolExecutor | None = None
        url = engine.url
        if url.get_backend_name() == "sqlite":
            self._reads, self._writes = engine.execution_options(**{READ_ONLY: True}), engine
            if url.database not in (None, "", ":memory:"):  # a private in-memory database stays async
                sync = sqlalchemy.create_engine(url.set(drivername="sqlite"))
                event.listen(sync, "connect", _set_sqlite_pragmas)
                event.listen(sync, "begin", _begin_immediate)
                self._sync = sync
                self._threads = ThreadPoolExecutor(self._SQLITE_THREADS, thread_name_prefix="sqlite-quick")

    async def read(self, work: Callable[[Connection], T]) -> T:
        return await self._run(work, write=False)

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Runs `work` and commits it (on PostgreSQL each of its statements commits alone)."""
        return await self._run(work, write=True)

    async def _run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        if self._threads is None:
            async with (self._writes if write else self._reads).connect() as connection:
                result = await connection.run_sync(work)
                if write:
                    await connection.commit()  # SQLite in memory; nothing to do on PostgreSQL
                return result
        # A cancelled caller leaves the thread to finish and give its connection back.
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._in_thread, work, write)

    def _in_thread(self, work: Callable[[Connection], T], write: bool) -> T:
        assert self._sync is not None
        if write:
            with self._sync.begin() as connection:
                return work(connection)
        with self._sync.connect() as connection:
            return work(connection.execution_options(**{READ_ONLY: True}))

    async def close(self) -> None:
        if self._threads is not None:
            await asyncio.to_thread(self._threads.shutdown)
        if self._sync is not None:
            self._sync.dispose()


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


def _create_sqlite_file(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database).expanduser()
    if not path.parent.exists():
        private_directory(path.parent)
    # SQLite gives the -wal and -shm files it creates the database file's mode; ones left by a
    # run with a looser umask are narrowed too.
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file == path or file.exists():
            private_file(file)


def _set_sqlite_pragmas(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    # The driver's own BEGIN is deferred; _begin_immediate issues ours instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()
