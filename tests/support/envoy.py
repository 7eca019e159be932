"""Test helpers for the real Envoy in front of real servers, and a plain HTTP client to call it.

    async with servers_behind_envoy(tmp_path, migrated_database_url) as (envoy, [server]):
        reply = await http("GET", envoy.url("/v1/status"), headers={"x-api-key": admin_key})
        assert reply.status == 200 and reply.json()["instanceId"] == server.instance_id

        async with event_stream(envoy.url(f"/v1/downloads/{id}:watch"), headers=...) as events:
            assert events.status == 200
            async for event in events:        # one parsed `data:` JSON object per server message
                ...

running_envoy(directory, upstreams) puts Envoy in front of servers started otherwise (or of a
stand-in): each upstream is a server's `upstream` (its Unix socket: start it with
grpc_socket=proxy_socket()) or a TCP port. Envoy is rendered by scripts/envoy_config.py (the same
script the run script uses) into the test's directory and started on free ports. Over the socket
the server believes the client address Envoy forwards, as run.sh sets it up; the test client on
127.0.0.1 calling the server directly is not believed. Over TCP Envoy connects from ENVOY_ADDRESS,
a loopback address of its own, which a server may trust only with mutual TLS. The HTTP calls run in
a thread: the servers under test share the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from http import client as http_client
from pathlib import Path
from typing import Any

from tests.support import REPO_ROOT
from tests.support.server import make_settings
from wallwhale.app import WallWhaleServer

ENVOY_BINARY = Path(sys.executable).parent / "envoy"
RENDER_SCRIPT = REPO_ROOT / "scripts" / "envoy_config.py"
# Envoy's source address towards servers over TCP (trusted_proxies, with mutual TLS only).
ENVOY_ADDRESS = "127.0.0.2"
_SOCKETS: list[Path] = []


def proxy_socket() -> Path:
    """A fresh path for a server's Unix socket (grpc_socket), in a private folder short enough for
    a socket's path (the test's tmp_path often is not)."""
    if not _SOCKETS:
        _SOCKETS.append(Path(tempfile.mkdtemp(prefix="wallwhale-sockets-")))  # 0700
    return _SOCKETS[0] / f"{time.monotonic_ns():x}.sock"


Upstream = int | str


def upstream_address(upstream: Upstream) -> str:
    """A TCP port on 127.0.0.1, or a server's `upstream` ("unix:/path" or "host:port") as it is."""
    return f"127.0.0.1:{upstream}" if isinstance(upstream, int) else upstream


# Envoy's clusters of server instances (with tracing on, a collector's cluster is listed too).
_SERVER_CLUSTERS = {"wallwhale", "wallwhale_archives"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def render_envoy_config(
    directory: Path,
    upstreams: Iterable[Upstream],
    *,
    port: int,
    admin_port: int,
    cors_origins: Iterable[str] = (),
    extra_args: Iterable[str] = (),
) -> Path:
    """Runs scripts/envoy_config.py; returns the envoy.yaml it wrote (wallwhale.pb lies beside it)."""
    directory.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        str(RENDER_SCRIPT),
        "--out-dir",
        str(directory),
        "--listen",
        f"127.0.0.1:{port}",
        "--admin-port",
        str(admin_port),
        "--upstream-source-address",
        ENVOY_ADDRESS,
        # Fast enough that tests see an instance come and go within a second or two.
        "--health-check-interval",
        "0.5",
        *(f"--upstream={upstream_address(u)}" for u in upstreams),
        *(f"--cors-origin={origin}" for origin in cors_origins),
        *extra_args,
    ]
    subprocess.run(args, check=True, capture_output=True)
    return directory / "envoy.yaml"


