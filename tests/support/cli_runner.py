"""wallwhale-cli run as a subprocess (the installed command) with only the given server address and
key from the environment; its output captured, its --json parsed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLI = Path(sys.executable).parent / "wallwhale-cli"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Cli:
    address: str
    key: str
    cwd: Path

    async def __call__(self, *args: str, stdin: str = "", **env: str) -> Run:
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith(("WALLWHALE_", "FORCE_COLOR", "TTY_"))
        }
        environ |= {"WALLWHALE_ADDRESS": self.address, "WALLWHALE_API_KEY": self.key, "COLUMNS": "150"}
        environ |= {
            "XDG_CONFIG_HOME": str(self.cwd / "config"),
            "XDG_DATA_HOME": str(self.cwd / "data"),
        } | env
        process = await asyncio.create_subprocess_exec(
            CLI,
            *args,
            cwd=self.cwd,
            env=environ,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
        assert process.returncode is not None
        return Run(process.returncode, out.decode(), err.decode())
