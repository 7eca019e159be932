"""Read RPC throughput: the real server with API-key authentication against a bare grpc.aio server
with a trivial handler, and REST through Envoy against direct gRPC, all in one run.

    apt-get install -y nghttp2-client wrk     # h2load and wrk, the load generators
    .venv/bin/python bench/read_throughput.py [--rounds 3] [--seconds 5] [--connections 2 --streams 32]

Targets, each a separate process on this machine:
  bare         a grpc.aio server (no interceptors, no database) whose GetDownload handler parses the
               request and returns a prepared response: the same bytes the real server returns
  grpc         the real server (`wallwhale serve`, SQLite or --database, production settings) on
               DownloadService.GetDownload of a real SUCCEEDED download (run by the test
               DepotDownloader), with the bootstrapped admin's API key: the whole interceptor chain,
               the key look-up and the row read
  envoy-grpc   the same call through Envoy (rendered by scripts/envoy_config.py, as run.sh does)
  envoy-rest   GET /v1/downloads/{id} through Envoy's JSON transcoder (HTTP/1.1 keep-alive)
  bare-rest    the same REST call through a second Envoy in front of the bare server: what Envoy
               and wrk allow when the upstream costs almost nothing
  tls-grpc     envoy-grpc through a third Envoy with TLS on (a `wallwhale certs dev` certificate,
  tls-rest     h2 by ALPN) and envoy-rest through it (HTTPS, HTTP/1.1 keep-alive): the cost of TLS
  bare-tls-rest  bare-rest through a fourth Envoy with TLS on: the cost of TLS to Envoy itself

Load: h2load (C, HTTP/2) sends gRPC unary requests (content-type application/grpc, te: trailers, the
length-prefixed request as the body) with --connections x --streams in flight; wrk the REST calls
with the same number of connections in flight. h2load counts any HTTP 200 as a success, and gRPC
errors are HTTP 200 too: so every target is first called once with a real client to check
grpc-status OK and the response, and the DATA bytes h2load received are checked against
successes x the response's size (an error carries no message). wrk's non-2xx count must be 0.

Targets are measured in turn, --rounds times, so that drift on a shared machine hits them alike;
each figure is the median of the rounds, and the ratios are taken within this run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import signal
import ssl
import statistics
import struct
import subprocess
import tempfile
import time
import urllib.request
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
from grpc import aio
from grpc_health.v1 import health, health_pb2_grpc

from tests.fakes.steam import FakeSteam
from wallwhale.v1 import download_pb2, download_pb2_grpc

METHOD = "/wallwhale.v1.DownloadService/GetDownload"
ITEM = 3_200_000_001


def _frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


# The bare server (a child process) ------------------------------------------------------------------


def bare_server(response: bytes, ports: Any) -> None:
    asyncio.run(_bare_server(response, ports))


async def _bare_server(response: bytes, ports: Any) -> None:
    prepared = download_pb2.GetDownloadResponse.FromString(response)

    async def get_download(
        request: download_pb2.GetDownloadRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.GetDownloadResponse:
        return prepared

    handler = grpc.method_handlers_generic_handler(
        "wallwhale.v1.DownloadService",
        {
            "GetDownload": grpc.unary_unary_rpc_method_handler(
                get_download,
                request_deserializer=download_pb2.GetDownloadRequest.FromString,
                response_serializer=download_pb2.GetDownloadResponse.SerializeToString,
            )
        },
    )
    server = aio.server()
    server.add_generic_rpc_handlers((handler,))
    # Envoy routes to upstreams its health checks find SERVING (the bare-rest target).
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ports.put(port)
    await server.wait_for_termination()


# Load generators ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    rate: float  # successful requests per second
    succeeded: int
    failed: int
    note: str = ""


def _h2load_command(port: int, body: Path, key: str | None, *options: str, scheme: str = "http") -> list[str]:
    headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    if key:
        headers += ["-H", f"x-api-key: {key}"]
    return [
        require("h2load", "nghttp2-client"),
        *options,
        *headers,
        "-d",
        str(body),
        f"{scheme}://127.0.0.1:{port}{METHOD}",
    ]


def _h2load_counts(out: str) -> tuple[float, int, int, int]:
    """req/s (of the measured period), succeeded, failed, DATA bytes received."""
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    requests = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    data = re.search(r"traffic: .*, [\d.]+[KMG]?B \((\d+)\) data", out)
    if not (rate and requests and data):
        raise SystemExit(f"bench: cannot read h2load's output:\n{out}")
    return float(rate[1]), int(requests[2]), int(requests[3]), int(data[1])


def h2load_check(
    port: int, body: Path, key: str | None, reply_bytes: int, calls: int = 500, scheme: str = "http"
) -> None:
    """A counted run without warm-up: every reply must carry one message of reply_bytes (a gRPC
    error is an HTTP 200 with no message and a non-zero grpc-status, which h2load counts as a success)."""
    done = subprocess.run(
        _h2load_command(port, body, key, "-n", str(calls), "-c", "1", "-m", "10", scheme=scheme),
        capture_output=True,
        text=True,
        check=True,
    )
    _, succeeded, _, data = _h2load_counts(done.stdout)
    if succeeded != calls or data != calls * reply_bytes:
        raise SystemExit(
            f"bench: {succeeded} of {calls} HTTP successes with {data} DATA bytes on port {port};"
            f" {calls * reply_bytes} expected: some gRPC calls failed"
        )


def h2load(args: argparse.Namespace, port: int, body: Path, key: str | None, scheme: str = "http") -> Result:
    options = ["-c", str(args.connections), "-m", str(args.streams), "-t", "1"]
    options += ["-D", f"{round(args.seconds * 1000)}ms", "--warm-up-time", f"{round(args.warmup * 1000)}ms"]
    done = subprocess.run(
        _h2load_command(port, body, key, *options, scheme=scheme), capture_output=True, text=True, check=True
    )
    rate, succeeded, failed, _ = _h2load_counts(done.stdout)
    return Result(rate * succeeded / max(1, succeeded + failed), succeeded, failed)


def wrk(args: argparse.Namespace, port: int, path: str, key: str, scheme: str = "http") -> Result:
    in_flight = args.connections * args.streams

    def load(seconds: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                require("wrk", "wrk"),
                "-t",
                "1",
                "-c",
                str(in_flight),
                "-d",
                f"{max(1, round(seconds))}s",
                "-H",
                f"x-api-key: {key}",
                f"{scheme}://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )

    if args.warmup:
        load(args.warmup)  # wrk has no warm-up of its own
    done = load(args.seconds)
    out = done.stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if not total:
        raise SystemExit(f"bench: cannot read wrk's output:\n{out}\n{done.stderr}")
    seconds = float(total[2]) / (1000 if total[3] == "ms" else 1)
    failed = int(bad[1]) if bad else 0
    succeeded = int(total[1]) - failed
    return Result(succeeded / seconds, succeeded, failed, f"socket errors: {errors[1]}" if errors else "")


# The run -------------------------------------------------------------------------------------------


async def _check_grpc(port: int, request: download_pb2.GetDownloadRequest, key: str | None) -> bytes:
    """One call with a real client: grpc-status OK, and the reply's bytes."""
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = download_pb2_grpc.DownloadServiceStub(channel).GetDownload(
            request, metadata=(("x-api-key", key),) if key else None
        )
        reply = await call
        if await call.code() != grpc.StatusCode.OK:
            raise SystemExit(f"bench: GetDownload on port {port}: {await call.code()}")
        return reply.SerializeToString()  # type: ignore[no-any-return]


