"""Storage.build_archive on real filesystems: the zip's bytes, its checksums and its failures.

Each archive is read back three ways: zipfile (CRC of every member against the central directory),
a walk over the local headers alone as a streaming unzipper does (each header's CRC and sizes must
describe the bytes after it), and `unzip -t` where it is installed. The sha256 is recomputed over
the file. A small tmpfs really fills up.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faults import fill, tmpfs
from wallwhale.ids import new_id
from wallwhale.storage import archives
from wallwhale.storage.archives import Storage, StorageError

MIB = 1024 * 1024
_LOCAL = struct.Struct("<4s5H3L2H")


def _files() -> dict[str, bytes]:
    """Stored (media, and a .pkg that does not deflate) and deflated entries, more of them than the
    writer keeps in flight, a non-ASCII name, a folder and an empty file."""
    files = {
        "scene.mp4": os.urandom(3 * MIB + 17),
        "scene.pkg": os.urandom(MIB + 5),
        "project.json": b'{"title": "Ocean", "type": "video"}' * 400,
        "empty.txt": b"",
        "materials/\u00e9t\u00e9.tex": b"texture " * 20_000,
    }
    files.update({f"shaders/{index:02}.frag": os.urandom(70_000 + index) for index in range(9)})
    return files


def _write_item(directory: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return directory


def _storage(root: Path) -> Storage:
    storage = Storage(root)
    storage.prepare()
    return storage


def _walk_local_headers(data: bytes) -> Iterator[tuple[str, int, bytes]]:
    """What a streaming unzipper sees: each local header, then as many bytes as it says."""
    position = 0
    while data[position : position + 4] == b"PK\x03\x04":
        _, _, flags, method, _, _, crc, compressed, size, name_length, extra_length = _LOCAL.unpack_from(
            data, position
        )
        assert not flags & 0x8, "a data descriptor: the local header does not tell the sizes"
        name = data[position + 30 : position + 30 + name_length].decode()
        extra = data[position + 30 + name_length : position + 30 + name_length + extra_length]
        if compressed == 0xFFFFFFFF:  # zip64: the sizes are in the extra field
            header_id, _, size, compressed = struct.unpack_from("<2H2Q", extra)
            assert header_id == 1
        start = position + 30 + name_length + extra_length
        body = data[start : start + compressed]
        content = zlib.decompress(body, -15) if method == zipfile.ZIP_DEFLATED else body
        assert len(content) == size, name
        assert zlib.crc32(content) == crc, f"{name}: the local header's CRC-32 is not the data's"
        yield name, method, content
        position = start + compressed
    assert data[position : position + 4] == b"PK\x01\x02", "the central directory does not follow"


def _check(path: Path, info: archives.ArchiveInfo, files: dict[str, bytes]) -> dict[str, int]:
    """Checks the archive every way; returns each member's compression method."""
    data = path.read_bytes()
    assert len(data) == info.size
    assert hashlib.sha256(data).hexdigest() == info.sha256
    assert info.file_count == len(files)
    assert info.content_bytes == sum(len(content) for content in files.values())
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert {member.filename: archive.read(member) for member in archive.infolist()} == files
    walked = {name: content for name, _, content in _walk_local_headers(data)}
    assert walked == files
    if unzip := shutil.which("unzip"):
        tested = subprocess.run([unzip, "-t", str(path)], capture_output=True, text=True, check=False)
        assert tested.returncode == 0, tested.stdout + tested.stderr
    return {name: method for name, method, _ in _walk_local_headers(data)}


def test_an_archive_is_a_zip_every_reader_accepts_with_its_exact_sha256(tmp_path: Path) -> None:
    storage = _storage(tmp_path / "storage")
    files = _files()
    source = _write_item(storage.item_dir(431960, 1), files)
    (source / ".DepotDownloader").mkdir()
    (source / ".DepotDownloader" / "manifest").write_bytes(b"state, not content")
    info = storage.build_archive(new_id(), source)
    methods = _check(storage.path_of(info.relative_path), info, files)
    assert methods["scene.mp4"] == methods["scene.pkg"] == methods["shaders/00.frag"] == zipfile.ZIP_STORED
    assert methods["project.json"] == methods["materials/\u00e9t\u00e9.tex"] == zipfile.ZIP_DEFLATED
    assert not list(storage.archive_root.glob("*.partial"))


def test_the_same_files_give_the_same_bytes(tmp_path: Path) -> None:
    storage = _storage(tmp_path / "storage")
    source = _write_item(storage.item_dir(431960, 1), _files())
    first = storage.build_archive(new_id(), source)
    second = storage.build_archive(new_id(), source)
    assert first.sha256 == second.sha256
    assert (
        storage.path_of(first.relative_path).read_bytes()
        == storage.path_of(second.relative_path).read_bytes()
    )


def test_zip64_records_where_sizes_and_offsets_pass_the_limit(tmp_path: Path) -> None:
    """The limit is lowered so that every entry, its offset and the directory need zip64."""
    storage = _storage(tmp_path / "storage")
    files = _files()
    source = _write_item(storage.item_dir(431960, 1), files)
    info = storage.build_archive(new_id(), source, zip64_limit=4096)
    path = storage.path_of(info.relative_path)
    _check(path, info, files)
    with zipfile.ZipFile(path) as archive:
        big = archive.getinfo("scene.mp4")
        assert struct.unpack_from("<H", big.extra)[0] == 1  # the zip64 extra field
    assert b"PK\x06\x06" in path.read_bytes()[-200:]  # the zip64 end of central directory


def test_a_link_put_in_place_of_a_file_is_not_followed(tmp_path: Path) -> None:
    storage = _storage(tmp_path / "storage")
    source = _write_item(storage.item_dir(431960, 1), {"scene.mp4": b"video"})
    (tmp_path / "secret").write_bytes(b"outside the storage root")
    (source / "link.mp4").symlink_to(tmp_path / "secret")
    info = storage.build_archive(new_id(), source)  # a link in the listing is left out
    with zipfile.ZipFile(storage.path_of(info.relative_path)) as archive:
        assert archive.namelist() == ["scene.mp4"]
    # Swapped in after the listing (what content_files returned is opened without following links):
    with (
        archives._ArchiveWriter(tmp_path / "out.zip", archives.zipformat.LIMIT32) as writer,
        pytest.raises(OSError, match="Too many levels of symbolic links") as raised,
    ):
        writer.add(source / "link.mp4", "link.mp4")
    assert raised.value.errno == errno.ELOOP


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "storage", 8 * MIB) as root:
        storage = _storage(root)
        files = {"a.mp4": os.urandom(2 * MIB), "b.mp4": os.urandom(MIB), "c.json": b"{}" * 10_000}
        source = _write_item(storage.item_dir(431960, 1), files)
        ballast = fill(root, leave_bytes=2 * MIB)  # 3 MiB of zip do not fit
        with pytest.raises(StorageError, match="disk is full"):
            storage.build_archive(new_id(), source)
        assert not list(storage.archive_root.iterdir())
        ballast.unlink()
        info = storage.build_archive(new_id(), source)
        _check(storage.path_of(info.relative_path), info, files)
