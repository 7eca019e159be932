"""Failed logins are throttled per account and per client address, in the database (issue 15 item 4).

Each test has a database and a server of its own: the budgets are shared state."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status

from tests.support.database import prepare_database
from tests.support.server import error_info, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc

PASSWORD = "a-long-enough-password"
Metadata = tuple[tuple[str, str], ...]
Start = Callable[..., Any]


@pytest.fixture
async def start(database_url: str, tmp_path: Path) -> AsyncIterator[Start]:
    """Starts a server with the given settings on a fresh database: (channel, admin metadata)."""
    first = await prepare_database(database_url)
    running: list[tuple[WallWhaleServer, aio.Channel]] = []

    async def started(**settings: Any) -> tuple[aio.Channel, Metadata]:
        instance = WallWhaleServer(make_settings(database_url, tmp_path, **settings))
        await instance.start()
        channel = aio.insecure_channel(f"127.0.0.1:{instance.port}")
        running.append((instance, channel))
        return channel, (("x-api-key", first.api_key),)

    yield started
    for instance, channel in running:
        await channel.close()
        await instance.stop(grace=0)


async def _user(channel: aio.Channel, admin: Metadata) -> str:
    email = f"t{secrets.token_hex(4)}@example.test"
    await admin_pb2_grpc.AdminServiceStub(channel).CreateUser(
        admin_pb2.CreateUserRequest(user=admin_pb2.User(email=email), password=PASSWORD), metadata=admin
    )
    return email


async def _login(channel: aio.Channel, email: str, password: str) -> grpc.RpcError | None:
    try:
        await auth_pb2_grpc.AuthServiceStub(channel).Login(
            auth_pb2.LoginRequest(email=email, password=password)
        )
    except grpc.RpcError as error:
        return error
    return None


def _retry_seconds(error: grpc.RpcError) -> float:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("no RetryInfo")


async def test_an_account_is_locked_after_its_failures_right_password_or_not(start: Start) -> None:
    channel, admin = await start(login_failures_per_account_per_minute=3)
    email = await _user(channel, admin)
    for _ in range(3):
        wrong = await _login(channel, email, "not-the-password-at-all")
        assert wrong is not None
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED

    answers = []
    for password in ("not-the-password-at-all", PASSWORD):
        refused = await _login(channel, email, password)
        assert refused is not None
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 0 < _retry_seconds(refused) <= 60
        answers.append((refused.details(), error_info(refused).reason))
    assert answers[0] == answers[1]  # the right password is not told apart

    # Another account from the same address is not affected, and an unknown e-mail is locked alike.
    assert await _login(channel, await _user(channel, admin), PASSWORD) is None
    for _ in range(3):
        await _login(channel, "nobody@example.test", "not-the-password-at-all")
    unknown = await _login(channel, "nobody@example.test", "not-the-password-at-all")
    assert unknown is not None
    assert unknown.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_an_address_is_throttled_across_accounts_and_instances(start: Start) -> None:
    first, admin = await start(login_failures_per_address_per_minute=4)
    second, _ = await start(login_failures_per_address_per_minute=4)  # the same database
    emails = [await _user(first, admin) for _ in range(5)]
    for index, email in enumerate(emails[:4]):
        wrong = await _login(first if index % 2 else second, email, "not-the-password-at-all")
        assert wrong is not None
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    for channel in (first, second):
        refused = await _login(channel, emails[4], PASSWORD)
        assert refused is not None
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # The refusals are in the audit trail.
    # Written in batches: polled.
    for _ in range(50):
        events = await admin_pb2_grpc.AdminServiceStub(first).ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(action="auth.login", page_size=100), metadata=admin
        )
        if any(e.status_code == "RESOURCE_EXHAUSTED" for e in events.audit_events):
            break
        await asyncio.sleep(0.1)
    assert any(e.status_code == "RESOURCE_EXHAUSTED" for e in events.audit_events)
