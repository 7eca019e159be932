"""Webhook delivery: events written to the outbox, sent to a local receiver, until all arrived.

    .venv/bin/python bench/webhook_delivery.py --endpoints 20 --events 50
    .venv/bin/python bench/webhook_delivery.py --database postgresql://postgres@127.0.0.1:5432/test

One server instance in this process (its WebhookSender, WALLWHALE_WEBHOOK_CONCURRENCY at its default
of 8) on a fresh database; `--endpoints` endpoints of one user at a receiver on 127.0.0.1 (an admin's
allowance for it); `--events` events committed for that user, one transaction each, one after another, so
every event makes one delivery per endpoint. Printed: deliveries per second from the first commit to
the last arrival, and commit -> arrival latency (p50, p99, max; the event's time is in the payload).
Each endpoint gets at most one delivery at a time, so the rate is bounded by endpoints x round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import datetime
from pathlib import Path

from support import command, database, machine, percentile  # isort: skip

from tests.support.database import prepare_database
from tests.support.server import make_settings
from tests.support.webhook_receiver import receiver
from wallwhale.app import WallWhaleServer
from wallwhale.config import to_async_url
from wallwhale.core import webhooks
from wallwhale.core.identity import Principal
from wallwhale.core.webhooks import TargetRules, WebhookInput
from wallwhale.db.models import UserRole
from wallwhale.db.types import utcnow
from wallwhale.network import parse_networks


async def run(url: str, data_dir: Path, endpoints: int, events: int) -> None:
    admin = await prepare_database(url)
    server = WallWhaleServer(
        make_settings(
            url,
            data_dir,
            webhook_http_hosts=["127.0.0.1"],
            webhook_allowed_networks=["127.0.0.1/32"],
            max_concurrent_downloads=0,
        )
    )
    await server.start()
    owner = Principal("user", admin.user_id, UserRole.ADMIN, frozenset({"webhook:*"}))
    rules = TargetRules(frozenset({"127.0.0.1"}), parse_networks(["127.0.0.1/32"]))
    arrivals: list[float] = []
    try:
        with receiver() as hook:
            async with server.sessions.begin() as session:
                for number in range(endpoints):
                    values = WebhookInput(hook.url_for(f"e{number}"), ["download.succeeded"], "", True)
                    await webhooks.create(session, owner, values, server.webhooks._keyring, rules)
            started = time.monotonic()

            async def commit(number: int) -> None:
                async with server.sessions.begin() as session:
                    now = utcnow()
                    payload = {"data": {"n": number, "committed": now.isoformat()}}
                    await webhooks.enqueue_event(
                        session, "download.succeeded", admin.user_id, f"downloads/{number}", payload, now
                    )

            for number in range(events):  # one after another, as jobs end
                await commit(number)
            total = endpoints * events
            await hook.wait_for(total, limit=600)
            elapsed = time.monotonic() - started
            for entry in hook.received:
                committed = datetime.fromisoformat(entry.json["data"]["committed"])
                arrivals.append(entry.arrived - committed.timestamp())
            print(f"deliveries       {total} ({endpoints} endpoints x {events} events)")
            print(f"wall time        {elapsed:.2f} s")
            print(f"rate             {total / elapsed:.0f} deliveries/s")
            p50, p99 = percentile(arrivals, 0.5), percentile(arrivals, 0.99)
            print(
                f"commit -> arrival p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms,"
                f" max {max(arrivals) * 1000:.0f} ms"
            )
            print(f"most in flight per endpoint: {max(hook.most_in_flight.values())}")
    finally:
        await server.stop(grace=0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--database", default="sqlite", help="sqlite, or a postgresql:// URL")
    options = parser.parse_args()
    print(machine())
    print(command())
    with tempfile.TemporaryDirectory() as scratch, database(options.database, Path(scratch)) as url:
        asyncio.run(run(to_async_url(url), Path(scratch), options.endpoints, options.events))


if __name__ == "__main__":
    main()
