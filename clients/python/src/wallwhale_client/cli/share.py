"""`share ID [--expires 2h] [--single-use] [--batch] [--url BASE]`: a link that fetches an archive
with no credentials, printed in full (the token is shown only now)."""

from __future__ import annotations

import argparse
import os

from wallwhale_client.aio import AsyncClient
from wallwhale_client.cli.exits import EXIT_OK
from wallwhale_client.cli.output import Output, as_dict, parse_duration


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    share = commands.add_parser("share", help="a link that fetches an archive with no credentials")
    share.add_argument("id", help="a download id (or a batch id with --batch)")
    share.add_argument("--batch", action="store_true", help="the id is a batch's: share its zip")
    share.add_argument("--expires", help="lifetime, e.g. 30m, 2h, 1d (default: the server's maximum)")
    share.add_argument("--single-use", action="store_true", help="the link serves one request only")
    share.add_argument(
        "--url",
        help="the server's public base URL, e.g. https://wallwhale.example.com "
        "(default WALLWHALE_URL, else http(s)://ADDRESS)",
    )


def base_url(args: argparse.Namespace, client: AsyncClient, tls: bool) -> str:
    url = args.url or os.environ.get("WALLWHALE_URL") or f"{'https' if tls else 'http'}://{client.address}"
    return str(url).rstrip("/")


async def run(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    expires = parse_duration(args.expires, "--expires") if args.expires else None
    target = {"batch_id": args.id} if args.batch else {"download_id": args.id}
    created = await client.create_archive_link(expires=expires, single_use=args.single_use, **target)
    tls = bool(args.tls or args.ca_cert)
    url = base_url(args, client, tls) + created.url_path
    if output.json:
        output.data({"url": url, "link": as_dict(created.link)})
    else:
        output.out.out(url)
        expire = created.link.expire_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")
        single = ", single use" if created.link.single_use else ""
        output.err.print(f"link {created.link.id}: works until {expire}{single}", markup=False)
    return EXIT_OK
