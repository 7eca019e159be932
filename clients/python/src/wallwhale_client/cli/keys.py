"""`keys create|list|revoke`: API keys (admin)."""

from __future__ import annotations

import argparse

from wallwhale_client.aio import AsyncClient
from wallwhale_client.cli.exits import EXIT_FAILURE, EXIT_OK
from wallwhale_client.cli.output import Output, as_dict, when
from wallwhale_client.v1 import admin_pb2


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="API keys (admin)").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="the key is shown once")
    create.add_argument("name")
    create.add_argument("--scope", action="append", required=True, help="e.g. download:* (repeatable)")
    create.add_argument("--requests-per-minute", type=int)
    create.add_argument("--burst", type=int)
    create.add_argument("--daily-quota", type=int)
    create.add_argument("--monthly-quota", type=int)
    keys.add_parser("list").add_argument("--all", action="store_true", help="with revoked keys")
    keys.add_parser("revoke").add_argument("id")


async def run(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    if args.action == "create":
        limits = admin_pb2.ApiKeyLimits(
            requests_per_minute=args.requests_per_minute,
            burst=args.burst,
            daily_download_quota=args.daily_quota,
            monthly_download_quota=args.monthly_quota,
        )
        created = await client.create_api_key(args.name, args.scope, limits=limits)
        if created.repeated_request:
            # A retry met the key that the first attempt made, whose answer (with the key) was lost.
            output.err.print(
                f"the key {created.api_key.id} was made by an earlier attempt whose answer was lost; the "
                f"key itself cannot be shown again: revoke it (keys revoke {created.api_key.id}) and create "
                "another",
                markup=False,
            )
            return EXIT_FAILURE
        if output.json:
            output.data({"apiKey": as_dict(created.api_key), "plaintextKey": created.plaintext_key})
        else:
            output.line(f"created {created.api_key.id} ({created.api_key.name}); the key, shown only now:")
            output.out.out(created.plaintext_key)
        return EXIT_OK
    if args.action == "list":
        keys = await client.list_api_keys(include_revoked=args.all)
        if output.json:
            output.data([as_dict(key) for key in keys])
        else:
            rows = [
                [
                    key.id,
                    key.name,
                    key.prefix,
                    " ".join(key.scopes),
                    "revoked" if key.HasField("revoke_time") else ("disabled" if key.disabled else "active"),
                    when(key, "last_used_time"),
                ]
                for key in keys
            ]
            output.table(None, ["ID", "Name", "Prefix", "Scopes", "State", "Last used"], rows)
        return EXIT_OK
    revoked = await client.revoke_api_key(args.id)
    if output.json:
        output.data(as_dict(revoked))
    else:
        output.line(f"revoked {revoked.id} ({revoked.name})")
    return EXIT_OK
