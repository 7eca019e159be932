"""Progress latency with many watchers, and the server's memory per running download.

The real server runs as its own process (`wallwhale serve`), so that its memory can be read alone,
against a fresh database (SQLite in a temporary directory, or a scratch database made on a
PostgreSQL server and dropped afterwards) and the test DepotDownloader (tests/fakes/steam.py), which
prints one progress line per file of a workshop item, one file every --file-interval seconds.

Latency: --watchers WatchDownload streams (several client processes, several connections each) are
opened on a download that is held in the queue (its API key may run no download), so that every
stream is registered before the download runs; then the hold is lifted. For each progress and log
event received live, latency = the client's clock on receipt - the event's `event_time`, which the
server takes just before its write transaction (same host, same clock): each figure covers the
database write and commit, the fan-out in memory, serialisation, the network and the client. Events
replayed from the database (written before the stream began) are left out. The watchers are Node
processes (bench/watch_client.mjs: Node's HTTP/2 speaking gRPC, about 13 us of CPU per message) by
default, so that they take a small share of the machine next to the server; --client python uses
grpc.aio (about 65 us per message: on two CPUs the clients then compete with the server).

Memory: VmRSS of the server process idle after start, idle after one warm-up download, and with
--downloads downloads running at once (one Steam account each); per running download = (with them
running - idle after the warm-up) / --downloads. The DepotDownloader processes are separate and not
counted. Run it from the repository root: .venv/bin/python bench/progress_latency.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import queue
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import ServerProcess, command, database, machine, server_env  # isort: skip

from google.protobuf import field_mask_pb2
from grpc import aio

from tests.fakes.steam import FakeSteam
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, download_pb2, download_pb2_grpc

Metadata = tuple[tuple[str, str], ...]
# The fake's sleeps are multiplied by this: its `file_delay` is given in fake seconds.
TIME_SCALE = 0.01
FINAL = {
    download_pb2.DOWNLOAD_STATE_SUCCEEDED,
    download_pb2.DOWNLOAD_STATE_FAILED,
    download_pb2.DOWNLOAD_STATE_CANCELLED,
}
MB = 1024 * 1024
WARMUP_ITEM = 3_000_000_001
MEMORY_ITEM = 3_000_001_000  # + index
LATENCY_ITEM = 3_000_002_000  # + round
# Separate connections for channels to the same address (gRPC shares one by default).
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
# The server writes a running job's events this often, and a progress event at most every
# PROGRESS_INTERVAL (worker.context.WorkerSettings, not settings).
EVENT_FLUSH_INTERVAL = 0.1
PROGRESS_INTERVAL = 0.25


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


# The watchers (in the client processes) -------------------------------------------------------------


@dataclass
class ClientResult:
    watchers: int
    connected: int = 0
    finished: int = 0
    # One entry per live progress or log event received: its sequence, latency in ms, kind.
    sequences: array[int] = field(default_factory=lambda: array("q"))
    latencies: array[float] = field(default_factory=lambda: array("d"))
    progress: bytearray = field(default_factory=bytearray)  # 1 progress, 0 log line
    messages: int = 0  # everything received after the streams were open (heartbeats, states too)
    replayed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # this process's CPU while the download ran
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class WatchPlan:
    """What one client process does: `watchers` streams of one download, `per_channel` per channel."""

    index: int
    port: int
    metadata: Metadata
    download_id: str
    watchers: int
    per_channel: int
    exclude_logs: bool
    limit: float
    node: bool  # watch with bench/watch_client.mjs (Node's HTTP/2) instead of grpc.aio


def watch_client(plan: WatchPlan, messages: Any) -> None:
    """One client process. Puts ("ready", index) once every stream is open, then
    ("result", index, ClientResult) when they have ended."""
    try:
        result = _watch_node(plan, messages) if plan.node else asyncio.run(_watch(plan, messages))
    except BaseException as exc:
        messages.put(("error", plan.index, f"{type(exc).__name__}: {exc}"))
        raise
    messages.put(("result", plan.index, result))


def _watch_node(plan: WatchPlan, messages: Any) -> ClientResult:
    """The watchers in a Node process; this one only relays (it waits on a pipe, using no CPU)."""
    request = download_pb2.WatchDownloadRequest(id=plan.download_id, exclude_logs=plan.exclude_logs)
    argv = [
        "node",
        str(Path(__file__).with_name("watch_client.mjs")),
        str(plan.port),
        str(plan.watchers),
        str(plan.per_channel),
        request.SerializeToString().hex(),
        str(plan.limit),
        *(part for pair in plan.metadata for part in pair),
    ]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as node:
        assert node.stdout is not None
        lines = iter(node.stdout)
        if next(lines, "").strip() != "ready":
            raise RuntimeError("the Node client ended before its streams were open")
        messages.put(("ready", plan.index))
        found = json.loads(next(lines, "null") or "null")
    if found is None:
        raise RuntimeError(f"the Node client ended without results ({node.returncode})")
    result = ClientResult(plan.watchers)
    for name in ("connected", "finished", "messages", "replayed", "errors", "cpu_seconds", "wall_seconds"):
        setattr(result, name, found[name])
    result.sequences.extend(found["sequences"])
    result.latencies.extend(found["latencies"])
    result.progress.extend(found["progress"])
    return result


async def _watch(plan: WatchPlan, messages: Any) -> ClientResult:
    index, port, metadata, download_id = plan.index, plan.port, plan.metadata, plan.download_id
    watchers, per_channel, exclude_logs, limit = (
        plan.watchers,
        plan.per_channel,
        plan.exclude_logs,
        plan.limit,
    )
    result = ClientResult(watchers)
    request = download_pb2.WatchDownloadRequest(id=download_id, exclude_logs=exclude_logs)
    channels = [
        aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        for _ in range(math.ceil(watchers / per_channel))
    ]
    stubs = [download_pb2_grpc.DownloadServiceStub(channel) for channel in channels]
    settled = 0
    all_settled = asyncio.Event()
    sequences, latencies, progress = result.sequences, result.latencies, result.progress
    received_messages = 0

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled == watchers:
            all_settled.set()

    async def watch(number: int) -> None:
        nonlocal received_messages
        first: float | None = None
        try:
            async for message in stubs[number % len(stubs)].WatchDownload(request, metadata=metadata):
                received = time.time()
                received_messages += 1
                if first is None:
                    # The first message is replayed history: the stream is registered with the hub.
                    first = received
                    result.connected += 1
                    settle()
                kind = message.WhichOneof("event")
                if kind == "progress" or kind == "log_line":
                    stamp = message.event_time
                    written = stamp.seconds + stamp.nanos * 1e-9
                    if written <= first:
                        result.replayed += 1  # written before this stream began: not live
                        continue
                    sequences.append(message.sequence)
                    latencies.append((received - written) * 1000)
                    progress.append(kind == "progress")
                elif kind == "finished":
                    result.finished += 1
        except aio.AioRpcError as exc:
            error = f"{exc.code().name}: {exc.details()}"
            result.errors[error] = result.errors.get(error, 0) + 1
        if first is None:
            settle()

    try:
        tasks = [asyncio.create_task(watch(number)) for number in range(watchers)]
        await asyncio.wait_for(all_settled.wait(), limit)
        messages.put(("ready", index))
        cpu, wall, before = time.process_time(), time.monotonic(), received_messages
        _, pending = await asyncio.wait(tasks, timeout=limit)
        for task in pending:
            task.cancel()
        if pending:
            result.errors["timed out before the final event"] = len(pending)
        result.cpu_seconds = time.process_time() - cpu
        result.wall_seconds = time.monotonic() - wall
        result.messages = received_messages - before
    finally:
        for channel in channels:
            await channel.close()
    return result


# The server (a child process) -----------------------------------------------------------------------


def _proc_status(pid: int, name: str) -> int:
    """A field of /proc/<pid>/status in bytes (VmRSS, VmHWM); 0 when the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) * 1024
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


