"""The records of a zip file (PKWARE APPNOTE 6.3), for the writers that lay out their own zips.

Every local header carries the entry's CRC-32 and sizes (no data descriptors: streaming unzippers
read stored entries by the sizes in their local headers). Zip64 records are written where a size,
an offset or the number of entries needs them (APPNOTE 4.3.14, 4.3.15, 4.5.3); `limit` is lowered by
tests to exercise them without writing 4 GiB.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")
_EXTRA64 = struct.Struct("<2H")
LIMIT32 = 0xFFFFFFFF
_LIMIT16 = 0xFFFF
_VERSION = 20  # 2.0: deflate, and entries in folders
_VERSION64 = 45  # 4.5: zip64
_MADE_BY_UNIX = 3 << 8
_UTF8_NAME = 0x800
FILE_MODE = 0o100644  # a regular file, rw-r--r--
STORED = zipfile.ZIP_STORED
DEFLATED = zipfile.ZIP_DEFLATED


@dataclass(frozen=True)
class Entry:
    """One member as the central directory records it."""

    name: str
    method: int  # STORED or DEFLATED
    crc: int
    compressed_size: int
    size: int
    date_time: tuple[int, int, int, int, int, int]
    offset: int  # of its local header
    mode: int = FILE_MODE


def local_header_size(name: str, zip64: bool) -> int:
    """The size of an entry's local header, known before its CRC and sizes are."""
    return _LOCAL.size + len(name.encode()) + (_EXTRA64.size + 16 if zip64 else 0)


def local_header(entry: Entry, zip64: bool) -> bytes:
    """`zip64`: the sizes go in a zip64 extra field (needed when either reaches `LIMIT32`; decided
    before the data is written, since the header's length depends on it)."""
    if not zip64 and max(entry.size, entry.compressed_size) >= LIMIT32:
        raise ValueError(f"{entry.name} needs a zip64 local header")
    encoded = entry.name.encode()
    extra = _zip64_extra([entry.size, entry.compressed_size] if zip64 else [])
    header = _LOCAL.pack(
        b"PK\x03\x04", _VERSION64 if zip64 else _VERSION, *_described(entry, zip64), len(encoded), len(extra)
    )
    return header + encoded + extra


def central_record(entry: Entry, limit: int = LIMIT32) -> bytes:
    encoded = entry.name.encode()
    big = entry.size >= limit or entry.compressed_size >= limit
    far = entry.offset >= limit
    extra = _zip64_extra(
        ([entry.size, entry.compressed_size] if big else []) + ([entry.offset] if far else [])
    )
    needed = _VERSION64 if big or far else _VERSION
    record = _CENTRAL.pack(
        b"PK\x01\x02",
        _MADE_BY_UNIX | needed,
        needed,
        *_described(entry, big),
        len(encoded),
        len(extra),
        0,
        0,
        0,
        (entry.mode & 0xFFFF) << 16,
        LIMIT32 if far else entry.offset,
    )
    return record + encoded + extra


def _described(entry: Entry, zip64: bool) -> tuple[int, ...]:
    """What the local header and the central record both say of an entry, in the same order:
    flags, method, time, date, CRC-32, sizes (in the zip64 extra field instead when `zip64`)."""
    dos_time, dos_date = _dos_time(entry.date_time)
    sizes = (LIMIT32, LIMIT32) if zip64 else (entry.compressed_size, entry.size)
    return (_flags(entry.name), entry.method, dos_time, dos_date, entry.crc, *sizes)


def end_records(count: int, directory_size: int, directory_offset: int, limit: int = LIMIT32) -> bytes:
    zip64 = count >= min(_LIMIT16, limit) or directory_size >= limit or directory_offset >= limit
    records = b""
    if zip64:
        end64_offset = directory_offset + directory_size
        records += _END64.pack(
            b"PK\x06\x06",
            _END64.size - 12,  # the record's size after this field
            _MADE_BY_UNIX | _VERSION64,
            _VERSION64,
            0,
            0,
            count,
            count,
            directory_size,
            directory_offset,
        )
        records += _LOCATOR64.pack(b"PK\x06\x07", 0, end64_offset, 1)
    records += _END.pack(
        b"PK\x05\x06",
        0,
        0,
        _LIMIT16 if zip64 else count,
        _LIMIT16 if zip64 else count,
        LIMIT32 if zip64 else directory_size,
        LIMIT32 if zip64 else directory_offset,
        0,
    )
    return records


def _flags(name: str) -> int:
    return 0 if name.isascii() else _UTF8_NAME


def _dos_time(date_time: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
    """DOS time and date; out of their range (1980-2107) clamped, as zipfile does when not strict."""
    if date_time[0] < 1980:
        date_time = (1980, 1, 1, 0, 0, 0)
    elif date_time[0] > 2107:
        date_time = (2107, 12, 31, 23, 59, 59)
    year, month, day, hour, minute, second = date_time
    return (hour << 11) | (minute << 5) | (second // 2), ((year - 1980) << 9) | (month << 5) | day


def _zip64_extra(values: Sequence[int]) -> bytes:
    if not values:
        return b""
    return _EXTRA64.pack(1, 8 * len(values)) + struct.pack(f"<{len(values)}Q", *values)
