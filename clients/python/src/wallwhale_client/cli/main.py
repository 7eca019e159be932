"""wallwhale-cli: WallWhale at a terminal, through the Python client.

    wallwhale-cli download URL... [--out DIR]      progress bars, then a summary table
    wallwhale-cli share ID [--expires 2h] [--single-use]   a link to the zip, no credentials needed
    wallwhale-cli jobs list|show|cancel|retry|watch
    wallwhale-cli watches add|list|show|versions|pause|resume|interval|remove
    wallwhale-cli webhooks add|list|show|deliveries|redeliver|rotate-secret|disable|enable|remove
    wallwhale-cli keys create|list|revoke
    wallwhale-cli accounts add|list|guard-code|qr
    wallwhale-cli status
    wallwhale-cli direct URL --username U            no server: a local DepotDownloader

Where the server is and who you are: flags, else WALLWHALE_ADDRESS / WALLWHALE_API_KEY (or
WALLWHALE_EMAIL / WALLWHALE_PASSWORD), else the config file (--config, WALLWHALE_CLIENT_CONFIG, or
~/.config/wallwhale/client.toml), e.g.

    address = "wallwhale.example.com:443"
    api_key = "ww_..."
    tls = true

--json prints machine-readable output (one JSON document; NDJSON for `jobs watch`).
Exit codes: 0 success; 2 a user error (bad arguments or input, unknown id, bad credentials, missing
permission, wrong state); 1 anything else (server or network trouble, a download that failed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence

from rich.markup import escape

from wallwhale_client._version import __version__
from wallwhale_client.aio import AsyncClient
from wallwhale_client.cli import (
    accounts,
    batches,
    direct,
    downloads,
    jobs,
    keys,
    settings,
    share,
    status,
    watches,
    webhooks,
)
from wallwhale_client.cli.exits import EXIT_INTERRUPTED, UsageError, exit_code
from wallwhale_client.cli.output import Output, error_dict
from wallwhale_client.errors import WallWhaleError

Command = Callable[[AsyncClient, argparse.Namespace, Output], Awaitable[int]]

# The commands that talk to a server, in the order `--help` lists them (`direct` needs none).
COMMANDS: dict[str, Command] = {
    "download": downloads.run,
    "batch": batches.run,
    "share": share.run,
    "jobs": jobs.run,
    "watches": watches.run,
    "webhooks": webhooks.run,
    "keys": keys.run,
    "accounts": accounts.run,
    "status": status.run,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wallwhale-cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    settings.add_options(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (downloads, batches, share, jobs, watches, webhooks, keys, accounts, status, direct):
        group.add_parser(commands)
    return parser


async def run(args: argparse.Namespace, output: Output) -> int:
    if args.command == "direct":
        return await direct.run(args, output)
    async with settings.make_client(settings.load_settings(args, dict(os.environ))) as client:
        return await COMMANDS[args.command](client, args, output)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Output(args.json, sys.stdout, sys.stderr)
    try:
        return asyncio.run(run(args, output))
    except (UsageError, WallWhaleError) as error:
        if output.json:
            output.data(
                {"error": error_dict(error) if isinstance(error, WallWhaleError) else {"message": str(error)}}
            )
        request = (
            f" (request id {error.request_id})"
            if isinstance(error, WallWhaleError) and error.request_id
            else ""
        )
        output.err.print(f"[red]error:[/red] {escape(str(error))}{request}")
        return exit_code(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
