"""IP allow/deny lists and whose x-forwarded-for is believed."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import make_settings
from tests.test_audit import _wait_for_events
from tests.test_server import Metadata, error_info
from wallwhale.app import WallWhaleServer
from wallwhale.config import ConfigError, load_settings
from wallwhale.network import IpRules, parse_networks
from wallwhale.v1 import status_pb2, status_pb2_grpc

PROXY = "ipv4:127.0.0.1:40000"


def rules(allow: str = "", deny: str = "", trusted: str = "") -> IpRules:
    def split(text: str) -> tuple[object, ...]:
        return parse_networks([part for part in text.split(",") if part])

    return IpRules(split(allow), split(deny), split(trusted))  # type: ignore[arg-type]


def test_cidr_lists_and_deny_winning() -> None:
    office = rules(allow="10.0.0.0/8,2001:db8::/32", deny="10.9.0.0/16")
    assert office.allows("10.1.2.3")
    assert office.allows("2001:db8::1")
    assert not office.allows("10.9.0.1")  # deny wins over allow
    assert not office.allows("192.0.2.1")
    assert not office.allows("::ffff:10.9.0.1")  # IPv4 seen over IPv6 is still denied
    assert rules(deny="127.0.0.1").allows("127.0.0.2")
    assert rules().allows("anything")  # no lists: everyone


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    # The original took X-Forwarded-For from anyone, so a client could claim any address.
    assert rules().client_address("127.0.0.1", "203.0.113.7") == "127.0.0.1"
    trusting = rules(trusted="127.0.0.1/32,10.0.0.0/8")
    assert trusting.client_address("127.0.0.1", "203.0.113.7") == "203.0.113.7"
    # A chain: the client wrote a fake first hop; our own proxies appended the real ones.
    assert trusting.client_address("127.0.0.1", "1.1.1.1, 198.51.100.9, 10.0.0.5") == "198.51.100.9"
    assert trusting.client_address("192.0.2.50", "203.0.113.7") == "192.0.2.50"  # peer not trusted
    assert trusting.client_address("127.0.0.1", "not-an-ip") == "127.0.0.1"
    assert trusting.client_address("::ffff:127.0.0.1", "203.0.113.7") == "203.0.113.7"


def test_bad_networks_are_named_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLWHALE_IP_DENY", "10.0.0.0/8, 300.1.2.3")
    with pytest.raises(ConfigError, match=r"WALLWHALE_IP_DENY.*300\.1\.2\.3"):
        load_settings()
    monkeypatch.setenv("WALLWHALE_IP_DENY", "10.0.0.0/8, 192.0.2.0/24")
    assert load_settings().ip_deny == ["10.0.0.0/8", "192.0.2.0/24"]


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
        [event] = await _wait_for_events(migrated_database_url, "ip-denied-1")
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
