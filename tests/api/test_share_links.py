"""Share links to archives, through the real Envoy in front of a real server, on both databases:
saved by curl -O -J and wget with no credentials, resumed with Range, expired, revoked, used up,
refused for another user's download, rate limited per link, audited, and the token never stored."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, text

from tests.support.envoy import Envoy, Reply, http, proxy_socket, running_envoy
from tests.support.harness import Harness, harness_for
from wallwhale.db.models import ArchiveLink, AuditEvent
from wallwhale.v1 import admin_pb2, download_pb2

pytestmark = pytest.mark.slow

ITEM = 2831299001
LINK_BURST = 6  # each link's budget in this server: a few fetches at once, then one a minute


@pytest_asyncio.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Harness, Envoy]]:
    async for harness in harness_for(database_url, tmp_path):
        server = await harness.start(
            grpc_socket=proxy_socket(),
            archive_link_max_seconds=3600,
            archive_link_requests_per_minute=1,
            archive_link_burst=LINK_BURST,
        )
        async with running_envoy(tmp_path / "envoy", [server.upstream]) as envoy:
            yield harness, envoy


async def _succeeded(harness: Harness) -> str:
    await harness.add_account("links_we", "pw-links")
    harness.steam.add_item(ITEM, files={"project.json": b"{}", "scene.pkg": 300_000})
    download = await harness.create(str(ITEM))
    done = await harness.wait_for(download.id)
    assert done.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED, done
    return download.id


async def _link(envoy: Envoy, key: dict[str, str], download_id: str, **body: Any) -> dict[str, Any]:
    reply = await http("POST", envoy.url(f"/v1/downloads/{download_id}/links"), json_body=body, headers=key)
    assert reply.status == 200, reply
    created: dict[str, Any] = reply.json()
    assert created["urlPath"].startswith("/v1/links/")
    return created


def _assert_gone(reply: Reply, reason: str, words: str) -> None:
    """A link that ended answers 410 Gone; a token no link has, 404."""
    assert reply.status == (404 if reason == "LINK_UNKNOWN" else 410), reply
    assert "x-http-status" not in reply.headers
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert words in body["message"], body
    assert [d["reason"] for d in body["details"] if d["@type"].endswith("ErrorInfo")] == [reason]


async def _run(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command in `directory`, in a thread: the server under test shares this event loop."""
    await asyncio.to_thread(directory.mkdir, exist_ok=True)
    command = [shutil.which(args[0]) or args[0], *args[1:]]
    return await asyncio.to_thread(
        subprocess.run, command, cwd=directory, capture_output=True, text=True, timeout=60, check=False
    )


