"""Watches at scale: one check cycle of 10,000 watched items against the simulated Steam Web API.

    .venv/bin/python bench/watches.py                       # SQLite, 10,000 items, about 1 minute
    .venv/bin/python bench/watches.py --database postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/watches.py --items 10000 --claim-size 1000

The checker is the server's own (worker.watch_checker.WatchChecker over core.watch_checks and
core.watches) on a fresh, migrated database; the simulated Web API (tests/fakes/webapi.py, answering
from a fake Steam world of small items) runs in a process of its own, so this process's CPU time is
the checker's: Python, SQLAlchemy, the database driver, and SQLite itself (PostgreSQL's server
process is not counted). Requests are counted by the Web API client's own counter
(wallwhale_steam_webapi_requests_total), so they are the requests the checker really sent.

Two shapes, each with every watch made due at once (the worst case: a whole cycle in one go):
  items        --items watches of one item each
  collections  --items / 100 collection watches of 100 items each
and for each, two cycles: `quiet` (nothing changed on Steam) and `1% changed` (one item in a hundred
has a new version: a download is queued through core.downloads.create and a version recorded; no
worker runs, so the jobs stay queued).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from support import command, database, machine  # isort: skip

from prometheus_client import REGISTRY
from sqlalchemy import select, update

from tests.fakes import steam as fake_steam
from tests.fakes.steam import FakeSteam
from tests.fakes.webapi import FakeWebApi
from tests.support.database import prepare_database
from wallwhale.core import downloads
from wallwhale.core.watches import Rules
from wallwhale.db import create_engine, session_factory
from wallwhale.db.models import User, UserRole
from wallwhale.db.types import to_signed64, utcnow
from wallwhale.db.watch_models import Watch, WatchItem, WatchKind
from wallwhale.steam.webapi import SteamWebApi
from wallwhale.worker.watch_checker import CheckerSettings, WatchChecker

FIRST_ITEM = 3300000000
FIRST_COLLECTION = 3390000000
PER_COLLECTION = 100


class CachedWebApi(FakeWebApi):
    """The simulated Web API, remembering each answer until the world file changes (the fake
    re-reads the world for every id, which would make it, not the checker, the bottleneck)."""

    def __init__(self, world_file: Path):
        super().__init__(SimpleNamespace(world_file=world_file))  # type: ignore[arg-type]
        self._stamp = 0
        self._cached_world: dict[str, Any] = {}
        self._answers: dict[tuple[str, int], dict[str, Any]] = {}

    def _world(self) -> dict[str, Any]:
        stamp = self.steam.world_file.stat().st_mtime_ns
        if stamp != self._stamp:
            self._stamp, self._cached_world, self._answers = stamp, super()._world(), {}
        return self._cached_world

    def details(self, workshop_id: int) -> dict[str, Any]:
        self._world()
        key = ("details", workshop_id)
        if key not in self._answers:
            self._answers[key] = super().details(workshop_id)
        return self._answers[key]


def serve_web_api(world_file: str, ready: Any) -> None:
    api = CachedWebApi(Path(world_file)).start()
    ready.send(api.base_url)
    ready.recv()  # until the bench is done
    api.stop()


def write_world(
    steam: FakeSteam, ids: list[int], collections: dict[int, list[int]], version: int = 1
) -> None:
    """Small items (one file each: the fake's manifests stay cheap), written in one go. The fake's
    add_item writes the whole world per item; the bench fills its world directly instead."""
    items = steam._world["items"]
    for workshop_id in ids:
        files = {"mod.txt": f"{workshop_id} v{version}".encode()}
        items[str(workshop_id)] = fake_steam._item(workshop_id, 431960, files, None, {}, None)
    steam._world["collections"] = {
        str(collection): {"app_id": 431960, "title": f"Collection {collection}", "children": children}
        for collection, children in collections.items()
    }
    steam._save()


def requests_sent() -> float:
    return sum(
        REGISTRY.get_sample_value("wallwhale_steam_webapi_requests_total", {"result": r}) or 0.0
        for r in ("ok", "error")
    )


async def seed(url: str, api: SteamWebApi, ids: list[int], collections: dict[int, list[int]]) -> None:
    """The watches, with the versions Steam showed when they were made (as CreateWatch stores them)."""
    details = await api.item_details(ids)
    engine = create_engine(url)
    now = utcnow()
    try:
        async with session_factory(engine).begin() as session:
            owner = await session.scalar(select(User.id).where(User.role == UserRole.ADMIN))
            targets = (
                [(WatchKind.COLLECTION, collection, children) for collection, children in collections.items()]
                if collections
                else [(WatchKind.ITEM, workshop_id, [workshop_id]) for workshop_id in ids]
            )
            for kind, workshop_id, children in targets:
                watch = Watch(
                    owner_user_id=owner,
                    kind=kind,
                    workshop_id=workshop_id,
                    app_id=431960,
                    interval_seconds=900,
                    next_check_time=now,
                )
                session.add(watch)
                await session.flush()
                session.add_all(
                    WatchItem(
                        watch_id=watch.id,
                        workshop_id=child,
                        content_handle=to_signed64(details[child].content_handle or 0),
                        item_update_time=details[child].time_updated,
                    )
                    for child in children
                )
    finally:
        await engine.dispose()


async def cycle(url: str, checker: WatchChecker) -> dict[str, float]:
    engine = create_engine(url)
    try:
        async with session_factory(engine).begin() as session:
            await session.execute(
                update(Watch).values(next_check_time=utcnow(), lease_owner=None, lease_expire_time=None)
            )
    finally:
        await engine.dispose()
    sent, cpu, wall = requests_sent(), time.process_time(), time.perf_counter()
    rounds = checked = changed = 0
    while (done := await checker.check_round()).claimed:
        rounds, checked, changed = rounds + 1, checked + done.claimed, changed + done.changed
    return {
        "watches": checked,
        "rounds": rounds,
        "changed": changed,
        "requests": requests_sent() - sent,
        "cpu": time.process_time() - cpu,
        "wall": time.perf_counter() - wall,
    }


async def run_shape(args: argparse.Namespace, shape: str) -> list[tuple[str, dict[str, float]]]:
    ids = [FIRST_ITEM + index for index in range(args.items)]
    collections = (
        {
            FIRST_COLLECTION + index: ids[index * PER_COLLECTION : (index + 1) * PER_COLLECTION]
            for index in range(len(ids) // PER_COLLECTION)
        }
        if shape == "collections"
        else {}
    )
    results = []
    with tempfile.TemporaryDirectory() as scratch, database(args.database, Path(scratch)) as url:
        await prepare_database(url)
        steam = FakeSteam(Path(scratch) / "steam")
        write_world(steam, ids, collections)
        here, there = multiprocessing.get_context("spawn").Pipe()
        child = multiprocessing.get_context("spawn").Process(
            target=serve_web_api, args=(str(steam.world_file), there)
        )
        child.start()
        api = SteamWebApi(here.recv(), timeout_seconds=60)
        try:
            await seed(url, api, ids, collections)
            engine = create_engine(url)
            sessions = session_factory(engine)

            async def limits_for(session: Any, principal: Any) -> downloads.JobLimits:
                return await downloads.job_limits(session, principal, 3)

            checker = WatchChecker(
                sessions,
                api,
                CheckerSettings(
                    poll_seconds=1,
                    claim_size=args.claim_size,
                    lease_seconds=120,
                    rules=Rules(300, 900, 3, 60, 3),
                ),
                "bench",
                lambda: datetime.now(UTC),
                limits_for,
            )
            results.append((f"{shape}, quiet", await cycle(url, checker)))
            write_world(steam, ids[::100], collections, version=2)  # one item in a hundred has a new version
            results.append((f"{shape}, 1% changed", await cycle(url, checker)))
            await engine.dispose()
        finally:
            await api.aclose()
            here.send("done")
            child.join(10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--claim-size", type=int, default=1000)
    parser.add_argument("--database", default="sqlite", help="sqlite, or a postgresql:// URL")
    parser.add_argument("--shape", choices=("items", "collections", "both"), default="both")
    args = parser.parse_args()
    print(machine())
    print(command(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    shapes = ("items", "collections") if args.shape == "both" else (args.shape,)
    rows = [row for shape in shapes for row in asyncio.run(run_shape(args, shape))]
    print(
        f"\n{args.items} watched items, claims of {args.claim_size}, database {args.database.split('@')[-1]}"
    )
    print(
        f"{'cycle':<26}{'watches':>8}{'rounds':>8}{'changed':>9}{'Web API':>9}"
        f"{'CPU s':>8}{'wall s':>8}{'CPU ms/1k items':>17}"
    )
    for name, figures in rows:
        print(
            f"{name:<26}{figures['watches']:>8.0f}{figures['rounds']:>8.0f}{figures['changed']:>9.0f}"
            f"{figures['requests']:>9.0f}{figures['cpu']:>8.2f}{figures['wall']:>8.2f}"
            f"{figures['cpu'] / args.items * 1e6:>17.1f}"
        )


if __name__ == "__main__":
    main()
