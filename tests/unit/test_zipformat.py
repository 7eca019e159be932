"""The zip records of storage/zipformat.py, laid out by hand here (no archive writer, no files): the
fields of each header, the zip64 edges (a size, an offset, the number of entries), and zips built
only from these records opened by Python's zipfile."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterable

import pytest

from wallwhale.storage import zipformat
from wallwhale.storage.zipformat import DEFLATED, LIMIT32, STORED, Entry

WHEN = (2026, 3, 1, 12, 34, 57)
LOCAL = struct.Struct("<4s5H3L2H")
END = struct.Struct("<4s4H2LH")
END64 = struct.Struct("<4sQ2H2L4Q")
LOCATOR64 = struct.Struct("<4sLQL")


def build_zip(
    files: Iterable[tuple[str, bytes, int, tuple[int, int, int, int, int, int]]], limit: int = LIMIT32
) -> bytes:
    """A whole zip from zipformat's records: local header and data per file, then the central
    directory and the end records (zip64 wherever `limit` is reached)."""
    out = io.BytesIO()
    entries = []
    for name, data, method, date_time in files:
        if method == DEFLATED:
            squeezer = zlib.compressobj(6, zlib.DEFLATED, -15)
            stored = squeezer.compress(data) + squeezer.flush()
        else:
            stored = data
        entry = Entry(name, method, zlib.crc32(data), len(stored), len(data), date_time, out.tell())
        zip64 = max(entry.size, entry.compressed_size) >= limit
        header = zipformat.local_header(entry, zip64)
        assert len(header) == zipformat.local_header_size(name, zip64)
        out.write(header + stored)
        entries.append(entry)
    directory_offset = out.tell()
    directory = b"".join(zipformat.central_record(entry, limit) for entry in entries)
    out.write(directory)
    out.write(zipformat.end_records(len(entries), len(directory), directory_offset, limit))
    return out.getvalue()


FILES = [
    ("project.json", b'{"title": "Rain"}', STORED, WHEN),
    ("scene/scene.pkg", bytes(range(256)) * 300, DEFLATED, WHEN),
    ("materials/Ünïcode €.png", b"\x89PNG" + b"\x00" * 1000, DEFLATED, WHEN),
    ("empty.txt", b"", STORED, WHEN),
]


@pytest.mark.parametrize("limit", [LIMIT32, 1], ids=["zip32", "zip64-everywhere"])
def test_a_zip_of_these_records_opens_in_zipfile_with_every_member_intact(limit: int) -> None:
    data = build_zip(FILES, limit)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None  # every member's CRC checked
        infos = archive.infolist()
        assert [info.filename for info in infos] == [name for name, *_ in FILES]
        for info, (name, content, method, _) in zip(infos, FILES, strict=True):
            assert archive.read(info) == content, name
            assert info.compress_type == method
            assert info.date_time == (2026, 3, 1, 12, 34, 56)  # DOS time counts two seconds
            assert info.create_system == 3  # made by Unix, so the mode below is read
            assert info.external_attr >> 16 == zipformat.FILE_MODE
            assert bool(info.flag_bits & 0x800) == (not name.isascii())  # UTF-8 names flagged
    assert (b"PK\x06\x06" in data) == (limit == 1)


def test_a_local_header_says_what_the_central_record_says() -> None:
    entry = Entry("a/b.pkg", DEFLATED, 0x12345678, 1000, 4000, WHEN, offset=0)
    header = zipformat.local_header(entry, zip64=False)
    fields = LOCAL.unpack_from(header)
    assert fields == (b"PK\x03\x04", 20, 0, DEFLATED, fields[4], fields[5], 0x12345678, 1000, 4000, 7, 0)
    assert header[LOCAL.size :] == b"a/b.pkg"
    dos_time, dos_date = fields[4], fields[5]
    assert (dos_time >> 11, (dos_time >> 5) & 0x3F, (dos_time & 0x1F) * 2) == (12, 34, 56)
    assert ((dos_date >> 9) + 1980, (dos_date >> 5) & 0xF, dos_date & 0x1F) == (2026, 3, 1)
    central = zipformat.central_record(entry)
    assert central[:4] == b"PK\x01\x02"
    assert central[8:26] == header[6:24]  # flags, method, time, date, CRC, sizes: the same bytes


def test_a_zip64_local_header_moves_the_sizes_into_its_extra_field() -> None:
    big = Entry("big.bin", STORED, 1, LIMIT32 + 10, LIMIT32 + 10, WHEN, offset=0)
    header = zipformat.local_header(big, zip64=True)
    fields = LOCAL.unpack_from(header)
    assert fields[1] == 45  # version needed: 4.5, zip64
    assert fields[7:9] == (LIMIT32, LIMIT32)
    assert fields[10] == 20
    extra = header[LOCAL.size + len("big.bin") :]
    assert struct.unpack("<2H2Q", extra) == (1, 16, LIMIT32 + 10, LIMIT32 + 10)  # size, then compressed
    with pytest.raises(ValueError, match=r"big\.bin needs a zip64 local header"):
        zipformat.local_header(big, zip64=False)
    just_fits = Entry("fits.bin", STORED, 1, LIMIT32 - 1, LIMIT32 - 1, WHEN, offset=0)
    assert LOCAL.unpack_from(zipformat.local_header(just_fits, zip64=False))[7:9] == (LIMIT32 - 1,) * 2


def test_the_header_size_counts_the_names_bytes_not_its_characters() -> None:
    name = "Ünïcode €.png"
    assert zipformat.local_header_size(name, zip64=False) == 30 + len(name.encode()) == 30 + 17
    assert zipformat.local_header_size(name, zip64=True) == 30 + 17 + 20
    entry = Entry(name, STORED, 0, 0, 0, WHEN, offset=0)
    assert len(zipformat.local_header(entry, zip64=True)) == zipformat.local_header_size(name, zip64=True)


@pytest.mark.parametrize(
    ("size", "offset", "expected_extra"),
    [
        (LIMIT32 - 1, LIMIT32 - 1, ()),
        (LIMIT32, 0, (LIMIT32, LIMIT32)),  # sizes only
        (10, LIMIT32, (LIMIT32,)),  # the offset only
        (LIMIT32, LIMIT32 + 5, (LIMIT32, LIMIT32, LIMIT32 + 5)),  # sizes, then the offset
    ],
)
def test_a_central_record_carries_zip64_values_only_where_needed(
    size: int, offset: int, expected_extra: tuple[int, ...]
) -> None:
    entry = Entry("x", STORED, 0, size, size, WHEN, offset)
    record = zipformat.central_record(entry)
    extra_length = struct.unpack_from("<H", record, 30)[0]
    stored_sizes = struct.unpack_from("<2L", record, 20)
    stored_offset = struct.unpack_from("<L", record, 42)[0]
    extra = record[46 + 1 :]
    assert len(extra) == extra_length
    if not expected_extra:
        assert (extra, stored_sizes, stored_offset) == (b"", (size, size), offset)
        assert struct.unpack_from("<H", record, 6)[0] == 20
        return
    assert struct.unpack_from("<H", record, 6)[0] == 45
    header_id, data_size = struct.unpack_from("<2H", extra)
    assert (header_id, data_size) == (1, 8 * len(expected_extra))
    assert struct.unpack_from(f"<{len(expected_extra)}Q", extra, 4) == expected_extra
    assert stored_sizes == ((LIMIT32, LIMIT32) if size >= LIMIT32 else (size, size))
    assert stored_offset == (LIMIT32 if offset >= LIMIT32 else offset)


@pytest.mark.parametrize(
    ("count", "size", "offset", "zip64"),
    [
        (0xFFFE, 100, 200, False),
        (0xFFFF, 100, 200, True),  # the 16-bit count field would read as "see zip64"
        (3, LIMIT32 - 1, LIMIT32 - 1, False),
        (3, LIMIT32, 200, True),
        (3, 100, LIMIT32, True),
    ],
)
def test_the_end_records_switch_to_zip64_at_each_edge(
    count: int, size: int, offset: int, zip64: bool
) -> None:
    records = zipformat.end_records(count, size, offset)
    end = END.unpack(records[-END.size :])
    assert end[0] == b"PK\x05\x06"
    if not zip64:
        assert len(records) == END.size
        assert end[3:7] == (count, count, size, offset)
        return
    assert end[3:7] == (0xFFFF, 0xFFFF, LIMIT32, LIMIT32)
    end64 = END64.unpack_from(records)
    assert end64[0] == b"PK\x06\x06"
    assert end64[1] == END64.size - 12
    assert end64[6:] == (count, count, size, offset)
    locator = LOCATOR64.unpack_from(records, END64.size)
    assert locator == (b"PK\x06\x07", 0, offset + size, 1)  # where the zip64 record starts


def test_a_zip_of_more_than_65535_entries_opens_in_zipfile() -> None:
    count = 0x10000
    data = build_zip((f"{n:05x}", b"", STORED, WHEN) for n in range(count))
    assert b"PK\x06\x06" in data[-200:]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
    assert len(names) == count
    assert names[-1] == "0ffff"


@pytest.mark.parametrize(
    ("date_time", "read_back"),
    [
        ((1970, 1, 1, 0, 0, 0), (1980, 1, 1, 0, 0, 0)),  # before DOS time: its first moment
        ((2200, 6, 1, 0, 0, 0), (2107, 12, 31, 23, 59, 58)),  # after it: its last
        ((1980, 1, 1, 0, 0, 1), (1980, 1, 1, 0, 0, 0)),
    ],
)
def test_times_outside_dos_range_are_clamped(
    date_time: tuple[int, int, int, int, int, int], read_back: tuple[int, ...]
) -> None:
    with zipfile.ZipFile(io.BytesIO(build_zip([("a", b"x", STORED, date_time)]))) as archive:
        assert archive.infolist()[0].date_time == read_back