@dataclass
class Envoy:
    process: asyncio.subprocess.Process
    port: int
    admin_port: int
    directory: Path
    upstreams: list[str]  # as upstream_address() writes them
    scheme: str = "http"  # https when it was given a certificate

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str, **query: str | int) -> str:
        """The REST URL of `path`, with query parameters (use the proto's JSON names)."""
        return self.base_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")

    async def admin(self, path: str) -> str:
        reply = await http("GET", f"http://127.0.0.1:{self.admin_port}{path}")
        return reply.body.decode()

    async def config_dump(self) -> dict[str, Any]:
        return dict(json.loads(await self.admin("/config_dump")))

    async def healthy_upstreams(self) -> set[str]:
        """The servers Envoy's health checks find SERVING, as upstream_address() writes them."""
        healthy = set()
        for line in (await self.admin("/clusters")).splitlines():
            # wallwhale::127.0.0.1:50051::health_flags::healthy (a socket: its path)
            parts = line.split("::")
            if parts[0] in _SERVER_CLUSTERS and parts[2:] == ["health_flags", "healthy"]:
                address = parts[1]
                healthy.add(f"unix:{address}" if address.startswith("/") else address)
        return healthy

    async def wait_healthy(self, upstreams: Iterable[Upstream] | None = None, within: float = 15) -> None:
        """Waits until Envoy is ready and finds exactly `upstreams` (default: all) healthy."""
        wanted = set(self.upstreams if upstreams is None else map(upstream_address, upstreams))
        deadline = time.monotonic() + within
        seen: set[str] | None = None
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                seen = await self.healthy_upstreams()
                if seen == wanted:
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"envoy sees {seen} healthy, expected {wanted}:\n{self.log()}")

    def log(self) -> str:
        return (self.directory / "envoy.log").read_text(errors="replace")[-5000:]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.asynccontextmanager
