"""Archive build and FetchArchive throughput, as ratios of copying the same files.

    .venv/bin/python bench/archive_throughput.py [--mb 300] [--rounds 3]
    apt-get install -y nghttp2-client     # h2load, for the FetchArchive figure with a C client

Build: the files of a wallpaper of incompressible media (random bytes: scene.mp4, scene.pkg,
preview.webm, a small project.json; --mb in all) are packed by storage.archives.Storage.build_archive
(stored entries: .mp4/.webm by their suffix, .pkg because a sample does not deflate; CRC-32 and
copy in one thread, sha256 in another) against shutil.copyfile of the same files. Both fsync what they
wrote (the archive is synced before it is renamed into place, so the copy syncs every file it
wrote too). The sources are read once before, so both read from the page cache; rounds alternate.

Fetch: the real server (`wallwhale serve`, SQLite) runs a real job of the same item with the test
DepotDownloader, which leaves a SUCCEEDED download with its archive. FetchArchive of the whole
archive is then timed with a grpc.aio client that saves the bytes to a file and fsyncs it (what the
Python client does), the same client discarding them, and h2load (a C client that discards them,
so that the server's cost shows rather than the client's), against shutil.copyfile of the archive
(+ fsync): copying the same file. Also printed: reading the file from the page cache, sending it
over loopback TCP (the transport alone), and a bare grpc.aio server (a child process) streaming the
same bytes from memory in the same HttpBody chunks (the ceiling of grpc.aio here). Each stream's
bytes are counted (the Python client also checks the sha256 once, h2load's DATA bytes must cover
the archive); ratios are taken within this run.

Through Envoy (with h2load): GET /v1/downloads/{id}/archive, the REST download, through an Envoy as
run.sh configures it, once over plain HTTP/2 and once over TLS (a `wallwhale certs dev` certificate,
h2 by ALPN): the cost of TLS on archive throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import (  # isort: skip
    ServerProcess,
    command,
    database,
    dev_certificates,
    machine,
    require,
    server_env,
    proxy_socket,
    start_envoy,
    succeeded_download,
)

import grpc
from google.api import httpbody_pb2
from grpc import aio

from tests.fakes.steam import FakeSteam
from wallwhale.ids import new_id
from wallwhale.rpc.servicers.streams import ARCHIVE_CHUNK
from wallwhale.storage.archives import Storage
from wallwhale.v1 import download_pb2, download_pb2_grpc

ITEM = 3_300_000_001
MB = 1024 * 1024
BLOCK = MB
# Shares of --mb: what a video wallpaper holds.
SHARES = {"scene.mp4": 0.5, "scene.pkg": 0.35, "preview.webm": 0.15}


def item_files(total_mb: int) -> dict[str, int]:
    sizes = {name: int(total_mb * MB * share) for name, share in SHARES.items()}
    return {**sizes, "project.json": 2000}


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _drop(path: Path) -> None:
    """Removes what a round wrote (and syncs the removal, so that it is not paid by the next one)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    os.sync()


def build_round(storage: Storage, download_id: str, source: Path) -> tuple[float, int]:
    began = time.perf_counter()
    info = storage.build_archive(download_id, source)
    seconds = time.perf_counter() - began
    _drop(storage.path_of(info.relative_path))
    return seconds, info.content_bytes


def copy_round(source: Path, target: Path) -> float:
    target.mkdir()
    began = time.perf_counter()
    for path in sorted(source.iterdir()):
        shutil.copyfile(path, target / path.name)
        _fsync(target / path.name)
    seconds = time.perf_counter() - began
    _drop(target)
    return seconds


def hashed_copy_round(source: Path, target: Path) -> float:
    """Copy in user space with a sha256 on the way: the least any packer that hashes must do."""
    target.mkdir()
    began = time.perf_counter()
    digest = hashlib.sha256()
    for path in sorted(source.iterdir()):
        with path.open("rb") as data, (target / path.name).open("wb") as out:
            while block := data.read(BLOCK):
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    seconds = time.perf_counter() - began
    _drop(target)
    return seconds


def build_bench(args: argparse.Namespace, directory: Path) -> tuple[float, float, float, int]:
    storage = Storage(directory / "storage")
    storage.prepare()
    download_id = new_id()
    source = storage.item_dir(431960, 3000000001)
    source.mkdir(parents=True)
    for name, size in item_files(args.mb).items():
        (source / name).write_bytes(os.urandom(size))
    os.sync()
    for path in source.iterdir():  # into the page cache: both sides read from memory
        path.read_bytes()
    builds, copies, hashed = [], [], []
    content = 0
    for _ in range(args.rounds):
        seconds, content = build_round(storage, download_id, source)
        builds.append(seconds)
        copies.append(copy_round(source, directory / "copy"))
        hashed.append(hashed_copy_round(source, directory / "copy"))
    shutil.rmtree(source)
    return statistics.median(builds), statistics.median(copies), statistics.median(hashed), content


