"""Archive delivery through the object store, as ratios to reading the same object from S3 directly.

    .venv/bin/python bench/object_store.py [--mb 300] [--rounds 3]

A real S3 server (`rclone serve s3` over a directory, tests/support/s3.py) and the real server
(`wallwhale serve`, SQLite, `WALLWHALE_STORAGE_URL=s3://...`) run a real job of a --mb wallpaper of
random bytes with the test DepotDownloader: the archive is built, uploaded and its local copy
removed. Then, in turn for --rounds rounds (medians), three clients read the whole archive and
discard it, each counting its bytes (the first round also checks the sha256):

- direct: boto3 `get_object` on the object, read in 1 MiB blocks (the ceiling: S3 itself);
- presigned URL: GetArchiveUrl, then a plain HTTP GET of the URL, with urllib (1 MiB blocks: what the
  Python client's download() does) and with urllib3 (the HTTP library of the direct read, so that
  only the path differs) - the bytes go from S3 to the client, not through the server;
- FetchArchive: a grpc.aio client; the server streams ranged GETs from S3.

Targets: presigned / direct >= 0.9 (the faster of the two clients), FetchArchive / direct >= 0.3
(throughput ratios).
Upload cost: storage.objects.ObjectStore.upload of a file of the archive's size (multipart, 16 MiB
parts, sha256 checked), in this process: wall seconds and this process's CPU seconds per GB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from archive_throughput import item_files  # isort: skip
from support import ServerProcess, command, database, machine, server_env, succeeded_download  # isort: skip

import urllib3
from grpc import aio

from tests.fakes.steam import FakeSteam
from tests.support.s3 import S3Server
from wallwhale.storage.objects import ObjectStore, S3Location
from wallwhale.v1 import download_pb2, download_pb2_grpc

ITEM = 3_300_000_002
_POOL = urllib3.PoolManager()
MB = 1024 * 1024
BLOCK = MB


def read_direct(s3: S3Server, key: str, check: str | None = None) -> tuple[float, int]:
    client = s3.client()
    digest = hashlib.sha256()
    began = time.perf_counter()
    body = client.get_object(Bucket=s3.bucket, Key=key)["Body"]
    received = 0
    while block := body.read(BLOCK):
        received += len(block)
        if check:
            digest.update(block)
    seconds = time.perf_counter() - began
    if check and digest.hexdigest() != check:
        raise SystemExit("bench: the object's bytes do not match the archive's sha256")
    return seconds, received


def read_url_urllib3(url: str) -> tuple[float, int]:
    """The presigned URL read with urllib3, the HTTP library boto3 reads the direct GET with."""
    began = time.perf_counter()
    reply = _POOL.request("GET", url, preload_content=False)
    received = 0
    while block := reply.read(BLOCK):
        received += len(block)
    reply.release_conn()
    return time.perf_counter() - began, received


def read_url(url: str, check: str | None = None) -> tuple[float, int]:
    digest = hashlib.sha256()
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as reply:  # noqa: S310 - the presigned http URL
        received = 0
        while block := reply.read(BLOCK):
            received += len(block)
            if check:
                digest.update(block)
    seconds = time.perf_counter() - began
    if check and digest.hexdigest() != check:
        raise SystemExit("bench: the presigned URL's bytes do not match the archive's sha256")
    return seconds, received


async def read_fetch(
    port: int, admin: tuple[tuple[str, str], ...], download_id: str, check: str | None = None
) -> tuple[float, int]:
    digest = hashlib.sha256()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = download_pb2_grpc.DownloadServiceStub(channel)
        began = time.perf_counter()
        received = 0
        async for chunk in stub.FetchArchive(
            download_pb2.FetchArchiveRequest(id=download_id), metadata=admin
        ):
            received += len(chunk.data)
            if check:
                digest.update(chunk.data)
        seconds = time.perf_counter() - began
    if check and digest.hexdigest() != check:
        raise SystemExit("bench: FetchArchive's bytes do not match the archive's sha256")
    return seconds, received


def upload_cost(s3: S3Server, directory: Path, size: int, rounds: int) -> tuple[float, float]:
    """Median wall seconds and CPU seconds (this process) of uploading `size` bytes, per GB."""
    path = directory / "upload.bin"
    with path.open("wb") as out:
        for _ in range(size // BLOCK + 1):
            out.write(os.urandom(BLOCK))
        out.truncate(size)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    store = ObjectStore(S3Location(s3.bucket, "bench-upload/"), endpoint_url=s3.endpoint, path_style=True)
    walls, cpus = [], []
    for n in range(rounds):
        cpu, began = time.process_time(), time.perf_counter()
        store.upload(path, f"u{n}.bin", sha256)
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - cpu)
        store.delete(f"u{n}.bin")
    path.unlink()
    gb = size / 1e9
    return statistics.median(walls) / gb, statistics.median(cpus) / gb


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="wallwhale-bench-s3-") as temporary:
        directory = Path(temporary)
        s3 = S3Server(directory / "s3" / "root")
        s3.start()
        os.environ.update(s3.environment())  # this process's boto3 clients and the server's
        try:
            figures = await measure(args, directory, s3)
        finally:
            s3.stop()
    size, rounds, upload_wall, upload_cpu = figures
    mb = size / MB
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    print(
        f"archive: {mb:.0f} MB (random bytes), S3: rclone serve s3 on loopback, {args.rounds} rounds, medians"
    )
    print()
    direct = rounds["direct"]
    for name, label in (
        ("direct", "S3 GET, boto3 (direct)"),
        ("presigned", "presigned URL, urllib (Python client)"),
        ("presigned_urllib3", "presigned URL, urllib3 (as boto3)"),
        ("fetch", "FetchArchive from S3, grpc.aio"),
    ):
        seconds = rounds[name]
        print(f"{label:38} {seconds:6.3f} s  {mb / seconds:7.0f} MB/s  {direct / seconds:.2f} of direct")
    presigned = direct / min(rounds["presigned"], rounds["presigned_urllib3"])
    fetch = direct / rounds["fetch"]
    print(f"presigned / direct: {presigned:.2f} (target >= 0.9: {'met' if presigned >= 0.9 else 'MISSED'})")
    print(f"FetchArchive / direct: {fetch:.2f} (target >= 0.3: {'met' if fetch >= 0.3 else 'MISSED'})")
    print(f"upload: {upload_wall:.2f} s per GB, {upload_cpu:.2f} CPU s per GB (multipart, sha256 checked)")


async def measure(
    args: argparse.Namespace, directory: Path, s3: S3Server
) -> tuple[int, dict[str, float], float, float]:
    steam = FakeSteam(directory / "steam")
    steam.set(time_scale=0.01)
    steam.add_item(ITEM, files=item_files(args.mb))
    data = directory / "data"
    data.mkdir()
    store: dict[str, Any] = {
        "storage_url": f"s3://{s3.bucket}/{s3.prefix}",
        "storage_s3_endpoint": s3.endpoint,
        "storage_s3_path_style": "true",
        "archive_url_seconds": "3600",
    }
    with database("sqlite", data) as url:
        env = server_env(
            data,
            url,
            depotdownloader_path=str(steam.executable),
            # The test DepotDownloader keeps its Steam world there: its sandbox must let it write.
            depotdownloader_writable=str(steam.directory.resolve()),
            **store,
        )
        server = ServerProcess(directory, env)
        server.cli("migrate")
        key = json.loads(server.cli("bootstrap", "--json", "--email", "bench@example.test"))["api_key"]
        admin = (("x-api-key", key),)
        await server.start()
        try:
            download = await succeeded_download(server.port, admin, steam, ITEM, limit_seconds=900)
            object_key = f"{s3.prefix}/archives/{download.id}.zip"
            async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = download_pb2_grpc.DownloadServiceStub(channel)
                answer = await stub.GetArchiveUrl(
                    download_pb2.GetArchiveUrlRequest(id=download.id), metadata=admin
                )
            sha = download.archive.sha256
            size = download.archive.size_bytes
            # Warm-up rounds that check the bytes.
            for seconds_and_size in (
                await asyncio.to_thread(read_direct, s3, object_key, sha),
                await asyncio.to_thread(read_url, answer.url, sha),
                await read_fetch(server.port, admin, download.id, sha),
            ):
                if seconds_and_size[1] != size:
                    raise SystemExit(f"bench: read {seconds_and_size[1]} bytes of {size}")
            rounds: dict[str, list[float]] = {
                "direct": [],
                "presigned": [],
                "presigned_urllib3": [],
                "fetch": [],
            }
            for _ in range(args.rounds):
                rounds["direct"].append((await asyncio.to_thread(read_direct, s3, object_key))[0])
                rounds["presigned"].append((await asyncio.to_thread(read_url, answer.url))[0])
                rounds["presigned_urllib3"].append((await asyncio.to_thread(read_url_urllib3, answer.url))[0])
                rounds["fetch"].append((await read_fetch(server.port, admin, download.id))[0])
        finally:
            await server.stop()
    upload_wall, upload_cpu = await asyncio.to_thread(upload_cost, s3, directory, size, args.rounds)
    return size, {name: statistics.median(values) for name, values in rounds.items()}, upload_wall, upload_cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=300, help="size of the wallpaper's files together")
    parser.add_argument("--rounds", type=int, default=3)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
