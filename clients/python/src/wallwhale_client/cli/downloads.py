"""`download`: Workshop items into a directory, a progress bar each, then a summary table."""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from wallwhale_client.aio import AsyncClient, Progress
from wallwhale_client.cli.exits import EXIT_OK, exit_code
from wallwhale_client.cli.output import Output, error_dict, size_text, state_name
from wallwhale_client.cli.progress import ProgressView
from wallwhale_client.errors import DownloadFailed, WallWhaleError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    download = commands.add_parser("download", help="download Workshop items into a directory")
    download.add_argument("items", nargs="+", metavar="URL", help="Workshop URL or id")
    download.add_argument("--out", type=Path, default=Path("."), help="directory for the zips (default .)")
    download.add_argument("--app", type=int, help="the items' Steam app id (default: asked from Steam)")
    download.add_argument("--skip-cache", action="store_true", help="download again even if cached")


@dataclass
class Outcome:
    item: str
    download_id: str = ""
    state: str = ""
    path: Path | None = None
    size: int = 0
    seconds: float = 0.0
    error: WallWhaleError | None = None


async def download_one(
    client: AsyncClient, item: str, out: Path, view: ProgressView, options: argparse.Namespace
) -> Outcome:
    task = view.add(item)
    outcome = Outcome(item)
    started = time.monotonic()

    def report(update: Progress) -> None:
        outcome.download_id, outcome.state = update.download.id, update.state
        view.update(task, update)

    try:
        outcome.path = await client.download(
            item, out, progress=report, app_id=options.app, skip_cache=options.skip_cache
        )
        outcome.size = outcome.path.stat().st_size
    except WallWhaleError as error:
        outcome.error = error
        outcome.state = (
            "FAILED" if not isinstance(error, DownloadFailed) else state_name(error.download.state)
        )
        view.fail(task, error)
    outcome.seconds = time.monotonic() - started
    return outcome


async def run(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    view = ProgressView(output)
    with view.bars:
        outcomes = await asyncio.gather(
            *(download_one(client, item, args.out, view, args) for item in args.items)
        )
    if output.json:
        output.data(
            [
                {
                    "item": o.item,
                    "downloadId": o.download_id,
                    "state": o.state,
                    "path": str(o.path.resolve()) if o.path else None,
                    "sizeBytes": o.size,
                    "seconds": round(o.seconds, 3),
                    "error": error_dict(o.error) if o.error else None,
                }
                for o in outcomes
            ]
        )
    else:
        output.table(
            "Downloads",
            ["Item", "Download", "State", "File", "Size", "Time"],
            [
                [
                    o.item,
                    o.download_id,
                    o.state if o.error is None else f"{o.state}: {o.error.reason or o.error.message}",
                    str(o.path or ""),
                    size_text(o.size) if o.path else "",
                    f"{o.seconds:.1f}s",
                ]
                for o in outcomes
            ],
        )
    codes = [exit_code(o.error) for o in outcomes if o.error is not None]
    return max(codes, default=EXIT_OK)
