"""Anonymous calls and calls refused by authentication are rate limited per client address
(issue 15 item 4); callers with valid credentials keep their own budgets."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.database import prepare_database
from tests.support.server import error_info, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.v1 import auth_pb2, auth_pb2_grpc, status_pb2, status_pb2_grpc

BUDGET = 5
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def channel(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[aio.Channel, Metadata]]:
    """A server on a database of its own (the budgets are shared state) with a small address budget."""
    first = await prepare_database(database_url)
    instance = WallWhaleServer(make_settings(database_url, tmp_path, anonymous_requests_per_minute=BUDGET))
    await instance.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{instance.port}") as opened:
            yield opened, (("x-api-key", first.api_key),)
    finally:
        await instance.stop(grace=0)


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_anonymous_and_refused_calls_share_a_budget_per_address(
    channel: tuple[aio.Channel, Metadata],
) -> None:
    opened, admin = channel
    auth = auth_pb2_grpc.AuthServiceStub(opened)
    status = status_pb2_grpc.StatusServiceStub(opened)
    bad_key: Metadata = (("x-api-key", "ww_" + "x" * 43),)

    def logout() -> object:
        return auth.Logout(auth_pb2.LogoutRequest(refresh_token="wwr_" + secrets.token_hex(20)))

    codes = [await _code(logout()) for _ in range(3)]
    codes += [
        await _code(status.GetStatus(status_pb2.GetStatusRequest(), metadata=bad_key)) for _ in range(2)
    ]
    assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.UNAUTHENTICATED] * 2

    for call in (logout(), status.GetStatus(status_pb2.GetStatusRequest(), metadata=bad_key)):
        with pytest.raises(grpc.RpcError) as limited:
            await call  # type: ignore[misc]
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(limited.value).reason == "RATE_LIMITED"

    # A valid key from the same address, and health checks, are not held back.
    assert await _code(status.GetStatus(status_pb2.GetStatusRequest(), metadata=admin)) == grpc.StatusCode.OK
    health = await health_pb2_grpc.HealthStub(opened).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
