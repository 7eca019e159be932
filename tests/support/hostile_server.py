"""The server the hostile-input suites aim at: real gRPC, the fake DepotDownloader, a fresh database,
stocked with users, keys, Steam accounts and succeeded downloads for hostile requests to reach."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc import aio

from tests.fakes.steam import FakeSteam
from tests.support.database import prepare_database
from tests.support.harness import ENGINE_SETTINGS, FINAL, TIME_SCALE
from tests.support.server import make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.core.bootstrap import BootstrapResult
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, download_pb2, download_pb2_grpc

KEEPER_ITEM, VICTIM_ITEM = 3_000_000_001, 3_000_000_002


@dataclass
class Target:
    """A running server with the objects the properties aim at."""

    server: WallWhaleServer
    channel: aio.Channel
    admin: BootstrapResult
    plain_key: str
    data_dir: Path
    # Ids and names that reach deeper paths: `read` ones for any call, `victims` also for mutating calls
    # (never the admin's or the plain user's own user and key, nor the kept download and account).
    read: list[str] = field(default_factory=list)
    victims: list[str] = field(default_factory=list)
    keeper_download: str = ""  # a succeeded download of the plain user that no property deletes

    def metadata(self, who: str, extra: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
        credentials = {
            "admin": (("x-api-key", self.admin.api_key),),
            "plain": (("x-api-key", self.plain_key),),
            "none": (),
            "junk-bearer": (("authorization", "Bearer not.a.jwt"),),
        }[who]
        return (*credentials, *extra)


async def _succeeded(target: Target, stub: download_pb2_grpc.DownloadServiceStub, item: int, who: str) -> str:
    created = await stub.CreateDownload(
        download_pb2.CreateDownloadRequest(url_or_id=str(item)), metadata=target.metadata(who)
    )
    deadline = asyncio.get_running_loop().time() + 120  # generous: the CI machine may be busy
    while asyncio.get_running_loop().time() < deadline:
        got = await stub.GetDownload(
            download_pb2.GetDownloadRequest(id=created.download.id), metadata=target.metadata("admin")
        )
        if got.download.state in FINAL:
            assert got.download.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED, got
            return str(created.download.id)
        await asyncio.sleep(0.05)
    raise AssertionError("the setup download did not finish")


async def start_target(database_url: str, directory: Path, **overrides: Any) -> AsyncIterator[Target]:
    admin = await prepare_database(database_url)
    steam = FakeSteam(directory / "steam")
    steam.set(time_scale=TIME_SCALE)
    for item in (KEEPER_ITEM, VICTIM_ITEM):
        steam.add_item(item, files={"project.json": b"{}", "nested/scene.pkg": 4096})
    steam.add_account("keeper_account", "keeper-password")
    data_dir = directory / "data"
    server = WallWhaleServer(
        make_settings(
            database_url,
            data_dir,
            **{
                **ENGINE_SETTINGS,
                "depotdownloader_path": steam.executable,
                "max_concurrent_downloads": 2,
                **overrides,
            },
        )
    )
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        admin_api = admin_pb2_grpc.AdminServiceStub(channel)
        as_admin = (("x-api-key", admin.api_key),)
        people = {}
        for name in ("plain", "victim"):
            created = await admin_api.CreateUser(
                admin_pb2.CreateUserRequest(
                    user=admin_pb2.User(email=f"{name}@example.test", role=admin_pb2.USER_ROLE_USER),
                    password=f"{name}-password-long",
                ),
                metadata=as_admin,
            )
            key = await admin_api.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(
                    api_key=admin_pb2.ApiKey(name=name, scopes=["download:*"], owner_user_id=created.user.id)
                ),
                metadata=as_admin,
            )
            people[name] = (created.user.id, key.api_key.id, key.plaintext_key)
        accounts = {}
        for username in ("keeper_account", "victim_account"):
            account = await admin_api.CreateSteamAccount(
                admin_pb2.CreateSteamAccountRequest(
                    steam_account=admin_pb2.SteamAccount(username=username, owned_app_ids=[431960]),
                    password="keeper-password",
                ),
                metadata=as_admin,
            )
            accounts[username] = account.steam_account.id
        target = Target(server, channel, admin, people["plain"][2], data_dir)
        downloads = download_pb2_grpc.DownloadServiceStub(channel)
        keeper = await _succeeded(target, downloads, KEEPER_ITEM, "plain")
        victim = await _succeeded(target, downloads, VICTIM_ITEM, "admin")
        target.keeper_download = keeper
        target.victims = [*people["victim"][:2], accounts["victim_account"], victim, "victim_account"]
        target.read = [
            *target.victims,
            admin.user_id,
            admin.api_key_id,
            admin.email,
            admin.password,
            *people["plain"][:2],
            accounts["keeper_account"],
            keeper,
            "keeper_account",
            str(KEEPER_ITEM),
        ]
        yield target
    finally:
        await channel.close()
        await server.stop(grace=0)
