"""A watch's changes reach its owner's webhooks (both databases): an item updated on the simulated
Steam Web API is downloaded again and `watch.item_updated` arrives; an item that goes private sends
`watch.item_unavailable`. Deliveries are verified with the `standardwebhooks` package from PyPI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf import duration_pb2

from tests.fakes.webapi import FakeWebApi
from tests.support.harness import Harness
from tests.support.webhook_receiver import receiver
from wallwhale.v1 import download_pb2 as D
from wallwhale.v1 import watch_pb2 as W
from wallwhale.v1 import watch_pb2_grpc, webhook_pb2, webhook_pb2_grpc

ITEM = 3100000301
EVENTS = ["watch.item_updated", "watch.item_unavailable"]


@pytest.fixture
def web(harness: Harness) -> Iterator[FakeWebApi]:
    with FakeWebApi(harness.steam) as server:
        yield server


async def test_a_watched_items_new_version_and_its_going_private_are_delivered_signed(
    harness: Harness, web: FakeWebApi
) -> None:
    await harness.start(
        steam_web_api_url=web.base_url,
        steam_web_api_retry_seconds=0,
        watch_min_interval_seconds=1,
        watch_poll_interval_seconds=0.1,
        webhook_http_hosts=["127.0.0.1"],
        webhook_allowed_networks=["127.0.0.1/32"],
        webhook_poll_interval_seconds=0.2,
    )
    await harness.add_account("watch_hooks", "pw")
    harness.steam.add_item(ITEM, title="Old", files={"scene.json": b"version 1"})
    watches = watch_pb2_grpc.WatchServiceStub(harness.channel)
    hooks = webhook_pb2_grpc.WebhookServiceStub(harness.channel)
    with receiver() as hook:
        made = await hooks.CreateWebhook(
            webhook_pb2.CreateWebhookRequest(
                webhook=webhook_pb2.Webhook(url=hook.url, events=EVENTS, active=True)
            ),
            metadata=harness.admin,
        )
        watch = (
            await watches.CreateWatch(
                W.CreateWatchRequest(url_or_id=str(ITEM), interval=duration_pb2.Duration(seconds=1)),
                metadata=harness.admin,
            )
        ).watch
        first = await harness.wait_for(watch.items[0].download_id)
        assert first.state == D.DOWNLOAD_STATE_SUCCEEDED
        assert hook.received == []  # the first version is no event: nothing changed yet

        harness.steam.add_item(ITEM, title="New", files={"scene.json": b"version 2"})
        [updated] = await hook.wait_for(1)
        payload = updated.verified(made.secret)
        assert payload["type"] == "watch.item_updated"
        version = payload["data"]  # a WatchVersion as the REST API shows it
        assert (version["watchId"], version["workshopId"], version["change"]) == (
            watch.id,
            str(ITEM),
            "WATCH_CHANGE_UPDATED",
        )
        assert version["title"] == "New"
        assert version["contentHandle"] == str(harness.steam.manifest(ITEM)["id"])
        second = await harness.wait_for(version["downloadId"])
        assert second.state == D.DOWNLOAD_STATE_SUCCEEDED

        harness.steam.add_item(ITEM, title="New", files={"scene.json": b"version 2"}, web={"result": 9})
        gone = (await hook.wait_for(2))[1].verified(made.secret)
        assert gone["type"] == "watch.item_unavailable"
        assert gone["data"]["change"] == "WATCH_CHANGE_UNAVAILABLE"
        assert "private" in gone["data"]["detail"]
