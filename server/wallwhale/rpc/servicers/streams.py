"""What the streaming RPCs of DownloadService share: the wire form of events, and the chunk size."""

from __future__ import annotations

from collections import OrderedDict

from wallwhale.core.downloads import FINAL_STATES
from wallwhale.core.errors import InvalidArgument
from wallwhale.core.events import StoredEvent
from wallwhale.rpc import convert
from wallwhale.v1 import download_pb2

# Bytes per archive message: a quarter of gRPC's default 4 MiB receive limit and of Envoy's
# max_response_body_size. Each message costs a thread hop for the read, a protobuf and gRPC framing.
# Measured with a grpc.aio server in its own process reading a file per chunk: 1 MiB chunks
# streamed 1.2-1.6x the bytes per second of 256 KiB ones; 2 MiB ones were slower again.
ARCHIVE_CHUNK = 1024 * 1024
FINAL_NAMES = frozenset(state.value for state in FINAL_STATES)

# The same event goes to every watcher of a download (and of its batch): convert it once.
_WIRE_CACHE: OrderedDict[tuple[str, int], download_pb2.WatchDownloadResponse] = OrderedDict()
_WIRE_CACHE_SIZE = 4096


def wire(event: StoredEvent) -> download_pb2.WatchDownloadResponse:
    key = (event.download_id, event.sequence)
    message = _WIRE_CACHE.get(key)
    if message is None:
        message = _WIRE_CACHE[key] = convert.watch_event(event)
        if len(_WIRE_CACHE) > _WIRE_CACHE_SIZE:
            _WIRE_CACHE.popitem(last=False)
    return message


def check_range(offset: int, length: int) -> None:
    """The byte range a FetchArchive/FetchBatchArchive request asks for, before anything is read."""
    if offset < 0:
        raise InvalidArgument.field("offset", "must not be negative")
    if length < 0:
        raise InvalidArgument.field("length", "must not be negative")
