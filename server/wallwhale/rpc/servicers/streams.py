"""What the streaming RPCs of DownloadService share: the wire form of events, and the chunk size."""

from __future__ import annotations

from collections import OrderedDict

from wallwhale.core.events import StoredEvent
from wallwhale.errors import InvalidArgument
from wallwhale.rpc import convert

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
