"""What Envoy answers by itself on the plain port: /healthz and /readyz (no credentials, JSON,
200/503), and the security headers on every REST response, Envoy's own error replies included
(no HSTS without TLS)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.database import prepare_database
from tests.support.envoy import http, servers_behind_envoy
from wallwhale.config import to_async_url

pytestmark = pytest.mark.slow


async def test_health_endpoints_and_security_headers_without_tls(tmp_path: Path) -> None:
    url = to_async_url(f"sqlite:///{tmp_path / 'wallwhale.sqlite3'}")
    admin = await prepare_database(url)
    async with servers_behind_envoy(tmp_path, url) as (envoy, [server]):
        alive = await http("GET", envoy.url("/healthz"))
        assert (alive.status, alive.json()) == (200, {"status": "alive"})
        assert alive.headers["content-type"] == "application/json"
        ready = await http("GET", envoy.url("/readyz"))
        assert (ready.status, ready.json()) == (200, {"status": "ready"})

        replies = {
            "answered by the server": await http(
                "GET", envoy.url("/v1/status"), headers={"x-api-key": admin.api_key}
            ),
            "refused by the server": await http("GET", envoy.url("/v1/status")),
            "unknown path": await http("GET", envoy.url("/v1/nothing")),
            "unknown parameter": await http("GET", envoy.url("/v1/status", foo=1)),
            "too large": await http("POST", envoy.url("/v1/auth/login"), body=b"x" * (2 * 1024 * 1024)),
        }
        # Header names HTTP allows and gRPC metadata does not (and values with control characters)
        # are dropped on the way: they used to make the server's gRPC library answer 500.
        odd = await http(
            "GET",
            envoy.url("/v1/status"),
            headers={"x-api-key": admin.api_key, "b!erg": "x", "x-tab": "a\tb", "X-Fine": "kept"},
        )
        assert odd.status == 200, odd
        for what, reply in replies.items():
            assert reply.headers["x-content-type-options"] == "nosniff", what
            assert reply.headers["referrer-policy"] == "no-referrer", what
            assert reply.headers["x-frame-options"] == "DENY", what
            assert "frame-ancestors 'none'" in reply.headers["content-security-policy"], what
            assert reply.headers["cache-control"] == "no-store", what
            assert "strict-transport-security" not in reply.headers, what
        assert [r.status for r in replies.values()] == [200, 401, 404, 400, 413]

        # The instance goes away: not ready (Envoy's health checks see it), still alive.
        await server.stop(grace=0)
        deadline = time.monotonic() + 10
        while (ready := await http("GET", envoy.url("/readyz"))).status == 200:
            assert time.monotonic() < deadline, await envoy.admin("/clusters")
            await asyncio.sleep(0.2)
        assert ready.status == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.headers["content-type"] == "application/json"
        alive = await http("GET", envoy.url("/healthz"))
        assert alive.status == 200
