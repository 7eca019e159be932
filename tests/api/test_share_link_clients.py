"""Share links from the clients: `wallwhale-cli share` prints a full URL that works with no
credentials, and the Python client (async and blocking) creates, lists and revokes links, through
the real Envoy in front of a real server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.envoy import Envoy, http, proxy_socket, running_envoy
from tests.support.harness import Harness, harness_for, unzip
from wallwhale.config import to_async_url
from wallwhale.v1 import download_pb2
from wallwhale_client import AsyncClient, Client
from wallwhale_client.errors import NotFound

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).parent / "wallwhale-cli"
ITEM = 2831299002


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Harness, Envoy, str]]:
    async for harness in harness_for(to_async_url(f"sqlite:///{tmp_path / 'links.sqlite3'}"), tmp_path):
        server = await harness.start(grpc_socket=proxy_socket())
        await harness.add_account("links_cli_we", "pw-links")
        harness.steam.add_item(ITEM, files={"project.json": b"{}", "scene.pkg": 50_000})
        download = await harness.create(str(ITEM))
        done = await harness.wait_for(download.id)
        assert done.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED
        async with running_envoy(tmp_path / "envoy", [server.upstream]) as envoy:
            yield harness, envoy, download.id


async def _cli(envoy: Envoy, key: str, *args: str) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WALLWHALE_")}
    environ |= {"WALLWHALE_ADDRESS": envoy.base_url.removeprefix("http://"), "WALLWHALE_API_KEY": key}
    process = await asyncio.create_subprocess_exec(
        CLI, *args, env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_prints_a_link_that_needs_no_credentials(stack: tuple[Harness, Envoy, str]) -> None:
    harness, envoy, download_id = stack
    key = dict(harness.admin)["x-api-key"]
    code, out, err = await _cli(envoy, key, "share", download_id, "--expires", "2h")
    assert code == 0, err
    url = out.strip()
    assert url.startswith(f"{envoy.base_url}/v1/links/"), out
    assert "works until" in err
    fetched = await http("GET", url)
    assert fetched.status == 200, fetched
    assert hashlib.sha256(fetched.body).hexdigest() == fetched.headers["x-archive-sha256"]

    code, out, err = await _cli(
        envoy, key, "--json", "share", download_id, "--single-use", "--url", "https://files.example.test/"
    )
    assert code == 0, err
    shared = json.loads(out)
    assert shared["url"].startswith("https://files.example.test/v1/links/")
    assert shared["link"]["singleUse"] is True
    expires = datetime.fromisoformat(shared["link"]["expireTime"])
    assert expires - datetime.now(UTC) > timedelta(hours=23)  # the server's maximum, by default

    code, _, err = await _cli(envoy, key, "share", download_id, "--expires", "soon")
    assert code == 2
    assert "--expires" in err
    code, _, err = await _cli(envoy, key, "share", download_id, "--expires", "30d")
    assert code == 2
    assert "ttl" in err


async def test_the_python_clients_create_list_and_revoke_links(stack: tuple[Harness, Envoy, str]) -> None:
    harness, envoy, download_id = stack
    key = dict(harness.admin)["x-api-key"]
    address = envoy.base_url.removeprefix("http://")
    async with AsyncClient(address, api_key=key) as client:
        created = await client.create_archive_link(download_id=download_id, expires=timedelta(minutes=10))
        assert created.url_path.startswith("/v1/links/")
        listed = await client.list_archive_links(download_id=download_id)
        assert [link.id for link in listed] == [created.link.id]
        revoked = await client.revoke_archive_link(created.link.id)
        assert revoked.revoked
        gone = await http("GET", envoy.url(created.url_path))
        assert gone.status == 410  # revoked: gone for good
        with pytest.raises(NotFound):
            await client.revoke_archive_link("0" * 26)

    def blocking() -> tuple[download_pb2.CreateArchiveLinkResponse, list[download_pb2.ArchiveLink]]:
        with Client(address, api_key=key) as client:
            made = client.create_archive_link(download_id=download_id, single_use=True)
            return made, client.list_archive_links(download_id=download_id)

    made, links = await asyncio.to_thread(blocking)
    assert made.link.single_use
    assert links[0].id == made.link.id
    assert len(links) == 2


async def test_a_batch_is_shared_as_one_zip(stack: tuple[Harness, Envoy, str]) -> None:
    harness, envoy, _ = stack
    key = dict(harness.admin)["x-api-key"]
    async with AsyncClient(envoy.base_url.removeprefix("http://"), api_key=key) as client:
        batch = await client.create_batch([str(ITEM)])
        async for _ in client.watch_batch(batch.id, exclude_logs=True):
            pass
    code, out, err = await _cli(envoy, key, "share", batch.id, "--batch", "--expires", "10m")
    assert code == 0, err
    whole = await http("GET", out.strip())
    assert whole.status == 200, whole
    assert (
        whole.headers["content-disposition"]
        == f'attachment; filename="{whole.headers["x-archive-filename"]}"'
    )
    assert unzip(whole.body).keys() == {f"{ITEM}/{name}" for name in harness.steam.expected_files(ITEM)}
    rest = await http("GET", out.strip(), headers={"range": "bytes=100-"})
    assert rest.status == 206
    assert rest.body == whole.body[100:]
