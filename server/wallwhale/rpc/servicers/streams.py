"""What the streaming RPCs of DownloadService share: the wire form of events, and sending archives
(FetchArchive, FetchBatchArchive and FetchArchiveLink send the same bytes and headers)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Generator
from typing import BinaryIO

from google.api import httpbody_pb2

from wallwhale import metrics
from wallwhale.core.archives import OpenArchive
from wallwhale.core.batches import BatchArchive
from wallwhale.core.events import StoredEvent
from wallwhale.errors import InvalidArgument, NotFound, Unavailable
from wallwhale.log import get_logger
from wallwhale.rpc import convert
from wallwhale.rpc.calls import current_call
from wallwhale.storage.bundle import BundleError

_log = get_logger("wallwhale.rpc")

# Bytes per archive message. Each costs a thread hop for the read, a protobuf and gRPC framing, but
# larger ones were slower on an idle machine (figures: docs/benchmarks.md, "Archive build and FetchArchive").
ARCHIVE_CHUNK = 256 * 1024

# The same event goes to every watcher of a download (and of its batch): it is converted and
# encoded once, and the streams send these bytes as they are (calls.wrap_handler lets them through).
_ENCODED: OrderedDict[tuple[str, int], bytes] = OrderedDict()
_ENCODED_SIZE = 4096
_BATCH_EVENT_TAG = b"\x0a"  # WatchBatchResponse.download_event: field 1, length-delimited


def encoded(event: StoredEvent) -> bytes:
    """The event as an encoded WatchDownloadResponse."""
    key = (event.download_id, event.sequence)
    data = _ENCODED.get(key)
    if data is None:
        data = _ENCODED[key] = convert.watch_event(event).SerializeToString()
        if len(_ENCODED) > _ENCODED_SIZE:
            _ENCODED.popitem(last=False)
    return data


def encoded_in_batch(event: StoredEvent) -> bytes:
    """The event as an encoded WatchBatchResponse (its download_event): a prefix on the same bytes."""
    data = encoded(event)
    return _BATCH_EVENT_TAG + _varint(len(data)) + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def check_range(offset: int, length: int) -> None:
    """The byte range a FetchArchive/FetchBatchArchive request asks for, before anything is read."""
    if offset < 0:
        raise InvalidArgument.field("offset", "must not be negative")
    if length < 0:
        raise InvalidArgument.field("length", "must not be negative")


def range_end(offset: int, length: int, size: int) -> int:
    """The end (exclusive) of the part asked for, checked against the archive's size."""
    if offset > size:
        raise InvalidArgument.field("offset", f"is past the end of the archive ({size} bytes)")
    return size if length == 0 else min(size, offset + length)


def _headers(size: int, filename: str, offset: int, end: int, extra: list[tuple[str, str]]) -> None:
    call = current_call()
    for key, value in (
        ("x-archive-size", str(size)),
        *extra,
        ("x-archive-filename", filename),
        ("content-disposition", f'attachment; filename="{filename}"'),
        ("x-content-range", f"bytes {offset}-{max(end - 1, offset)}/{size}"),
    ):
        call.add_header(key, value)


async def send_archive(opened: OpenArchive, offset: int, end: int) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """A download's archive file from offset to end (checked with range_end), and its headers."""
    _headers(opened.size, opened.filename, offset, end, [("x-archive-sha256", opened.sha256)])
    with opened.file as archive:
        async for body in _file_chunks(archive, offset, end):
            yield body
    if offset == end:  # nothing to send: an empty body still tells the headers
        yield httpbody_pb2.HttpBody(content_type="application/zip")


async def _file_chunks(archive: BinaryIO, offset: int, end: int) -> AsyncIterator[httpbody_pb2.HttpBody]:
    archive.seek(offset)
    position = offset
    while position < end:
        try:
            data = await asyncio.to_thread(archive.read, min(ARCHIVE_CHUNK, end - position))
        except OSError as exc:  # an object store that went away (or a disk error) mid-stream
            _log.warning("archive read failed", error=str(exc))
            raise Unavailable(f"the archive could not be read: {exc}") from None
        if not data:
            break  # the file shrank under us: the client sees a short body and a size mismatch
        position += len(data)
        metrics.ARCHIVE_SERVED_BYTES.inc(len(data))
        yield httpbody_pb2.HttpBody(content_type="application/zip", data=data)


async def send_batch_archive(
    plan: BatchArchive, batch_id: str, offset: int, end: int
) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """A batch's zip, assembled while it is sent, from offset to end (checked with range_end)."""
    _headers(plan.bundle.size, plan.filename, offset, end, [("x-archive-version", plan.version)])
    if plan.missing:
        current_call().add_header("x-archive-missing", ",".join(plan.missing))
    chunks = plan.bundle.chunks(offset, end, ARCHIVE_CHUNK)
    reading: asyncio.Future[bytes | None] | None = None
    try:
        while True:
            # Shielded: a client that leaves cancels this wait, but the read goes on in its
            # thread, and the generator cannot be closed until it ends (see finally).
            reading = asyncio.ensure_future(asyncio.to_thread(_next_chunk, chunks))
            if (data := await asyncio.shield(reading)) is None:
                break
            metrics.ARCHIVE_SERVED_BYTES.inc(len(data))
            yield httpbody_pb2.HttpBody(content_type="application/zip", data=data)
    except BundleError as exc:
        # Removed or damaged while it was being sent: the client sees a short body and a size
        # that does not match; the reason is in the server's log.
        _log.warning("batch archive stream broken", batch_id=batch_id, error=str(exc))
        raise NotFound("archive", batch_id, "an item's archive changed while it was being sent") from None
    finally:
        if reading is not None:
            await asyncio.wait([reading])
        await asyncio.to_thread(chunks.close)
    if offset == end:  # nothing to send: an empty body still tells the headers
        yield httpbody_pb2.HttpBody(content_type="application/zip")


def _next_chunk(chunks: Generator[bytes]) -> bytes | None:
    return next(chunks, None)