# FetchArchive ----------------------------------------------------------------------------------------


async def fetch_python(
    port: int,
    admin: tuple[tuple[str, str], ...],
    download: download_pb2.Download,
    check: bool = False,
    save_to: Path | None = None,
) -> float:
    """FetchArchive of the whole archive; `save_to`: written to that file (in a thread, as the Python
    client does) and fsynced, else discarded."""
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = download_pb2_grpc.DownloadServiceStub(channel)
        digest = hashlib.sha256() if check else None
        received = 0
        began = time.perf_counter()
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(save_to.open("wb")) if save_to else None
            async for chunk in stub.FetchArchive(
                download_pb2.FetchArchiveRequest(id=download.id), metadata=admin
            ):
                received += len(chunk.data)
                if digest is not None:
                    digest.update(chunk.data)
                if out is not None:
                    await asyncio.to_thread(out.write, chunk.data)
            if out is not None:
                await asyncio.to_thread(os.fsync, out.fileno())
        seconds = time.perf_counter() - began
    if save_to is not None:
        _drop(save_to)
    if received != download.archive.size_bytes:
        raise SystemExit(f"bench: FetchArchive sent {received} bytes of {download.archive.size_bytes}")
    if digest is not None and digest.hexdigest() != download.archive.sha256:
        raise SystemExit("bench: FetchArchive's bytes do not match the archive's sha256")
    return seconds


