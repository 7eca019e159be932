"""The server applies the IP allow/deny lists before credentials, and believes x-forwarded-for
only from a trusted proxy (the rules themselves: tests/unit/test_network.py)."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.database import wait_for_audit_events
from tests.support.server import Metadata, error_info, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.v1 import status_pb2, status_pb2_grpc


async def _status(port: int, metadata: Metadata) -> tuple[grpc.StatusCode, str]:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                status_pb2.GetStatusRequest(), metadata=metadata
            )
        except grpc.RpcError as error:
            return error.code(), error_info(error).reason
        return grpc.StatusCode.OK, ""


async def test_the_server_applies_the_rules_before_credentials(
    migrated_database_url: str, admin: Metadata, tmp_path: Path
) -> None:
    server = WallWhaleServer(make_settings(migrated_database_url, tmp_path, ip_deny=["127.0.0.0/8"]))
    await server.start()
    try:
        request = (*admin, ("x-request-id", "ip-denied-1"), ("x-forwarded-for", "203.0.113.7"))
        assert await _status(server.port, request) == (grpc.StatusCode.PERMISSION_DENIED, "IP_NOT_ALLOWED")
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:  # probes still answered
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        [event] = await wait_for_audit_events(migrated_database_url, "ip-denied-1")
        assert (event.outcome, event.client_address) == ("denied", "127.0.0.1")  # the spoofed header ignored
    finally:
        await server.stop(grace=0)


async def test_behind_a_trusted_proxy_the_forwarded_client_counts(
    migrated_database_url: str, admin: Metadata, tmp_path: Path
) -> None:
    settings = make_settings(
        migrated_database_url, tmp_path, ip_allow=["203.0.113.0/24"], trusted_proxies=["127.0.0.1"]
    )
    server = WallWhaleServer(settings)
    await server.start()
    try:
        allowed = (*admin, ("x-forwarded-for", "203.0.113.7"), ("x-request-id", "ip-allowed-1"))
        assert await _status(server.port, allowed) == (grpc.StatusCode.OK, "")
        denied = (grpc.StatusCode.PERMISSION_DENIED, "IP_NOT_ALLOWED")
        assert await _status(server.port, (*admin, ("x-forwarded-for", "198.51.100.1"))) == denied
        assert await _status(server.port, admin) == denied  # the proxy itself is not on the allow list
    finally:
        await server.stop(grace=0)
