"""`accounts add|list|guard-code|qr`: Steam accounts (admin), and QR login drawn in the terminal."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from wallwhale_client.aio import AsyncClient
from wallwhale_client.cli.exits import EXIT_FAILURE, EXIT_OK
from wallwhale_client.cli.output import Output, as_dict
from wallwhale_client.errors import Unimplemented, WallWhaleError
from wallwhale_client.v1 import admin_pb2


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    accounts = commands.add_parser("accounts", help="Steam accounts (admin)")
    account_actions = accounts.add_subparsers(dest="action", required=True)
    add = account_actions.add_parser("add", help="the password is asked for (or read with --password-stdin)")
    add.add_argument("username")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--app", type=int, action="append", default=[], help="an app the account owns")
    account_actions.add_parser("list")
    guard = account_actions.add_parser("guard-code", help="answer a Steam Guard prompt")
    guard.add_argument("id")
    guard.add_argument("code")
    account_actions.add_parser("qr", help="log in by QR code, drawn here").add_argument("id")


def account_status(account: admin_pb2.SteamAccount) -> str:
    status = admin_pb2.SteamAccountStatus.Name(account.status).removeprefix("STEAM_ACCOUNT_STATUS_")
    return f"{status} ({account.status_reason})" if account.status_reason else status


def read_password(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.password_stdin:
        return stdin.readline().rstrip("\r\n")
    if stdin.isatty():
        return getpass.getpass(f"Steam password for {args.username} (empty for QR login only): ")
    return ""


async def run(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    if args.action == "add":
        account = await client.create_steam_account(
            args.username, read_password(args, sys.stdin), owned_app_ids=args.app
        )
        if output.json:
            output.data(as_dict(account))
        else:
            output.line(f"added {account.id} ({account.username})")
        return EXIT_OK
    if args.action == "list":
        accounts = await client.list_steam_accounts()
        if output.json:
            output.data([as_dict(account) for account in accounts])
        else:
            rows = [
                [
                    a.id,
                    a.username,
                    account_status(a),
                    "yes" if a.has_remembered_login else "no",
                    a.downloads_run,
                ]
                for a in accounts
            ]
            output.table(None, ["ID", "Username", "Status", "Remembered login", "Downloads"], rows)
        return EXIT_OK
    if args.action == "guard-code":
        account = await client.submit_steam_guard_code(args.id, args.code)
        if output.json:
            output.data(as_dict(account))
        else:
            output.line(f"{account.username}: {account_status(account)}")
        return EXIT_OK
    return await qr_login(client, args, output)


def qr_lines(rows: Sequence[str], border: int = 2) -> list[str]:
    """A QR code ('#' dark) for a dark terminal: light modules are drawn, dark ones left blank; two
    characters per module keep it square, and a light border lets phones find it."""
    light, dark = "██", "  "
    width = len(rows[0]) if rows else 0
    edge = [light * (width + 2 * border)] * border
    side = light * border
    return [*edge, *(side + "".join(dark if c == "#" else light for c in row) + side for row in rows), *edge]


async def qr_login(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    try:
        async for event in client.start_qr_login(args.id):
            kind = event.WhichOneof("event")
            if output.json and kind != "heartbeat":
                output.out.out(json.dumps(as_dict(event)))
            elif kind == "qr_code":
                output.line("Scan with the Steam app:\n" + "\n".join(qr_lines(event.qr_code.rows)))
            elif kind == "succeeded":
                output.line(f"logged in: {event.succeeded.username}")
            elif kind == "failed":
                output.line(f"QR login failed: {event.failed}")
                return EXIT_FAILURE
    except Unimplemented as error:
        raise WallWhaleError(
            "this server does not offer QR login yet; add the account with a password and answer "
            "Steam Guard with `accounts guard-code`",
            code=error.code,
            reason=error.reason,
            request_id=error.request_id,
        ) from None
    return EXIT_OK
