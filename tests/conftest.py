"""Shared fixtures: a fresh database on SQLite and on the real PostgreSQL, and a running server.

PostgreSQL: WALLWHALE_TEST_POSTGRES_URL names a database with the right to CREATE DATABASE
(default postgresql://postgres@127.0.0.1:5432/test); every test session makes its own databases
and drops them afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from grpc import aio
from psycopg import sql

from wallwhale.app import WallWhaleServer
from wallwhale.config import Settings, to_async_url
from wallwhale.core.bootstrap import BootstrapResult, bootstrap_admin
from wallwhale.db import migrate
from wallwhale.db.engine import create_engine, session_factory

FAKE_DEPOTDOWNLOADER = Path(__file__).parent / "fakes" / "depotdownloader.py"
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases(POSTGRES_ADMIN_URL)
    yield databases
    databases.drop_all()


def _fresh_database(backend: str, postgres: PostgresDatabases, directory: Path) -> str:
    if backend == "postgresql":
        return postgres.create()
    return to_async_url(f"sqlite:///{directory / f'wallwhale-{secrets.token_hex(4)}.sqlite3'}")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, postgres: PostgresDatabases, tmp_path: Path) -> str:
    """A fresh, empty (unmigrated) database, once per backend."""
    return _fresh_database(request.param, postgres, tmp_path)


@pytest_asyncio.fixture(scope="session", params=BACKENDS)
async def migrated_database_url(
    request: pytest.FixtureRequest, postgres: PostgresDatabases, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A database migrated to the newest revision and bootstrapped with its first admin (see
    admin_key), shared by the tests of one backend."""
    url = _fresh_database(request.param, postgres, tmp_path_factory.mktemp("db"))
    _ADMINS[url] = await prepare_database(url)
    return url


_ADMINS: dict[str, BootstrapResult] = {}


async def prepare_database(url: str) -> BootstrapResult:
    """Migrates a fresh database and creates its first admin (e-mail, password, API key)."""
    await asyncio.to_thread(migrate.upgrade, url)
    engine = create_engine(url)
    try:
        return await bootstrap_admin(session_factory(engine), "admin@example.test")
    finally:
        await engine.dispose()


@pytest.fixture
def first_admin(migrated_database_url: str) -> BootstrapResult:
    """The first admin of the shared database: e-mail, password and API key."""
    return _ADMINS[migrated_database_url]


@pytest.fixture
def admin_key(first_admin: BootstrapResult) -> str:
    """The API key of the first admin (scopes admin:* and download:*)."""
    return first_admin.api_key


@pytest.fixture
def admin(admin_key: str) -> tuple[tuple[str, str], ...]:
    """Call metadata with the admin's key."""
    return (("x-api-key", admin_key),)


def make_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "grpc_port": 0,
        "metrics_port": 0,
        "depotdownloader_path": FAKE_DEPOTDOWNLOADER,
        "health_check_interval_seconds": 0.2,
        "shutdown_grace_seconds": 1.0,
        "migrate_on_start": False,
        # Tests never ask the real Steam; those about item details start tests/fakes/webapi.py.
        "steam_web_api_url": "",
        # One budget per client address would be shared by every test of the shared database (all
        # from 127.0.0.1), some of which move the server's clock; tests of that limit set it.
        "anonymous_requests_per_minute": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def server(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[WallWhaleServer]:
    instance = WallWhaleServer(make_settings(migrated_database_url, tmp_path))
    await instance.start()
    yield instance
    await instance.stop(grace=0)


@pytest_asyncio.fixture
async def channel(server: WallWhaleServer) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch
