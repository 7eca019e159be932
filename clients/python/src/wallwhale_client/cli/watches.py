"""`watches add|list|show|versions|pause|resume|interval|remove`: items and collections the server follows,
downloading each new version by itself."""

from __future__ import annotations

import argparse
from typing import Any

from wallwhale_client.aio import AsyncClient
from wallwhale_client.cli.exits import EXIT_OK
from wallwhale_client.cli.output import Output, as_dict, duration_text, parse_duration, when
from wallwhale_client.v1 import watch_pb2

COLUMNS = ["ID", "Item", "Kind", "Title", "State", "Interval", "Items", "Next check"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    watches = commands.add_parser(
        "watches", help="items and collections followed: each new version is downloaded"
    ).add_subparsers(dest="action", required=True)
    add = watches.add_parser("add", help="watch an item or a collection (its current version is downloaded)")
    add.add_argument("url_or_id", metavar="URL_OR_ID", help="Workshop URL or id of an item or a collection")
    add.add_argument("--interval", help="how often it is checked, e.g. 15m, 1h, 1d (default: the server's)")
    add.add_argument(
        "--delete-removed",
        action="store_true",
        help="collections: delete the downloads of an item that leaves the collection",
    )
    watches.add_parser("list", help="newest first").add_argument("--limit", type=int, default=50)
    watches.add_parser("show", help="one watch with its items").add_argument("id")
    versions = watches.add_parser("versions", help="what changed and when, newest first")
    versions.add_argument("id")
    versions.add_argument("--limit", type=int, default=50)
    interval = watches.add_parser("interval", help="check it at another interval")
    interval.add_argument("id")
    interval.add_argument("interval", metavar="DURATION", help="e.g. 15m, 1h, 1d")
    for name, text in (
        ("pause", "stop checking until resumed"),
        ("resume", "check again at its interval"),
        ("remove", "stop watching (its downloads stay)"),
    ):
        watches.add_parser(name, help=text).add_argument("id")


def kind_name(kind: watch_pb2.WatchKind.ValueType) -> str:
    return watch_pb2.WatchKind.Name(kind).removeprefix("WATCH_KIND_").lower()


def watch_row(watch: watch_pb2.Watch) -> list[Any]:
    state = watch_pb2.WatchState.Name(watch.state).removeprefix("WATCH_STATE_")
    if watch.state_message:
        state += f" ({watch.state_message})"
    return [
        watch.id,
        watch.workshop_id,
        kind_name(watch.kind),
        watch.title,
        state,
        duration_text(watch.interval.seconds),
        watch.item_count,
        "" if watch.paused else when(watch, "next_check_time"),
    ]


def show(output: Output, watch: watch_pb2.Watch) -> None:
    if output.json:
        output.data(as_dict(watch))
        return
    output.table(None, COLUMNS, [watch_row(watch)])
    if watch.last_error:
        output.line(f"last error ({watch.consecutive_failures} in a row): {watch.last_error}")
    if watch.items:
        rows = [
            [
                item.workshop_id,
                item.title,
                "yes" if item.available else f"no ({item.unavailable_reason})",
                when(item, "update_time"),
                item.download_id,
            ]
            for item in watch.items
        ]
        output.table("Items", ["Item", "Title", "Available", "Updated", "Download"], rows)


async def run(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    if args.action == "add":
        interval = parse_duration(args.interval, "--interval") if args.interval else None
        watch = await client.create_watch(
            args.url_or_id, interval=interval, delete_removed_downloads=args.delete_removed
        )
        show(output, watch)
    elif args.action == "list":
        watches = await client.list_watches(limit=args.limit)
        if output.json:
            output.data([as_dict(watch) for watch in watches])
        else:
            output.table(None, COLUMNS, [watch_row(watch) for watch in watches])
    elif args.action == "show":
        show(output, await client.get_watch(args.id))
    elif args.action == "versions":
        found = await client.list_watch_versions(args.id, limit=args.limit)
        if output.json:
            output.data([as_dict(version) for version in found])
        else:
            rows = [
                [
                    when(version, "create_time"),
                    watch_pb2.WatchChange.Name(version.change).removeprefix("WATCH_CHANGE_"),
                    version.workshop_id,
                    version.title,
                    when(version, "update_time"),
                    version.download_id,
                    version.detail,
                ]
                for version in found
            ]
            output.table(None, ["Seen", "Change", "Item", "Title", "Updated", "Download", "Detail"], rows)
    elif args.action in ("pause", "resume"):
        paused = args.action == "pause"
        watch = await (client.pause_watch(args.id) if paused else client.resume_watch(args.id))
        if output.json:
            output.data(as_dict(watch))
        else:
            output.line(
                f"{'paused' if paused else 'resumed'} {watch.id} ({watch.title or watch.workshop_id})"
            )
    elif args.action == "interval":
        watch = await client.set_watch_interval(args.id, parse_duration(args.interval, "DURATION"))
        if output.json:
            output.data(as_dict(watch))
        else:
            output.line(f"{watch.id} is checked every {duration_text(watch.interval.seconds)}")
    else:
        await client.delete_watch(args.id)
        if output.json:
            output.data({"id": args.id, "removed": True})
        else:
            output.line(f"removed {args.id}; the downloads it made stay")
    return EXIT_OK
