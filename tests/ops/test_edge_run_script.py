"""scripts/run.sh end to end with TLS at Envoy and mutual TLS to the server: the server and Envoy
start, the health endpoints answer over HTTPS without credentials (/readyz through the mutual-TLS
link), the plain port redirects, the access log leaves query strings out, and everything the script
creates is private to its user, even when started with umask 000 (issue 15 item 9, issue 17). By
default (no mutual TLS) Envoy reaches the server over a Unix socket in the data directory and the
server listens on no TCP port; the client address Envoy forwards is believed (issue 15 item 13)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
from http import client as http_client
from pathlib import Path

import pytest

from tests.support import REPO_ROOT
from tests.support.envoy import free_port
from wallwhale import certs

pytestmark = pytest.mark.slow


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as reply:  # noqa: S310 (our test URL)
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_run_script_with_tls_health_endpoints_private_files(tmp_path: Path) -> None:
    made = certs.make_dev_certificates(tmp_path / "certs")
    data = tmp_path / "data"
    port, redirect_port, admin_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "WALLWHALE_SKIP_SETUP": "1",
        "WALLWHALE_DATA_DIR": str(data),
        "WALLWHALE_GRPC_PORT": str(free_port()),
        "WALLWHALE_METRICS_PORT": "-1",
        "WALLWHALE_ENVOY_PORT": str(port),
        "WALLWHALE_ENVOY_ADMIN_PORT": str(admin_port),
        "WALLWHALE_HTTP_REDIRECT_PORT": str(redirect_port),
        "WALLWHALE_TLS_CERT_FILE": str(made.path("server.pem")),
        "WALLWHALE_TLS_KEY_FILE": str(made.path("server-key.pem")),
        "WALLWHALE_STEAM_WEB_API_URL": "",
        # Mutual TLS between Envoy and the server, as `wallwhale certs dev` prints it.
        "WALLWHALE_UPSTREAM_TLS_CA_FILE": str(made.path("ca.pem")),
        "WALLWHALE_UPSTREAM_TLS_CERT_FILE": str(made.path("instance.pem")),
        "WALLWHALE_UPSTREAM_TLS_KEY_FILE": str(made.path("instance-key.pem")),
        "WALLWHALE_UPSTREAM_TLS_CLIENT_CERT_FILE": str(made.path("envoy-client.pem")),
        "WALLWHALE_UPSTREAM_TLS_CLIENT_KEY_FILE": str(made.path("envoy-client-key.pem")),
    }
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        ["bash", "scripts/run.sh"],  # noqa: S607 (bash from PATH, as a person runs it)
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        umask=0,  # whatever the caller's umask, what the script makes is private
    )
    try:
        deadline = time.monotonic() + 90
        while "WallWhale runs" not in (tmp_path / "run.log").read_text():
            assert process.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.2)
        context = ssl.create_default_context(cafile=str(made.path("ca.pem")))
        base = f"https://127.0.0.1:{port}"
        assert f"REST base URL:   {base}/v1" in (tmp_path / "run.log").read_text()
        status, headers, body = _get(f"{base}/healthz", context)
        assert (status, json.loads(body)) == (200, {"status": "alive"})
        assert headers["strict-transport-security"] == "max-age=31536000"
        status, headers, body = _get(f"{base}/readyz", context)
        assert (status, json.loads(body)) == (200, {"status": "ready"})
        assert headers["content-type"] == "application/json"
        status, _, _ = _get(f"{base}/v1/status?api_key=leaked-secret-123", context)
        assert status == 400  # an unknown query parameter
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as moved:
            opener.open(f"http://127.0.0.1:{redirect_port}/healthz", timeout=5)
        assert moved.value.code == 308
        assert moved.value.headers["location"] == f"{base}/healthz"
        moved.value.close()
        envoy_log = data / "envoy" / "envoy.log"
        deadline = time.monotonic() + 10
        while "/v1/status" not in envoy_log.read_text():
            assert time.monotonic() < deadline, envoy_log.read_text()
            time.sleep(0.2)
        assert "leaked-secret-123" not in envoy_log.read_text()
        assert '"path":"/v1/status"' in envoy_log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        log.close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in [data / "envoy", *data.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_run_script_by_default_serves_over_a_private_socket_and_no_tcp_port(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port, admin_port, grpc_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WALLWHALE_")},
        "WALLWHALE_SKIP_SETUP": "1",
        "WALLWHALE_DATA_DIR": str(data),
        "WALLWHALE_GRPC_PORT": str(grpc_port),
        "WALLWHALE_METRICS_PORT": "-1",
        "WALLWHALE_ENVOY_PORT": str(port),
        "WALLWHALE_ENVOY_ADMIN_PORT": str(admin_port),
        "WALLWHALE_STEAM_WEB_API_URL": "",
    }
    log_path = tmp_path / "run.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        ["bash", "scripts/run.sh"],  # noqa: S607 (bash from PATH, as a person runs it)
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        umask=0,
    )
    try:
        deadline = time.monotonic() + 90
        while "WallWhale runs" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        printed = log_path.read_text()
        socket_path = data.resolve() / "sockets" / "instance-0.sock"
        assert f"Unix sockets in {socket_path.parent}" in printed
        assert stat.S_ISSOCK(socket_path.stat().st_mode)
        # Nothing listens for gRPC on TCP: only Envoy is the way in.
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", grpc_port), 2):
            pass
        status, _, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert (status, json.loads(body)) == (200, {"status": "ready"})
        api_key = next(line.split()[2] for line in printed.splitlines() if "API key:" in line)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/status", headers={"x-api-key": api_key})
        with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310
            assert reply.status == 200
        # A refused call from another loopback address: the server records the address Envoy saw.
        refused = http_client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=("127.0.0.7", 0))
        refused.request("GET", "/v1/status", headers={"x-forwarded-for": "203.0.113.9"})
        assert refused.getresponse().status == 401
        refused.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        log.close()
    with sqlite3.connect(data / "wallwhale.sqlite3") as database:
        addresses = {row[0] for row in database.execute("SELECT client_address FROM audit_events")}
    assert "127.0.0.7" in addresses  # the client Envoy forwarded, not a header the client wrote
    assert "203.0.113.9" not in addresses
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in [data / "envoy", *data.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
