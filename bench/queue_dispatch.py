"""Queue dispatch: N queued jobs run to the end by the real server with the test DepotDownloader.

    .venv/bin/python bench/queue_dispatch.py --jobs 10000
    .venv/bin/python bench/queue_dispatch.py --jobs 10000 --database postgresql://postgres@127.0.0.1:5432/test

The server runs as its own process (`wallwhale serve`) on a fresh database (SQLite in a temporary
directory, or a scratch PostgreSQL database created next to the one in the URL and dropped after),
with --concurrency Steam accounts and as many downloads at once. Every job is one item of the fake
Steam (tests/fakes/steam.py: project.json, preview.gif and a 150 kB scene.pkg; no simulated delays),
each job its own item (the queue runs one job per item at a time, and the same item twice would be
answered from the archive cache).

The jobs are created first (CreateBatch, 1,000 at a time), held in the queue by their API key
(max_concurrent_downloads = 0), and then released at once by lifting that limit: from then on only
the dispatcher works. Per job it reads the claim time (start_time) and the end (end_time, when
SUCCEEDED was written) from the API, and the fake's own start and end from its run log (taken inside
the fake: its first line of Python after the interpreter started, and just before it exits). Figures:

  claim -> process start   the fake's start - claim: the server's spawn of the launcher, plus the
                           launcher's /bin/sh and Python start-up (measured alone, before the run,
                           and printed next to it, so that the server's part can be read off)
  process end -> done      end_time - the fake's end: reading its last output, packing the zip,
                           the final writes
  overhead per job         wall time x concurrency / jobs - the fake's own mean run time: what each
                           job costs a download slot beyond DepotDownloader's own work (start-up of
                           the fake's interpreter included: a real DepotDownloader has its own)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from support import ServerProcess, command, database, machine, percentile, server_env  # isort: skip

from google.protobuf import field_mask_pb2, timestamp_pb2
from grpc import aio

from tests.fakes.steam import FakeSteam
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, download_pb2, download_pb2_grpc

ITEM = 3_100_000_001  # the first item; job n downloads ITEM + n
BATCH = 1000  # the most CreateBatch takes
REQUEST_ID = re.compile(r"request id \w+")  # errors are counted by their message without it
TIME_SCALE = 0.01
FINAL = [
    download_pb2.DOWNLOAD_STATE_SUCCEEDED,
    download_pb2.DOWNLOAD_STATE_FAILED,
    download_pb2.DOWNLOAD_STATE_CANCELLED,
]


def _seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.seconds + stamp.nanos * 1e-9


def launcher_startup(steam: FakeSteam, directory: Path, runs: int) -> float:
    """Median seconds from spawning the fake's launcher to its first recorded line, alone."""
    before = {run["id"] for run in steam.runs()}
    spawned = []
    for number in range(runs):
        began = time.time()
        subprocess.run(
            [
                str(steam.executable),
                "-app",
                "431960",
                "-pubfile",
                str(ITEM),
                "-username",
                "bench0",
                "-dir",
                str(directory / f"probe{number}"),
            ],
            input="",
            capture_output=True,
            check=False,
        )
        spawned.append(began)
    starts = [run["start"] for run in steam.runs() if run["id"] not in before]
    return statistics.median(start - began for start, began in zip(sorted(starts), spawned, strict=True))


async def _create_all(
    stub: download_pb2_grpc.DownloadServiceStub, metadata: tuple[tuple[str, str], ...], jobs: int
) -> tuple[list[str], dict[str, int]]:
    """Creates the jobs in batches; a failed call is retried with its request_id (creation is not
    what is measured), and its error is counted and printed."""
    ids: list[str] = []
    errors: dict[str, int] = {}
    for first in range(0, jobs, BATCH):
        items = [str(ITEM + number) for number in range(first, min(first + BATCH, jobs))]
        for _ in range(5):
            try:
                response = await stub.CreateBatch(
                    download_pb2.CreateBatchRequest(urls_or_ids=items, request_id=f"bench-{first}"),
                    metadata=metadata,
                )
            except aio.AioRpcError as exc:
                first_line = (exc.details() or "").splitlines()[0]
                error = f"{exc.code().name}: {REQUEST_ID.sub('request id ...', first_line)}"
                errors[error] = errors.get(error, 0) + 1
                await asyncio.sleep(0.5)
                continue
            ids += await _batch_jobs(stub, metadata, response.batch.id)
            break
        else:
            raise SystemExit(f"bench: cannot create jobs {first}..: {errors}")
    return ids, errors


async def _batch_jobs(
    stub: download_pb2_grpc.DownloadServiceStub, metadata: tuple[tuple[str, str], ...], batch_id: str
) -> list[str]:
    return [d.id for d in await _all(stub, metadata, batch_id)]


async def _finished(
    stub: download_pb2_grpc.DownloadServiceStub, metadata: tuple[tuple[str, str], ...]
) -> int:
    response = await stub.ListDownloads(
        download_pb2.ListDownloadsRequest(page_size=1, states=FINAL), metadata=metadata
    )
    return response.total_size


async def _all(
    stub: download_pb2_grpc.DownloadServiceStub, metadata: tuple[tuple[str, str], ...], batch_id: str = ""
) -> list[download_pb2.Download]:
    found: list[download_pb2.Download] = []
    token = ""
    while True:
        page = await stub.ListDownloads(
            download_pb2.ListDownloadsRequest(page_size=500, page_token=token, batch_id=batch_id),
            metadata=metadata,
        )
        found += page.downloads
        token = page.next_page_token
        if not token:
            return found


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="wallwhale-bench-") as temporary:
        directory = Path(temporary)
        (directory / "data").mkdir()
        steam = FakeSteam(directory / "steam")
        steam.set(time_scale=TIME_SCALE)
        steam.add_items(range(ITEM, ITEM + args.jobs))
        with database(args.database, directory / "data") as url:
            env = server_env(
                directory / "data",
                url,
                depotdownloader_path=str(steam.executable),
                # The test DepotDownloader keeps its Steam world there: its sandbox must let it write.
                depotdownloader_writable=str(steam.directory.resolve()),
                max_concurrent_downloads=str(args.concurrency),
                log_level=args.log_level,
            )
            server = ServerProcess(directory, env)
            server.cli("migrate")
            admin_key = json.loads(server.cli("bootstrap", "--json", "--email", "bench@example.test"))[
                "api_key"
            ]
            admin = (("x-api-key", admin_key),)
            await server.start()
            try:
                await _bench(args, server, steam, admin, directory)
            finally:
                await server.stop()


