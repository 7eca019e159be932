"""Archives received whole or not at all: fetched into a hidden part file, resumed by offset after a
break, checked, then renamed into place. Shared by a download's zip and a batch's."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Generic, TypeVar

from google.api import httpbody_pb2

from wallwhale_client.errors import IntegrityError
from wallwhale_client.streams import resume
from wallwhale_client.transport import Metadata, StreamCall, Transport

Headers = Iterable[tuple[str, str | bytes]] | None
"""A call's initial metadata (None or empty when it failed before sending any)."""


@dataclass(frozen=True)
class ArchiveInfo:
    """The initial metadata of FetchArchive."""

    size: int
    sha256: str
    filename: str


@dataclass(frozen=True)
class BatchArchiveInfo:
    """The initial metadata of FetchBatchArchive (no sha256: each zip entry carries its CRC-32)."""

    size: int
    # Names the set of item archives; a resumed fetch is only valid while it is unchanged.
    version: str
    filename: str
    # Workshop ids of succeeded items whose archives were removed, left out of the zip.
    missing: tuple[int, ...] = ()


def archive_info(metadata: Headers) -> ArchiveInfo | None:
    headers = dict(metadata or ())
    if "x-archive-size" not in headers:
        return None
    return ArchiveInfo(
        size=int(headers["x-archive-size"]),
        sha256=str(headers.get("x-archive-sha256", "")),
        filename=str(headers.get("x-archive-filename", "")),
    )


def batch_archive_info(metadata: Headers) -> BatchArchiveInfo | None:
    headers = dict(metadata or ())
    if "x-archive-size" not in headers:
        return None
    missing = str(headers.get("x-archive-missing", ""))
    return BatchArchiveInfo(
        size=int(headers["x-archive-size"]),
        version=str(headers.get("x-archive-version", "")),
        filename=str(headers.get("x-archive-filename", "")),
        missing=tuple(int(item) for item in missing.split(",") if item.strip()),
    )


def file_name(suggested: str, fallback_id: str) -> str:
    """The server's name for the file, kept inside the destination directory."""
    name = Path(suggested.replace("\\", "/")).name
    return name if name not in ("", ".", "..") else f"{fallback_id}.zip"


class PartFile:
    """An archive being received: a hidden temporary file beside the destination, hashed as it is
    written, renamed into place whole (os.replace is atomic within a directory)."""

    def __init__(self, directory: Path):
        handle, name = tempfile.mkstemp(dir=directory, prefix=".wallwhale-", suffix=".part")
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(handle, "wb")
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.sha256.update(data)
        self.size += len(data)

    def reset(self) -> None:
        """Empty again (to start over when the bytes received belong to another archive)."""
        self.file.seek(0)
        self.file.truncate()
        self.size = 0
        self.sha256 = hashlib.sha256()

    def check_zip(self, what: str) -> None:
        """Reads the zip whole: its directory, and each entry against its CRC-32."""
        self.file.flush()
        try:
            with zipfile.ZipFile(self.path) as archive:
                bad = archive.testzip()  # BadZipFile (a bad CRC-32) is caught inside, the name returned
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise IntegrityError(f"{what} is not a readable zip: {exc}") from None
        if bad is not None:
            raise IntegrityError(f"{what}: entry {bad} does not match its CRC-32")

    def commit(self, target: Path) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.path.chmod(0o644)  # mkstemp makes it 0600
        os.replace(self.path, target)
        return target

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.path.unlink(missing_ok=True)


@asynccontextmanager
async def part_file(directory: Path) -> AsyncIterator[PartFile]:
    """A part file in `directory` (made if needed), removed on the way out unless committed."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    part = await asyncio.to_thread(PartFile, directory)
    try:
        yield part
    finally:
        await asyncio.to_thread(part.discard)


Info = TypeVar("Info", ArchiveInfo, BatchArchiveInfo)


class _Fetch(Generic[Info]):
    """The position of one archive fetch: the last headers seen and the bytes written."""

    def __init__(
        self,
        transport: Transport,
        part: PartFile,
        subject: str,
        rpc: str,
        fetch: Callable[[int, Metadata], StreamCall[httpbody_pb2.HttpBody]],
        read_headers: Callable[[Headers], Info | None],
        same_archive: Callable[[Info, Info], bool],
    ):
        self.transport = transport
        self.part = part
        self.subject = subject
        self.rpc = rpc
        self.fetch = fetch
        self.read_headers: Callable[[Headers], Info | None] = read_headers
        self.same_archive: Callable[[Info, Info], bool] = same_archive
        self.info: Info | None = None
        self.restarts = 0

    def open_call(self, metadata: Metadata) -> StreamCall[httpbody_pb2.HttpBody]:
        return self.fetch(self.part.size, metadata)

    async def opened(self, call: StreamCall[httpbody_pb2.HttpBody]) -> bool:
        headers = self.read_headers(await call.initial_metadata())
        if headers is None:
            # An error status carries no headers: reading the call raises it.
            async for _ in call:
                raise IntegrityError(f"{self.rpc} sent data without x-archive-size")
            raise IntegrityError(f"{self.rpc} answered without x-archive-size")
        earlier, self.info = self.info, headers
        if earlier is None or self.same_archive(earlier, headers):
            return True
        # Another archive, other bytes: what was received is of no use.
        self.restarts += 1
        if self.restarts > self.transport.retry.attempts:
            raise IntegrityError(f"{self.subject} kept changing while fetched")
        asked_from = self.part.size
        await asyncio.to_thread(self.part.reset)
        return asked_from == 0  # else ask again from byte 0

    def complete(self) -> bool:
        return self.info is not None and self.part.size >= self.info.size


async def fetch_into(
    transport: Transport,
    part: PartFile,
    *,
    what: str,
    subject: str,
    rpc: str,
    fetch: Callable[[int, Metadata], StreamCall[httpbody_pb2.HttpBody]],
    read_headers: Callable[[Headers], Info | None],
    same_archive: Callable[[Info, Info], bool],
    on_bytes: Callable[[int, int], None] | None,
) -> Info:
    """Receives the archive into `part`, resuming a broken stream from the bytes already written
    (`fetch(offset, metadata)` opens the call of `rpc`; `what` names the download or batch, `subject`
    its archive in messages). `same_archive(before, now)` compares a resumed call's headers with the
    previous call's: False starts again from byte 0 (`retry.attempts` times at most); it raises
    IntegrityError when resuming cannot be right. Returns the headers of the archive received."""
    state = _Fetch(transport, part, subject, rpc, fetch, read_headers, same_archive)
    chunks = resume(transport, state.open_call, what=what, opened=state.opened, complete=state.complete)
    async with aclosing(chunks):
        async for chunk in chunks:
            await asyncio.to_thread(part.write, chunk.data)
            if on_bytes is not None and state.info is not None:
                on_bytes(part.size, state.info.size)
    assert state.info is not None  # complete() holds
    return state.info
