"""Shared fixtures: a fresh database on SQLite and on the real PostgreSQL, a running server, and the
harness (a server with the test DepotDownloader and a fake Steam). The helpers behind them live in
tests/support/, which test modules import; nothing imports this file.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from grpc import aio

from tests.support.database import (
    BACKENDS,
    POSTGRES_ADMIN_URL,
    PostgresDatabases,
    fresh_database,
    prepare_database,
)
from tests.support.harness import Harness, harness_for
from tests.support.s3 import S3Server, running_s3
from tests.support.server import make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.core.bootstrap import BootstrapResult


@pytest.fixture(scope="session", autouse=True)
def _fake_steam_writable(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The test DepotDownloader plays Steam through files in the tests' folders (the real one talks
    to Steam over the network), so its sandbox lets it write there; the data and storage
    directories inside stay hidden (steam/sandbox.py)."""
    os.environ["WALLWHALE_DEPOTDOWNLOADER_WRITABLE"] = str(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases(POSTGRES_ADMIN_URL)
    yield databases
    databases.drop_all()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, postgres: PostgresDatabases, tmp_path: Path) -> str:
    """A fresh, empty (unmigrated) database, once per backend."""
    return fresh_database(request.param, postgres, tmp_path)


@pytest_asyncio.fixture(scope="session", params=BACKENDS)
async def migrated_database_url(
    request: pytest.FixtureRequest, postgres: PostgresDatabases, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A database migrated to the newest revision and bootstrapped with its first admin (see
    admin_key), shared by the tests of one backend."""
    url = fresh_database(request.param, postgres, tmp_path_factory.mktemp("db"))
    _ADMINS[url] = await prepare_database(url)
    return url


_ADMINS: dict[str, BootstrapResult] = {}


@pytest.fixture
def first_admin(migrated_database_url: str) -> BootstrapResult:
    """The first admin of the shared database: e-mail, password and API key."""
    return _ADMINS[migrated_database_url]


@pytest.fixture
def admin_key(first_admin: BootstrapResult) -> str:
    """The first admin's API key (admin:*, download:*, watch:*, webhook:*, download:priority)."""
    return first_admin.api_key


@pytest.fixture
def admin(admin_key: str) -> tuple[tuple[str, str], ...]:
    """Call metadata with the admin's key."""
    return (("x-api-key", admin_key),)


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


@pytest_asyncio.fixture
async def harness(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """A fresh database of its own (jobs and accounts left by one test must not be claimed by the
    next test's server), a fake Steam, and the admin's key; the test starts the server(s) it needs
    with harness.start(**settings). Once per backend, except where a folder's conftest narrows
    `database_url` (tests/clients/: SQLite only)."""
    async for value in harness_for(database_url, tmp_path):
        yield value


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A real S3 server (`rclone serve s3` over a folder), its credentials in the usual variables."""
    with running_s3(tmp_path / "s3") as server:
        for name, value in server.environment().items():  # the usual variables: boto3 reads them
            monkeypatch.setenv(name, value)
        yield server
