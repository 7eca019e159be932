"""`wallwhale health`, the probe of the image's HEALTHCHECK, and the `liveness` health name that the
Kubernetes liveness probe asks: a real server process on PostgreSQL whose database goes away."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import run_wallwhale, wallwhale_env
from tests.support.database import PostgresDatabases

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_health_follows_the_database_and_liveness_does_not(
    postgres: PostgresDatabases, tmp_path: Path
) -> None:
    url = postgres.create()
    port = _free_port()
    env = wallwhale_env(
        tmp_path,
        WALLWHALE_DATABASE_URL=url,
        WALLWHALE_GRPC_PORT=str(port),
        WALLWHALE_HEALTH_CHECK_INTERVAL_SECONDS="0.2",
    )
    # Nothing listens yet: not healthy, and the address is named.
    refused = run_wallwhale("health", "--timeout", "1", env=env)
    assert refused.returncode == 1
    assert f"127.0.0.1:{port}" in refused.stderr

    server = subprocess.Popen(
        [sys.executable, "-m", "wallwhale.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (answer := run_wallwhale("health", env=env)).returncode != 0:
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, answer.stderr
            time.sleep(0.2)
        assert answer.stdout.strip() == f"127.0.0.1:{port}: SERVING"
        assert run_wallwhale("health", "--service", "liveness", env=env).returncode == 0

        postgres.drop(url)  # the database is gone (its connections cut)
        deadline = time.monotonic() + 30
        while (answer := run_wallwhale("health", env=env)).returncode == 0:
            assert time.monotonic() < deadline, "still SERVING without its database"
            time.sleep(0.2)
        assert answer.returncode == 1
        assert answer.stdout.strip() == f"127.0.0.1:{port}: NOT_SERVING"
        # The process still answers: a liveness probe must not restart it for the database's sake.
        alive = run_wallwhale("health", "--service", "liveness", env=env)
        assert alive.returncode == 0, alive.stderr
        assert alive.stdout.strip() == f"127.0.0.1:{port}: SERVING"
    finally:
        server.kill()
        server.wait()
