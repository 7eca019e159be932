"""`wallwhale serve` on a taken port: one line naming WALLWHALE_GRPC_PORT, exit 2, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def serve(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WALLWHALE_DATA_DIR": str(tmp_path / "data"), "WALLWHALE_METRICS_PORT": "-1"}
    env.pop("WALLWHALE_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "wallwhale.cli", "serve", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(tmp_path, "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port} is in use" in lines[0]
    assert "WALLWHALE_GRPC_PORT" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "data" / "wallwhale.sqlite3").exists()  # refused before anything started
