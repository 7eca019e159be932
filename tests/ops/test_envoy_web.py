"""Envoy serves the web console's built files (scripts/envoy_web.py) next to the API on one origin.

A stand-in build (index.html, a hashed script with its .br and .gz) in a temporary folder, and Envoy
in front of no server: the console's routes never reach one. The console itself is tested in a
browser against the whole stack (web/e2e).
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.envoy import RENDER_SCRIPT, Envoy, free_port, http, running_envoy

SCRIPT = b"console.log('hello from the console');\n" * 50
SCRIPT_PATH = "/assets/index-AbC123.js"


@pytest.fixture
def build(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(f'<!doctype html><script type="module" src="{SCRIPT_PATH}"></script>')
    script = dist / SCRIPT_PATH.lstrip("/")
    script.write_bytes(SCRIPT)
    script.with_name(script.name + ".gz").write_bytes(gzip.compress(SCRIPT))
    script.with_name(script.name + ".br").write_bytes(b"stand-in brotli bytes")
    return dist


@pytest_asyncio.fixture
async def envoy(tmp_path: Path, build: Path) -> AsyncIterator[Envoy]:
    nobody = free_port()  # no server: the console needs none
    async with running_envoy(
        tmp_path / "envoy", [nobody], extra_args=["--web-dir", str(build)], wait_healthy=False
    ) as proxy:
        yield proxy


def assert_security_headers(headers: dict[str, str]) -> None:
    csp = headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "style-src 'self';" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


async def test_the_app_page_on_every_path_outside_the_api_never_cached(envoy: Envoy, build: Path) -> None:
    index = (build / "index.html").read_bytes()
    for path in ("/", "/history", "/admin/users", "/downloads/01abc"):
        reply = await http("GET", envoy.url(path))
        assert reply.status == 200, path
        assert reply.body == index
        assert reply.headers["content-type"] == "text/html; charset=utf-8"
        assert reply.headers["cache-control"] == "no-cache"
        assert_security_headers(reply.headers)
    head = await http("HEAD", envoy.url("/history"))
    assert head.status == 200
    assert head.body == b""


async def test_hashed_assets_compressed_as_accepted_and_cached_for_good(envoy: Envoy, build: Path) -> None:
    packed = build / SCRIPT_PATH.lstrip("/")
    for accept, encoding, body in (
        ("gzip, deflate, br, zstd", "br", packed.with_name(packed.name + ".br").read_bytes()),
        ("gzip", "gzip", packed.with_name(packed.name + ".gz").read_bytes()),
        ("identity", None, SCRIPT),
    ):
        reply = await http("GET", envoy.url(SCRIPT_PATH), headers={"accept-encoding": accept})
        assert reply.status == 200
        assert reply.body == body
        assert reply.headers.get("content-encoding") == encoding
        assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
        assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert reply.headers["vary"] == "accept-encoding"
        assert_security_headers(reply.headers)
    assert gzip.decompress(packed.with_name(packed.name + ".gz").read_bytes()) == SCRIPT


async def test_an_unknown_asset_is_404_not_the_app_page(envoy: Envoy) -> None:
    reply = await http("GET", envoy.url("/assets/index-OldBuild.js"))
    assert reply.status == 404
    assert b"<!doctype" not in reply.body


async def test_the_api_paths_still_reach_the_transcoder_and_grpc(envoy: Envoy) -> None:
    # No server runs: the API answers 503 (no healthy upstream) or 404 (unknown REST path), as
    # JSON, never the app's page.
    for method, path in (("GET", "/v1/status"), ("GET", "/v1/no-such-thing"), ("POST", "/")):
        reply = await http(method, envoy.url(path), headers={"content-type": "application/json"})
        assert reply.status in (404, 503), (method, path, reply.status)
        assert reply.headers["content-type"] == "application/json"
        assert b"<!doctype" not in reply.body


def test_without_a_build_the_config_serves_the_api_only(tmp_path: Path) -> None:
    args = [sys.executable, str(RENDER_SCRIPT), "--out-dir", str(tmp_path)]
    subprocess.run(args, check=True, capture_output=True)
    assert "direct_response: {" not in (tmp_path / "envoy.yaml").read_text()
    missing = subprocess.run(
        [*args, "--web-dir", str(tmp_path / "nothing")], capture_output=True, text=True, check=False
    )
    assert missing.returncode != 0
    assert "build the console first" in missing.stderr
