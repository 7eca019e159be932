"""Several server instances on one PostgreSQL database, behind the real Envoy (issue 8).

Three instances of the real server share one database; Envoy spreads calls over them per request.
Jobs run with the test DepotDownloader (tests/support/harness.py), whose run log says what ran,
when, and as which account. Each test says what could only be explained by the database being
the one place the instances agree through (claims, LISTEN/NOTIFY, rate-limit buckets, key rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from tests.support.envoy import Envoy, proxy_socket, running_envoy
from tests.support.harness import FINAL, Harness, rpc_error, seconds
from tests.support.server import error_info
from wallwhale.app import WallWhaleServer
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, download_pb2, download_pb2_grpc

D = download_pb2
ITEM = 2831240000
pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


@contextlib.asynccontextmanager
async def three_behind_envoy(
    harness: Harness, *per_instance: dict[str, Any], **common: Any
) -> AsyncIterator[tuple[Envoy, list[WallWhaleServer]]]:
    """Three instances (A, B, C) on the harness's database, each with `common` plus its own
    settings, and Envoy in front of them over their sockets, all three healthy."""
    own = list(per_instance) or [{}, {}, {}]
    servers = [await harness.start(grpc_socket=proxy_socket(), **common, **settings) for settings in own]
    async with running_envoy(harness.data_dir.parent / "envoy", [s.upstream for s in servers]) as envoy:
        yield envoy, servers


def downloads_at(channel: aio.Channel) -> download_pb2_grpc.DownloadServiceStub:
    return download_pb2_grpc.DownloadServiceStub(channel)


async def wait_final(
    stub: download_pb2_grpc.DownloadServiceStub, metadata: Any, ids: list[str], limit: float
) -> list[download_pb2.Download]:
    deadline = time.monotonic() + limit
    while True:
        done = [(await stub.GetDownload(D.GetDownloadRequest(id=i), metadata=metadata)).download for i in ids]
        if all(d.state in FINAL for d in done):
            return done
        assert time.monotonic() < deadline, [D.DownloadState.Name(d.state) for d in done]
        await asyncio.sleep(0.1)


def job_runs(harness: Harness) -> list[dict[str, Any]]:
    """The fake DepotDownloader's download runs (not the `-V` probes)."""
    return [run for run in harness.steam.runs() if "-pubfile" in run.get("argv", [])]


async def test_jobs_created_through_envoy_run_once_each_spread_over_the_instances(harness: Harness) -> None:
    accounts = ["ann_mi", "bob_mi", "cat_mi", "dan_mi"]
    items = [ITEM + n for n in range(12)]
    async with three_behind_envoy(harness, max_concurrent_downloads=2) as (envoy, servers):
        for name in accounts:
            await harness.add_account(name, f"pw-{name}")
        for item in items:
            harness.steam.add_item(
                item, files={f"f{i}.bin": 1000 for i in range(4)}, behaviour={"file_delay": seconds(0.1)}
            )

        # Which instance's engine holds which job, sampled while they run.
        held: dict[str, set[int]] = defaultdict(set)
        sampling = True

        async def sample() -> None:
            while sampling:
                for index, server in enumerate(servers):
                    for job_id in list(server.worker.jobs):
                        held[job_id].add(index)
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        try:
            async with aio.insecure_channel(envoy.grpc_target) as channel:
                stub = downloads_at(channel)
                ids = [
                    (
                        await stub.CreateDownload(
                            D.CreateDownloadRequest(url_or_id=str(item)), metadata=harness.admin
                        )
                    ).download.id
                    for item in items
                ]
                done = await wait_final(stub, harness.admin, ids, limit=45)
        finally:
            sampling = False
            await sampler

    assert [D.DownloadState.Name(d.state) for d in done] == ["DOWNLOAD_STATE_SUCCEEDED"] * len(items)
    assert [d.attempt for d in done] == [1] * len(items)
    # Exactly one DepotDownloader run per job, each ended well; never two at once on one account.
    runs = job_runs(harness)
    pubfiles = Counter(int(run["argv"][run["argv"].index("-pubfile") + 1]) for run in runs)
    assert pubfiles == Counter(items)
    assert [run["exit_code"] for run in runs] == [0] * len(items)
    for name in accounts:
        assert harness.steam.max_overlap(username=name) <= 1, name
    assert harness.steam.max_overlap() <= len(accounts)
    # Every job was held by one instance only, and the work was shared.
    assert set(held) == set(ids), "a job ran too briefly to be seen"
    assert all(len(owners) == 1 for owners in held.values()), held
    assert len(set().union(*held.values())) >= 2, held