async def _bench(
    args: argparse.Namespace,
    server: ServerProcess,
    steam: FakeSteam,
    admin: tuple[tuple[str, str], ...],
    directory: Path,
) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        admin_api = admin_pb2_grpc.AdminServiceStub(channel)
        downloads = download_pb2_grpc.DownloadServiceStub(channel)
        for number in range(args.concurrency):
            password = secrets.token_urlsafe(12)
            steam.add_account(f"bench{number}", password)
            await admin_api.CreateSteamAccount(
                admin_pb2.CreateSteamAccountRequest(
                    steam_account=admin_pb2.SteamAccount(username=f"bench{number}"), password=password
                ),
                metadata=admin,
            )
        startup = launcher_startup(steam, directory, 20)
        gate = await admin_api.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(
                api_key=admin_pb2.ApiKey(
                    name="bench queue",
                    scopes=["download:*"],
                    limits=admin_pb2.ApiKeyLimits(max_concurrent_downloads=0),
                )
            ),
            metadata=admin,
        )
        began = time.monotonic()
        ids, errors = await _create_all(downloads, (("x-api-key", gate.plaintext_key),), args.jobs)
        created = time.monotonic() - began
        print(f"created {len(ids)} queued jobs in {created:.1f}s ({len(ids) / created:.0f}/s)", flush=True)
        for error, count in errors.items():
            print(f"  {count} CreateDownload calls failed and were retried: {error}", flush=True)

        cpu = server.cpu_seconds()
        released = time.time()
        await admin_api.UpdateApiKey(
            admin_pb2.UpdateApiKeyRequest(
                api_key=admin_pb2.ApiKey(id=gate.api_key.id, limits=admin_pb2.ApiKeyLimits()),
                update_mask=field_mask_pb2.FieldMask(paths=["limits"]),
            ),
            metadata=admin,
        )
        deadline = time.monotonic() + args.limit
        last_report = time.monotonic()
        while (done := await _finished(downloads, admin)) < args.jobs:
            if time.monotonic() > deadline:
                raise SystemExit(f"gave up after {args.limit:.0f}s with {done} of {args.jobs} jobs done")
            if time.monotonic() - last_report > 60:
                rate = done / (time.time() - released)
                print(f"  {done} done after {time.time() - released:.0f}s ({rate:.1f}/s)", flush=True)
                last_report = time.monotonic()
            await asyncio.sleep(2)
        server_cpu = server.cpu_seconds() - cpu
        wanted = set(ids)
        rows = [d for d in await _all(downloads, admin) if d.id in wanted]

    # DepotDownloader's -dir is the item's folder: its name is the workshop id.
    runs = {Path(run["dir"]).name: run for run in steam.runs() if run.get("dir") and run.get("end")}
    states: dict[str, int] = {}
    for row in rows:
        name = download_pb2.DownloadState.Name(row.state)
        states[name] = states.get(name, 0) + 1
    ok = [
        (row, runs[str(row.workshop_id)])
        for row in rows
        if row.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED and str(row.workshop_id) in runs
    ]
    claim_to_start = [(run["start"] - _seconds(row.start_time)) * 1000 for row, run in ok]
    end_to_done = [(_seconds(row.end_time) - run["end"]) * 1000 for row, run in ok]
    own = [(run["end"] - run["start"]) * 1000 for _, run in ok]
    items = {str(row.workshop_id) for row in rows}
    attempts = sum(1 for run in steam.runs() if Path(run.get("dir") or "").name in items)
    wall = max(_seconds(r.end_time) for r in rows) - released
    slot_ms = wall * args.concurrency / len(rows) * 1000

    database_name = "SQLite" if args.database == "sqlite" else "PostgreSQL (scratch database)"
    print()
    print(f"WallWhale queue dispatch, {args.jobs} jobs, {args.concurrency} at once, {database_name}")
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    print(f"states: {states}; DepotDownloader runs: {attempts}")
    print(f"wall time from release to the last job done: {wall:.1f}s = {len(rows) / wall:.1f} jobs/s")
    print(f"server CPU: {server_cpu:.1f}s = {server_cpu / len(rows) * 1000:.1f} ms per job")
    print()
    print(f"{'per job, ms':<38} {'p50':>8} {'p90':>8} {'p99':>8} {'mean':>8}")
    for name, values in (
        ("claim -> process start", claim_to_start),
        ("process end -> SUCCEEDED written", end_to_done),
        ("the fake's own run (start -> end)", own),
    ):
        print(
            f"{name:<38} {percentile(values, 0.5):>8.1f} {percentile(values, 0.9):>8.1f}"
            f" {percentile(values, 0.99):>8.1f} {statistics.fmean(values):>8.1f}"
        )
    print(
        f"  launcher start-up alone (spawn -> the fake's first line, median of 20): {startup * 1000:.1f} ms"
    )
    print(
        f"overhead per job = wall x {args.concurrency} / {len(rows)} - the fake's mean own run:"
        f" {slot_ms:.1f} - {statistics.fmean(own):.1f} = {slot_ms - statistics.fmean(own):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4, help="Steam accounts and downloads at once")
    parser.add_argument("--database", default="sqlite", help="sqlite, or a postgresql:// URL")
    parser.add_argument("--log-level", default="INFO", help="the server's (INFO logs every call and job)")
    parser.add_argument("--limit", type=float, default=4 * 3600, help="seconds before giving up")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
