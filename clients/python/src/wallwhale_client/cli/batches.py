"""`batch`: several items or a Workshop collection into one zip, with a folder per item."""

from __future__ import annotations

import argparse
from pathlib import Path

from wallwhale_client.aio import AsyncClient, BatchProgress
from wallwhale_client.cli.exits import EXIT_FAILURE, EXIT_OK
from wallwhale_client.cli.output import Output, size_text
from wallwhale_client.v1 import download_pb2


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = commands.add_parser(
        "batch", help="several items or a Workshop collection into one zip (a folder per item)"
    )
    batch.add_argument("items", nargs="+", metavar="URL", help="Workshop URL or id (collections expand)")
    batch.add_argument("--out", type=Path, default=Path("."), help="directory for the zip (default .)")
    batch.add_argument("--app", type=int, help="the items' Steam app id (default: asked from Steam)")
    batch.add_argument("--skip-cache", action="store_true", help="download again even if cached")


async def run(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    """Several items (or a collection) in one batch, saved as one zip with a folder per item."""
    shown = {"final": -1}

    def report(progress: BatchProgress) -> None:
        if output.json or progress.final_count == shown["final"]:
            return
        shown["final"] = progress.final_count
        output.err.print(
            f"batch {progress.batch.id}: {progress.final_count} of {progress.batch.total_count} final",
            markup=False,
        )

    saved = await client.download_batch(
        args.items, args.out, progress=report, app_id=args.app, skip_cache=args.skip_cache
    )
    batch = saved.batch
    state = download_pb2.BatchState.Name(batch.state).removeprefix("BATCH_STATE_")
    if output.json:
        output.data(
            {
                "batchId": batch.id,
                "state": state,
                "path": str(saved.path.resolve()),
                "sizeBytes": saved.info.size,
                "total": batch.total_count,
                "succeeded": batch.succeeded_count,
                "failed": batch.failed_count,
                "cancelled": batch.cancelled_count,
                "missing": [str(item) for item in saved.info.missing],
            }
        )
    else:
        output.table(
            "Batch",
            ["ID", "State", "Succeeded", "Failed", "Cancelled", "File", "Size"],
            [
                [
                    batch.id,
                    state,
                    f"{batch.succeeded_count}/{batch.total_count}",
                    batch.failed_count,
                    batch.cancelled_count,
                    str(saved.path),
                    size_text(saved.info.size),
                ]
            ],
        )
    # Partly succeeded: the zip is there, but not everything asked for is in it.
    return EXIT_OK if batch.state == download_pb2.BATCH_STATE_SUCCEEDED else EXIT_FAILURE
