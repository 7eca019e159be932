"""What the benches share: the server as its own process on a fresh database, Envoy in front of it
(plain or TLS), the machine's description, percentiles. Not a bench itself."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from grpc import aio

from wallwhale.v1 import admin_pb2, admin_pb2_grpc, download_pb2, download_pb2_grpc

if TYPE_CHECKING:
    from tests.fakes.steam import FakeSteam

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.fakes.steam
BIN = Path(sys.executable).parent


async def succeeded_download(
    port: int, admin: tuple[tuple[str, str], ...], steam: FakeSteam, workshop_id: int, limit_seconds: float
) -> download_pb2.Download:
    """A real download of `workshop_id` (already in the fake Steam) run to the end by the test
    DepotDownloader, with a Steam account made for it."""
    password = secrets.token_urlsafe(12)
    steam.add_account("bench", password)
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await admin_pb2_grpc.AdminServiceStub(channel).CreateSteamAccount(
            admin_pb2.CreateSteamAccountRequest(
                steam_account=admin_pb2.SteamAccount(username="bench"), password=password
            ),
            metadata=admin,
        )
        downloads = download_pb2_grpc.DownloadServiceStub(channel)
        created = await downloads.CreateDownload(
            download_pb2.CreateDownloadRequest(url_or_id=str(workshop_id)), metadata=admin
        )
        deadline = time.monotonic() + limit_seconds
        while True:
            reply = await downloads.GetDownload(
                download_pb2.GetDownloadRequest(id=created.download.id), metadata=admin
            )
            if reply.download.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED:
                return reply.download
            if reply.download.state in (
                download_pb2.DOWNLOAD_STATE_FAILED,
                download_pb2.DOWNLOAD_STATE_CANCELLED,
            ):
                raise SystemExit(f"bench: the download ended {reply.download}")
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: the download did not succeed in time: {reply.download}")
            await asyncio.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


def machine() -> str:
    """nproc, CPU model, memory, Python and the load average: printed with every figure."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs ({model}), {memory:.0f} GiB, {platform.machine()} Linux"
        f" {platform.release()}, Python {sys.version.split()[0]}; load average {load[0]:.2f}"
    )


def command() -> str:
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    return shlex.join([str(python), *sys.argv])


def require(tool: str, package: str) -> str:
    """The path of a load generator, or exit saying how to install it."""
    found = shutil.which(tool)
    if found is None:
        raise SystemExit(f"bench: {tool} is missing; install it with: apt-get install -y {package}")
    return found


@contextlib.contextmanager
def database(choice: str, directory: Path) -> Iterator[str]:
    """The server's database URL: a SQLite file in `directory`, or a scratch database created on the
    PostgreSQL server of `choice` (a postgresql:// URL, its own database untouched) and dropped after."""
    if choice == "sqlite":
        yield f"sqlite:///{directory / 'wallwhale.sqlite3'}"
        return
    if not choice.startswith(("postgresql://", "postgres://")):
        raise SystemExit("--database is sqlite or a postgresql:// URL (a scratch database is made there)")
    import psycopg
    from psycopg import sql

    name = f"wallwhale_bench_{secrets.token_hex(4)}"
    with psycopg.connect(choice, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        base = choice.partition("?")[0].rpartition("/")[0]
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(choice, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def server_env(data_dir: Path, database_url: str, **settings: str) -> dict[str, str]:
    """The environment of `wallwhale serve`: this one without WALLWHALE_*, plus the bench's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WALLWHALE_")}
    env.update(
        WALLWHALE_DATA_DIR=str(data_dir),
        WALLWHALE_DATABASE_URL=database_url,
        WALLWHALE_GRPC_HOST="127.0.0.1",
        WALLWHALE_GRPC_PORT="0",
        WALLWHALE_METRICS_PORT="-1",
        WALLWHALE_MIGRATE_ON_START="false",
        # Item details would be asked of the real Steam (unreachable from test machines).
        WALLWHALE_STEAM_WEB_API_URL="",
    )
    env.update({f"WALLWHALE_{key.upper()}": value for key, value in settings.items()})
    return env


class ServerProcess:
    """`wallwhale serve` as a child process (its log in <directory>/server.log)."""

    def __init__(self, directory: Path, env: dict[str, str]):
        self.directory = directory
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "server.log"
        self.port_file = directory / "port"
        self.port = 0

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "wallwhale.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"wallwhale {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    async def start(self) -> None:
        # Blocking calls, once, before anything is measured.
        with open(self.log_path, "wb") as log:  # noqa: ASYNC230
            self.process = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "wallwhale.cli", "serve", "--port-file", str(self.port_file)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not (self.port_file.exists() and self.port_file.read_text().endswith("\n")):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; its log ends:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        self.port = int(self.port_file.read_text())

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def proxy_socket(data_dir: Path) -> Path:
    """The server's Unix socket for Envoy (WALLWHALE_GRPC_SOCKET), as run.sh sets it up: the server
    believes the client address Envoy forwards over it."""
    return data_dir / "sockets" / "grpc.sock"


def start_envoy(
    directory: Path,
    upstream: int | Path,
    workers: int = 2,
    certificates: Path | None = None,
    extra_args: Sequence[str] = (),
) -> tuple[subprocess.Popen[bytes], int]:
    """Envoy in front of the server on `upstream` (a TCP port, or its Unix socket), configured by
    scripts/envoy_config.py as run.sh does; with `certificates` (a `wallwhale certs dev` folder) it
    serves TLS with server.pem. Returns the process and its port once it finds the server healthy."""
    port, admin_port = free_port(), free_port()
    tls = []
    if certificates is not None:
        tls = [f"--tls-cert={certificates / 'server.pem'}", f"--tls-key={certificates / 'server-key.pem'}"]
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "envoy_config.py"),
            f"--out-dir={directory}",
            f"--listen=127.0.0.1:{port}",
            f"--admin-port={admin_port}",
            f"--upstream=unix:{upstream}"
            if isinstance(upstream, Path)
            else f"--upstream=127.0.0.1:{upstream}",
            *tls,
            *extra_args,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    envoy = subprocess.Popen(
        [
            str(BIN / "envoy"),
            "-c",
            str(directory / "envoy.yaml"),
            "--concurrency",
            str(workers),
            "--disable-hot-restart",
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/clusters", timeout=2) as reply:
                lines = reply.read().decode().splitlines()
                # The server's cluster (a collector's cluster, with tracing on, is healthy at once).
                healthy = [line for line in lines if line.endswith("::health_flags::healthy")]
                if any(line.startswith("wallwhale::") for line in healthy):
                    return envoy, port
        except OSError:
            pass
        if envoy.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("bench: Envoy did not come up")
        time.sleep(0.2)


def dev_certificates(directory: Path) -> Path:
    """A development CA and server certificate (`wallwhale certs dev`) in `directory`."""
    from wallwhale.certs import make_dev_certificates

    return make_dev_certificates(directory).directory