class MeasuredServer(ServerProcess):
    """The server process with its memory and that of the DepotDownloader processes under it."""

    def rss(self) -> int:
        return _proc_status(self.pid, "VmRSS")

    def peak_rss(self) -> int:
        return _proc_status(self.pid, "VmHWM")

    def children_rss(self) -> tuple[int, int]:
        """How many processes run under the server (DepotDownloader), and their VmRSS together."""
        pids, count, total = _children(self.pid), 0, 0
        while pids:
            pid = pids.pop()
            count += 1
            total += _proc_status(pid, "VmRSS")
            pids += _children(pid)
        return count, total


def _machine_busy() -> tuple[int, int]:
    """The whole machine's busy and total CPU ticks since boot (/proc/stat): steal counts as busy."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


# The bench (this process) ---------------------------------------------------------------------------


@dataclass
class LatencyRound:
    watchers: int
    clients: int
    connect_seconds: float
    run_seconds: float
    rss_before: int
    rss_watching: int
    server_cpu_seconds: float  # while the download ran
    machine_busy: float  # the share of all CPUs busy (any process) while the download ran
    results: list[ClientResult]

    def __post_init__(self) -> None:
        sequences = [s for r in self.results for s in r.sequences]
        latencies = [ms for r in self.results for ms in r.latencies]
        progress = [p for r in self.results for p in r.progress]
        self.all = sorted(latencies)
        self.progress = sorted(ms for ms, p in zip(latencies, progress, strict=True) if p)
        self.logs = sorted(ms for ms, p in zip(latencies, progress, strict=True) if not p)
        # The start of a run writes a burst of log lines (login, manifest, a "Pre-allocating" line
        # per file) in one or two flushes; from the first progress line on, one line per file.
        first_progress = min((s for s, p in zip(sequences, progress, strict=True) if p), default=0)
        self.steady = sorted(
            ms for s, ms in zip(sequences, latencies, strict=True) if first_progress and s >= first_progress
        )
        by_event: dict[int, list[float]] = {}
        for sequence, ms in zip(sequences, latencies, strict=True):
            by_event.setdefault(sequence, []).append(ms)
        self.first = [min(values) for values in by_event.values()]
        self.spread = [max(values) - min(values) for values in by_event.values()]
        self.events = len(by_event)
        # The events most watchers got late (by their median): what a latency tail is made of.
        kind = dict(zip(sequences, progress, strict=True))
        self.slowest = sorted(
            (
                (statistics.median(values), min(values), sequence, kind[sequence])
                for sequence, values in by_event.items()
            ),
            reverse=True,
        )[:3]

    @property
    def finished(self) -> int:
        return sum(r.finished for r in self.results)

    @property
    def messages(self) -> int:
        return sum(r.messages for r in self.results)


@dataclass
class Memory:
    base: int = 0
    warm: int = 0
    running: list[int] = field(default_factory=list)
    downloads: int = 0
    children: tuple[int, int] = (0, 0)


class Bench:
    def __init__(self, args: argparse.Namespace, server: MeasuredServer, steam: FakeSteam, admin: Metadata):
        self.args = args
        self.server = server
        self.steam = steam
        self.admin = admin
        self.channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.downloads = download_pb2_grpc.DownloadServiceStub(self.channel)
        self.admin_api = admin_pb2_grpc.AdminServiceStub(self.channel)

    async def add_account(self, username: str) -> None:
        password = secrets.token_urlsafe(12)
        self.steam.add_account(username, password)
        await self.admin_api.CreateSteamAccount(
            admin_pb2.CreateSteamAccountRequest(
                steam_account=admin_pb2.SteamAccount(username=username), password=password
            ),
            metadata=self.admin,
        )

    async def create(self, workshop_id: int, metadata: Metadata | None = None) -> str:
        response = await self.downloads.CreateDownload(
            download_pb2.CreateDownloadRequest(url_or_id=str(workshop_id)), metadata=metadata or self.admin
        )
        return str(response.download.id)

    async def get(self, download_id: str) -> download_pb2.Download:
        response = await self.downloads.GetDownload(
            download_pb2.GetDownloadRequest(id=download_id), metadata=self.admin
        )
        return response.download

    async def wait_until(self, download_ids: list[str], predicate: Any, limit: float, what: str) -> None:
        deadline = time.monotonic() + limit
        for download_id in download_ids:
            while not predicate(download := await self.get(download_id)):
                if time.monotonic() > deadline:
                    state = download_pb2.DownloadState.Name(download.state)
                    raise RuntimeError(
                        f"gave up waiting for {what}; download {download_id} is {state}"
                        f" ({download.failure.message})\n{self.server.log_tail()}"
                    )
                await asyncio.sleep(0.05)

    def add_slow_item(self, workshop_id: int, files: int) -> None:
        """`files` small files: the fake prints a progress line per file, one every --file-interval."""
        self.steam.add_item(
            workshop_id,
            files={f"file{number:04}.bin": 4096 for number in range(files)},
            behaviour={"file_delay": self.args.file_interval / TIME_SCALE},
        )

    async def sample_rss(self, seconds: float) -> list[int]:
        samples = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            samples.append(self.server.rss())
            await asyncio.sleep(0.1)
        return samples

    # -- memory --------------------------------------------------------------------------------

    async def memory(self, memory: Memory) -> None:
        count = memory.downloads = self.args.downloads
        # One download run to the end first: what the first job imports and caches is not per job.
        self.steam.add_item(WARMUP_ITEM)
        warmup = await self.create(WARMUP_ITEM)
        await self.wait_until([warmup], lambda d: d.state in FINAL, 60, "the warm-up download")
        await asyncio.sleep(1.0)
        memory.warm = int(statistics.median(await self.sample_rss(1.0)))
        if count == 0:
            return
        files = math.ceil((self.args.memory_seconds + 60) / self.args.file_interval)
        ids = []
        for number in range(count):
            self.add_slow_item(MEMORY_ITEM + number, files)
            ids.append(await self.create(MEMORY_ITEM + number))
        await self.wait_until(
            ids,
            lambda d: d.state == download_pb2.DOWNLOAD_STATE_RUNNING and d.progress.percent > 0,
            60,
            f"{count} downloads to run at once",
        )
        memory.running = await self.sample_rss(self.args.memory_seconds)
        memory.children = self.server.children_rss()
        states = [(await self.get(download_id)).state for download_id in ids]
        stopped = sum(state != download_pb2.DOWNLOAD_STATE_RUNNING for state in states)
        if stopped:
            print(f"warning: {stopped} of the {count} downloads stopped running while memory was sampled")
        for download_id in ids:
            await self.downloads.CancelDownload(
                download_pb2.CancelDownloadRequest(id=download_id), metadata=self.admin
            )
        await self.wait_until(ids, lambda d: d.state in FINAL, 60, "the cancelled downloads to stop")

    # -- latency -------------------------------------------------------------------------------

    async def latency(self, number: int, watchers: int) -> LatencyRound:
        args = self.args
        # A key that may run no download holds this one in the queue until every stream is open.
        gate = await self.admin_api.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(
                api_key=admin_pb2.ApiKey(
                    name=f"bench gate {number}",
                    scopes=["download:*"],
                    limits=admin_pb2.ApiKeyLimits(max_concurrent_downloads=0),
                )
            ),
            metadata=self.admin,
        )
        workshop_id = LATENCY_ITEM + number
        self.add_slow_item(workshop_id, max(1, round(args.seconds / args.file_interval)))
        download_id = await self.create(workshop_id, (("x-api-key", gate.plaintext_key),))

        clients = args.clients or max(1, min(os.cpu_count() or 1, math.ceil(watchers / 250)))
        clients = min(clients, watchers)
        shares = [watchers // clients + (1 if i < watchers % clients else 0) for i in range(clients)]
        context = multiprocessing.get_context("spawn")
        messages = context.Queue()
        limit = args.seconds * 5 + 120
        processes = [
            context.Process(
                target=watch_client,
                args=(
                    WatchPlan(
                        i,
                        self.server.port,
                        self.admin,
                        download_id,
                        share,
                        args.per_channel,
                        args.exclude_logs,
                        limit,
                        args.client == "node",
                    ),
                    messages,
                ),
                daemon=True,
            )
            for i, share in enumerate(shares)
        ]
        rss_before = self.server.rss()
        began = time.monotonic()
        for process in processes:
            process.start()
        results: dict[int, ClientResult] = {}
        try:
            ready = 0
            while ready < clients:
                ready += (await _receive(messages, processes, limit))[0] == "ready"
            connected = time.monotonic() - began
            await asyncio.sleep(0.5)  # the last replayed messages leave the server
            rss_watching = self.server.rss()

            cpu, wall, busy = self.server.cpu_seconds(), time.monotonic(), _machine_busy()
            await self.admin_api.UpdateApiKey(
                admin_pb2.UpdateApiKeyRequest(
                    api_key=admin_pb2.ApiKey(id=gate.api_key.id, limits=admin_pb2.ApiKeyLimits()),
                    update_mask=field_mask_pb2.FieldMask(paths=["limits"]),
                ),
                metadata=self.admin,
            )
            while len(results) < clients:
                message = await _receive(messages, processes, limit)
                if message[0] == "result":
                    results[message[1]] = message[2]
            run_seconds = time.monotonic() - wall
            server_cpu = self.server.cpu_seconds() - cpu
            busy_after = _machine_busy()
            machine_busy = (busy_after[0] - busy[0]) / max(1, busy_after[1] - busy[1])
        finally:
            for process in processes:
                await asyncio.to_thread(process.join, 10)
                if process.is_alive():
                    process.kill()
        download = await self.get(download_id)
        if download.state != download_pb2.DOWNLOAD_STATE_SUCCEEDED:
            state = download_pb2.DownloadState.Name(download.state)
            print(f"warning: the watched download ended {state}: {download.failure.message}")
        return LatencyRound(
            watchers=watchers,
            clients=clients,
            connect_seconds=connected,
            run_seconds=run_seconds,
            rss_before=rss_before,
            rss_watching=rss_watching,
            server_cpu_seconds=server_cpu,
            machine_busy=machine_busy,
            results=[results[i] for i in range(clients)],
        )


async def _receive(messages: Any, processes: list[Any], limit: float) -> tuple[Any, ...]:
    """The next message of the client processes; fails when one of them failed or died."""
    deadline = time.monotonic() + limit
    while True:
        try:
            message: tuple[Any, ...] = await asyncio.to_thread(messages.get, True, 1.0)
        except queue.Empty:
            dead = [process.exitcode for process in processes if process.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a client process exited with {dead[0]}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"the client processes said nothing for {limit:.0f}s") from None
            continue
        if message[0] == "error":
            raise RuntimeError(f"client {message[1]} failed: {message[2]}")
        return message


async def run(args: argparse.Namespace) -> tuple[Memory, list[LatencyRound], int]:
    with tempfile.TemporaryDirectory(prefix="wallwhale-bench-") as temporary:
        directory = Path(temporary)
        (directory / "data").mkdir()
        steam = FakeSteam(directory / "steam")
        steam.set(time_scale=TIME_SCALE)
        with database(args.database, directory / "data") as database_url:
            env = server_env(
                directory / "data",
                database_url,
                log_level=args.log_level,
                depotdownloader_path=str(steam.executable),
                # The test DepotDownloader keeps its Steam world there: its sandbox must let it write.
                depotdownloader_writable=str(steam.directory.resolve()),
                max_concurrent_downloads=str(max(args.downloads, 1)),
                process_stop_grace_seconds="2",
                # One key holds every watcher here: the per-caller stream limit (16) is not measured.
                max_streams_per_caller=str(max(args.watchers) + 16),
                max_streams_total=str(max(args.watchers) + 1024),
            )
            server = MeasuredServer(directory, env)
            try:
                server.cli("migrate")
                admin = json.loads(server.cli("bootstrap", "--json", "--email", "bench@example.test"))
                await server.start()
                memory = Memory()
                await asyncio.sleep(2.0)  # start-up settles (first health check, first audit flush)
                memory.base = int(statistics.median([server.rss() for _ in range(5)]))
                bench = Bench(args, server, steam, (("x-api-key", admin["api_key"]),))
                try:
                    for number in range(max(args.downloads, 1)):
                        await bench.add_account(f"bench{number}")
                    await bench.memory(memory)
                    rounds = [await bench.latency(n, watchers) for n, watchers in enumerate(args.watchers)]
                finally:
                    await bench.channel.close()
                return memory, rounds, server.peak_rss()
            finally:
                await server.stop()


def report(
    args: argparse.Namespace, memory: Memory, rounds: list[LatencyRound], peak: int, before: str
) -> None:
    database_name = "SQLite (a file in a temporary directory)" if args.database == "sqlite" else "PostgreSQL"
    print()
    print("WallWhale: progress latency (event written -> watcher received) and server memory")
    print(f"machine before: {before}")
    print(f"machine after:  {machine()}")
    print(f"database: {database_name}")
    print(f"command: {command()}")
    print(
        f"DepotDownloader: the fake (tests/fakes/steam.py), a progress line per file every"
        f" {args.file_interval}s; the server writes a job's events every {EVENT_FLUSH_INTERVAL}s,"
        f" a progress event at most every {PROGRESS_INTERVAL}s"
    )
    client = "bench/watch_client.mjs (Node)" if args.client == "node" else "grpc.aio (Python)"
    print(f"watchers: {client}, {args.per_channel} streams per connection")
    watching = "progress events only (exclude_logs)" if args.exclude_logs else "progress and log events"
    print()
    print(f"Latency in ms of live {watching}: client receipt - server event_time")
    print(
        f"{'watchers':>8} {'events':>6} {'received':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
        f"  {'steady p50':>10} {'steady p99':>10} {'finished':>9}"
    )
    for r in rounds:
        print(
            f"{r.watchers:>8} {r.events:>6} {len(r.all):>8} {_percentile(r.all, 0.5):>8.1f}"
            f" {_percentile(r.all, 0.9):>8.1f} {_percentile(r.all, 0.99):>8.1f}"
            f" {(r.all[-1] if r.all else math.nan):>8.1f}  {_percentile(r.steady, 0.5):>10.1f}"
            f" {_percentile(r.steady, 0.99):>10.1f} {r.finished:>4}/{r.watchers:<4}"
        )
    print("  steady: events from the first progress line on (the start of a run writes a burst of log")
    print("  lines: login, manifest, one 'Pre-allocating' line per file)")
    print()
    print("Where the time goes (per event: the first watcher to get it, and first to last; medians)")
    print(
        f"{'watchers':>8} {'first ms':>8} {'spread ms':>9} {'progress p99':>12} {'log p99':>8}"
        f" {'msgs/s':>7} {'server CPU':>10} {'us/msg':>6} {'client CPU':>12} {'us/msg':>6}"
        f" {'machine busy':>12}"
    )
    for r in rounds:
        rate = r.messages / r.run_seconds if r.run_seconds else math.nan
        per_message = r.server_cpu_seconds / r.messages * 1e6 if r.messages else math.nan
        client_seconds = sum(c.cpu_seconds for c in r.results)
        client_cpu = "+".join(
            f"{c.cpu_seconds / c.wall_seconds:.0%}" if c.wall_seconds else "-" for c in r.results
        )
        print(
            f"{r.watchers:>8} {statistics.median(r.first) if r.first else math.nan:>8.1f}"
            f" {statistics.median(r.spread) if r.spread else math.nan:>9.1f}"
            f" {_percentile(r.progress, 0.99):>12.1f} {_percentile(r.logs, 0.99):>8.1f} {rate:>7.0f}"
            f" {r.server_cpu_seconds / r.run_seconds:>10.0%} {per_message:>6.0f} {client_cpu:>12}"
            f" {client_seconds / r.messages * 1e6 if r.messages else math.nan:>6.0f}"
            f" {r.machine_busy:>12.0%}"
        )
    print("  msgs/s: messages delivered to all watchers per second while the download ran; server CPU:")
    print("  of the server process (one CPU = 100%); us/msg: that CPU time per delivered message (the job's")
    print("  own work is in it too, which dominates with few watchers); client CPU: of each client process,")
    print("  and its time per message; machine busy: of all CPUs, by every process on the machine (other")
    print("  work included): near 100% means the figures are queueing for a CPU, not the server's own")
    for r in rounds:
        slowest = ", ".join(
            f"#{sequence} {'progress' if is_progress else 'log'} {median:.0f} ms (first {first:.0f})"
            for median, first, sequence, is_progress in r.slowest
        )
        print(f"  {r.watchers} watchers: the slowest events by their median latency: {slowest}")
    for r in rounds:
        errors = sum((Counter(result.errors) for result in r.results), Counter())
        replayed = sum(result.replayed for result in r.results)
        print(
            f"  {r.watchers} watchers: streams open in {r.connect_seconds:.1f}s, the download ran"
            f" {r.run_seconds:.1f}s until the last watcher had the final event, {replayed} replayed"
            " events left out"
        )
        for error, count in errors.items():
            print(f"    {count} streams failed: {error}")

    print()
    print("Server memory (VmRSS of the server process alone)")
    rows: list[tuple[str, str, str, bool | None]] = [
        ("idle after start (base)", f"{memory.base / MB:.1f} MB", "<= 100 MB", memory.base <= 100 * MB),
        ("idle after one warm-up download", f"{memory.warm / MB:.1f} MB", "", None),
    ]
    if memory.running:
        running = int(statistics.median(memory.running))
        per = (running - memory.warm) / memory.downloads
        rows += [
            (f"with {memory.downloads} downloads running (median)", f"{running / MB:.1f} MB", "", None),
            ("per running download", f"{per / MB:.2f} MB", "<= 5 MB", per <= 5 * MB),
            (
                "  DepotDownloader processes (not counted)",
                f"{memory.children[0]}, {memory.children[1] / MB:.0f} MB together",
                "",
                None,
            ),
        ]
    for r in rounds:
        per_watcher = (r.rss_watching - r.rss_before) / r.watchers
        rows.append(
            (
                f"with {r.watchers} watch streams open",
                f"{r.rss_watching / MB:.1f} MB ({per_watcher / 1024:+.0f} kB each)",
                "",
                None,
            )
        )
    rows.append(("peak over the whole run (VmHWM)", f"{peak / MB:.1f} MB", "", None))
    for name, value, target, met in rows:
        verdict = "" if met is None else ("met" if met else "MISSED")
        print(f"  {name:<42} {value:<28} {target:<10} {verdict}".rstrip())
    for r in rounds:
        if r.watchers >= 1000:
            p99 = _percentile(r.all, 0.99)
            verdict = "met" if p99 < 10 else "MISSED"
            print(f"  latency p99 with {r.watchers} watchers {p99:.1f} ms, target < 10 ms: {verdict}")


def _watcher_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("one or more positive numbers, comma-separated")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--watchers",
        type=_watcher_counts,
        default=[1000],
        help="WatchDownload streams on one download (default 1000); a list (1,100,1000) runs a round each",
    )
    parser.add_argument(
        "--downloads", type=int, default=8, help="downloads running at once for the memory figure"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the watched download runs")
    parser.add_argument("--file-interval", type=float, default=0.25, help="seconds between progress lines")
    parser.add_argument("--memory-seconds", type=float, default=3.0, help="how long RSS is sampled")
    parser.add_argument(
        "--database", default="sqlite", help="sqlite, or a postgresql:// URL where a scratch database is made"
    )
    parser.add_argument(
        "--clients", type=int, default=0, help="client processes (default: one per 250 watchers, <= CPUs)"
    )
    parser.add_argument("--per-channel", type=int, default=100, help="streams per client connection")
    parser.add_argument(
        "--client",
        choices=["node", "python"],
        default="node" if shutil.which("node") else "python",
        help="the watchers: bench/watch_client.mjs (Node's HTTP/2, light; the default when node is"
        " installed) or grpc.aio (Python, several times the CPU per message)",
    )
    parser.add_argument("--exclude-logs", action="store_true", help="watch progress and states only")
    parser.add_argument("--log-level", default="INFO", help="the server's log level")
    args = parser.parse_args()
    if not 0 <= args.downloads <= 256:
        parser.error("--downloads is 0 to 256 (the server's limit on concurrent downloads)")
    before = machine()
    memory, rounds, peak = asyncio.run(run(args))
    report(args, memory, rounds, peak, before)


if __name__ == "__main__":
    main()
