"""Per-call state shared by the interceptors and servicers, and the wrapping of method handlers.

grpc.aio runs every RPC in its own asyncio task, so a ContextVar holds exactly one call's state.
Response headers are collected here and sent once: with the first response message on success
(initial metadata), or as trailers when the call fails before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from wallwhale import tracing
from wallwhale.core.identity import Principal
from wallwhale.errors import Unauthenticated

REQUEST_ID_HEADER = "x-request-id"
_MAX_REQUEST_ID = 64  # the size of the audit trail's column


@dataclass
class Call:
    method: str
    request_id: str
    peer: str
    metadata: dict[str, str]
    started: float = field(default_factory=time.perf_counter)
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    headers_sent: bool = False
    # The client's IP: the peer's, or from x-forwarded-for when the peer is a trusted proxy.
    client_address: str = ""
    # Who is calling, once authenticated (None for anonymous calls and public services).
    principal: Principal | None = None
    # What the audit record names: servicers set these when the request alone does not say it
    # (e.g. the id of a resource the call created). Never secrets.
    audit_resource: str | None = None
    audit_details: dict[str, Any] = field(default_factory=dict)
    # The call's trace (OpenTelemetry), "" while tracing is off.
    trace_id: str = ""

    @property
    def service(self) -> str:
        return self.method.rsplit("/", 2)[-2] if self.method.count("/") >= 2 else ""

    def caller(self) -> Principal:
        """The authenticated caller (the authentication interceptor lets no anonymous call reach a
        servicer that needs one)."""
        if self.principal is None:
            raise Unauthenticated("credentials are required", reason="CREDENTIALS_MISSING")
        return self.principal

    def add_header(self, key: str, value: str) -> None:
        self.response_headers.append((key, value))

    async def send_headers(self, context: aio.ServicerContext[Any, Any]) -> None:
        """Sends the collected response headers now (before the first message) if not sent yet."""
        if not self.headers_sent:
            self.headers_sent = True
            await context.send_initial_metadata(tuple(self.response_headers))


_current: ContextVar[Call | None] = ContextVar("wallwhale_call", default=None)


def current_call() -> Call:
    call = _current.get()
    if call is None:
        raise RuntimeError("no gRPC call in progress")
    return call


def start_call(details: grpc.HandlerCallDetails, context: aio.ServicerContext[Any, Any]) -> Call:
    metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
    request_id = _clean_request_id(metadata.get(REQUEST_ID_HEADER)) or secrets.token_hex(12)
    peer = context.peer() or ""
    call = Call(
        method=details.method,
        request_id=request_id,
        peer=peer,
        metadata=metadata,
        client_address=peer_address(peer),
        trace_id=tracing.trace_id(),
    )
    call.add_header(REQUEST_ID_HEADER, request_id)
    _current.set(call)
    return call


def peer_address(peer: str) -> str:
    """grpc's peer string without scheme and port: 'ipv4:127.0.0.1:5000' -> '127.0.0.1'."""
    _, _, address = peer.partition(":")
    host, _, _port = address.rpartition(":")
    return host.strip("[]") or address


def _clean_request_id(value: str | None) -> str | None:
    # A client-chosen id ends up in logs: keep it short and printable, or make our own.
    if value and len(value) <= _MAX_REQUEST_ID and value.isprintable() and value.isascii():
        return value
    return None


async def _flush_headers(context: aio.ServicerContext[Any, Any]) -> None:
    # The innermost wrapper sends them, after every interceptor had its say before the handler.
    call = _current.get()
    if call is not None and not call.headers_sent:
        await call.send_headers(context)


class Around(Protocol):
    """What an interceptor does around one call: code before and after the handler runs."""

    def __call__(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> contextlib.AbstractAsyncContextManager[None]: ...


UnaryBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any] | Awaitable[None]]


@dataclass(frozen=True)
class Undecodable:
    """A request whose bytes are not the method's message (e.g. a string that is not UTF-8, which
    Envoy's transcoder passes on from a percent-encoded path). RequestContext refuses it as
    INVALID_ARGUMENT; without this grpc answers UNKNOWN with the parser's text."""

    problem: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(str(exc).rpartition(": ")[2] or "malformed message")

    return deserialize


def _passing_bytes(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """The response serializer, letting bytes through as they are: a stream may send a message that
    was encoded once for many streams (an event fanned out to its watchers)."""
    if serializer is None:
        return serializer

    def serialize(message: Any) -> bytes:
        return message if type(message) is bytes else serializer(message)

    return serialize


def wrap_handler(
    handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails, around: Around
) -> grpc.RpcMethodHandler:
    """The same handler with `around` entered for the duration of every call (unary or streamed)."""
    deserializer = _tolerant(handler.request_deserializer)
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            async with around(details, request, context):
                response = await unary(request, context)
                await _flush_headers(context)
                return response

        return grpc.unary_unary_rpc_method_handler(unary_unary, deserializer, handler.response_serializer)
    if handler.unary_stream is not None:
        stream = handler.unary_stream

        async def unary_stream(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            async with around(details, request, context):
                responses = stream(request, context)
                if inspect.isawaitable(responses):
                    # A handler that writes with context.write() (grpc's own health Watch does).
                    await _flush_headers(context)
                    await responses
                    return
                call = _current.get()
                async for response in responses:
                    if call is not None and not call.headers_sent:
                        await call.send_headers(context)
                    yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, deserializer, _passing_bytes(handler.response_serializer)
        )
    # No client-streaming RPCs exist in the API; leave such handlers untouched.
    return handler


class CallInterceptor:
    """Base for our interceptors: subclasses implement `around`; CallChain runs them."""

    def around(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError


class CallChain(aio.ServerInterceptor):
    """Our interceptors as one grpc interceptor, the first given outermost.

    grpc.aio runs each of its interceptors per call (a coroutine and a new method handler each);
    here the handler is wrapped once per call and the `around`s are entered in turn, which is the
    same nesting at a fraction of the cost.
    """

    def __init__(self, interceptors: list[CallInterceptor]):
        self._arounds = [interceptor.around for interceptor in interceptors]

    @contextlib.asynccontextmanager
    async def _around(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for around in self._arounds:
                await stack.enter_async_context(around(details, request, context))
            yield

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return wrap_handler(handler, handler_call_details, self._around)


def status_name(context: aio.ServicerContext[Any, Any], raised: BaseException | None) -> str:
    if isinstance(raised, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"  # the client went away (a closed stream ends its generator)
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if raised is not None:
        # Only ErrorMapping's aborts should get here; anything else is grpc's UNKNOWN.
        return "UNKNOWN"
    return "OK"


@contextlib.asynccontextmanager
async def on_end(
    context: aio.ServicerContext[Any, Any], callback: Callable[[str], None]
) -> AsyncIterator[None]:
    """Runs `callback` with the call's final status code name, however the call ends."""
    raised: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        raised = exc
        raise
    finally:
        callback(status_name(context, raised))
