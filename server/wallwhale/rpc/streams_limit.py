"""Bounds the long-lived streams (archives and watches) open at once on this instance, per caller
and in total, so that one client cannot hold the server's memory and tasks; and gives memory
back to the system once streams close.

A stream that does not read costs little more than grpc's flow-control window: grpc.aio awaits
each write until the transport has taken it, and the servicers read the next chunk only then. The
counts are per instance (a stream lives on one), per API key, or per person for access tokens; a
share link's fetch, which has no caller, counts per client address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc import aio

from wallwhale.core.audit import AuditWriter
from wallwhale.errors import QuotaViolation, ResourceExhausted
from wallwhale.rpc.audit import deny
from wallwhale.rpc.calls import CallInterceptor, current_call

LONG_STREAMS = frozenset(
    {
        "/wallwhale.v1.DownloadService/FetchArchive",
        "/wallwhale.v1.DownloadService/FetchBatchArchive",
        "/wallwhale.v1.DownloadService/FetchArchiveLink",
        "/wallwhale.v1.DownloadService/WatchDownload",
        "/wallwhale.v1.DownloadService/WatchBatch",
    }
)
_RETRY_AFTER = 5.0
_TRIM_DELAY = 1.0  # after the last close of a burst, not at every close


class StreamLimitInterceptor(CallInterceptor):
    def __init__(
        self,
        audit: AuditWriter,
        per_caller: int,
        total: int,
        release_memory: Callable[[], None] | None = None,
    ):
        self._audit = audit
        self._per_caller = per_caller
        self._total = total
        self._open: Counter[str] = Counter()
        self._release = release_memory or release_free_memory
        self._trim: asyncio.TimerHandle | None = None

    @property
    def open_streams(self) -> int:
        return self._open.total()

    @contextlib.asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        if details.method not in LONG_STREAMS:
            yield
            return
        call = current_call()
        principal = call.principal
        if principal is None:  # a share link's fetch: anyone holding the link, told apart by address
            subject = f"addresses/{call.client_address or 'unknown'}"
        elif principal.api_key_id:
            subject = f"api-keys/{principal.api_key_id}"
        else:
            subject = f"users/{principal.user_id}"
        refusal = self._refusal(subject)
        if refusal is not None:
            await deny(self._audit, context, request, refusal)
        self._open[subject] += 1
        try:
            yield
        finally:
            self._open[subject] -= 1
            if not self._open[subject]:
                del self._open[subject]
            self._schedule_trim()

    def _refusal(self, subject: str) -> ResourceExhausted | None:
        if self._open[subject] >= self._per_caller:
            who = "from this address" if subject.startswith("addresses/") else "for this caller"
            message = (
                f"too many open streams {who}: at most {self._per_caller} archive downloads and"
                " watches at once (WALLWHALE_MAX_STREAMS_PER_CALLER); close one first"
            )
            limit = f"{self._per_caller} concurrent streams per caller"
        elif self.open_streams >= self._total:
            message = (
                f"the server has its maximum of {self._total} open streams (WALLWHALE_MAX_STREAMS_TOTAL);"
                " try again shortly"
            )
            limit = f"{self._total} concurrent streams per server"
        else:
            return None
        return ResourceExhausted(
            message,
            retry_after_seconds=_RETRY_AFTER,
            violations=[QuotaViolation(subject, limit)],
        )

    def _schedule_trim(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
        self._trim = asyncio.get_running_loop().call_later(_TRIM_DELAY, self._release)


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_free_memory() -> None:
    """Hands freed heap pages back to the system (glibc's malloc_trim): a burst of streams leaves
    their buffers freed but still counted in the process's memory otherwise. Elsewhere a no-op."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
