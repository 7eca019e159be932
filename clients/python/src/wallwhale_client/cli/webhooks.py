"""`webhooks add|list|show|deliveries|redeliver|rotate-secret|disable|enable|remove`: endpoints the
server tells about events, signed per Standard Webhooks (the secret is shown once)."""

from __future__ import annotations

import argparse
from typing import Any

from wallwhale_client.aio import AsyncClient
from wallwhale_client.cli.exits import EXIT_OK
from wallwhale_client.cli.output import Output, as_dict, parse_duration, when
from wallwhale_client.v1 import webhook_pb2

EVENTS = (
    "download.succeeded",
    "download.failed",
    "batch.finished",
    "watch.item_updated",
    "watch.item_unavailable",
)
COLUMNS = ["ID", "URL", "Events", "State", "Description", "Created"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    webhooks = commands.add_parser(
        "webhooks", help="endpoints told about events (signed per Standard Webhooks)"
    ).add_subparsers(dest="action", required=True)
    add = webhooks.add_parser("add", help="a new endpoint; its signing secret is shown once")
    add.add_argument("url", help="where deliveries are POSTed (https)")
    add.add_argument(
        "--event", action="append", required=True, help=f"an event to send (repeatable): {', '.join(EVENTS)}"
    )
    add.add_argument("--description", default="")
    webhooks.add_parser("list", help="newest first").add_argument("--limit", type=int, default=50)
    deliveries = webhooks.add_parser("deliveries", help="the endpoint's deliveries, newest first")
    deliveries.add_argument("id")
    deliveries.add_argument("--limit", type=int, default=50)
    redeliver = webhooks.add_parser("redeliver", help="send a delivery again")
    redeliver.add_argument("id")
    redeliver.add_argument("delivery", metavar="DELIVERY")
    rotate = webhooks.add_parser("rotate-secret", help="a new signing secret, shown once")
    rotate.add_argument("id")
    rotate.add_argument("--grace", help="how long the old secret keeps signing, e.g. 1h, 0s (default: 24h)")
    for name, text in (
        ("show", "one endpoint"),
        ("disable", "send nothing until enabled"),
        ("enable", "send again (also after the server disabled it)"),
        ("remove", "remove it and its deliveries"),
    ):
        webhooks.add_parser(name, help=text).add_argument("id")


def webhook_row(webhook: webhook_pb2.Webhook) -> list[Any]:
    state = "active" if webhook.active else "disabled"
    if webhook.disabled_reason:
        state += f" ({webhook.disabled_reason})"
    return [
        webhook.id,
        webhook.url,
        " ".join(webhook.events),
        state,
        webhook.description,
        when(webhook, "create_time"),
    ]


def delivery_row(delivery: webhook_pb2.WebhookDelivery) -> list[Any]:
    state = webhook_pb2.WebhookDeliveryState.Name(delivery.state).removeprefix("WEBHOOK_DELIVERY_STATE_")
    latency = f"{delivery.latency.ToMilliseconds()} ms" if delivery.HasField("latency") else ""
    return [
        delivery.id,
        delivery.event_type,
        delivery.resource,
        state,
        delivery.attempts,
        delivery.response_code or "",
        latency,
        when(delivery, "create_time"),
        delivery.last_error,
    ]


def show_secret(output: Output, webhook: webhook_pb2.Webhook, secret: str, what: str) -> None:
    if output.json:
        output.data({"webhook": as_dict(webhook), "secret": secret})
        return
    output.line(f"{what} {webhook.id} ({webhook.url}); its signing secret:")
    output.out.out(secret)
    output.line("Keep it now: it will not be shown again (rotate-secret makes a new one).")


async def run(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    if args.action == "add":
        created = await client.create_webhook(args.url, args.event, description=args.description)
        show_secret(output, created.webhook, created.secret, "created")
    elif args.action == "rotate-secret":
        grace = parse_duration(args.grace, "--grace") if args.grace is not None else None
        rotated = await client.rotate_webhook_secret(args.id, grace_period=grace)
        show_secret(output, rotated.webhook, rotated.secret, "rotated the secret of")
        if not output.json and rotated.webhook.HasField("previous_secret_expire_time"):
            until = when(rotated.webhook, "previous_secret_expire_time")
            output.line(f"The previous secret keeps signing until {until} UTC.")
    elif args.action == "list":
        webhooks = await client.list_webhooks(limit=args.limit)
        if output.json:
            output.data([as_dict(webhook) for webhook in webhooks])
        else:
            output.table(None, COLUMNS, [webhook_row(webhook) for webhook in webhooks])
    elif args.action == "deliveries":
        found = await client.list_webhook_deliveries(args.id, limit=args.limit)
        if output.json:
            output.data([as_dict(delivery) for delivery in found])
        else:
            columns = [
                "ID",
                "Event",
                "Resource",
                "State",
                "Attempts",
                "Code",
                "Latency",
                "Created",
                "Last error",
            ]
            output.table(None, columns, [delivery_row(delivery) for delivery in found])
    elif args.action == "redeliver":
        delivery = await client.redeliver_webhook_delivery(args.id, args.delivery)
        if output.json:
            output.data(as_dict(delivery))
        else:
            output.line(f"queued {delivery.id}, a new delivery of {args.delivery} ({delivery.event_type})")
    elif args.action == "remove":
        await client.delete_webhook(args.id)
        if output.json:
            output.data({"id": args.id, "removed": True})
        else:
            output.line(f"removed {args.id} and its deliveries")
    else:
        if args.action == "show":
            webhook = await client.get_webhook(args.id)
        else:
            webhook = await client.update_webhook(args.id, active=args.action == "enable")
        if output.json:
            output.data(as_dict(webhook))
        else:
            output.table(None, COLUMNS, [webhook_row(webhook)])
            if webhook.HasField("previous_secret_expire_time"):
                output.line(f"previous secret valid until {when(webhook, 'previous_secret_expire_time')} UTC")
    return EXIT_OK
