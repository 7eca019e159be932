"""`wallwhale-steam-simulator`: the demo's Steam, for `scripts/run.sh --demo` or by hand.

    wallwhale-steam-simulator serve --dir var/demo/steam [--port 0] [--port-file F] [--update-after 120]
    wallwhale-steam-simulator publish-update --dir var/demo/steam

`serve` writes the demo catalog (catalog.py) into --dir with the DepotDownloader launcher
(<dir>/DepotDownloader), serves the simulated Web API until SIGTERM or Ctrl-C, and publishes the new
version of the item whose update arrives later after --update-after seconds. A server uses it with
WALLWHALE_DEPOTDOWNLOADER_PATH=<dir>/DepotDownloader and WALLWHALE_STEAM_WEB_API_URL=<the printed URL>.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from wallwhale_simulator import catalog
from wallwhale_simulator.steam import FakeSteam
from wallwhale_simulator.webapi import FakeWebApi

# Marks a world whose update was published, so a restart keeps the newer version.
UPDATE_MARK = "update-published"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wallwhale-steam-simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="write the demo catalog and serve the simulated Web API")
    serve.add_argument("--dir", type=Path, required=True, help="the world's folder (made if missing)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="the Web API's port (0: any free one)")
    serve.add_argument("--port-file", type=Path, help="write the port here once listening")
    serve.add_argument(
        "--update-after",
        type=float,
        default=120.0,
        help=f"seconds until item {catalog.UPDATED_ITEM} gets its update (negative: never)",
    )
    serve.add_argument(
        "--bytes-per-second", type=int, default=catalog.BYTES_PER_SECOND, help="content speed (0: instant)"
    )
    update = commands.add_parser("publish-update", help=f"publish item {catalog.UPDATED_ITEM}'s update now")
    update.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "publish-update":
        steam = catalog.build(args.dir, updated=True)
        (steam.directory / UPDATE_MARK).write_text("")
        print(f"published the update of item {catalog.UPDATED_ITEM}")
        return 0
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    updated = (directory / UPDATE_MARK).exists()
    steam = catalog.build(directory, updated=updated, bytes_per_second=args.bytes_per_second or None)
    web = FakeWebApi(steam, host=args.host, port=args.port).start()
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    if args.port_file is not None:
        temporary = args.port_file.with_name(args.port_file.name + ".tmp")
        temporary.write_text(str(web.port))
        temporary.replace(args.port_file)
    print(
        json.dumps(
            {
                "web_api_url": web.base_url,
                "depotdownloader": str(steam.executable),
                "account": {"username": catalog.ACCOUNT_USERNAME, "password": catalog.ACCOUNT_PASSWORD},
            }
        ),
        flush=True,
    )
    if not updated and args.update_after >= 0 and not stopped.wait(args.update_after):
        _publish(steam)
    stopped.wait()
    web.stop()
    return 0


def _publish(steam: FakeSteam) -> None:
    catalog.publish_update(steam)
    (steam.directory / UPDATE_MARK).write_text("")
    print(f"steam simulator: item {catalog.UPDATED_ITEM} has a new version", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
