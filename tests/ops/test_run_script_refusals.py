"""scripts/run.sh refuses a busy port or a second run on the same data directory before anything starts."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_script(data_dir: Path, **ports: int) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "WALLWHALE_DATA_DIR": str(data_dir),
        "WALLWHALE_GRPC_PORT": str(free_port()),
        "WALLWHALE_METRICS_PORT": "-1",
        "WALLWHALE_ENVOY_PORT": str(free_port()),
        "WALLWHALE_ENVOY_ADMIN_PORT": str(free_port()),
        **{name: str(value) for name, value in ports.items()},
    }
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", "scripts/run.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_busy_port_is_refused_naming_its_variable(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_script(tmp_path / "data", WALLWHALE_ENVOY_PORT=port)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"port {port} on 127.0.0.1 is in use; choose another with WALLWHALE_ENVOY_PORT"
    ]
    assert "WallWhale runs" not in result.stdout
    assert not (tmp_path / "data" / "wallwhale.sqlite3").exists()


def test_a_second_run_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with (data / "run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running run.sh holds it
        result = run_script(data)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "another scripts/run.sh runs on the data directory" in lines[0]
    assert "WALLWHALE_DATA_DIR" in lines[0]
