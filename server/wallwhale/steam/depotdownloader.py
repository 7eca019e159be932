"""Facts about the configured DepotDownloader binary.

`-V` is the only safe probe: it must be the sole argument (any other argv starts a download, and
an empty argv opens a blocking message box on Windows). It prints, then exits 0:

    DepotDownloader v3.4.0+c553ef4d60c00a4f5fd16c9fe017f569001589ff
    Runtime: .NET 9.0.4 on Debian GNU/Linux 12 (bookworm)
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Passed through to DepotDownloader when set; everything else in our environment (secrets among
# it) stays ours.
_INHERITED_ENV = (
    "PATH",
    "TZ",
    "DOTNET_ROOT",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
_VERSION = re.compile(r"^DepotDownloader v(\S+)", re.MULTILINE)
_RUNTIME = re.compile(r"^Runtime: (.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class DownloaderInfo:
    available: bool
    version: str = ""
    runtime: str = ""
    error: str = ""


def minimal_environment(home: Path) -> dict[str, str]:
    """The whole environment of a DepotDownloader process, with `home` as its private HOME."""
    env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
    env.update(
        HOME=str(home),
        # .NET's LocalApplicationData, where the isolated storage with account.config lives.
        XDG_DATA_HOME=str(home / ".local" / "share"),
        TMPDIR=str(home / "tmp"),
        LANG="C.UTF-8",
        DOTNET_CLI_TELEMETRY_OPTOUT="1",
    )
    return env


def resolve(path: Path) -> Path | None:
    """The executable for a configured path: a file, or a bare name looked up on PATH."""
    if path.parent == Path() and not path.exists():
        found = shutil.which(str(path))
        return Path(found) if found else None
    return path if path.is_file() else None


async def probe(path: Path, time_limit: float = 10.0) -> DownloaderInfo:
    executable = resolve(path)
    if executable is None:
        return DownloaderInfo(False, error=f"DepotDownloader not found at {path}")
    with tempfile.TemporaryDirectory(prefix="wallwhale-probe-") as home:
        return await _probe(executable, Path(home), time_limit)


async def _probe(executable: Path, home: Path, time_limit: float) -> DownloaderInfo:
    try:
        process = await asyncio.create_subprocess_exec(
            str(executable),
            "-V",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=minimal_environment(home),  # not the server's: its secrets stay ours
        )
    except OSError as exc:
        return DownloaderInfo(False, error=f"cannot run {executable}: {exc.strerror or exc}")
    try:
        output, _ = await asyncio.wait_for(process.communicate(), time_limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        return DownloaderInfo(False, error=f"{executable} -V did not answer within {time_limit:g}s")
    text = output.decode("utf-8", errors="replace")
    version = _VERSION.search(text)
    if process.returncode != 0 or version is None:
        first_line = text.strip().splitlines()[0][:200] if text.strip() else "no output"
        return DownloaderInfo(False, error=f"{executable} -V exited {process.returncode}: {first_line}")
    runtime = _RUNTIME.search(text)
    return DownloaderInfo(True, version=version.group(1), runtime=runtime.group(1) if runtime else "")
