"""scripts/run.sh end to end with TLS at Envoy and mutual TLS to the server: the server and Envoy
start, the health endpoints answer over HTTPS without credentials (/readyz through the mutual-TLS
link), the plain port redirects, the access log leaves query strings out, and everything the script
creates is private to its user (issue 15 item 9, issue 17)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
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
