"""The server's `wallwhale` command run as a separate process, with the test DepotDownloader and none
of the caller's WALLWHALE_ settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.server import FAKE_DEPOTDOWNLOADER


def wallwhale_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLWHALE_")}
    env.update(
        WALLWHALE_DATA_DIR=str(data_dir),
        WALLWHALE_METRICS_PORT="0",
        WALLWHALE_DEPOTDOWNLOADER_PATH=str(FAKE_DEPOTDOWNLOADER),
        WALLWHALE_STEAM_WEB_API_URL="",
        **extra,
    )
    return env


def run_wallwhale(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wallwhale.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
