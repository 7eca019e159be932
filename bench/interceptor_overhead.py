"""What the interceptor chain costs on a read RPC: AdminService.GetApiKey through the real server
(request id and JSON log line, metrics, IP rules, API-key authentication, rate limit, audit, error
mapping) against the same servicer on a bare grpc.aio server with no interceptors and no
credentials, on the same SQLite database, in the same run.

Three targets, measured in turn for several rounds so that drift (page cache, CPU frequency) hits
them alike:
  bare        the servicer alone
  chain       the full chain, with an API key that has no rate limit (one key lookup per call)
  chain+rate  the full chain, with a rate-limited key (plus one upsert in rate_limits per call)

The load comes from separate processes (grpc.aio clients keeping --concurrency calls in flight),
so the server's event loop serves and does not also generate load. Run it from the repository
root: .venv/bin/python bench/interceptor_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from wallwhale import log
from wallwhale.app import WallWhaleServer, keyring_for
from wallwhale.config import Settings
from wallwhale.core import api_keys
from wallwhale.core.bootstrap import bootstrap_admin
from wallwhale.db import migrate
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.db.types import utcnow
from wallwhale.rpc.servicers.admin import AdminServicer
from wallwhale.v1 import admin_pb2, admin_pb2_grpc

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    metadata: Metadata


@dataclass(frozen=True)
class Sample:
    completed: int
    failed: int
    seconds: float
    latencies_ms: list[float]
    # "CODE: message" of failed calls, by count.
    errors: dict[str, int]


# The load generator (runs in the worker processes) ----------------------------------------------


def drive(
    port: int, metadata: Metadata, key_id: str, concurrency: int, warmup: float, duration: float
) -> Sample:
    return asyncio.run(_drive(port, metadata, key_id, concurrency, warmup, duration))


async def _drive(
    port: int, metadata: Metadata, key_id: str, concurrency: int, warmup: float, duration: float
) -> Sample:
    request = admin_pb2.GetApiKeyRequest(id=key_id)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + duration

        async def worker() -> None:
            while (began := time.perf_counter()) < stop_at:
                error = ""
                try:
                    await stub.GetApiKey(request, metadata=metadata)
                except aio.AioRpcError as exc:
                    error = f"{exc.code().name}: {exc.details()}"
                if began < measure_from:  # only calls that started inside the window count
                    continue
                if error:
                    errors[error] = errors.get(error, 0) + 1
                else:
                    latencies.append((time.perf_counter() - began) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Sample(len(latencies), sum(errors.values()), duration, latencies, errors)


# The servers (this process) -----------------------------------------------------------------------


async def _keys(settings: Settings) -> tuple[str, str, str]:
    """The bootstrapped admin key, its id, and a rate-limited key allowed far more than we can send."""
    engine = create_engine(settings.resolved_database_url)
    try:
        sessions = session_factory(engine)
        admin = await bootstrap_admin(sessions, "bench@example.test")
        async with sessions.begin() as session:
            _, limited = await api_keys.create_api_key(
                session,
                api_keys.KeyInput(
                    name="bench rate-limited",
                    owner_user_id=admin.user_id,
                    scopes=("admin:read",),
                    limits=api_keys.KeyLimits(requests_per_minute=60_000_000, burst=1_000_000),
                ),
                utcnow(),
            )
    finally:
        await engine.dispose()
    return admin.api_key, admin.api_key_id, limited


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="wallwhale-bench-") as directory:
        data = Path(directory)
        settings = Settings(
            data_dir=data,
            grpc_host="127.0.0.1",
            grpc_port=0,
            metrics_port=-1,
            log_level=args.log_level,
            migrate_on_start=False,
        )
        # The production logging (one JSON line per call at INFO), written where it costs the same
        # but does not flood the terminal.
        log.configure(settings.log_level, settings.log_format)
        sink = open(os.devnull, "w")  # noqa: ASYNC230, SIM115 - opened once, lives as long as the run
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sink)
        await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
        admin_key, admin_key_id, limited_key = await _keys(settings)

        full = WallWhaleServer(settings)
        await full.start()
        bare = aio.server()
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(full.sessions, utcnow, keyring_for(settings)),  # type: ignore[abstract]
            bare,
        )
        bare_port = bare.add_insecure_port("127.0.0.1:0")
        await bare.start()
        targets = [
            Target("bare", bare_port, ()),
            Target("chain", full.port, (("x-api-key", admin_key),)),
            Target("chain+rate", full.port, (("x-api-key", limited_key),)),
        ]
        print(
            f"GetApiKey on SQLite, {args.clients} client process(es) x {args.concurrency} in flight, "
            f"{args.rounds} rounds of {args.duration}s per target (after {args.warmup}s warm-up), "
            f"log level {args.log_level}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
        )
        results: dict[str, list[Sample]] = {t.name: [] for t in targets}
        loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=args.clients, mp_context=context) as pool:
                for round_number in range(1, args.rounds + 1):
                    for target in targets:
                        jobs = [
                            loop.run_in_executor(
                                pool,
                                drive,
                                target.port,
                                target.metadata,
                                admin_key_id,
                                args.concurrency,
                                args.warmup,
                                args.duration,
                            )
                            for _ in range(args.clients)
                        ]
                        samples = await asyncio.gather(*jobs)
                        merged = Sample(
                            sum(s.completed for s in samples),
                            sum(s.failed for s in samples),
                            args.duration,
                            [ms for s in samples for ms in s.latencies_ms],
                            dict(sum((Counter(s.errors) for s in samples), Counter())),
                        )
                        results[target.name].append(merged)
                        rate = merged.completed / merged.seconds
                        print(
                            f"  round {round_number} {target.name:<10} {rate:8.0f} req/s"
                            f"  p50 {_percentile(merged.latencies_ms, 0.5):6.2f} ms"
                            f"  p99 {_percentile(merged.latencies_ms, 0.99):6.2f} ms"
                        )
                        for error, count in merged.errors.items():
                            print(f"      {count} failed with {error}")
        finally:
            await bare.stop(0)
            await full.stop(0)
            sink.close()

        print()
        print(f"{'target':<11} {'req/s (median of rounds)':>25} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8}")
        bare_rate = statistics.median(s.completed / s.seconds for s in results["bare"])
        for name, samples in results.items():
            rate = statistics.median(s.completed / s.seconds for s in samples)
            latencies = [ms for s in samples for ms in s.latencies_ms]
            print(
                f"{name:<11} {rate:>25.0f} {_percentile(latencies, 0.5):>8.2f}"
                f" {_percentile(latencies, 0.99):>8.2f} {rate / bare_rate:>8.2f}"
            )
        failures = sum(s.failed for samples in results.values() for s in samples)
        if failures:
            print(f"{failures} calls failed; the figures above count only the ones that succeeded")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per target and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight per client process")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--log-level", default="INFO", help="the server's log level (INFO logs every call)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