async def _curl(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await _run(directory, "curl", "-sS", "-f", *args)


async def _audit_rows(harness: Harness, resource: str, count: int) -> list[AuditEvent]:
    sessions = harness.servers[-1].sessions
    deadline = time.monotonic() + 10
    while True:
        async with sessions() as session:
            rows = list(
                await session.scalars(
                    select(AuditEvent).where(AuditEvent.resource == resource).order_by(AuditEvent.event_time)
                )
            )
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def test_a_share_link_is_saved_resumed_and_ended_without_credentials(
    stack: tuple[Harness, Envoy], tmp_path: Path
) -> None:
    harness, envoy = stack
    key = dict(harness.admin)
    download_id = await _succeeded(harness)
    created = await _link(envoy, key, download_id, ttl="600s")
    link, url = created["link"], envoy.url(created["urlPath"])
    token = created["urlPath"].removeprefix("/v1/links/")
    assert len(token) >= 43
    assert link["name"] == f"archive-links/{link['id']}"
    assert (link["downloadId"], link["singleUse"], link["revoked"], link["useCount"]) == (
        download_id,
        False,
        False,
        "0",
    )

    # curl -O -J with no credentials saves the file under the server's name; its sha256 is the header's.
    saved = await _curl(tmp_path / "curl", "-O", "-J", "-D", "headers.txt", url)
    assert saved.returncode == 0, saved.stderr
    headers = dict(
        line.split(": ", 1)
        for line in (tmp_path / "curl" / "headers.txt").read_text().splitlines()
        if ": " in line
    )
    filename = headers["x-archive-filename"]
    assert filename.endswith(".zip")
    assert headers["content-type"] == "application/zip"
    whole = (tmp_path / "curl" / filename).read_bytes()
    assert hashlib.sha256(whole).hexdigest() == headers["x-archive-sha256"]
    assert len(whole) == int(headers["x-archive-size"])
    assert harness.admin[0][1] not in "\n".join(headers.values())

    # Resumed: a part-saved file is finished with Range (curl -C -), and the bytes are the same.
    part = tmp_path / "resume" / filename
    part.parent.mkdir()
    part.write_bytes(whole[: len(whole) // 2])
    resumed = await _curl(part.parent, "-C", "-", "-o", filename, url)
    assert resumed.returncode == 0, resumed.stderr
    assert part.read_bytes() == whole
    middle = await http("GET", url, headers={"range": "bytes=100-199"})
    assert middle.status == 206
    assert middle.headers["content-range"] == f"bytes 100-199/{len(whole)}"
    assert middle.body == whole[100:200]

    # wget takes the name from content-disposition too.
    got = await _run(tmp_path / "wget", "wget", "-q", "--content-disposition", url)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "wget" / filename).read_bytes() == whole

    # Listed with its uses, never with its token; then revoked, and the link is gone.
    listed = await http("GET", envoy.url(f"/v1/downloads/{download_id}/links"), headers=key)
    assert listed.status == 200, listed
    assert [(item["id"], item["useCount"]) for item in listed.json()["links"]] == [(link["id"], "4")]
    assert token not in listed.body.decode()
    revoked = await http(
        "POST", envoy.url(f"/v1/archive-links/{link['id']}:revoke"), json_body={}, headers=key
    )
    assert revoked.status == 200, revoked
    assert revoked.json()["link"]["revoked"] is True, revoked
    _assert_gone(await http("GET", url), "LINK_REVOKED", "revoked")
    _assert_gone(await http("GET", url, headers={"range": "bytes=10-"}), "LINK_REVOKED", "revoked")
    _assert_gone(await http("GET", envoy.url("/v1/links/" + "x" * 43)), "LINK_UNKNOWN", "no share link")

    # Audited with the client's address; the fetches name no one; the link names neither key nor user.
    rows = await _audit_rows(harness, f"archive-links/{link['id']}", 8)
    actions = [(row.action, row.outcome) for row in rows]
    assert actions[0] == ("archive_link.create", "success")
    assert actions[1:5] == [("archive_link.fetch", "success")] * 4
    assert ("archive_link.revoke", "success") in actions
    assert ("archive_link.fetch", "failure") in actions
    assert {row.client_address for row in rows} == {"127.0.0.1"}
    creator = rows[0].actor_id
    assert creator
    assert {row.actor_kind for row in rows if row.action == "archive_link.fetch"} == {"anonymous"}
    assert creator not in listed.body.decode()
    assert creator not in "\n".join(headers.values())
    assert all(token not in str(row.details) for row in rows)


async def test_expired_used_up_and_rate_limited_links(stack: tuple[Harness, Envoy]) -> None:
    harness, envoy = stack
    key = dict(harness.admin)
    download_id = await _succeeded(harness)

    once = await _link(envoy, key, download_id, singleUse=True)
    first = await http("GET", envoy.url(once["urlPath"]))
    assert first.status == 200
    assert first.body[:2] == b"PK"
    # A single-use link serves exactly one request, whatever its range: no resume.
    _assert_gone(await http("GET", envoy.url(once["urlPath"])), "LINK_USED_UP", "used already")
    again = await http("GET", envoy.url(once["urlPath"]), headers={"range": "bytes=1-"})
    _assert_gone(again, "LINK_USED_UP", "used already")

    short = await _link(envoy, key, download_id, ttl="1s")
    await asyncio.sleep(1.2)
    _assert_gone(await http("GET", envoy.url(short["urlPath"])), "LINK_EXPIRED", "expired")

    # Each link has its own budget: this one runs out, another one still works.
    busy = await _link(envoy, key, download_id)
    for _ in range(LINK_BURST):
        assert (await http("GET", envoy.url(busy["urlPath"]), headers={"range": "bytes=0-9"})).status == 206
    limited = await http("GET", envoy.url(busy["urlPath"]))
    assert limited.status == 429, limited
    fresh = await _link(envoy, key, download_id)
    assert (await http("GET", envoy.url(fresh["urlPath"]))).status == 200

    # Lifetimes beyond the server's maximum are refused, naming the field.
    too_long = await http(
        "POST", envoy.url(f"/v1/downloads/{download_id}/links"), json_body={"ttl": "3601s"}, headers=key
    )
    assert too_long.status == 400, too_long
    assert "ttl" in too_long.json()["message"], too_long


async def test_another_users_download_cannot_be_shared(stack: tuple[Harness, Envoy]) -> None:
    harness, envoy = stack
    download_id = await _succeeded(harness)
    user = await harness.admin_api.CreateUser(
        admin_pb2.CreateUserRequest(
            user=admin_pb2.User(email="links@example.test"), password="a long password 1"
        ),
        metadata=harness.admin,
    )
    other = await harness.admin_api.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(
            api_key=admin_pb2.ApiKey(name="other", owner_user_id=user.user.id, scopes=["download:*"])
        ),
        metadata=harness.admin,
    )
    headers = {"x-api-key": other.plaintext_key}
    path = f"/v1/downloads/{download_id}/links"
    refused = await http("POST", envoy.url(path), json_body={}, headers=headers)
    assert refused.status == 404, refused
    assert (await http("GET", envoy.url(path), headers=headers)).status == 404
    # Creating a link needs credentials; fetching one does not.
    assert (await http("POST", envoy.url(path), json_body={})).status == 401
    mine = await _link(envoy, dict(harness.admin), download_id)
    revoke = f"/v1/archive-links/{mine['link']['id']}:revoke"
    assert (await http("POST", envoy.url(revoke), json_body={}, headers=headers)).status == 404


async def test_the_token_is_stored_only_as_its_hash(stack: tuple[Harness, Envoy], database_url: str) -> None:
    harness, envoy = stack
    download_id = await _succeeded(harness)
    created = await _link(envoy, dict(harness.admin), download_id)
    token = created["urlPath"].removeprefix("/v1/links/")
    assert (await http("GET", envoy.url(created["urlPath"]))).status == 200
    await _audit_rows(harness, f"archive-links/{created['link']['id']}", 2)
    async with harness.servers[-1].sessions() as session:
        stored = await session.get(ArchiveLink, created["link"]["id"])
        assert stored is not None
        assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
        # Every table, as text: the token is nowhere.
        tables = [
            "archive_links",
            "audit_events",
            "rate_limits",
            "downloads",
            "idempotency_records",
        ]
        for table in tables:
            rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608
            assert token not in repr(rows), table
    if database_url.startswith("sqlite"):
        path = Path(database_url.split("///", 1)[1])
        for file in path.parent.glob(path.name + "*"):  # the database and its WAL
            assert token.encode() not in file.read_bytes(), file
