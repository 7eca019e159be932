"""The Steam account pool: an account Steam throttles rests, and the queue is served by the others."""

from __future__ import annotations

import asyncio
import time

import grpc

from tests.support.harness import Harness, describe, rpc_error
from wallwhale.v1 import admin_pb2, download_pb2

D = download_pb2
ITEMS = [2900000001, 2900000002, 2900000003]


async def account(harness: Harness, account_id: str) -> admin_pb2.SteamAccount:
    response = await harness.admin_api.GetSteamAccount(
        admin_pb2.GetSteamAccountRequest(id=account_id), metadata=harness.admin
    )
    return response.steam_account


async def test_a_throttled_account_cools_down_and_another_serves_its_queued_jobs(harness: Harness) -> None:
    await harness.start(steam_throttle_cooldown_seconds=600, max_attempts=5)
    alice = await harness.add_account("alice_we", "pw", login_result="AccountLoginDeniedThrottle")
    for item in ITEMS:
        harness.steam.add_item(item, files={"scene.pkg": 20_000})
    jobs = [await harness.create(str(item)) for item in ITEMS]

    deadline = time.monotonic() + 30
    while (await account(harness, alice)).status != admin_pb2.STEAM_ACCOUNT_STATUS_COOLING_DOWN:
        assert time.monotonic() < deadline, "alice never cooled down"
        await asyncio.sleep(0.05)
    cooling = await account(harness, alice)
    assert "throttl" in cooling.status_reason.lower() or "AccountLoginDeniedThrottle" in cooling.status_reason
    rest = cooling.cooldown_end_time.ToDatetime().timestamp() - time.time()
    assert 500 < rest <= 600
    await asyncio.sleep(0.5)  # several dispatcher ticks: nothing may run on alice, nothing may fail
    for job in jobs:
        assert (await harness.get(job.id)).state == D.DOWNLOAD_STATE_QUEUED

    bob = await harness.add_account("bob_we", "pw")
    for job in jobs:
        done = await harness.wait_for(job.id)
        assert done.state == D.DOWNLOAD_STATE_SUCCEEDED, describe(await harness.watch(job.id))
        assert done.steam_account_id == bob
    runs = [run for run in harness.steam.runs() if "-pubfile" in run["argv"]]
    by_account = [run["argv"][run["argv"].index("-username") + 1] for run in runs]
    assert by_account.count("alice_we") == 1  # throttled once, then left alone
    assert by_account.count("bob_we") == len(ITEMS)
    assert (await account(harness, alice)).downloads_failed == 1
    assert (await account(harness, bob)).downloads_run == len(ITEMS)


async def test_the_queue_serves_high_priority_first_then_oldest_and_refuses_unknown_priorities(
    harness: Harness,
) -> None:
    await harness.start(max_concurrent_downloads=0)  # this instance only queues
    items = [2900000101 + number for number in range(6)]
    for item in items:
        harness.steam.add_item(item, files={"a.bin": 100})
    priorities = [D.DOWNLOAD_PRIORITY_LOW, D.DOWNLOAD_PRIORITY_NORMAL, D.DOWNLOAD_PRIORITY_HIGH] * 2
    jobs = [await harness.create(str(item), priority=p) for item, p in zip(items, priorities, strict=True)]
    error = await rpc_error(
        harness.downloads.CreateDownload(
            D.CreateDownloadRequest(url_or_id=str(items[0]), priority=99), metadata=harness.admin
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "priority" in (error.details() or "")

    await harness.add_account("alice_we", "pw")  # one account: the jobs run one by one
    await harness.start(max_concurrent_downloads=1)
    for job in jobs:
        assert (await harness.wait_for(job.id)).state == D.DOWNLOAD_STATE_SUCCEEDED
    runs = [run for run in harness.steam.runs() if "-pubfile" in run["argv"]]
    order = [int(run["argv"][run["argv"].index("-pubfile") + 1]) for run in runs]
    by_priority = sorted(
        zip(items, priorities, strict=True), key=lambda pair: (-pair[1], items.index(pair[0]))
    )
    assert order == [item for item, _ in by_priority]