def fetch_h2load(port: int, key: str, download: download_pb2.Download, body: Path, calls: int) -> float:
    message = download_pb2.FetchArchiveRequest(id=download.id).SerializeToString()
    body.write_bytes(struct.pack(">BI", 0, len(message)) + message)
    done = subprocess.run(
        [
            require("h2load", "nghttp2-client"),
            "-n",
            str(calls),
            "-c",
            "1",
            "-m",
            "1",
            "-t",
            "1",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-H",
            f"x-api-key: {key}",
            "-d",
            str(body),
            f"http://127.0.0.1:{port}/wallwhale.v1.DownloadService/FetchArchive",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    finished = re.search(r"finished in ([\d.]+)(m?s)", out)
    data = re.search(r"traffic: .*, [\d.]+[KMG]?B \((\d+)\) data", out)
    succeeded = re.search(r"(\d+) succeeded", out)
    if not (finished and data and succeeded):
        raise SystemExit(f"bench: cannot read h2load's output:\n{out}")
    if int(succeeded[1]) != calls or int(data[1]) < calls * download.archive.size_bytes:
        raise SystemExit(
            f"bench: h2load got {data[1]} DATA bytes in {succeeded[1]} calls: some streams failed"
        )
    seconds = float(finished[1]) / (1000 if finished[2] == "ms" else 1)
    return seconds / calls


def fetch_rest_h2load(url: str, key: str, size: int, calls: int) -> float:
    """Seconds per REST download of the whole archive through Envoy, h2load discarding the bytes."""
    done = subprocess.run(
        [require("h2load", "nghttp2-client"), "-n", str(calls), "-c", "1", "-m", "1", "-t", "1",
         "-H", f"x-api-key: {key}", url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = done.stdout
    finished = re.search(r"finished in ([\d.]+)(m?s)", out)
    data = re.search(r"traffic: .*, [\d.]+[KMG]?B \((\d+)\) data", out)
    succeeded = re.search(r"(\d+) succeeded", out)
    if not (finished and data and succeeded):
        raise SystemExit(f"bench: cannot read h2load's output:\n{out}")
    if int(succeeded[1]) != calls or int(data[1]) < calls * size:
        raise SystemExit(f"bench: h2load got {data[1]} DATA bytes in {succeeded[1]} calls from {url}")
    seconds = float(finished[1]) / (1000 if finished[2] == "ms" else 1)
    return seconds / calls


def loopback_send(path: Path) -> float:
    """The file sent over a loopback TCP connection (sendfile) and received in 1 MiB blocks: what
    the transport alone allows, with no HTTP/2, gRPC or Python per chunk."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def send() -> None:
            connection, _ = listener.accept()
            with connection, path.open("rb") as data:
                connection.sendfile(data)

        sender = threading.Thread(target=send)
        sender.start()
        began = time.perf_counter()
        received = 0
        with socket.create_connection(("127.0.0.1", port)) as client:
            while block := client.recv(BLOCK):
                received += len(block)
        seconds = time.perf_counter() - began
        sender.join()
    if received != path.stat().st_size:
        raise SystemExit("bench: the loopback transfer was short")
    return seconds


def copy_file(path: Path, target: Path, sync: bool) -> float:
    began = time.perf_counter()
    shutil.copyfile(path, target)
    if sync:
        _fsync(target)
    seconds = time.perf_counter() - began
    _drop(target)
    return seconds


def bare_server(path: Path, ports: Any) -> None:
    asyncio.run(_bare_server(path.read_bytes(), ports))


async def _bare_server(data: bytes, ports: Any) -> None:
    """FetchArchive's stream with nothing behind it: the archive's bytes from memory, in the same
    HttpBody chunks, no authentication, no database, no file."""

    async def fetch(request: bytes, context: aio.ServicerContext[Any, Any]) -> Any:
        for position in range(0, len(data), ARCHIVE_CHUNK):
            chunk = data[position : position + ARCHIVE_CHUNK]
            yield httpbody_pb2.HttpBody(content_type="application/zip", data=chunk)

    handler = grpc.method_handlers_generic_handler(
        "wallwhale.v1.DownloadService",
        {
            "FetchArchive": grpc.unary_stream_rpc_method_handler(
                fetch, response_serializer=httpbody_pb2.HttpBody.SerializeToString
            )
        },
    )
    server = aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ports.put(port)
    await server.wait_for_termination()


def read_file(path: Path) -> float:
    began = time.perf_counter()
    with path.open("rb", buffering=0) as data:
        while data.read(BLOCK):
            pass
    return time.perf_counter() - began


@dataclass(frozen=True)
class FetchFigures:
    """Medians in seconds for the whole archive."""

    size: int
    copy: float  # + fsync: for the client that saves (and fsyncs)
    copy_unsynced: float  # for the clients that write nothing
    read: float
    loopback: float
    saved: float  # FetchArchive, grpc.aio client writing a file
    discarded: float  # FetchArchive, grpc.aio client
    h2load: float | None
    bare_saved: float  # the bare server, grpc.aio client writing a file
    bare_h2load: float | None
    envoy_h2load: float | None  # GET /v1/downloads/{id}/archive through Envoy, HTTP/2
    tls_h2load: float | None  # the same through Envoy with TLS


async def fetch_bench(args: argparse.Namespace, directory: Path) -> FetchFigures:
    steam = FakeSteam(directory / "steam")
    steam.set(time_scale=0.01)
    steam.add_item(ITEM, files=item_files(args.mb))
    (directory / "data").mkdir()
    rounds: dict[str, list[float]] = {
        name: [] for name in FetchFigures.__dataclass_fields__ if name != "size"
    }
    with database("sqlite", directory / "data") as url:
        env = server_env(
            directory / "data",
            url,
            depotdownloader_path=str(steam.executable),
            # The test DepotDownloader keeps its Steam world there: its sandbox must let it write.
            depotdownloader_writable=str(steam.directory.resolve()),
            grpc_socket=str(proxy_socket(directory / "data")),
        )
        server = ServerProcess(directory, env)
        server.cli("migrate")
        key = json.loads(server.cli("bootstrap", "--json", "--email", "bench@example.test"))["api_key"]
        admin = (("x-api-key", key),)
        await server.start()
        bare = None
        envoys: list[subprocess.Popen[bytes]] = []
        try:
            download = await succeeded_download(server.port, admin, steam, ITEM, limit_seconds=600)
            rest_urls = {}
            if not args.no_h2load:
                path = f"/v1/downloads/{download.id}/archive"
                envoy, port = start_envoy(directory / "envoy", proxy_socket(directory / "data"))
                envoys.append(envoy)
                rest_urls["envoy_h2load"] = f"http://127.0.0.1:{port}{path}"
                envoy, port = start_envoy(
                    directory / "envoy-tls",
                    proxy_socket(directory / "data"),
                    2,
                    dev_certificates(directory / "c"),
                )
                envoys.append(envoy)
                rest_urls["tls_h2load"] = f"https://127.0.0.1:{port}{path}"
            archive = next((directory / "data").rglob(f"{download.id}.zip"))
            context = multiprocessing.get_context("spawn")
            ports = context.Queue()
            bare = context.Process(target=bare_server, args=(archive, ports), daemon=True)
            bare.start()
            bare_port = await asyncio.to_thread(ports.get, True, 60)
            await fetch_python(server.port, admin, download, check=True)  # checks the bytes, warms up
            await fetch_python(bare_port, admin, download, check=True)
            read_file(archive)
            saved = directory / "saved.zip"
            for _ in range(args.rounds):
                rounds["copy"].append(copy_file(archive, saved, sync=True))
                rounds["copy_unsynced"].append(copy_file(archive, saved, sync=False))
                rounds["read"].append(read_file(archive))
                rounds["loopback"].append(await asyncio.to_thread(loopback_send, archive))
                rounds["saved"].append(await fetch_python(server.port, admin, download, save_to=saved))
                rounds["discarded"].append(await fetch_python(server.port, admin, download))
                rounds["bare_saved"].append(await fetch_python(bare_port, admin, download, save_to=saved))
                if not args.no_h2load:
                    body = directory / "fetch.bin"
                    rounds["h2load"].append(fetch_h2load(server.port, key, download, body, 2))
                    rounds["bare_h2load"].append(fetch_h2load(bare_port, key, download, body, 2))
                    for name, rest_url in rest_urls.items():
                        size = download.archive.size_bytes
                        rounds[name].append(
                            await asyncio.to_thread(fetch_rest_h2load, rest_url, key, size, 2)
                        )
        finally:
            for envoy in envoys:
                envoy.terminate()
                envoy.wait(30)
            if bare is not None:
                bare.kill()
            await server.stop()
    medians = {name: statistics.median(values) if values else None for name, values in rounds.items()}
    return FetchFigures(size=download.archive.size_bytes, **medians)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="wallwhale-bench-") as temporary:
        directory = Path(temporary)
        build, copy, hashed, content = await asyncio.to_thread(build_bench, args, directory)
        fetched = await fetch_bench(args, directory / "fetch")
    mb = content / MB
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    print(
        "files: "
        + ", ".join(f"{name} {size / MB:.0f} MB" for name, size in item_files(args.mb).items() if size > MB)
        + ", project.json (2 kB)"
    )
    print(f"(random bytes: incompressible), {args.rounds} rounds, medians; both sides fsync what they write")
    print()
    print(f"build_archive      {build:6.2f} s  {mb / build:7.0f} MB/s")
    print(f"shutil.copyfile    {copy:6.2f} s  {mb / copy:7.0f} MB/s  (the kernel copies)")
    print(
        f"copy + sha256      {hashed:6.2f} s  {mb / hashed:7.0f} MB/s  (user space, 1 MiB blocks;"
        f" build / this: {hashed / build:.2f})"
    )
    ratio = copy / build
    print(f"build / copy throughput: {ratio:.2f} (target >= 0.8: {'met' if ratio >= 0.8 else 'MISSED'})")
    print()
    archive_mb = fetched.size / MB

    def line(label: str, seconds: float, note: str) -> None:
        print(f"{label:34} {seconds:6.3f} s  {archive_mb / seconds:7.0f} MB/s  {note}")

    print(
        f"FetchArchive of a {archive_mb:.0f} MB archive (a real SUCCEEDED download),"
        f" {ARCHIVE_CHUNK // 1024} KiB chunks:"
    )
    synced, unsynced = fetched.copy, fetched.copy_unsynced
    line("shutil.copyfile of the archive", synced, "(+ fsync: clients that save compare to this)")
    line("shutil.copyfile, no fsync", unsynced, "(clients that discard compare to this)")
    line("read the file", fetched.read, "(page cache, 1 MiB blocks)")
    line("loopback TCP", fetched.loopback, "(sendfile -> recv: the transport alone)")
    line("bare grpc.aio, client saves", fetched.bare_saved, f"{synced / fetched.bare_saved:.2f} of the copy")
    if fetched.bare_h2load is not None:
        line(
            "bare grpc.aio, h2load", fetched.bare_h2load, f"{unsynced / fetched.bare_h2load:.2f} of the copy"
        )
    line(
        "FetchArchive, client saves",
        fetched.saved,
        f"{synced / fetched.saved:.2f} of the copy, {fetched.bare_saved / fetched.saved:.2f} of bare",
    )
    line(
        "FetchArchive, client discards",
        fetched.discarded,
        f"{unsynced / fetched.discarded:.2f} of the copy, {fetched.read / fetched.discarded:.2f} of reading",
    )
    best = synced / fetched.saved
    if fetched.h2load is not None and fetched.bare_h2load is not None:
        line(
            "FetchArchive, h2load",
            fetched.h2load,
            f"{unsynced / fetched.h2load:.2f} of the copy, {fetched.bare_h2load / fetched.h2load:.2f} of bare"
            f", {fetched.read / fetched.h2load:.2f} of reading",
        )
        best = max(best, unsynced / fetched.h2load)
    if fetched.envoy_h2load is not None and fetched.tls_h2load is not None:
        line(
            "REST through Envoy, h2load",
            fetched.envoy_h2load,
            f"{unsynced / fetched.envoy_h2load:.2f} of the copy",
        )
        line(
            "REST through Envoy + TLS, h2load",
            fetched.tls_h2load,
            f"{unsynced / fetched.tls_h2load:.2f} of the copy",
        )
        print(
            f"TLS / plain through Envoy, archive throughput: {fetched.envoy_h2load / fetched.tls_h2load:.2f}"
        )
    print(f"FetchArchive / copy throughput: {best:.2f} (target >= 0.8: {'met' if best >= 0.8 else 'MISSED'})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=300, help="size of the wallpaper's files together")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-h2load", action="store_true", help="only the Python client")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
