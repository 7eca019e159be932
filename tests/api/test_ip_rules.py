"""The server applies the IP allow/deny lists before credentials, and believes x-forwarded-for
only from the proxy: over its Unix socket, never from a loopback address over plain TCP (any local
user can connect from one). The rules themselves: tests/unit/test_network.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.database import wait_for_audit_events
from tests.support.envoy import proxy_socket
from tests.support.server import Metadata, error_info, make_settings
from wallwhale.app import CannotListen, WallWhaleServer
from wallwhale.config import ConfigError, load_settings
from wallwhale.v1 import status_pb2, status_pb2_grpc


async def _status(target: int | str, metadata: Metadata) -> tuple[grpc.StatusCode, str]:
    """GetStatus at a port on 127.0.0.1, or at a target such as unix:/path."""
    async with aio.insecure_channel(f"127.0.0.1:{target}" if isinstance(target, int) else target) as channel:
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


async def test_over_the_proxy_socket_the_forwarded_client_counts(
    migrated_database_url: str, admin: Metadata, tmp_path: Path
) -> None:
    settings = make_settings(
        migrated_database_url, tmp_path, ip_allow=["203.0.113.0/24"], grpc_socket=proxy_socket()
    )
    server = WallWhaleServer(settings)
    await server.start()
    assert server.upstream.startswith("unix:")
    try:
        allowed = (*admin, ("x-forwarded-for", "203.0.113.7"), ("x-request-id", "ip-allowed-1"))
        assert await _status(server.upstream, allowed) == (grpc.StatusCode.OK, "")
        denied = (grpc.StatusCode.PERMISSION_DENIED, "IP_NOT_ALLOWED")
        assert await _status(server.upstream, (*admin, ("x-forwarded-for", "198.51.100.1"))) == denied
        # The last hop is the one the proxy wrote: a client's own additions on the left do not count.
        spoofed = (*admin, ("x-forwarded-for", "203.0.113.7, 198.51.100.1"))
        assert await _status(server.upstream, spoofed) == denied
        assert await _status(server.upstream, admin) == denied  # the proxy itself is not on the allow list
        # The same header over TCP from 127.0.0.1 is just text a client chose.
        assert await _status(server.port, allowed) == denied
    finally:
        await server.stop(grace=0)


def test_a_loopback_proxy_over_plain_tcp_is_refused(tmp_path: Path) -> None:
    for proxies in (["127.0.0.2"], ["10.0.0.0/8", "::1"], ["::ffff:127.0.0.1"]):
        with pytest.raises(ConfigError, match="loopback address any local user can connect from"):
            load_settings(trusted_proxies=proxies, data_dir=tmp_path)
    assert load_settings(trusted_proxies=["10.0.0.5"], data_dir=tmp_path).trusted_proxies == ["10.0.0.5"]
    with pytest.raises(ConfigError, match=r"GRPC_PORT=-1 \(no TCP listener\) needs WALLWHALE_GRPC_SOCKET"):
        load_settings(grpc_port=-1, data_dir=tmp_path)


async def test_the_socket_must_be_private_and_only_it_listens_with_port_minus_one(
    migrated_database_url: str, admin: Metadata, tmp_path: Path
) -> None:
    # A socket folder left open to others is narrowed before the server listens in it.
    loose = Path(tempfile.mkdtemp(prefix="wallwhale-loose-"))
    os.chmod(loose, 0o777)  # noqa: S103 (what the server must narrow)
    first = WallWhaleServer(
        make_settings(migrated_database_url, tmp_path / "a", grpc_socket=loose / "g.sock")
    )
    await first.start()
    try:
        assert os.stat(loose).st_mode & 0o777 == 0o700
        assert await _status(first.upstream, admin) == (grpc.StatusCode.OK, "")
        # A second server on the same socket is refused while the first listens.
        second = WallWhaleServer(
            make_settings(migrated_database_url, tmp_path / "b", grpc_socket=loose / "g.sock")
        )
        with pytest.raises(CannotListen, match="another server listens on"):
            await second.start()
        await second.stop(grace=0)
    finally:
        await first.stop(grace=0)
        shutil.rmtree(loose, ignore_errors=True)
    # A path too long for a socket is refused with a message, not grpc's "Failed to bind".
    long = WallWhaleServer(
        make_settings(migrated_database_url, tmp_path / "c", grpc_socket=loose / ("x" * 120))
    )
    with pytest.raises(CannotListen, match="too long for a Unix socket"):
        await long.start()
    await long.stop(grace=0)
    only_socket = make_settings(
        migrated_database_url, tmp_path / "d", grpc_socket=proxy_socket(), grpc_port=-1
    )
    server = WallWhaleServer(only_socket)
    await server.start()
    try:
        assert server.port == 0
        assert await _status(server.upstream, admin) == (grpc.StatusCode.OK, "")
        assert server.socket_path is not None
        assert server.socket_path.stat().st_mode & 0o077 == 0
    finally:
        await server.stop(grace=0)
    assert not server.socket_path.exists()
