"""The test databases: scratch databases on SQLite and on the real PostgreSQL, migrated and given
their first admin, and the rows some tests write or read directly.

PostgreSQL: WALLWHALE_TEST_POSTGRES_URL names a database with the right to CREATE DATABASE
(default postgresql://postgres@127.0.0.1:5432/test); every test session makes its own databases
and drops them afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import select

from wallwhale.config import to_async_url
from wallwhale.core import api_keys
from wallwhale.core.bootstrap import BootstrapResult, bootstrap_admin
from wallwhale.db import migrate
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.db.models import ApiKey, AuditEvent, User, UserRole

POSTGRES_ADMIN_URL = os.environ.get(
    "WALLWHALE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]


class PostgresDatabases:
    """Creates and drops scratch databases on the test PostgreSQL server."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self.created: list[str] = []

    def create(self) -> str:
        name = f"wallwhale_test_{secrets.token_hex(6)}"
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        base, _, _ = self.admin_url.rpartition("/")
        return to_async_url(f"{base}/{name}")

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            self.drop(f"/{name}")


def fresh_database(backend: str, postgres: PostgresDatabases, directory: Path) -> str:
    """The URL of a new, empty database: a scratch PostgreSQL database or a SQLite file in `directory`."""
    if backend == "postgresql":
        return postgres.create()
    return to_async_url(f"sqlite:///{directory / f'wallwhale-{secrets.token_hex(4)}.sqlite3'}")


async def prepare_database(url: str) -> BootstrapResult:
    """Migrates a fresh database and creates its first admin (e-mail, password, API key)."""
    await asyncio.to_thread(migrate.upgrade, url)
    engine = create_engine(url)
    try:
        return await bootstrap_admin(session_factory(engine), "admin@example.test")
    finally:
        await engine.dispose()


async def add_key(database_url: str, scopes: list[str], **fields: object) -> str:
    """A key of a new user, written straight to the database; returns the plaintext."""
    user_fields = {"disabled": fields.pop("user_disabled", False)}
    engine = create_engine(database_url)
    key = api_keys.generate_key()
    try:
        async with session_factory(engine).begin() as session:
            user = User(
                email=f"{key[-10:]}@example.test", password_hash="-", role=UserRole.USER, **user_fields
            )
            session.add(user)
            await session.flush()
            session.add(
                ApiKey(
                    name="test",
                    owner_user_id=user.id,
                    prefix=api_keys.visible_prefix(key),
                    key_hash=api_keys.hash_key(key),
                    scopes=scopes,
                    **fields,
                )
            )
    finally:
        await engine.dispose()
    return key


async def audit_events(database_url: str, request_id: str) -> list[AuditEvent]:
    """The audit rows of one request, read straight from the database."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            rows = await session.scalars(select(AuditEvent).where(AuditEvent.request_id == request_id))
            return list(rows)
    finally:
        await engine.dispose()


async def wait_for_audit_events(database_url: str, request_id: str) -> list[AuditEvent]:
    """The audit rows of one request, once written (the audit writer inserts them in batches)."""
    for _ in range(50):
        if events := await audit_events(database_url, request_id):
            return events
        await asyncio.sleep(0.1)
    raise AssertionError(f"no audit event for request {request_id}")
