"""Fault injection for the tests of tests/ops/test_faults.py: real processes, a real PostgreSQL cluster of
the test's own, a real small filesystem.

    async with serve_process(harness, tmp_path) as served:   # `wallwhale serve` as a child process
        ...; served.kill()                                    # SIGKILL, as the OOM killer would
    with private_postgres(tmp_path) as cluster:              # initdb + pg_ctl as the postgres user
        cluster.restart()
    with tmpfs(path, size_bytes):                             # a small filesystem mounted there
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.envoy import free_port
from tests.support.harness import ENGINE_SETTINGS, Harness


def _tool(name: str) -> str:
    """The absolute path of a system tool (found on PATH)."""
    return shutil.which(name) or name


def proc_status_kb(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure in KiB (VmRSS: now, VmHWM: the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


@dataclass
class ServeProcess:
    process: asyncio.subprocess.Process
    port: int
    channel: aio.Channel

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmRSS")

    async def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or handed back."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


@contextlib.asynccontextmanager
async def serve_process(harness: Harness, directory: Path, **settings: Any) -> AsyncIterator[ServeProcess]:
    """`python -m wallwhale.cli serve` on the harness's database and data dir, with the engine
    settings the harness uses (overridden by `settings`)."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    port_file = directory / f"port-{time.monotonic_ns()}"
    values: dict[str, Any] = {
        **ENGINE_SETTINGS,
        "database_url": harness.database_url.replace("+aiosqlite", "").replace("+psycopg", ""),
        "data_dir": harness.data_dir,
        "grpc_port": 0,
        "metrics_port": -1,
        "depotdownloader_path": harness.steam.executable,
        "migrate_on_start": False,
        "health_check_interval_seconds": 0.2,
        **settings,
    }
    env = {**os.environ, **{f"WALLWHALE_{name.upper()}": str(value) for name, value in values.items()}}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wallwhale.cli",
        "serve",
        "--port-file",
        str(port_file),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    channel: aio.Channel | None = None
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().endswith("\n"):
            if process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"wallwhale serve did not start (exit code {process.returncode})")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text())
        channel = aio.insecure_channel(f"127.0.0.1:{port}")
        yield ServeProcess(process, port, channel)
    finally:
        if channel is not None:
            await channel.close()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def health_of(channel: aio.Channel, service: str = "") -> int:
    """The grpc.health.v1 status the server reports (UNKNOWN when the call fails)."""
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
    except Exception:
        return int(health_pb2.HealthCheckResponse.UNKNOWN)
    return int(reply.status)


# --- a private PostgreSQL cluster ------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


@dataclass
class PrivateCluster:
    """A PostgreSQL cluster of one test, run as the postgres user: it can be stopped and restarted
    without touching the machine's shared server."""

    bin: Path
    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [_tool("runuser"), "-u", "postgres", "--", str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "30", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def restart(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-o", options, "-w", "-t", "30", "restart")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')  # a fixed test name
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivateCluster]:
    """Skips (with the reason) where the binaries, the postgres user or runuser are missing."""
    binaries = _postgres_bin()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    if shutil.which("runuser") is None:
        pytest.skip("runuser is missing: cannot run initdb/pg_ctl as the postgres user")
    if os.geteuid() != 0:
        pytest.skip("a private cluster is run as the postgres user, which needs root")
    try:
        import pwd

        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user to run a private cluster")
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    directory = Path(tempfile.mkdtemp(prefix="wallwhale-pg-"))
    os.chown(directory, owner.pw_uid, owner.pw_gid)
    cluster = PrivateCluster(binaries, directory, free_port())
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


# --- a small filesystem ----------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """Mounts a tmpfs of `size_bytes` at `path` (skips where mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        [_tool("mount"), "-t", "tmpfs", "-o", f"size={size_bytes},mode=0750", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield path
    finally:
        for attempt in range(20):
            if subprocess.run([_tool("umount"), str(path)], capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.25 * (attempt + 1) / 4)
        else:
            subprocess.run([_tool("umount"), "-l", str(path)], capture_output=True, check=False)


def fill(path: Path, leave_bytes: int) -> Path:
    """Writes a ballast file under `path` until only about `leave_bytes` stay free; returns it."""
    ballast = path / "ballast"
    free = shutil.disk_usage(path).free
    with ballast.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave_bytes))
    return ballast
