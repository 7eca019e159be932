"""Streams that survive a broken connection: one resume loop for every watch and archive fetch.

A stream is opened again after a break from the position its reader has reached: a watch after the
last event seen, an archive from the bytes already written. The reader keeps that position; `resume`
opens, reads, recovers (renewed credentials, back-off, or the error raised when retries run out) and
opens again.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

import grpc

from wallwhale_client.errors import WallWhaleError, from_rpc_error
from wallwhale_client.transport import Metadata, StreamCall, Transport, stream_cut
from wallwhale_client.v1 import download_pb2

Message = TypeVar("Message")


def _never() -> bool:
    return False


async def resume(
    transport: Transport,
    open_call: Callable[[Metadata], StreamCall[Message]],
    *,
    what: str,
    opened: Callable[[StreamCall[Message]], Awaitable[bool]] | None = None,
    complete: Callable[[], bool] = _never,
) -> AsyncGenerator[Message, None]:
    """The messages of one logical stream across broken calls.

    `open_call(metadata)` starts a call from the reader's current position (this generator waits at
    each yield while the reader handles the message, so the position is up to date when a call is
    opened again). `opened(call)` checks a new call before it is read; False opens another at once
    (not counted as a failure). `complete()` says whether an ended call delivered everything; a
    watch never is, its reader stops at the final event. Consecutive breaks without a message count
    against the retry policy."""
    failures = 0
    while True:
        metadata = await transport.metadata()
        call = open_call(metadata)
        error: WallWhaleError | None = None
        try:
            if opened is not None and not await opened(call):
                continue  # the finally cancels this call
            async for message in call:
                failures = 0
                yield message
        except grpc.RpcError as raw:
            error = from_rpc_error(raw)
        finally:
            call.cancel()
        if complete():
            return  # also when the call broke after its last message
        failures = await transport.recover_stream(error or stream_cut(what), metadata, failures)


async def follow_download(
    transport: Transport,
    watch: Callable[[int, Metadata], StreamCall[download_pb2.WatchDownloadResponse]],
    download_id: str,
    after_sequence: int,
) -> AsyncGenerator[download_pb2.WatchDownloadResponse, None]:
    """WatchDownload's events after `after_sequence` up to its `finished` event; `watch(after,
    metadata)` opens the call. A broken stream is opened again after the last sequence number seen,
    so no state change, log line or final event is lost or repeated (a live stream may pass over
    progress that a newer one replaced)."""
    after = after_sequence

    def open_call(metadata: Metadata) -> StreamCall[download_pb2.WatchDownloadResponse]:
        return watch(after, metadata)

    async with aclosing(resume(transport, open_call, what=download_id)) as events:
        async for event in events:
            after = max(after, event.sequence)
            yield event
            if event.HasField("finished"):
                return


async def follow_batch(
    transport: Transport,
    watch: Callable[[Metadata], StreamCall[download_pb2.WatchBatchResponse]],
    batch_id: str,
) -> AsyncGenerator[download_pb2.WatchBatchResponse, None]:
    """WatchBatch's events up to its `finished` event. WatchBatch has no after_sequence: a broken
    stream is opened again and the server replays the batch's history from the start; the events
    already yielded are skipped (each download's sequence numbers tell which), so none is lost or
    repeated, and a reconnect costs one replay."""
    seen: dict[str, int] = {}  # the last sequence yielded, by download id
    async with aclosing(resume(transport, watch, what=batch_id)) as events:
        async for event in events:
            if event.HasField("download_event"):
                inner = event.download_event
                if inner.sequence and inner.sequence <= seen.get(inner.download_id, 0):
                    continue  # replayed after a reconnect
                seen[inner.download_id] = max(seen.get(inner.download_id, 0), inner.sequence)
            yield event
            if event.HasField("finished"):
                return
