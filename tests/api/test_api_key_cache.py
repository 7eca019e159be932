"""API keys remembered between calls (core.identity.PrincipalCache), and everything that must
still stop them at once: revoking or disabling the key, disabling the user, expiry, on this
instance and (PostgreSQL) on another one. The servers here keep keys for a minute, so a refusal
within a test's few seconds can only come from the key being forgotten, never from the time limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2, timestamp_pb2
from grpc import aio
from sqlalchemy import event

from tests.support.server import Metadata, error_info, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.core import api_keys
from wallwhale.core.identity import Principal, PrincipalCache
from wallwhale.db.models import UserRole
from wallwhale.db.types import utcnow
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, download_pb2, download_pb2_grpc

REMEMBER = 60.0  # seconds: longer than any test here
LISTING = download_pb2.ListDownloadsRequest()


class Clock:
    """The servers' clock, moved by the test (API-key expiry)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset


class Instance:
    """One running server, a channel to it, and how often it has read a given key's row."""

    def __init__(self, server: WallWhaleServer):
        self.server = server
        self.channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.downloads = download_pb2_grpc.DownloadServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.key_reads: dict[str, int] = {}
        event.listen(server.engine.sync_engine, "before_cursor_execute", self._count)

    def _count(self, conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "FROM api_keys" in statement:
            for value in parameters.values() if isinstance(parameters, dict) else parameters:
                if value in self.key_reads:
                    self.key_reads[value] += 1

    def watch_reads(self, plaintext: str) -> None:
        self.key_reads[api_keys.hash_key(plaintext)] = 0

    def reads(self, plaintext: str) -> int:
        return self.key_reads[api_keys.hash_key(plaintext)]

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(grace=0)


@pytest_asyncio.fixture
async def start(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Instance] = []

    async def start_instance(clock: Clock | None = None) -> Instance:
        settings = make_settings(
            migrated_database_url, tmp_path / f"data-{len(started)}", api_key_cache_seconds=REMEMBER
        )
        server = WallWhaleServer(settings, clock=clock or utcnow)
        await server.start()
        if server.listener is not None:  # PostgreSQL: the cache serves only while it listens
            await asyncio.wait_for(server.listener.connected.wait(), 10)
        started.append(Instance(server))
        return started[-1]

    yield start_instance
    for instance in started:
        await instance.close()


async def new_user_key(
    admin_api: admin_pb2_grpc.AdminServiceStub,
    admin: Metadata,
    scopes: tuple[str, ...] = ("download:*",),
    role: Any = admin_pb2.USER_ROLE_USER,
    **key: Any,
) -> tuple[str, str, Metadata]:
    """A new user with a key of its own: (user id, key id, the key's metadata)."""
    stamp = time.monotonic_ns()
    user = (
        await admin_api.CreateUser(
            admin_pb2.CreateUserRequest(
                user=admin_pb2.User(email=f"cache-{stamp}@example.test", role=role),
                password="a long password 1",
            ),
            metadata=admin,
        )
    ).user
    created = await admin_api.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(
            api_key=admin_pb2.ApiKey(name="cached", owner_user_id=user.id, scopes=scopes, **key)
        ),
        metadata=admin,
    )
    return user.id, created.api_key.id, (("x-api-key", created.plaintext_key),)


async def refusal(instance: Instance, key: Metadata) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        await instance.downloads.ListDownloads(LISTING, metadata=key)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, raised.value
    return raised.value


async def refusal_within(instance: Instance, key: Metadata, limit: float) -> tuple[grpc.RpcError, float]:
    """The first error `instance` answers `key` with, calling until `limit` seconds have passed."""
    started = time.monotonic()
    while True:
        try:
            await instance.downloads.ListDownloads(LISTING, metadata=key)
        except grpc.RpcError as error:
            return error, time.monotonic() - started
        assert time.monotonic() - started < limit, f"still accepted after {limit} s"
        await asyncio.sleep(0.002)


def disabling(user_id: str, disabled: bool) -> admin_pb2.UpdateUserRequest:
    return admin_pb2.UpdateUserRequest(
        user=admin_pb2.User(id=user_id, disabled=disabled),
        update_mask=field_mask_pb2.FieldMask(paths=["disabled"]),
    )


