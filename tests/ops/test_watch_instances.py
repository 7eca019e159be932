"""Watches on several instances sharing PostgreSQL: the database decides who checks what.

Claims are taken with FOR UPDATE SKIP LOCKED: two instances claiming at the same moment get disjoint
watches, a leased watch is not claimed again, and a dead instance's lease runs out so its watches
are checked by another (a claim still in use is renewed). Two real servers checking the same 60
watches every second never ask Steam about one watch twice at once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.fakes.webapi import DETAILS_PATH, FakeWebApi
from tests.support.harness import Harness
from wallwhale.core import watch_checks
from wallwhale.db import create_engine, session_factory
from wallwhale.db.models import User, UserRole
from wallwhale.db.types import to_signed64, utcnow
from wallwhale.db.watch_models import Watch, WatchItem, WatchKind

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]
FIRST_ITEM = 3200000000


async def seed(harness: Harness, count: int, interval: int, *, current: bool) -> list[int]:
    """`count` item watches of the first admin, due now; with `current` their stored versions are
    the fake Steam's, so checking them changes nothing."""
    ids = [FIRST_ITEM + index for index in range(count)]
    for workshop_id in ids:  # one small file each: the simulated Web API answers them quickly
        harness.steam.add_item(workshop_id, files={"mod.txt": str(workshop_id).encode()})
    engine = create_engine(harness.database_url)
    now = utcnow()
    try:
        async with session_factory(engine).begin() as session:
            owner = await session.scalar(select(User.id).where(User.role == UserRole.ADMIN))
            assert owner is not None
            for workshop_id in ids:
                watch = Watch(
                    owner_user_id=owner,
                    kind=WatchKind.ITEM,
                    workshop_id=workshop_id,
                    app_id=431960,
                    interval_seconds=interval,
                    next_check_time=now,
                )
                session.add(watch)
                await session.flush()
                manifest = harness.steam.manifest(workshop_id) if current else None
                session.add(
                    WatchItem(
                        watch_id=watch.id,
                        workshop_id=workshop_id,
                        content_handle=to_signed64(manifest["id"]) if manifest else None,
                        item_update_time=datetime.fromtimestamp(manifest["created"], UTC)
                        if manifest
                        else None,
                    )
                )
    finally:
        await engine.dispose()
    return ids


async def test_claims_at_the_same_moment_are_disjoint_and_a_dead_claim_expires(harness: Harness) -> None:
    await seed(harness, 15, 60, current=False)
    engine = create_engine(harness.database_url)
    sessions = session_factory(engine)
    now, lease = utcnow(), timedelta(seconds=30)
    try:
        async with sessions.begin() as first:
            mine = await watch_checks.claim_due(first, "instance-a", now, lease, 10)
            # The first transaction still holds its rows: the second skips them instead of waiting.
            async with sessions.begin() as second:
                theirs = await asyncio.wait_for(
                    watch_checks.claim_due(second, "instance-b", now, lease, 10), 5
                )
        assert (len(mine), len(theirs)) == (10, 5)
        assert not {watch.id for watch in mine} & {watch.id for watch in theirs}
        async with sessions.begin() as third:
            assert await watch_checks.claim_due(third, "instance-c", now, lease, 100) == []
        # instance-a renews its claim (a long round); instance-b dies holding its own.
        async with sessions.begin() as renewing:
            await watch_checks.renew(renewing, "instance-a", [watch.id for watch in mine], now + 3 * lease)
        async with sessions.begin() as later:
            again = await watch_checks.claim_due(later, "instance-c", now + lease, lease, 100)
        assert {watch.id for watch in again} == {watch.id for watch in theirs}
        # instance-a and instance-c died too: once every lease ran out, all are due again.
        async with sessions.begin() as latest:
            rest = await watch_checks.claim_due(latest, "instance-d", now + 3 * lease, lease, 100)
        assert len(rest) == 15
    finally:
        await engine.dispose()


async def test_two_instances_never_check_the_same_watch_at_once(harness: Harness) -> None:
    with FakeWebApi(harness.steam) as web:
        ids = await seed(harness, 60, 1, current=True)
        settings = {
            "steam_web_api_url": web.base_url,
            "watch_min_interval_seconds": 1,
            "watch_poll_interval_seconds": 0.05,
            "watch_claim_size": 8,  # many small rounds, so the two instances compete all the time
        }
        servers = [await harness.start(**settings), await harness.start(**settings)]
        asked_at: dict[int, list[float]] = defaultdict(list)
        seen = 0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # stamps each request as it arrives (every 10 ms)
            with web._lock:
                arrived = web.requests[seen:]
            seen += len(arrived)
            stamp = time.monotonic()
            for path, asked in arrived:
                if path == DETAILS_PATH:
                    for workshop_id in asked:
                        asked_at[workshop_id].append(stamp)
            await asyncio.sleep(0.01)
        for server in servers:
            await server.watch_checker.stop()

    assert all(server.watch_checker.checked > 0 for server in servers), "both instances checked watches"
    assert set(asked_at) == set(ids)
    assert min(len(times) for times in asked_at.values()) >= 2  # every watch was checked again
    closest = min(
        later - earlier for times in asked_at.values() for earlier, later in itertools.pairwise(times)
    )
    # A watch is due again 0.9-1.1 s after its check; two instances checking it at once would ask
    # about it twice within a few milliseconds.
    assert closest > 0.5, closest