def _check_rest(port: int, path: str, key: str, download_id: str, ca: Path | None = None) -> None:
    scheme = "https" if ca else "http"
    url = f"{scheme}://127.0.0.1:{port}{path}"
    request = urllib.request.Request(url, headers={"x-api-key": key})  # noqa: S310 - our Envoy
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(request, timeout=10, context=context) as reply:  # noqa: S310 - our Envoy
        body = json.loads(reply.read())
    if body["download"]["id"] != download_id or body["download"]["state"] != "DOWNLOAD_STATE_SUCCEEDED":
        raise SystemExit(f"bench: unexpected REST reply {body}")


async def run(args: argparse.Namespace) -> None:
    require("h2load", "nghttp2-client")
    require("wrk", "wrk")
    with tempfile.TemporaryDirectory(prefix="wallwhale-bench-") as temporary:
        directory = Path(temporary)
        (directory / "data").mkdir()
        steam = FakeSteam(directory / "steam")
        steam.set(time_scale=0.01)
        with database(args.database, directory / "data") as url:
            env = server_env(
                directory / "data",
                url,
                depotdownloader_path=str(steam.executable),
                # The test DepotDownloader keeps its Steam world there: its sandbox must let it write.
                depotdownloader_writable=str(steam.directory.resolve()),
                grpc_socket=str(proxy_socket(directory / "data")),
                log_level=args.log_level,
            )
            server = ServerProcess(directory, env)
            server.cli("migrate")
            key = json.loads(server.cli("bootstrap", "--json", "--email", "bench@example.test"))["api_key"]
            await server.start()
            envoys: list[subprocess.Popen[bytes]] = []
            bare: Any = None
            try:
                steam.add_item(ITEM)
                download = await succeeded_download(server.port, (("x-api-key", key),), steam, ITEM, 60)
                download_id = download.id
                request = download_pb2.GetDownloadRequest(id=download_id)
                reply = await _check_grpc(server.port, request, key)
                context = multiprocessing.get_context("spawn")
                port_queue = context.Queue()
                bare = context.Process(target=bare_server, args=(reply, port_queue), daemon=True)
                bare.start()
                bare_port = await asyncio.to_thread(port_queue.get, True, 30)
                envoy, envoy_port = start_envoy(
                    directory / "envoy", proxy_socket(directory / "data"), args.envoy_workers
                )
                envoys.append(envoy)
                envoy, bare_envoy_port = start_envoy(directory / "envoy-bare", bare_port, args.envoy_workers)
                envoys.append(envoy)
                certificates = dev_certificates(directory / "certs")
                envoy, tls_port = start_envoy(
                    directory / "envoy-tls",
                    proxy_socket(directory / "data"),
                    args.envoy_workers,
                    certificates,
                )
                envoys.append(envoy)
                envoy, bare_tls_port = start_envoy(
                    directory / "envoy-bare-tls", bare_port, args.envoy_workers, certificates
                )
                envoys.append(envoy)
                rest_path = f"/v1/downloads/{download_id}"
                if await _check_grpc(bare_port, request, None) != reply:
                    raise SystemExit("bench: the bare server's reply differs from the real one")
                if await _check_grpc(envoy_port, request, key) != reply:
                    raise SystemExit("bench: the reply through Envoy differs from the direct one")
                _check_rest(envoy_port, rest_path, key, download_id)
                _check_rest(tls_port, rest_path, key, download_id, certificates / "ca.pem")
                body = directory / "request.bin"
                body.write_bytes(_frame(request.SerializeToString()))
                reply_bytes = len(_frame(reply))
                for target, target_key in ((bare_port, None), (server.port, key), (envoy_port, key)):
                    h2load_check(target, body, target_key, reply_bytes)
                h2load_check(tls_port, body, key, reply_bytes, scheme="https")
                await asyncio.sleep(1)  # the first health checks and audit flushes settle
                _check_rest(bare_envoy_port, rest_path, key, download_id)
                _check_rest(bare_tls_port, rest_path, key, download_id, certificates / "ca.pem")
                ports = Ports(bare_port, server.port, envoy_port, bare_envoy_port, tls_port, bare_tls_port)
                _measure(args, ports, body, key, reply_bytes, rest_path)
            finally:
                for envoy in envoys:
                    envoy.send_signal(signal.SIGTERM)
                    envoy.wait(30)
                if bare is not None:
                    bare.kill()
                await server.stop()


