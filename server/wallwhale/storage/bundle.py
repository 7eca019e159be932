"""One zip made of several items' zips, each item's files in a folder of its own, streamed without a copy.

Entries are STORED: their bytes are the items' files, read (and inflated) from the items' zips while
the stream is sent, and their CRC-32 and sizes are the ones the items' zips record. So the whole
layout, and with it the size, is known before the first byte; the same items give the same bytes each
time; and a resumed fetch skips whole entries without reading them. The records (zip64 where needed)
are zipformat's.

Why not a library: the streaming zip packages stamp entries with the current time (a resumed stream
would then differ from the first) and cannot tell their size before they have written everything.
Reading back is the standard library's zipfile, which checks each entry's CRC as it inflates it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from wallwhale.storage import zipformat
from wallwhale.storage.zipformat import LIMIT32

_READ_BLOCK = 256 * 1024


@dataclass(frozen=True)
class Source:
    """An item's zip: a local file, or an object read with ranged GETs (storage.objects)."""

    name: str
    open: Callable[[], BinaryIO]

    @classmethod
    def file(cls, path: Path) -> Source:
        return cls(path.name, lambda: path.open("rb"))


@dataclass(frozen=True)
class _Data:
    """The bytes of one entry: a member of an item's zip."""

    source: Source
    member: zipfile.ZipInfo


@dataclass(frozen=True)
class _Part:
    start: int
    length: int
    content: bytes | _Data


class BundleError(Exception):
    """An item's zip cannot be read (missing, damaged, or changed since the plan)."""


class Bundle:
    """The plan of the combined zip: `size`, and `chunks()` to produce any range of it (blocking)."""

    def __init__(self, parts: list[_Part], size: int, entry_count: int):
        self._parts = parts
        self.size = size
        self.entry_count = entry_count

    @classmethod
    def plan(cls, items: Sequence[tuple[str, Source | Path]], *, zip64_limit: int = LIMIT32) -> Bundle:
        """Lays out the zip of `items` (folder name, path of the item's zip), reading only the
        central directories. `zip64_limit` is lowered by tests to exercise the zip64 records."""
        parts: list[_Part] = []
        central: list[bytes] = []
        position = 0
        for folder, given in items:
            source = given if isinstance(given, Source) else Source.file(given)
            archive = _open(source)
            members = [info for info in archive.infolist() if not info.is_dir()]
            _close(archive)
            for member in members:
                name = f"{folder}/{member.filename}"
                header, record = _headers(name, member, position, zip64_limit)
                parts.append(_Part(position, len(header), header))
                position += len(header)
                parts.append(_Part(position, member.file_size, _Data(source, member)))
                position += member.file_size
                central.append(record)
        directory = b"".join(central)
        directory += zipformat.end_records(len(central), len(directory), position, zip64_limit)
        parts.append(_Part(position, len(directory), directory))
        return cls(parts, position + len(directory), len(central))

    def chunks(self, offset: int, end: int, chunk_size: int) -> Generator[bytes]:
        """The bytes in [offset, end), in chunks of `chunk_size` (the last may be shorter)."""
        pending = bytearray()
        for piece in self._pieces(offset, end):
            pending += piece
            while len(pending) >= chunk_size:
                yield bytes(pending[:chunk_size])
                del pending[:chunk_size]
        if pending:
            yield bytes(pending)

    def _pieces(self, offset: int, end: int) -> Iterator[bytes]:
        archive: zipfile.ZipFile | None = None
        opened: Source | None = None
        try:
            for part in self._parts:
                if part.start + part.length <= offset or part.start >= end:
                    continue  # wholly before or after the range: not read at all
                skip = max(0, offset - part.start)
                wanted = min(part.length, end - part.start) - skip
                if isinstance(part.content, bytes):
                    yield part.content[skip : skip + wanted]
                    continue
                if archive is None or opened is not part.content.source:
                    if archive is not None:
                        _close(archive)
                    opened = part.content.source
                    archive = _open(opened)
                yield from _member_bytes(archive, part.content.member, skip, wanted)
        finally:
            if archive is not None:
                _close(archive)


def _open(source: Source) -> zipfile.ZipFile:
    file: BinaryIO | None = None
    try:
        file = source.open()
        archive = zipfile.ZipFile(file)
    except (OSError, zipfile.BadZipFile) as exc:
        if file is not None:
            file.close()
        raise BundleError(f"cannot read {source.name}: {exc}") from exc
    archive.filename = source.name
    return archive


def _close(archive: zipfile.ZipFile) -> None:
    file = archive.fp
    archive.close()  # a ZipFile given a file object leaves it open
    if file is not None:
        file.close()


def _member_bytes(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, skip: int, wanted: int
) -> Iterator[bytes]:
    to_the_end = skip + wanted == member.file_size
    try:
        with archive.open(member) as data:
            if skip:
                data.seek(skip)  # inflates and drops what comes before (still counted in the CRC)
            while wanted > 0:
                block = data.read(min(_READ_BLOCK, wanted))
                if not block:
                    raise BundleError(f"{member.filename} in {archive.filename} is shorter than recorded")
                wanted -= len(block)
                yield block
            if to_the_end and data.read(1):  # at the end zipfile compares the CRC with the record
                raise BundleError(f"{member.filename} in {archive.filename} is longer than recorded")
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise BundleError(f"cannot read {member.filename} from {archive.filename}: {exc}") from exc


def _headers(name: str, member: zipfile.ZipInfo, offset: int, limit: int) -> tuple[bytes, bytes]:
    """The local header of the entry and its central directory record."""
    size = member.file_size
    entry = zipformat.Entry(
        name=name,
        method=zipformat.STORED,
        crc=member.CRC,
        compressed_size=size,
        size=size,
        date_time=member.date_time,
        offset=offset,
    )
    return zipformat.local_header(entry, zip64=size >= limit), zipformat.central_record(entry, limit)
