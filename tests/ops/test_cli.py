"""The `wallwhale` command as a person or a supervisor runs it: a real process, real signals."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import REPO_ROOT
from tests.support.cli import run_wallwhale, wallwhale_env
from tests.support.database import PostgresDatabases
from wallwhale.db import migrate
from wallwhale.v1 import status_pb2, status_pb2_grpc

pytestmark = pytest.mark.slow

BUF = REPO_ROOT / "node_modules" / ".bin" / "buf"


def _start_serving(data_dir: Path, stdout: int = subprocess.PIPE) -> tuple[subprocess.Popen[str], int]:
    """`wallwhale serve` on any free port; returns the process and the port once it serves."""
    port_file = data_dir / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "wallwhale.cli", "serve", "--port", "0", "--port-file", str(port_file)],
        env=wallwhale_env(data_dir),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text().strip():
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.communicate()[1]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the server did not start within 60s")
        time.sleep(0.1)
    return process, int(port_file.read_text())


def test_bootstrap_creates_the_first_admin_once(tmp_path: Path) -> None:
    env = wallwhale_env(tmp_path)
    first = run_wallwhale("bootstrap", "--json", env=env)
    assert first.returncode == 0, first.stderr
    created = json.loads(first.stdout)
    assert created["api_key"].startswith("ww_")
    assert created["email"] == "admin@localhost"

    again = run_wallwhale("bootstrap", env=env)
    assert again.returncode == 1
    assert "already has users" in again.stderr
    assert run_wallwhale("bootstrap", "--if-empty", env=env).returncode == 0

    # Only hashes are stored: neither secret appears anywhere in the database file.
    database = (tmp_path / "wallwhale.sqlite3").read_bytes()
    for secret in (created["api_key"], created["password"]):
        assert secret.encode() not in database
    with sqlite3.connect(tmp_path / "wallwhale.sqlite3") as connection:
        (password_hash,) = connection.execute("SELECT password_hash FROM users").fetchone()
        (action,) = connection.execute("SELECT action FROM audit_events").fetchone()
    assert password_hash.startswith("$argon2id$")
    assert action == "system.bootstrap"


def test_bad_configuration_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = run_wallwhale("migrate", env=wallwhale_env(tmp_path, WALLWHALE_GRPC_PORT="http"))
    assert result.returncode == 2
    assert "WALLWHALE_GRPC_PORT" in result.stderr


def test_serve_migrates_answers_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    bootstrapped = run_wallwhale("bootstrap", "--json", env=wallwhale_env(tmp_path))
    assert bootstrapped.returncode == 0, bootstrapped.stderr
    key = json.loads(bootstrapped.stdout)["api_key"]
    process, port = _start_serving(tmp_path)
    try:
        address = f"127.0.0.1:{port}"
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            status = status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                status_pb2.GetStatusRequest(),
                metadata=(("x-api-key", key), ("x-request-id", "cli-test-1")),
                timeout=10,
            )
            assert status.database.schema_revision == migrate.head_revision()  # serve migrated to the newest
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    rpc = next(e for e in events if e.get("event") == "rpc" and e.get("request_id") == "cli-test-1")
    assert rpc["method"] == "/wallwhale.v1.StatusService/GetStatus"
    assert rpc["code"] == "OK"
    assert rpc["duration_ms"] > 0
    names = [e.get("event") for e in events]
    assert names.index("serving") < names.index("signal received") < names.index("stopped")


def test_migrate_on_empty_postgresql_leaves_no_drift_for_alembic_check(
    postgres: PostgresDatabases, tmp_path: Path
) -> None:
    url = postgres.create().replace("postgresql+psycopg://", "postgresql://")
    env = wallwhale_env(tmp_path, WALLWHALE_DATABASE_URL=url)
    migrated = run_wallwhale("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    check = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "check"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_buf_curl_reaches_health_through_reflection(tmp_path: Path) -> None:
    process, port = _start_serving(tmp_path, stdout=subprocess.DEVNULL)
    try:
        result = subprocess.run(
            [
                str(BUF),
                "curl",
                "--protocol",
                "grpc",
                "--http2-prior-knowledge",
                "--reflect",
                f"http://127.0.0.1:{port}/grpc.health.v1.Health/Check",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}
