"""The interceptor chain, outermost first (assembled in app.py):

    RequestContext   request id, logging context, one log line per RPC       (here)
    Metrics          counts by status code, latency, in-flight                 (here)
    NetworkRules     client address, IP allow/deny lists                       (authentication.py)
    Authentication   API key or access token, then the method's scope          (authentication.py)
    RateLimit        the caller's requests per minute, x-ratelimit-* headers   (limits.py)
    Audit            the outcome of every mutating RPC                         (audit.py)
    ErrorMapping     typed errors and surprises -> a rich google.rpc.Status    (here)

Download quotas are no interceptor: they are counted where downloads are created, in the same
transaction (core.limits.reserve_downloads), so a refused or failed creation counts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog
from grpc import aio

from wallwhale import metrics
from wallwhale.errors import InvalidArgument, WallWhaleError
from wallwhale.log import get_logger
from wallwhale.rpc import errors
from wallwhale.rpc.calls import CallInterceptor, Undecodable, current_call, on_end, start_call
from wallwhale.rpc.requests import check_request

_log = get_logger("wallwhale.rpc")
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class RequestContextInterceptor(CallInterceptor):
    """Gives every call a request id (the client's x-request-id or a new one), binds it to the
    logging context, returns it in the response metadata, and logs one line when the call ends."""

    @contextlib.asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        call = start_call(details, context)
        structlog.contextvars.bind_contextvars(request_id=call.request_id, method=call.method)

        def log_line(code: str) -> None:
            duration_ms = round((time.perf_counter() - call.started) * 1000, 3)
            level = "warning" if code in {"INTERNAL", "UNKNOWN", "DATA_LOSS"} else "info"
            if code == "OK" and call.method == _HEALTH_CHECK:
                level = "debug"  # Envoy asks every instance every few seconds: not news
            getattr(_log, level)("rpc", code=code, duration_ms=duration_ms, peer=call.peer)
            structlog.contextvars.clear_contextvars()

        async with on_end(context, log_line):
            if isinstance(request, Undecodable):
                await errors.abort(
                    context, InvalidArgument.field("request", f"cannot be decoded: {request.problem}")
                )
            try:
                yield
            except (aio.AbortError, asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                # An interceptor outside ErrorMapping failed (the database while authenticating, say):
                # still our status, never grpc's "Unexpected <class ...>: " with the exception's text.
                _log.exception("unhandled error", request_id=call.request_id)
                await errors.abort(context, exc)


class MetricsInterceptor(CallInterceptor):
    @contextlib.asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        method = details.method
        started = time.perf_counter()
        in_flight = metrics.RPC_IN_FLIGHT.labels(method)
        in_flight.inc()

        def record(code: str) -> None:
            in_flight.dec()
            metrics.RPC_DURATION.labels(method).observe(time.perf_counter() - started)
            metrics.RPC_REQUESTS.labels(method, code).inc()

        async with on_end(context, record):
            yield


class ErrorMappingInterceptor(CallInterceptor):
    """Innermost: every exception a handler raises leaves as a proper status, never a traceback."""

    @contextlib.asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        try:
            check_request(request)  # here, so a refused request ends like any other error
            yield
        except (aio.AbortError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            if not isinstance(exc, WallWhaleError):
                _log.exception("unhandled error", request_id=current_call().request_id)
            await errors.abort(context, exc)
