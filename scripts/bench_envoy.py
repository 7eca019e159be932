"""REST through Envoy against direct gRPC, for the same read RPC.

    .venv/bin/python scripts/bench_envoy.py [--rpc caller|status] [--seconds 5] [--concurrency 16]

--rpc caller (the default) is AuthService.GetCaller (GET /v1/auth/caller), a light read: the key
look-up every call makes, so the proxy's share shows; status is StatusService.GetStatus
(GET /v1/status), which probes the database, the storage and DepotDownloader on each call.

Starts a server (`wallwhale serve`, SQLite in a temporary directory) and Envoy in front of it,
then, one after the other for the same time with the same number of concurrent callers, measures
calls per second: gRPC straight to the server, gRPC through Envoy, REST/JSON through Envoy (plain
HTTP/1.1 keep-alive connections). Prints each and REST as a ratio of direct gRPC. Everything runs
on this machine, so the callers, the server and Envoy share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from grpc import aio

from wallwhale.v1 import auth_pb2, auth_pb2_grpc, status_pb2, status_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


async def _get_caller(channel: aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
    await auth_pb2_grpc.AuthServiceStub(channel).GetCaller(auth_pb2.GetCallerRequest(), metadata=metadata)


async def _get_status(channel: aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
    await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
        status_pb2.GetStatusRequest(), metadata=metadata
    )


# name: (the RPC, its REST path, how to call it over gRPC)
RPCS = {
    "caller": ("AuthService.GetCaller", "/v1/auth/caller", _get_caller),
    "status": ("StatusService.GetStatus", "/v1/status", _get_status),
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        time.sleep(0.1)
    raise SystemExit(f"bench: {what} did not come up")


@contextlib.contextmanager
def _stack(directory: Path) -> Iterator[tuple[int, int, str]]:
    """Yields (server port, Envoy port, admin API key) while a server and Envoy run."""
    env = {
        **os.environ,
        "WALLWHALE_DATA_DIR": str(directory),
        "WALLWHALE_METRICS_PORT": "-1",
        "WALLWHALE_LOG_LEVEL": "WARNING",
        "WALLWHALE_TRUSTED_PROXIES": "127.0.0.2",
    }
    created = subprocess.run(
        [str(BIN / "wallwhale"), "bootstrap", "--json"], env=env, capture_output=True, text=True, check=True
    )
    key = json.loads(created.stdout)["api_key"]
    port_file = directory / "port"
    server = subprocess.Popen(
        [str(BIN / "wallwhale"), "serve", "--port", "0", "--port-file", str(port_file)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    envoy: subprocess.Popen[bytes] | None = None
    try:
        _wait(lambda: bool(port_file.read_text().strip()), "the server")
        port = int(port_file.read_text())
        envoy_port, admin_port = _free_port(), _free_port()
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "envoy_config.py"),
                f"--out-dir={directory / 'envoy'}",
                f"--listen=127.0.0.1:{envoy_port}",
                f"--admin-port={admin_port}",
                f"--upstream=127.0.0.1:{port}",
                "--upstream-source-address=127.0.0.2",
            ],
            check=True,
        )
        envoy = subprocess.Popen(
            [
                str(BIN / "envoy"),
                "-c",
                str(directory / "envoy" / "envoy.yaml"),
                "--concurrency",
                "2",
                "--disable-hot-restart",
                "--log-level",
                "error",
            ],
            stdout=subprocess.DEVNULL,
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/clusters", timeout=2) as reply:
                return "::health_flags::healthy" in reply.read().decode()

        _wait(healthy, "Envoy")
        yield port, envoy_port, key
    finally:
        for process in (envoy, server):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)


async def _run(call: Callable[[], Awaitable[None]], seconds: float, concurrency: int) -> float:
    """Calls per second of `concurrency` loops of `call` for `seconds`."""
    deadline = time.monotonic() + seconds
    counts = [0] * concurrency

    async def loop(index: int) -> None:
        while time.monotonic() < deadline:
            await call()
            counts[index] += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    return sum(counts) / (time.monotonic() - started)


async def _grpc(rpc: str, target: str, key: str, seconds: float, concurrency: int) -> float:
    invoke = RPCS[rpc][2]
    async with aio.insecure_channel(target) as channel:
        metadata = (("x-api-key", key),)

        async def call() -> None:
            await invoke(channel, metadata)

        await call()  # connect first
        return await _run(call, seconds, concurrency)


async def _rest(rpc: str, port: int, key: str, seconds: float, concurrency: int) -> float:
    request = (f"GET {RPCS[rpc][1]} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-api-key: {key}\r\n\r\n").encode()
    connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(concurrency):
        connections.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    async def call() -> None:
        reader, writer = await connections.get()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"bench: REST call failed: {head.decode(errors='replace')}")
        lines = head.lower().split(b"\r\n")
        length = next(
            int(line[len(b"content-length:") :]) for line in lines if line.startswith(b"content-length:")
        )
        await reader.readexactly(length)
        connections.put_nowait((reader, writer))

    try:
        return await _run(call, seconds, concurrency)
    finally:
        while not connections.empty():
            connections.get_nowait()[1].close()


async def _bench(rpc: str, seconds: float, concurrency: int) -> None:
    with tempfile.TemporaryDirectory(prefix="wallwhale-bench-") as tmp, _stack(Path(tmp)) as stack:
        port, envoy, key = stack
        direct = await _grpc(rpc, f"127.0.0.1:{port}", key, seconds, concurrency)
        proxied = await _grpc(rpc, f"127.0.0.1:{envoy}", key, seconds, concurrency)
        rest = await _rest(rpc, envoy, key, seconds, concurrency)
    cores = os.cpu_count()
    print(f"{RPCS[rpc][0]}, {concurrency} concurrent callers, {seconds:g} s each, {cores} cores:")
    print(f"  gRPC direct              {direct:8.0f} calls/s")
    print(f"  gRPC through Envoy       {proxied:8.0f} calls/s   ({proxied / direct:.2f} of direct)")
    print(f"  REST/JSON through Envoy  {rest:8.0f} calls/s   ({rest / direct:.2f} of direct)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rpc", choices=sorted(RPCS), default="caller", help="the read RPC to call")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent callers")
    args = parser.parse_args()
    asyncio.run(_bench(args.rpc, args.seconds, args.concurrency))


if __name__ == "__main__":
    main()
