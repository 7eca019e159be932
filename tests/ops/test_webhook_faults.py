"""Webhook deliveries under faults: a server killed with SIGKILL right after a job succeeded, and two
instances sharing one PostgreSQL. A real receiver counts what arrives; `standardwebhooks` verifies it."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.webapi import FakeWebApi
from tests.support.faults import serve_process
from tests.support.harness import Harness
from tests.support.webhook_receiver import receiver
from wallwhale.v1 import download_pb2 as D
from wallwhale.v1 import webhook_pb2 as W
from wallwhale.v1 import webhook_pb2_grpc

ITEM = 2_000_000_301
LOCAL: dict[str, Any] = {
    "webhook_http_hosts": ["127.0.0.1"],
    "webhook_allowed_networks": ["127.0.0.1/32"],
    "webhook_retry_schedule_seconds": [0.3, 0.3, 0.3],
    "webhook_timeout_seconds": 2.0,
    "webhook_poll_interval_seconds": 0.2,
}


async def _hook(harness: Harness, url: str, events: list[str]) -> W.CreateWebhookResponse:
    return await webhook_pb2_grpc.WebhookServiceStub(harness.channel).CreateWebhook(
        W.CreateWebhookRequest(webhook=W.Webhook(url=url, events=events, active=True)), metadata=harness.admin
    )


@pytest.mark.slow
async def test_a_server_killed_right_after_a_job_succeeds_delivers_the_event_after_restart_once(
    harness: Harness, tmp_path: Path
) -> None:
    """The outbox row commits with the job's SUCCEEDED: an instance killed with SIGKILL right after
    loses nothing, and the instance started next delivers exactly that event, once. The doomed
    instance is not allowed to reach the receiver's address (its attempts are refused and retried),
    so the event is certainly still undelivered when it dies."""
    await harness.start(**LOCAL)  # the set-up API; it neither runs jobs nor sends
    await harness.servers[0].worker.stop()
    await harness.servers[0].webhooks.stop()
    await harness.add_account("kill_we", "pw-kill")
    harness.steam.add_item(ITEM, files={"scene.pkg": 50_000})
    with receiver() as hook:
        made = await _hook(harness, hook.url, ["download.succeeded"])
        # Its attempts are short, so a lease it holds when killed expires soon (1 s + the margin).
        async with serve_process(
            harness,
            tmp_path / "serve",
            webhook_retry_schedule_seconds="0.3,0.3,0.3,0.3,0.3,0.3",
            webhook_timeout_seconds=1,
        ) as doomed:
            created = await harness.create(str(ITEM))
            done = await harness.wait_for(created.id)
            await doomed.kill()
        assert done.state == D.DOWNLOAD_STATE_SUCCEEDED
        assert hook.received == []

        await harness.start(**LOCAL)
        [arrived] = await hook.wait_for(1, limit=60)
        payload = arrived.verified(made.secret)
        assert payload["type"] == "download.succeeded"
        assert payload["data"]["id"] == created.id
        assert payload["data"]["state"] == "DOWNLOAD_STATE_SUCCEEDED"
        await asyncio.sleep(1.5)  # longer than the retry schedule
        assert len(hook.received) == 1


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_instances_never_send_a_delivery_twice_nor_two_at_once_to_one_endpoint(
    harness: Harness,
) -> None:
    """Eight downloads of a batch run on two instances, each sending webhooks to three endpoints of
    a slow receiver: every (endpoint, event) arrives exactly once, never two at once per endpoint,
    and batch.finished carries the batch as the REST API shows it."""
    items = [ITEM + number for number in range(8)]
    with FakeWebApi(harness.steam) as web, receiver(delay=0.05) as hook:
        settings = {**LOCAL, "steam_web_api_url": web.base_url}
        await harness.start(**settings)
        await harness.start(**settings)
        for number in range(2):
            await harness.add_account(f"pair{number}_we", f"pw-{number}")
        for item in items:
            harness.steam.add_item(item, files={"scene.pkg": 20_000})
        endpoints = {
            f"e{number}": await _hook(
                harness, hook.url_for(f"e{number}"), ["download.succeeded", "batch.finished"]
            )
            for number in range(3)
        }
        batch = (
            await harness.downloads.CreateBatch(
                D.CreateBatchRequest(urls_or_ids=[str(item) for item in items]), metadata=harness.admin
            )
        ).batch
        expected = len(endpoints) * (len(items) + 1)
        await hook.wait_for(expected, limit=90)
        await asyncio.sleep(1.5)
        assert len(hook.received) == expected
        sent = Counter((entry.path, entry.headers["webhook-id"]) for entry in hook.received)
        assert set(sent.values()) == {1}
        assert hook.most_in_flight == {path: 1 for path in endpoints}
        finished = []
        for entry in hook.received:
            payload = entry.verified(endpoints[entry.path].secret)
            if payload["type"] == "batch.finished":
                finished.append(payload["data"])
        assert len(finished) == len(endpoints)
        assert {data["id"] for data in finished} == {batch.id}
        assert finished[0]["state"] == "BATCH_STATE_SUCCEEDED"
        assert finished[0]["succeededCount"] == len(items)
        assert len(finished[0]["downloadIds"]) == len(items)
