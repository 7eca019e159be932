"""Login flood: other callers' latency while anonymous clients send wrong passwords.

    .venv/bin/python bench/login_flood.py
    .venv/bin/python bench/login_flood.py --flooders 16 --seconds 20
    .venv/bin/python bench/login_flood.py --database postgresql://postgres@127.0.0.1:5432/test

The server runs as its own process (`wallwhale serve`, production settings) on a fresh database.
Two phases of --seconds each: first the other caller alone (the admin's API key: CreateDownload
then GetDownload of it, one pair after another), then the same with --flooders anonymous clients
each sending Login with a wrong password for the admin's e-mail as fast as they are answered.
Printed: p50/p99/max of the other caller's pairs in both phases, its errors by code, and the
logins' answers by code.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

from support import ServerProcess, command, database, machine, percentile, server_env  # isort: skip

import grpc
from grpc import aio

from wallwhale.v1 import auth_pb2, auth_pb2_grpc, download_pb2, download_pb2_grpc

EMAIL = "bench@example.test"
WRONG_PASSWORD = "not-the-password"  # noqa: S105


async def _other_caller(
    channel: aio.Channel, admin: tuple[tuple[str, str], ...], seconds: float, first_item: int
) -> tuple[list[float], collections.Counter[str]]:
    downloads = download_pb2_grpc.DownloadServiceStub(channel)
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    item = first_item
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            created = await downloads.CreateDownload(
                download_pb2.CreateDownloadRequest(url_or_id=str(item)), metadata=admin, timeout=60
            )
            await downloads.GetDownload(
                download_pb2.GetDownloadRequest(id=created.download.id), metadata=admin, timeout=60
            )
            latencies.append(time.monotonic() - started)
        except grpc.RpcError as error:
            errors[error.code().name] += 1
        item += 1
    return latencies, errors


async def _flood(channel: aio.Channel, seconds: float, answers: collections.Counter[str]) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await auth.Login(auth_pb2.LoginRequest(email=EMAIL, password=WRONG_PASSWORD), timeout=60)
            answers["OK"] += 1
        except grpc.RpcError as error:
            answers[error.code().name] += 1


def _report(name: str, latencies: list[float], errors: collections.Counter[str]) -> None:
    ms = [value * 1000 for value in latencies]
    print(
        f"{name:>12}: {len(ms)} CreateDownload+GetDownload pairs, p50 {percentile(ms, 0.5):.1f} ms,"
        f" p99 {percentile(ms, 0.99):.1f} ms, max {max(ms, default=float('nan')):.1f} ms,"
        f" errors {dict(errors) or 'none'}"
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="wallwhale-bench-") as temporary:
        directory = Path(temporary)
        (directory / "data").mkdir()
        with database(args.database, directory / "data") as url:
            server = ServerProcess(directory, server_env(directory / "data", url, log_level="WARNING"))
            server.cli("migrate")
            admin_key = json.loads(server.cli("bootstrap", "--json", "--email", EMAIL))["api_key"]
            admin = (("x-api-key", admin_key),)
            await server.start()
            try:
                # The other caller and the flooders use their own connections, as separate clients would.
                async with aio.insecure_channel(f"127.0.0.1:{server.port}") as other:
                    alone = await _other_caller(other, admin, args.seconds, 3_100_000_000)
                    answers: collections.Counter[str] = collections.Counter()
                    flood_channels = [
                        aio.insecure_channel(f"127.0.0.1:{server.port}") for _ in range(args.flooders)
                    ]
                    flooders = [
                        asyncio.create_task(_flood(channel, args.seconds + 1, answers))
                        for channel in flood_channels
                    ]
                    await asyncio.sleep(1)
                    flooded = await _other_caller(other, admin, args.seconds, 3_200_000_000)
                    await asyncio.gather(*flooders)
                    for channel in flood_channels:
                        await channel.close()
            finally:
                await server.stop()
    print(f"# {command()}\n# {machine()}\n# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"# database: {'sqlite' if args.database == 'sqlite' else 'postgresql'}")
    _report("alone", *alone)
    _report(f"{args.flooders} flooders", *flooded)
    print(f"{'logins':>12}: {sum(answers.values())} answered, by code {dict(answers)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flooders", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--database", default="sqlite", help="sqlite, or a postgresql:// URL")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
