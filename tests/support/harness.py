"""A running server with a fresh database and the test DepotDownloader, for the tests of downloads.

Every test gets its own database: jobs and Steam accounts left behind by one test must not be claimed
by the next test's server (which speaks to another fake Steam).
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from tests.fakes.steam import FakeSteam
from tests.support.database import prepare_database
from tests.support.server import Metadata, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.db.types import utcnow
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, download_pb2, download_pb2_grpc

FINAL = {
    download_pb2.DOWNLOAD_STATE_SUCCEEDED,
    download_pb2.DOWNLOAD_STATE_FAILED,
    download_pb2.DOWNLOAD_STATE_CANCELLED,
}
# The fake's sleeps (connection retries, file_delay) are multiplied by this.
TIME_SCALE = 0.01


def seconds(value: float) -> float:
    """A fake-Steam duration that lasts `value` real seconds."""
    return value / TIME_SCALE


# Fast clocks for tests: short leases, quick retries, short grace periods.
ENGINE_SETTINGS: dict[str, Any] = {
    "job_lease_seconds": 2.0,
    "queue_poll_interval_seconds": 0.1,
    "retry_base_seconds": 0.1,
    "retry_max_seconds": 0.5,
    "process_stop_grace_seconds": 2.0,
    "inactivity_timeout_seconds": 10.0,
    "steam_throttle_cooldown_seconds": 0.0,
    "watch_heartbeat_seconds": 0.5,
}


@dataclass
class Harness:
    database_url: str
    data_dir: Path
    steam: FakeSteam
    admin: Metadata = ()
    servers: list[WallWhaleServer] = field(default_factory=list)
    channels: list[aio.Channel] = field(default_factory=list)

    async def prepare(self) -> None:
        first = await prepare_database(self.database_url)
        self.admin = (("x-api-key", first.api_key),)

    async def start(self, clock: Callable[[], datetime] = utcnow, **overrides: Any) -> WallWhaleServer:
        """A server on the harness's database; `data_dir` in `overrides` gives it its own (another host)."""
        data_dir = overrides.pop("data_dir", self.data_dir)
        values = {
            **ENGINE_SETTINGS,
            "depotdownloader_path": self.steam.executable,
            # The test DepotDownloader keeps its Steam world there: its sandbox must let it write.
            "depotdownloader_writable": [self.steam.directory.resolve()],
            **overrides,
        }
        server = WallWhaleServer(make_settings(self.database_url, data_dir, **values), clock=clock)
        await server.start()
        self.servers.append(server)
        self.channels.append(aio.insecure_channel(f"127.0.0.1:{server.port}"))
        return server

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        for server in self.servers:
            try:
                await asyncio.wait_for(server.stop(grace=0), 30)
            except TimeoutError:
                # Say what is stuck rather than leaving a bare pytest-timeout in the selector.
                stacks = io.StringIO()
                for task in asyncio.all_tasks():
                    task.print_stack(limit=8, file=stacks)
                raise AssertionError(
                    f"the server did not stop within 30 s; tasks:\n{stacks.getvalue()}"
                ) from None

    @property
    def channel(self) -> aio.Channel:
        return self.channels[-1]

    @property
    def downloads(self) -> download_pb2_grpc.DownloadServiceStub:
        return download_pb2_grpc.DownloadServiceStub(self.channel)

    @property
    def admin_api(self) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.channel)

    async def add_account(self, username: str, password: str, **steam: Any) -> str:
        """The account in the fake Steam and in the server's pool (through the admin API)."""
        self.steam.add_account(username, password, **steam)
        response = await self.admin_api.CreateSteamAccount(
            admin_pb2.CreateSteamAccountRequest(
                steam_account=admin_pb2.SteamAccount(username=username), password=password
            ),
            metadata=self.admin,
        )
        return response.steam_account.id

    async def add_key(self, scopes: list[str], **limits: Any) -> Metadata:
        response = await self.admin_api.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(
                api_key=admin_pb2.ApiKey(name="test", scopes=scopes, limits=admin_pb2.ApiKeyLimits(**limits))
            ),
            metadata=self.admin,
        )
        return (("x-api-key", response.plaintext_key),)

    async def create(
        self, url_or_id: str, metadata: Metadata | None = None, **fields: Any
    ) -> download_pb2.Download:
        response = await self.downloads.CreateDownload(
            download_pb2.CreateDownloadRequest(url_or_id=url_or_id, **fields), metadata=metadata or self.admin
        )
        return response.download

    async def get(self, download_id: str, metadata: Metadata | None = None) -> download_pb2.Download:
        response = await self.downloads.GetDownload(
            download_pb2.GetDownloadRequest(id=download_id), metadata=metadata or self.admin
        )
        return response.download

    async def wait_for(
        self, download_id: str, states: set[int] | None = None, limit: float = 30.0
    ) -> download_pb2.Download:
        """Polls until the download is in one of `states` (a final state by default)."""
        wanted = states or FINAL
        return await self.wait_until(download_id, lambda download: download.state in wanted, limit)

    async def wait_for_progress(self, download_id: str, limit: float = 30.0) -> download_pb2.Download:
        return await self.wait_until(download_id, lambda download: download.progress.percent > 0, limit)

    async def wait_until(
        self, download_id: str, predicate: Callable[[download_pb2.Download], bool], limit: float
    ) -> download_pb2.Download:
        deadline = time.monotonic() + limit
        download = await self.get(download_id)
        while not predicate(download):
            if time.monotonic() > deadline:
                state = download_pb2.DownloadState.Name(download.state)
                raise AssertionError(f"gave up waiting; the download is {state}: {download}")
            await asyncio.sleep(0.05)
            download = await self.get(download_id)
        return download

    async def fetch(self, download_id: str, offset: int = 0, length: int = 0) -> tuple[bytes, dict[str, str]]:
        call = self.downloads.FetchArchive(
            download_pb2.FetchArchiveRequest(id=download_id, offset=offset, length=length),
            metadata=self.admin,
        )
        data = b"".join([chunk.data async for chunk in call])
        return data, dict(await call.initial_metadata())

    async def watch(self, download_id: str, after: int = 0) -> list[download_pb2.WatchDownloadResponse]:
        return [
            event
            async for event in self.downloads.WatchDownload(
                download_pb2.WatchDownloadRequest(id=download_id, after_sequence=after), metadata=self.admin
            )
        ]


def describe(events: list[download_pb2.WatchDownloadResponse]) -> str:
    """A job's event log as text, for assertion messages."""
    lines = []
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "state_changed":
            state = download_pb2.DownloadState.Name(event.state_changed.download.state)
            lines.append(f"{event.sequence} state {state}")
        elif kind == "log_line":
            lines.append(f"{event.sequence} log {event.log_line.line}")
        else:
            lines.append(f"{event.sequence} {kind}")
    return "\n".join(lines)


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


async def rpc_error(call: Any) -> grpc.RpcError:
    try:
        result = await call
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"expected an error, got {result}")


def alive(pid: int) -> bool:
    """Whether the process (a DepotDownloader the server started) still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def harness_for(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    steam = FakeSteam(tmp_path / "steam")
    steam.set(time_scale=TIME_SCALE)
    harness = Harness(database_url, tmp_path / "data", steam)
    await harness.prepare()
    try:
        yield harness
    finally:
        await harness.close()
