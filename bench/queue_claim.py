"""One claim: how long `core.queue.claim_next` takes with a long queue, and whom it picks.

    .venv/bin/python bench/queue_claim.py --queued 5000
    .venv/bin/python bench/queue_claim.py --queued 5000 --database postgresql://postgres@127.0.0.1:5432/test

The database (a SQLite file, or a scratch PostgreSQL database next to the URL's, dropped after) gets
the schema of the models, one Steam account, and two API keys of two users: the busy key with
`--queued` queued jobs and `--running` running ones, and the quiet key with a single job, queued
last. Each claim runs in a transaction that is rolled back, so every claim sees the same queue; the
figures are the median and p95 of `--claims` claims, and which key the claim picked (a fair queue
picks the quiet key's one job, since the busy key runs jobs already).

To compare two versions of the code in one run, point PYTHONPATH at each one's `server/` in turn:

    for tree in /tmp/before/server server; do PYTHONPATH=$tree .venv/bin/python bench/queue_claim.py; done
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from support import command, database, machine, percentile  # isort: skip

from sqlalchemy import event

from wallwhale.core import queue
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.db.models import ApiKey, Base, Download, DownloadState, SteamAccount, User
from wallwhale.db.types import utcnow
from wallwhale.ids import new_id

ITEM = 3_200_000_001


async def _fill(sessions, queued: int, running: int) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    now = utcnow()
    async with sessions.begin() as session:
        keys = []
        for name in ("busy", "quiet"):
            user = User(email=f"{name}@example.test", password_hash="-")  # noqa: S106 (no login)
            session.add(user)
            await session.flush()
            key = ApiKey(name=name, owner_user_id=user.id, prefix=name, key_hash=new_id() * 2, scopes=[])
            session.add(key)
            await session.flush()
            keys.append(key)
        busy, quiet = keys
        session.add(SteamAccount(username="bench", encrypted_password=b"x", login_id=1))

        def job(key: ApiKey, number: int, state: DownloadState, age: int) -> Download:
            return Download(
                id=new_id(),
                workshop_id=ITEM + number,
                app_id=431960,
                state=state,
                priority=2,
                owner_user_id=key.owner_user_id,
                api_key_id=key.id,
                create_time=now - timedelta(seconds=age),
                update_time=now,
                lease_owner="elsewhere" if state is DownloadState.RUNNING else None,
                lease_expire_time=now + timedelta(hours=1) if state is DownloadState.RUNNING else None,
            )

        total = queued + running
        session.add_all(job(busy, n, DownloadState.RUNNING, total - n) for n in range(running))
        session.add_all(job(busy, n, DownloadState.QUEUED, total - n) for n in range(running, total))
        session.add(job(quiet, total, DownloadState.QUEUED, 0))
    return busy.id, quiet.id


async def run(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="wallwhale-bench-") as temporary,
        database(args.database, Path(temporary)) as url,
    ):
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
            sessions = session_factory(engine)
            busy, quiet = await _fill(sessions, args.queued, args.running)
            statements: list[float] = []  # the time of each SQL statement of the claims

            @event.listens_for(engine.sync_engine, "before_cursor_execute")
            def _began(connection, *_: object) -> None:  # type: ignore[no-untyped-def]
                connection.info["began"] = time.perf_counter()

            @event.listens_for(engine.sync_engine, "after_cursor_execute")
            def _ended(connection, *_: object) -> None:  # type: ignore[no-untyped-def]
                statements.append(time.perf_counter() - connection.info["began"])

            times: list[float] = []
            picked: dict[str, int] = {}
            for _ in range(args.claims):
                async with sessions() as session:
                    began = time.perf_counter()
                    async with session.begin():
                        result = await queue.claim_next(session, "bench", utcnow(), timedelta(seconds=30))
                        times.append(time.perf_counter() - began)
                        await session.rollback()
                counted = len(statements)
                claim = result.claim
                owner = "none"
                if claim is not None:
                    async with sessions() as session:
                        download = await session.get(Download, claim.download_id)
                        assert download is not None
                        owner = {busy: "busy key", quiet: "quiet key"}.get(download.api_key_id or "", "?")
                picked[owner] = picked.get(owner, 0) + 1
                del statements[counted:]  # the look-up of whom it picked is not the claim's
        finally:
            await engine.dispose()
    print(machine())
    print(command())
    backend = "sqlite" if args.database == "sqlite" else "postgresql"
    print(
        f"claim_next, {backend}, {args.queued} queued + {args.running} running of one key,"
        " 1 queued of another:"
        f" median {statistics.median(times) * 1e3:.2f} ms, p95 {percentile(times, 0.95) * 1e3:.2f} ms"
        f" over {args.claims} claims; per claim {len(statements) / args.claims:.1f} SQL statements taking"
        f" {sum(statements) * 1e3 / args.claims:.2f} ms; picked {picked}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", default="sqlite", help="sqlite, or a postgresql:// URL")
    parser.add_argument("--queued", type=int, default=5000)
    parser.add_argument("--running", type=int, default=2)
    parser.add_argument("--claims", type=int, default=50)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