async def test_a_key_is_read_once_while_remembered_and_again_once_changed(
    start: Callable[..., Any], admin: Metadata
) -> None:
    a: Instance = await start()
    _, key_id, key = await new_user_key(a.admin, admin)
    a.watch_reads(key[0][1])
    for _ in range(5):
        await a.downloads.ListDownloads(LISTING, metadata=key)
    assert a.reads(key[0][1]) == 1

    await a.admin.UpdateApiKey(
        admin_pb2.UpdateApiKeyRequest(
            api_key=admin_pb2.ApiKey(id=key_id, name="renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=admin,
    )
    await a.downloads.ListDownloads(LISTING, metadata=key)
    assert a.reads(key[0][1]) == 2


async def test_revoking_or_disabling_on_this_instance_refuses_the_next_call(
    start: Callable[..., Any], admin: Metadata
) -> None:
    a: Instance = await start()
    _, revoked_id, revoked = await new_user_key(a.admin, admin)
    _, disabled_id, disabled = await new_user_key(a.admin, admin)
    for key in (revoked, disabled):
        await a.downloads.ListDownloads(LISTING, metadata=key)  # now remembered

    await a.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=revoked_id), metadata=admin)
    assert error_info(await refusal(a, revoked)).reason == "API_KEY_REVOKED"

    switch = admin_pb2.UpdateApiKeyRequest(
        api_key=admin_pb2.ApiKey(id=disabled_id, disabled=True),
        update_mask=field_mask_pb2.FieldMask(paths=["disabled"]),
    )
    await a.admin.UpdateApiKey(switch, metadata=admin)
    assert error_info(await refusal(a, disabled)).reason == "API_KEY_DISABLED"
    # A refusal is not remembered: enabled again, the key passes at its next call.
    switch.api_key.disabled = False
    await a.admin.UpdateApiKey(switch, metadata=admin)
    await a.downloads.ListDownloads(LISTING, metadata=disabled)


async def test_disabling_or_deleting_the_user_refuses_its_remembered_key_at_once(
    start: Callable[..., Any], admin: Metadata
) -> None:
    a: Instance = await start()
    user_id, _, key = await new_user_key(a.admin, admin)
    await a.downloads.ListDownloads(LISTING, metadata=key)

    await a.admin.UpdateUser(disabling(user_id, True), metadata=admin)
    assert error_info(await refusal(a, key)).reason == "USER_DISABLED"
    await a.admin.UpdateUser(disabling(user_id, False), metadata=admin)
    await a.downloads.ListDownloads(LISTING, metadata=key)

    await a.admin.DeleteUser(admin_pb2.DeleteUserRequest(id=user_id), metadata=admin)
    assert error_info(await refusal(a, key)).reason == "CREDENTIALS_INVALID"


async def test_a_role_change_reaches_a_remembered_key_at_once(
    start: Callable[..., Any], admin: Metadata
) -> None:
    a: Instance = await start()
    # Made while its owner is an admin: a key cannot be given scopes beyond its owner's role.
    user_id, _, key = await new_user_key(
        a.admin, admin, scopes=("download:*", "admin:read"), role=admin_pb2.USER_ROLE_ADMIN
    )
    others = download_pb2.ListDownloadsRequest(owner_user_id="x" * 26)

    async def lists_others() -> grpc.StatusCode:
        try:
            await a.downloads.ListDownloads(others, metadata=key)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    def role(value: Any) -> admin_pb2.UpdateUserRequest:
        return admin_pb2.UpdateUserRequest(
            user=admin_pb2.User(id=user_id, role=value),
            update_mask=field_mask_pb2.FieldMask(paths=["role"]),
        )

    denied = grpc.StatusCode.PERMISSION_DENIED
    assert await lists_others() == grpc.StatusCode.OK
    await a.admin.UpdateUser(role(admin_pb2.USER_ROLE_USER), metadata=admin)
    assert await lists_others() == denied  # a user's key: only its own downloads
    await a.admin.UpdateUser(role(admin_pb2.USER_ROLE_ADMIN), metadata=admin)
    assert await lists_others() == grpc.StatusCode.OK


