"""`direct`: one item with a local DepotDownloader and no server (the runner is in ../direct.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wallwhale_client import direct as direct_mode
from wallwhale_client.cli.exits import EXIT_OK, UsageError
from wallwhale_client.cli.output import Output, size_text
from wallwhale_client.cli.progress import ProgressView


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    direct = commands.add_parser(
        "direct",
        help="one item with a local DepotDownloader, no server",
        description=direct_mode.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    direct.add_argument("item", metavar="URL", help="Workshop URL or id")
    direct.add_argument("--depotdownloader", default="DepotDownloader", help="its path (default: on PATH)")
    direct.add_argument("--username", required=True, help="the Steam account to log in with")
    direct.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    direct.add_argument("--out", type=Path, default=Path("."), help="files go to OUT/<workshop id>/")
    direct.add_argument("--app", type=int, default=direct_mode.WALLPAPER_ENGINE, help="the item's app id")
    direct.add_argument("--home", type=Path, help="DepotDownloader's HOME (keeps the remembered login)")
    direct.add_argument("--time-limit", type=float, default=3600.0, help="seconds (default 3600)")
    direct.add_argument("-v", "--verbose", action="store_true", help="show DepotDownloader's output")


class DirectScreen:
    """Direct mode's one item: a bar on a terminal, a line per phase elsewhere, nothing with --json."""

    def __init__(self, view: ProgressView, item: str):
        self.view = view
        self.task = view.bars.add_task(item, total=100, state="STARTING", amount="")
        self.item = item
        self.last = ""

    def phase(self, name: str, percent: float) -> None:
        self.view.bars.update(self.task, completed=percent, state=name)
        if not self.view.live and not self.view.quiet and name != self.last:
            self.view.console.print(f"{self.item} {name} {percent:.0f}%", markup=False)
        self.last = name

    def say(self, text: str) -> None:
        if not self.view.quiet:
            self.view.console.print(text, markup=False)


async def run(args: argparse.Namespace, output: Output) -> int:
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
    view = ProgressView(output)
    try:
        with view.bars:
            result = await direct_mode.download_direct(args, password, DirectScreen(view, args.item))
    except ValueError as error:
        raise UsageError(str(error)) from None
    if output.json:
        output.data(result)
    else:
        output.table(
            "Downloaded",
            ["Item", "Directory", "Files", "Size", "Time"],
            [
                [
                    result["workshopId"],
                    result["directory"],
                    result["files"],
                    size_text(result["bytes"]),
                    f"{result['seconds']:.1f}s",
                ]
            ],
        )
    return EXIT_OK