@dataclass(frozen=True)
class Ports:
    bare: int
    server: int
    envoy: int  # in front of the server
    bare_envoy: int  # in front of the bare server
    tls: int  # the same Envoy configuration with TLS on, in front of the server
    bare_tls: int  # and in front of the bare server


def _measure(
    args: argparse.Namespace, ports: Ports, body: Path, key: str, reply_bytes: int, rest_path: str
) -> None:
    targets = {
        "bare": lambda: h2load(args, ports.bare, body, None),
        "bare-rest": lambda: wrk(args, ports.bare_envoy, rest_path, key),
        "grpc": lambda: h2load(args, ports.server, body, key),
        "envoy-grpc": lambda: h2load(args, ports.envoy, body, key),
        "envoy-rest": lambda: wrk(args, ports.envoy, rest_path, key),
        "tls-grpc": lambda: h2load(args, ports.tls, body, key, scheme="https"),
        "tls-rest": lambda: wrk(args, ports.tls, rest_path, key, scheme="https"),
        "bare-tls-rest": lambda: wrk(args, ports.bare_tls, rest_path, key, scheme="https"),
    }
    in_flight = args.connections * args.streams
    print(
        f"GetDownload (a SUCCEEDED download, {reply_bytes - 5}-byte reply), {in_flight} requests in flight"
        f" (h2load {args.connections} connections x {args.streams} streams; wrk {in_flight} connections),"
        f" {args.rounds} rounds of {args.seconds:g}s after {args.warmup:g}s warm-up, server log level"
        f" {args.log_level}, Envoy --concurrency {args.envoy_workers},"
        f" {'SQLite' if args.database == 'sqlite' else 'PostgreSQL'}",
        flush=True,
    )
    results: dict[str, list[Result]] = {name: [] for name in targets}
    for number in range(1, args.rounds + 1):
        for name, measure in targets.items():
            result = measure()
            results[name].append(result)
            print(
                f"  round {number} {name:<10} {result.rate:8.0f} req/s  ({result.succeeded} OK,"
                f" {result.failed} failed) {result.note}".rstrip(),
                flush=True,
            )
    rate = {name: statistics.median(r.rate for r in rs) for name, rs in results.items()}
    print()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    print(f"{'target':<12} {'req/s (median)':>15}")
    for name, value in rate.items():
        print(f"{name:<12} {value:>15.0f}")
    authenticated = rate["grpc"] / rate["bare"]
    rest = rate["envoy-rest"] / rate["grpc"]
    print(
        f"authenticated read / bare grpc.aio: {authenticated:.2f} (target >= 0.6:"
        f" {'met' if authenticated >= 0.6 else 'MISSED'})"
    )
    print(f"gRPC through Envoy / direct gRPC:   {rate['envoy-grpc'] / rate['grpc']:.2f}")
    print(
        f"Envoy's own ceiling, REST to the bare server / gRPC to it: {rate['bare-rest'] / rate['bare']:.2f}"
    )
    print(
        f"REST through Envoy / direct gRPC:   {rest:.2f}"
        f" (target >= 0.4: {'met' if rest >= 0.4 else 'MISSED'})"
    )
    print(f"TLS / plain through Envoy, REST:    {rate['tls-rest'] / rate['envoy-rest']:.2f}")
    print(f"TLS / plain through Envoy, gRPC:    {rate['tls-grpc'] / rate['envoy-grpc']:.2f}")
    print(
        "TLS / plain through Envoy, REST to the bare server (Envoy's own cost):"
        f" {rate['bare-tls-rest'] / rate['bare-rest']:.2f}"
    )
    problems = [r.note for rs in results.values() for r in rs if r.note or r.failed]
    if problems:
        print(f"WARNING: {len(problems)} measurements had failures; see the rounds above")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured per target and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--connections", type=int, default=2, help="h2load connections")
    parser.add_argument("--streams", type=int, default=32, help="h2load streams per connection")
    parser.add_argument("--envoy-workers", type=int, default=2, help="Envoy --concurrency (run.sh: 2)")
    parser.add_argument("--database", default="sqlite", help="sqlite, or a postgresql:// URL (scratch db)")
    parser.add_argument("--log-level", default="INFO", help="the server's (INFO: one line per call)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
