"""wallwhale-cli's `watches` and `webhooks` (and the client methods under them) against the real server:
watches with the simulated Steam Web API (tests/fakes/webapi.py), webhooks with a real HTTP receiver,
each delivery verified with the `standardwebhooks` package."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.webapi import FakeWebApi
from tests.support.cli_runner import Cli, Run
from tests.support.harness import Harness
from tests.support.webhook_receiver import receiver
from wallwhale.v1 import download_pb2
from wallwhale_client import Client, InvalidArgument, NotFound

ITEM = 3100000201
WATCH_SETTINGS: dict[str, Any] = {
    "watch_min_interval_seconds": 1,
    "watch_default_interval_seconds": 1,
    "watch_poll_interval_seconds": 0.1,
    "watch_retry_base_seconds": 0.5,
    "steam_web_api_retry_seconds": 0,
}
# The receiver runs on this machine: an admin's allowance for it, and fast retries.
HOOK_SETTINGS: dict[str, Any] = {
    "webhook_http_hosts": ["127.0.0.1"],
    "webhook_allowed_networks": ["127.0.0.1/32"],
    "webhook_retry_schedule_seconds": [0.2, 0.2, 0.2],
    "webhook_timeout_seconds": 1.0,
    "webhook_poll_interval_seconds": 0.2,
}


@pytest.fixture
def web(harness: Harness) -> Iterator[FakeWebApi]:
    with FakeWebApi(harness.steam) as server:
        yield server


async def start(harness: Harness, tmp_path: Path, **settings: Any) -> Cli:
    server = await harness.start(**settings)
    await harness.add_account("watcher_we", "pw")
    return Cli(f"127.0.0.1:{server.port}", dict(harness.admin)["x-api-key"], tmp_path)


async def until(cli: Cli, args: list[str], done: Any, limit: float = 30.0) -> Any:
    """`cli --json *args` again until `done(parsed output)`."""
    deadline = time.monotonic() + limit
    while True:
        run = await cli("--json", *args)
        assert run.code == 0, run
        if done(run.json()):
            return run.json()
        assert time.monotonic() < deadline, f"gave up waiting: {run.stdout}"
        await asyncio.sleep(0.2)


def failed(run: Run, code: int, *words: str) -> None:
    assert run.code == code, run
    for word in words:
        assert word in run.stderr.lower(), run


async def test_a_watch_added_listed_paused_resumed_versions_shown_and_removed(
    harness: Harness, web: FakeWebApi, tmp_path: Path
) -> None:
    cli = await start(harness, tmp_path, steam_web_api_url=web.base_url, **WATCH_SETTINGS)
    harness.steam.add_item(ITEM, title="Rain", files={"scene.json": b"version 1"})
    url = f"https://steamcommunity.com/sharedfiles/filedetails/?id={ITEM}"

    run = await cli("--json", "watches", "add", url, "--interval", "1s")
    assert run.code == 0, run
    watch = run.json()
    assert (watch["workshopId"], watch["kind"], watch["state"], watch["interval"]) == (
        str(ITEM),
        "WATCH_KIND_ITEM",
        "WATCH_STATE_ACTIVE",
        "1s",
    )
    first = watch["items"][0]["downloadId"]
    assert (await harness.wait_for(first)).state == download_pb2.DOWNLOAD_STATE_SUCCEEDED

    run = await cli("watches", "list")
    assert run.code == 0, run
    assert watch["id"] in run.stdout
    assert "Rain" in run.stdout
    assert "ACTIVE" in run.stdout
    run = await cli("watches", "show", watch["id"])
    assert run.code == 0, run
    assert first in run.stdout  # the item's download in the items table

    run = await cli("--json", "watches", "pause", watch["id"])
    assert run.code == 0, run
    assert (run.json()["paused"], run.json()["state"]) == (True, "WATCH_STATE_PAUSED")
    run = await cli("watches", "interval", watch["id"], "1h")
    assert (run.code, run.stdout.strip()) == (0, f"{watch['id']} is checked every 1h"), run
    run = await cli("--json", "watches", "interval", watch["id"], "1s")
    assert run.json()["interval"] == "1s"
    run = await cli("watches", "resume", watch["id"])
    assert (run.code, run.stdout.split()[:2]) == (0, ["resumed", watch["id"]]), run

    # A new version on Steam: the resumed watch sees it and downloads it again.
    harness.steam.add_item(ITEM, title="Rain 2", files={"scene.json": b"version 2"})
    found = await until(
        cli, ["watches", "versions", watch["id"]], lambda versions: len(versions) == 2, limit=60
    )
    assert [version["change"] for version in found] == ["WATCH_CHANGE_UPDATED", "WATCH_CHANGE_FIRST"]
    assert found[0]["title"] == "Rain 2"
    assert found[0]["downloadId"] not in ("", first)
    run = await cli("watches", "versions", watch["id"])
    assert "UPDATED" in run.stdout
    assert "FIRST" in run.stdout

    run = await cli("watches", "remove", watch["id"])
    assert (run.code, "removed" in run.stdout) == (0, True), run
    failed(await cli("watches", "show", watch["id"]), 2, "not_found")
    run = await cli("--json", "watches", "list")
    assert run.json() == []

    # The server's floor and the CLI's own check of a duration: user errors, exit 2, saying what.
    failed(await cli("watches", "add", str(ITEM), "--interval", "0.5s"), 2, "interval")
    failed(await cli("watches", "add", str(ITEM), "--interval", "soon"), 2, "--interval")


async def test_a_webhook_added_its_secret_shown_once_a_delivery_verified_and_listed(
    harness: Harness, tmp_path: Path
) -> None:
    cli = await start(harness, tmp_path, **HOOK_SETTINGS)
    with receiver() as hook:
        run = await cli(
            "webhooks", "add", hook.url, "--event", "download.succeeded", "--description", "build server"
        )
        assert run.code == 0, run
        lines = run.stdout.splitlines()
        [secret] = [line for line in lines if line.startswith("whsec_")]
        assert run.stdout.count("whsec_") == 1
        assert "will not be shown again" in run.stdout
        webhook_id = lines[0].split()[1]

        listed = await cli("--json", "webhooks", "list")
        assert [entry["id"] for entry in listed.json()] == [webhook_id]
        assert listed.json()[0]["description"] == "build server"
        shown = await cli("webhooks", "show", webhook_id)
        assert "whsec_" not in listed.stdout + shown.stdout  # never again

        harness.steam.add_item(ITEM, files={"scene.pkg": 20_000})
        done = await harness.wait_for((await harness.create(str(ITEM))).id)
        [arrived] = await hook.wait_for(1)
        payload = arrived.verified(secret)
        assert (payload["type"], payload["data"]["id"]) == ("download.succeeded", done.id)

        [delivery] = await until(
            cli,
            ["webhooks", "deliveries", webhook_id],
            lambda found: found and found[0]["state"] != "WEBHOOK_DELIVERY_STATE_PENDING",
        )
        assert (delivery["state"], delivery["responseCode"], delivery["attempts"]) == (
            "WEBHOOK_DELIVERY_STATE_SUCCEEDED",
            200,
            1,
        )
        assert delivery["messageId"] == arrived.headers["webhook-id"]
        run = await cli("webhooks", "deliveries", webhook_id)
        assert delivery["id"] in run.stdout
        assert "SUCCEEDED" in run.stdout
        assert "200" in run.stdout

        run = await cli("webhooks", "redeliver", webhook_id, delivery["id"])
        assert run.code == 0, run
        again = (await hook.wait_for(2))[1]
        assert again.headers["webhook-id"] == arrived.headers["webhook-id"]

        run = await cli("--json", "webhooks", "rotate-secret", webhook_id, "--grace", "0s")
        assert run.code == 0, run
        rotated = run.json()["secret"]
        assert rotated.startswith("whsec_")
        assert rotated != secret

        run = await cli("--json", "webhooks", "disable", webhook_id)
        assert run.json()["active"] is False
        run = await cli("webhooks", "enable", webhook_id)
        assert (run.code, "active" in run.stdout) == (0, True), run

        failed(await cli("webhooks", "redeliver", webhook_id, "nope"), 2, "not_found")
        run = await cli("webhooks", "remove", webhook_id)
        assert run.code == 0, run
        failed(await cli("webhooks", "show", webhook_id), 2, "not_found")

    # Refused by the server (no admin allowance for a metadata address), its message shown.
    refused = await cli("webhooks", "add", "https://169.254.169.254/hook", "--event", "download.succeeded")
    failed(refused, 2, "invalid_argument", "url")
    failed(await cli("webhooks", "add", hook.url), 2, "--event")


async def test_the_blocking_client_manages_watches_and_webhooks(
    harness: Harness, web: FakeWebApi, tmp_path: Path
) -> None:
    cli = await start(harness, tmp_path, steam_web_api_url=web.base_url, **WATCH_SETTINGS, **HOOK_SETTINGS)
    harness.steam.add_item(ITEM, title="Fog", files={"a.txt": b"a"})

    def work() -> None:
        with Client(cli.address, api_key=cli.key) as client:
            watch = client.create_watch(str(ITEM), delete_removed_downloads=True)
            assert watch.delete_removed_downloads
            assert watch.title == "Fog"
            changed = client.update_watch(watch.id, delete_removed_downloads=False)
            assert not changed.delete_removed_downloads
            assert not changed.paused
            assert client.set_watch_interval(watch.id, timedelta(hours=2)).interval.seconds == 7200
            assert [found.id for found in client.list_watches()] == [watch.id]
            assert client.list_watch_versions(watch.id)[-1].workshop_id == ITEM
            with pytest.raises(InvalidArgument):
                client.set_watch_interval(watch.id, timedelta(milliseconds=1))
            client.delete_watch(watch.id)
            with pytest.raises(NotFound):
                client.get_watch(watch.id)

            made = client.create_webhook("http://127.0.0.1:9/hook", ["watch.item_updated"], description="x")
            assert made.secret.startswith("whsec_")
            assert made.webhook.active
            updated = client.update_webhook(made.webhook.id, events=["batch.finished"], active=False)
            assert (list(updated.events), updated.active, updated.description) == (
                ["batch.finished"],
                False,
                "x",
            )
            assert client.rotate_webhook_secret(made.webhook.id).webhook.HasField(
                "previous_secret_expire_time"
            )
            assert [found.id for found in client.list_webhooks()] == [made.webhook.id]
            assert client.list_webhook_deliveries(made.webhook.id) == []
            client.delete_webhook(made.webhook.id)
            assert client.list_webhooks() == []

    await asyncio.to_thread(work)
