"""A real HTTP server that receives webhook deliveries, for the webhook tests.

It answers each request with the next scripted answer (a status, or "hang": no answer until the
client gives up), then with `then` (200 by default), and keeps every request's headers and body.
Deliveries are verified with the `standardwebhooks` package from PyPI, never with our own code.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook as StandardWebhook


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered (0: it hung)
    arrived: float = field(default_factory=time.time)  # when the request's body was read

    def verified(self, secret: str) -> dict[str, Any]:
        """The payload, if the signature verifies with `secret` (raises otherwise)."""
        return StandardWebhook(secret).verify(self.body, self.headers)  # type: ignore[no-any-return]

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    port: int = 0
    script: list[int | str] = field(default_factory=list)
    then: int = 200
    delay: float = 0.0  # seconds before each answer
    # Requests being answered now, and the most at once, by path (one path per endpoint).
    in_flight: dict[str, int] = field(default_factory=dict)
    most_in_flight: dict[str, int] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return self.url_for("hook")

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def _enter(self, path: str) -> None:
        with self._lock:
            self.in_flight[path] = self.in_flight.get(path, 0) + 1
            self.most_in_flight[path] = max(self.most_in_flight.get(path, 0), self.in_flight[path])

    def _leave(self, path: str) -> None:
        with self._lock:
            self.in_flight[path] -= 1

    def _next(self) -> int | str:
        with self._lock:
            return self.script.pop(0) if self.script else self.then

    def answered(self, status: int) -> list[Received]:
        return [entry for entry in self.received if entry.status == status]

    async def wait_for(self, count: int, status: int | None = None, limit: float = 30.0) -> list[Received]:
        """Waits until `count` requests (answered with `status`, if given) arrived."""
        deadline = time.monotonic() + limit
        while True:
            found = self.received if status is None else self.answered(status)
            if len(found) >= count:
                return list(found)
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} deliveries arrived: {self.received}")
            await asyncio.sleep(0.05)


@contextmanager
def receiver(
    script: list[int | str] | None = None, then: int = 200, delay: float = 0.0
) -> Iterator[Receiver]:
    state = Receiver(script=list(script or []), then=then, delay=delay)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            path = self.path.strip("/")
            state._enter(path)
            try:
                self._answer(path)
            finally:
                state._leave(path)

        def _answer(self, path: str) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            answer = state._next()
            headers = {name.lower(): value for name, value in self.headers.items()}
            if answer == "hang":
                state.received.append(Received(path, headers, body, 0))
                state._release.wait(30)
                return
            assert isinstance(answer, int)
            time.sleep(state.delay)
            state.received.append(Received(path, headers, body, answer))
            self.send_response(answer)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state._release.set()
        server.shutdown()
        server.server_close()
