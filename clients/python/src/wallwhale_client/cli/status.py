"""`status`: the server and its dependencies."""

from __future__ import annotations

import argparse
from datetime import timedelta

from wallwhale_client.aio import AsyncClient
from wallwhale_client.cli.exits import EXIT_OK
from wallwhale_client.cli.output import Output, as_dict, size_text


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser("status", help="the server and its dependencies")


async def run(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    status = await client.get_status()
    if output.json:
        output.data(as_dict(status))
        return EXIT_OK
    database = "ok" if status.database.ok else f"failing: {status.database.error}"
    downloader = (
        status.downloader.version if status.downloader.available else f"missing: {status.downloader.error}"
    )
    q = status.queue
    rows = [
        ["Server", f"{status.version} ({status.instance_id}), up {timedelta(seconds=status.uptime.seconds)}"],
        ["Database", f"{status.database.backend} {database}"],
        ["DepotDownloader", downloader],
        [
            "Storage",
            f"{size_text(status.storage.free_bytes)} free, "
            f"archives {size_text(status.storage.archive_bytes)}",
        ],
        [
            "Queue",
            f"{q.queued} queued, {q.running} running, {q.waiting_for_steam_guard} waiting for Steam Guard",
        ],
        ["This instance", f"{q.running_here} of {q.concurrency_limit} running"],
        ["Steam accounts", f"{status.active_steam_accounts} active"],
    ]
    output.table(f"WallWhale at {client.address}", ["", ""], rows)
    return EXIT_OK