async def running_envoy(
    directory: Path,
    upstreams: Iterable[Upstream],
    *,
    cors_origins: Iterable[str] = (),
    extra_args: Iterable[str] = (),
    wait_healthy: bool = True,
) -> AsyncIterator[Envoy]:
    """Renders the config for `upstreams`, starts Envoy on free ports and (unless told not to)
    waits until every upstream is healthy; stops Envoy on the way out."""
    extra_args = list(extra_args)
    addresses = [upstream_address(u) for u in upstreams]
    port, admin_port = free_port(), free_port()
    config = await asyncio.to_thread(
        render_envoy_config,
        directory,
        addresses,
        port=port,
        admin_port=admin_port,
        cors_origins=cors_origins,
        extra_args=extra_args,
    )
    log = await asyncio.to_thread((directory / "envoy.log").open, "wb")
    with log:
        process = await asyncio.create_subprocess_exec(
            str(ENVOY_BINARY),
            "-c",
            str(config),
            "--concurrency",
            "2",
            "--disable-hot-restart",
            "--log-level",
            "warn",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    scheme = "https" if any(arg.startswith("--tls-cert") for arg in extra_args) else "http"
    envoy = Envoy(process, port, admin_port, directory, addresses, scheme)
    try:
        if wait_healthy:
            await envoy.wait_healthy()
        else:
            await _wait_ready(envoy)
        yield envoy
    finally:
        await envoy.stop()


@contextlib.asynccontextmanager
async def servers_behind_envoy(
    directory: Path,
    database_url: str,
    count: int = 1,
    *,
    cors_origins: Iterable[str] = (),
    envoy_args: Iterable[str] = (),
    **settings: object,
) -> AsyncIterator[tuple[Envoy, list[WallWhaleServer]]]:
    """`count` real servers on one (migrated) database, and Envoy in front of them over their Unix
    sockets, healthy. `settings` go to every server (e.g. ip_deny=[...])."""
    servers = [
        WallWhaleServer(
            make_settings(database_url, directory / f"server-{i}", grpc_socket=proxy_socket(), **settings)
        )
        for i in range(count)
    ]
    try:
        for server in servers:
            await server.start()
        async with running_envoy(
            directory / "envoy",
            [s.upstream for s in servers],
            cors_origins=cors_origins,
            extra_args=envoy_args,
        ) as envoy:
            yield envoy, servers
    finally:
        for server in servers:
            await server.stop(grace=0)


async def _wait_ready(envoy: Envoy, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if envoy.process.returncode is not None:
            raise RuntimeError(f"envoy exited with {envoy.process.returncode}:\n{envoy.log()}")
        with contextlib.suppress(OSError):
            if (await envoy.admin("/ready")).strip() == "LIVE":
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"envoy not ready:\n{envoy.log()}")


# ---- a plain HTTP client -------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    # Lower-case names; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def from_envoy(self) -> bool:
        """True when Envoy answered by itself: no server was asked."""
        return "x-envoy-upstream-service-time" not in self.headers


def _connect(
    url: str, source_address: str | None, timeout: float, context: ssl.SSLContext | None = None
) -> tuple[http_client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    source = (source_address, 0) if source_address else None
    host = parts.hostname or "127.0.0.1"
    connection = (
        http_client.HTTPSConnection(host, parts.port, timeout=timeout, source_address=source, context=context)
        if parts.scheme == "https"
        else http_client.HTTPConnection(host, parts.port, timeout=timeout, source_address=source)
    )
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return connection, target


def _request(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    source_address: str | None,
    timeout: float,
    context: ssl.SSLContext | None,
) -> Reply:
    connection, target = _connect(url, source_address, timeout, context)
    try:
        connection.request(method, target, body=body, headers=dict(headers))
        response = connection.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


async def http(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    source_address: str | None = None,
    socket_timeout: float = 15,
    ssl_context: ssl.SSLContext | None = None,
) -> Reply:
    """One HTTP/1.1 request, from `source_address` (a loopback address such as 127.0.0.3) if given;
    https URLs are checked with `ssl_context`."""
    sent = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        sent.setdefault("content-type", "application/json")
    return await asyncio.to_thread(
        _request, method, url, body, sent, source_address, socket_timeout, ssl_context
    )


@dataclass
class EventStream:
    """A Server-Sent Events response. Iterating yields each `data:` line's JSON as it arrives;
    `arrivals` holds the monotonic time each one was read. A non-200 reply has its body in `error`."""

    status: int
    headers: dict[str, str]
    error: Reply | None = None
    arrivals: list[float] = field(default_factory=list)
    _queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    _connection: http_client.HTTPConnection | None = None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Any:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item


_END = object()


@contextlib.asynccontextmanager
async def event_stream(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    socket_timeout: float = 60,
    method: str = "GET",
    json_body: Any = None,
) -> AsyncIterator[EventStream]:
    """Opens `url` as an event stream (a GET, or e.g. a POST with a JSON body); the response is read
    in a thread and closed on exit."""
    loop = asyncio.get_running_loop()
    connection, target = _connect(url, None, socket_timeout)
    sent = {"accept": "text/event-stream", **(headers or {})}
    body = None
    if json_body is not None:
        body = json.dumps(json_body).encode()
        sent.setdefault("content-type", "application/json")
    await asyncio.to_thread(connection.request, method, target, body=body, headers=sent)
    response = await asyncio.to_thread(connection.getresponse)
    stream = EventStream(response.status, {k.lower(): v for k, v in response.getheaders()})
    stream._connection = connection
    if response.status != 200:
        body = await asyncio.to_thread(response.read)
        stream.error = Reply(response.status, stream.headers, body)
        stream._queue.put_nowait(_END)
        connection.close()
        yield stream
        return

    def deliver(item: Any) -> None:
        if item is not _END and not isinstance(item, BaseException):
            stream.arrivals.append(time.monotonic())
        stream._queue.put_nowait(item)

    def read() -> None:
        try:
            for raw in response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    loop.call_soon_threadsafe(deliver, json.loads(line[5:].strip()))
        except Exception as exc:
            # A stream the caller closed while it was open ends in whatever http.client raises then
            # (OSError, ValueError, AttributeError on the dropped socket): only other ends are errors.
            if not closed.is_set():
                loop.call_soon_threadsafe(deliver, exc)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be gone at interpreter exit
                loop.call_soon_threadsafe(deliver, _END)

    closed = threading.Event()
    reader = threading.Thread(target=read, name="sse-reader", daemon=True)
    reader.start()
    try:
        yield stream
    finally:
        closed.set()
        with contextlib.suppress(OSError):
            if connection.sock is not None:
                connection.sock.shutdown(socket.SHUT_RDWR)
        connection.close()
        await asyncio.to_thread(reader.join, 5)


# ---- gRPC-Web framing (what a browser's grpc-web client sends and reads) ----------------------


def grpc_web_frame(message: bytes) -> bytes:
    """One uncompressed data frame: flag 0, big-endian length, the serialized message."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def parse_grpc_web(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """The data frames' messages and the trailer frame's fields (flag 0x80) of a response body."""
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    offset = 0
    while offset < len(body):
        flag = body[offset]
        (length,) = struct.unpack(">I", body[offset + 1 : offset + 5])
        payload = body[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                if line:
                    name, _, value = line.partition(":")
                    trailers[name.strip().lower()] = value.strip()
        else:
            messages.append(payload)
    return messages, trailers
