"""What the Python client suites share: a TCP relay the test cuts like a failing network, an
interceptor that records what the client asked for, and quick retries."""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf.message import Message
from grpc import aio

from tests.support.harness import Harness
from wallwhale_client import RetryPolicy

FAST_RETRY = RetryPolicy(initial_backoff=0.05, max_backoff=0.2)


def key_of(harness: Harness) -> str:
    return dict(harness.admin)["x-api-key"]


class CutProxy:
    """A TCP relay between client and server that the test can cut like a failing network: `cut()`
        drops every open connection now; `cut_after(n)` drops the connection that carries the n-th byte
        sent from the server from now on (so the client cannot have received more); `flip_at(n)` inverts the
    n-th byte sent from the server from now on (a corruption no layer below the client notices). New
    connections work."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.connections = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._budget: int | None = None
        self._flip: int | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> CutProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def cut_after(self, downstream_bytes: int) -> None:
        self._budget = downstream_bytes

    def flip_at(self, downstream_byte: int) -> None:
        self._flip = downstream_byte

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._open |= {client_writer, server_writer}

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, downstream: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if downstream and self._flip is not None:
                        if self._flip < len(data):
                            data = (
                                data[: self._flip] + bytes([data[self._flip] ^ 0xFF]) + data[self._flip + 1 :]
                            )
                            self._flip = None
                        else:
                            self._flip -= len(data)
                    if downstream and self._budget is not None:
                        data = data[: self._budget]
                        self._budget -= len(data)
                        if self._budget <= 0:
                            self._budget = None
                            writer.write(data)
                            await writer.drain()
                            self.cut()
                            return
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.transport.abort()

        await asyncio.gather(
            pump(client_reader, server_writer, False), pump(server_reader, client_writer, True)
        )


class Recorder(aio.UnaryStreamClientInterceptor):
    """Records the requests of every server-streaming call the client makes."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Message]] = []

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Message) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        self.requests.append((method.rsplit("/", 1)[-1], request))
        return await continuation(details, request)

    def of(self, method: str) -> list[Any]:
        return [request for name, request in self.requests if name == method]