async def test_a_key_that_expires_while_remembered_is_refused(
    start: Callable[..., Any], admin: Metadata
) -> None:
    clock = Clock()
    a: Instance = await start(clock)
    expiry = timestamp_pb2.Timestamp()
    expiry.FromDatetime(utcnow() + timedelta(hours=1))
    _, _, key = await new_user_key(a.admin, admin, expire_time=expiry)
    a.watch_reads(key[0][1])
    await a.downloads.ListDownloads(LISTING, metadata=key)
    await a.downloads.ListDownloads(LISTING, metadata=key)
    assert a.reads(key[0][1]) == 1  # the second call was served from memory

    clock.offset = timedelta(hours=1, seconds=1)
    assert error_info(await refusal(a, key)).reason == "API_KEY_EXPIRED"
    assert a.reads(key[0][1]) == 1  # refused from memory, by the expiry it holds


@pytest.mark.postgres
@pytest.mark.parametrize("migrated_database_url", ["postgresql"], indirect=True)
async def test_a_change_on_one_instance_reaches_a_key_remembered_by_another_within_milliseconds(
    start: Callable[..., Any], admin: Metadata
) -> None:
    a: Instance = await start()
    b: Instance = await start()
    _, key_id, key = await new_user_key(a.admin, admin)
    user_id, _, user_key = await new_user_key(a.admin, admin)
    b.watch_reads(key[0][1])
    for _ in range(3):
        for instance in (a, b):
            await instance.downloads.ListDownloads(LISTING, metadata=key)
            await instance.downloads.ListDownloads(LISTING, metadata=user_key)
    assert b.reads(key[0][1]) == 1  # B remembers it: only the notice can make it refuse now

    await a.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=key_id), metadata=admin)
    assert error_info(await refusal(a, key)).reason == "API_KEY_REVOKED"
    error, took = await refusal_within(b, key, limit=2.0)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == "API_KEY_REVOKED"
    assert took < 0.5, took

    await a.admin.UpdateUser(disabling(user_id, True), metadata=admin)
    assert error_info(await refusal(a, user_key)).reason == "USER_DISABLED"
    error, took = await refusal_within(b, user_key, limit=2.0)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == "USER_DISABLED"
    assert took < 0.5, took


# The cache itself ------------------------------------------------------------------------------


def _principal(n: int) -> Principal:
    return Principal(
        kind="api_key", user_id=f"u{n}", role=UserRole.USER, scopes=frozenset(), api_key_id=f"k{n}"
    )


def test_the_cache_holds_at_most_its_bound_dropping_the_oldest() -> None:
    cache = PrincipalCache(REMEMBER, max_entries=3)
    for n in range(5):
        cache.store(f"h{n}", _principal(n), None, cache.generation)
    assert len(cache) == 3
    assert [cache.get(f"h{n}") is not None for n in range(5)] == [False, False, True, True, True]


def test_the_cache_forgets_after_its_time_and_never_stores_an_answer_older_than_a_change() -> None:
    now = [0.0]
    cache = PrincipalCache(5.0, monotonic=lambda: now[0])
    cache.store("h", _principal(1), None, cache.generation)
    now[0] = 4.9
    assert cache.get("h") is not None
    now[0] = 5.0
    assert cache.get("h") is None

    began = cache.generation  # a look-up reads the row ...
    cache.clear()  # ... while the key is changed
    cache.store("h", _principal(1), None, began)
    assert cache.get("h") is None


def test_the_cache_serves_nothing_while_changes_could_go_unheard() -> None:
    listening = [True]
    cache = PrincipalCache(REMEMBER, usable=lambda: listening[0])
    cache.store("h", _principal(1), None, cache.generation)
    listening[0] = False
    assert cache.get("h") is None
    cache.store("h", _principal(1), None, cache.generation)
    listening[0] = True
    assert cache.get("h") is None
    assert PrincipalCache(0).get("h") is None  # 0 seconds: off