async def test_a_watcher_on_one_instance_sees_live_progress_of_a_job_running_on_another(
    harness: Harness,
) -> None:
    """A and C run no jobs; only B does. Polls and heartbeats are a minute, so events reach A's
    watcher within the job's few seconds only through LISTEN/NOTIFY."""
    slow = {"queue_poll_interval_seconds": 60.0, "watch_heartbeat_seconds": 60.0}
    idle = {"max_concurrent_downloads": 0}
    async with three_behind_envoy(harness, idle, {}, idle, **slow) as (envoy, servers):
        await harness.add_account("eve_mi", "pw-eve")
        harness.steam.add_item(
            ITEM, files={f"f{i}.bin": 1000 for i in range(20)}, behaviour={"file_delay": seconds(0.15)}
        )
        async with aio.insecure_channel(envoy.grpc_target) as channel:
            created = (
                await downloads_at(channel).CreateDownload(
                    D.CreateDownloadRequest(url_or_id=str(ITEM)), metadata=harness.admin
                )
            ).download
        at_a = downloads_at(harness.channels[0])
        stream = at_a.WatchDownload(
            D.WatchDownloadRequest(id=created.id, exclude_logs=True), metadata=harness.admin
        )
        live: list[float] = []
        kinds: list[str | None] = []
        started = time.monotonic()
        async for event in stream:
            kinds.append(event.WhichOneof("event"))
            if event.HasField("progress") and 0 < event.progress.percent < 100:
                current = (
                    await at_a.GetDownload(D.GetDownloadRequest(id=created.id), metadata=harness.admin)
                ).download
                if current.state == D.DOWNLOAD_STATE_RUNNING and created.id in servers[1].worker.jobs:
                    live.append(time.monotonic())
        finished = time.monotonic()

    assert kinds[-1] == "finished", kinds
    final = (
        await downloads_at(harness.channels[1]).GetDownload(
            D.GetDownloadRequest(id=created.id), metadata=harness.admin
        )
    ).download
    assert final.state == D.DOWNLOAD_STATE_SUCCEEDED
    # Progress reached A while B still ran the job, spread over its run rather than all at the end.
    assert len(live) >= 3, kinds
    assert finished - live[0] > 1.0, (live[0] - started, finished - started)
    assert finished - started < 30  # far below the minute-long polls
    [run] = job_runs(harness)
    assert run["exit_code"] == 0


async def create_key(
    admin_api: admin_pb2_grpc.AdminServiceStub, admin: Any, **limits: Any
) -> tuple[str, Any]:
    response = await admin_api.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(
            api_key=admin_pb2.ApiKey(
                name="instances", scopes=["download:*"], limits=admin_pb2.ApiKeyLimits(**limits)
            )
        ),
        metadata=admin,
    )
    return response.api_key.id, (("x-api-key", response.plaintext_key),)


async def refused_within(stub: download_pb2_grpc.DownloadServiceStub, key: Any, seconds: float) -> bool:
    """Whether `stub` refuses `key` within `seconds` (calling it until then)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await stub.ListDownloads(D.ListDownloadsRequest(), metadata=key)
        except grpc.RpcError:
            return True
        await asyncio.sleep(0.002)
    return False


async def test_a_key_revoked_on_one_instance_is_refused_by_the_others_and_rate_limits_are_shared(
    harness: Harness,
) -> None:
    async with three_behind_envoy(harness) as (envoy, _):
        stubs = [downloads_at(channel) for channel in harness.channels]
        admin_a = admin_pb2_grpc.AdminServiceStub(harness.channels[0])
        listing = D.ListDownloadsRequest()

        # Revoked through A: A refuses the very next call; B and C, which remember the key (for up
        # to api_key_cache_seconds), refuse as soon as A's NOTIFY reaches them (milliseconds), and
        # from then on every call is refused, through Envoy's round robin too.
        key_id, key = await create_key(admin_a, harness.admin)
        for stub in stubs:
            await stub.ListDownloads(listing, metadata=key)
        await admin_a.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=key_id), metadata=harness.admin)
        error = await rpc_error(stubs[0].ListDownloads(listing, metadata=key))
        assert error_info(error).reason == "API_KEY_REVOKED"
        for stub in stubs[1:]:
            assert await refused_within(stub, key, seconds=0.5)
        async with aio.insecure_channel(envoy.grpc_target) as channel:
            through_envoy = [downloads_at(channel)] * 3
            for stub in [*stubs, *through_envoy]:
                error = await rpc_error(stub.ListDownloads(listing, metadata=key))
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
                assert error_info(error).reason == "API_KEY_REVOKED"

            # One bucket for the key over all instances: 15 calls at once, 5 to each instance,
            # pass only as many as the burst (a minute's rate adds nothing within the test).
            _, limited = await create_key(admin_a, harness.admin, requests_per_minute=1, burst=3)

            async def call(stub: download_pb2_grpc.DownloadServiceStub) -> grpc.StatusCode:
                try:
                    await stub.ListDownloads(listing, metadata=limited)
                except grpc.RpcError as error:
                    return error.code()
                return grpc.StatusCode.OK

            codes = await asyncio.gather(*(call(stub) for stub in stubs * 5))
            assert Counter(codes) == {grpc.StatusCode.OK: 3, grpc.StatusCode.RESOURCE_EXHAUSTED: 12}
            after = [await call(stub) for stub in [*stubs, downloads_at(channel)]]
            assert after == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 4
