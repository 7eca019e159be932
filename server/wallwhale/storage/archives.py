"""The storage root: a working directory per job for DepotDownloader, and the zips it leaves behind.

Every path is derived from a job id that the server generated, and checked to stay under the root:
no client-chosen name ever reaches the filesystem.

A zip appears under its final name only when complete and synced. Already-compressed media are
stored as they are; other files are deflated unless a sample shows that deflating would not pay.
Every local header carries its entry's CRC-32 and sizes (no data descriptors), and the archive's
sha256 covers its final bytes in order; see _ArchiveWriter for how a stored entry costs little more
than copying the file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import sys
import time
import unicodedata
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from wallwhale.ids import is_valid_id
from wallwhale.storage import zipformat

# Formats that are compressed already: deflating them costs CPU and saves nothing.
STORED_SUFFIXES = frozenset(
    [
        ".mp4",
        ".webm",
        ".mkv",
        ".mov",
        ".avi",
        ".m4v",
        ".jpg",
        ".jpeg",
        ".png",
        ".gif",
        ".webp",
        ".avif",
        ".heic",
        ".mp3",
        ".ogg",
        ".opus",
        ".m4a",
        ".aac",
        ".flac",
        ".zip",
        ".7z",
        ".rar",
        ".gz",
        ".xz",
        ".bz2",
        ".zst",
        ".dds",
        ".ktx",
        ".ktx2",
        ".basis",
        ".woff",
        ".woff2",
    ]
)
_SAMPLE = 64 * 1024
_COPY_BLOCK = 1024 * 1024
_PIPELINE = 4  # entries whose checksums may lag behind their copy (each holds an open file)
_DOWNLOADER_STATE = ".DepotDownloader"  # DepotDownloader's manifest cache inside -dir: not content


class StorageError(Exception):
    """The storage root refused a write (full, read-only) or a path left it."""


@dataclass(frozen=True)
class ArchiveInfo:
    relative_path: str  # to the storage root
    size: int
    sha256: str
    file_count: int
    content_bytes: int


class Storage:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.work_root = self.root / "work"
        self.archive_root = self.root / "archives"

    def prepare(self) -> None:
        for directory in (self.work_root, self.archive_root):
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)

    def item_dir(self, app_id: int, workshop_id: int) -> Path:
        """DepotDownloader's -dir for an item, kept between its downloads: a retry resumes, and an
        update fetches only the changed chunks (DepotDownloader keeps its manifest in .DepotDownloader).
        The queue runs one job per item at a time, so no two runs share it."""
        return self.work_root / str(int(app_id)) / str(int(workshop_id))

    def path_of(self, relative_path: str) -> Path:
        path = (self.root / relative_path).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise StorageError(f"{relative_path!r} is outside the storage root")
        return path

    def remove_item_dir(self, app_id: int, workshop_id: int) -> None:
        shutil.rmtree(self.item_dir(app_id, workshop_id), ignore_errors=True)

    def delete(self, relative_path: str) -> None:
        self.path_of(relative_path).unlink(missing_ok=True)

    def build_archive(
        self,
        download_id: str,
        source: Path,
        only: set[str] | None = None,
        *,
        zip64_limit: int = zipformat.LIMIT32,
    ) -> ArchiveInfo:
        """Packs the files in `source` (an item dir) into archives/<id>.zip (blocking: run it in a thread).

        `only`: the relative paths to pack (the files DepotDownloader reported), when known.
        `zip64_limit` is lowered by tests to exercise the zip64 records.
        """
        final = self.archive_root / f"{_checked_id(download_id)}.zip"
        partial = final.with_suffix(".zip.partial")
        self.archive_root.mkdir(parents=True, exist_ok=True)
        files = sorted(self.content_files(source, only))
        try:
            with _ArchiveWriter(partial, zip64_limit) as writer:
                content_bytes = sum(writer.add(path, path.relative_to(source).as_posix()) for path in files)
                size, sha256 = writer.finish()
            os.replace(partial, final)
        except StorageError:
            partial.unlink(missing_ok=True)
            raise
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError("the disk is full: cannot write the archive") from exc
            raise StorageError(f"cannot write the archive: {exc.strerror or exc}") from exc
        return ArchiveInfo(
            relative_path=final.relative_to(self.root).as_posix(),
            size=size,
            sha256=sha256,
            file_count=len(files),
            content_bytes=content_bytes,
        )

    def content_files(self, source: Path, only: set[str] | None = None) -> list[Path]:
        files = _content_files(source)
        if only is None:
            return list(files)
        wanted = {Path(name).as_posix() for name in only}
        return [path for path in files if path.relative_to(source).as_posix() in wanted]

    def used_bytes(self) -> int:
        return sum(entry.stat().st_size for entry in self.archive_root.glob("*.zip") if entry.is_file())


def _checked_id(download_id: str) -> str:
    if not is_valid_id(download_id):
        raise StorageError(f"{download_id!r} is not a job id")
    return download_id


def _content_files(source: Path) -> Iterator[Path]:
    if not source.is_dir():
        return
    for directory, subdirectories, names in os.walk(source):
        if Path(directory) == source and _DOWNLOADER_STATE in subdirectories:
            subdirectories.remove(_DOWNLOADER_STATE)
        for name in names:
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink():  # a link could point out of the root
                yield path


class _ArchiveWriter:
    """Writes a zip entry by entry, with its CRC-32s and its sha256 computed in two more threads.

    A stored entry's data is moved by the kernel (copy_file_range, else sendfile) from the source
    file to its place in the zip, after a gap for its local header. Meanwhile the CRC thread reads
    the source (from the page cache) for its CRC-32, and the hashing thread, once that CRC is known,
    builds the local header and hashes it and the data (read again): the copy of one file and the
    checksums of it or of the one before run at once (zlib and hashlib release the GIL). The header
    fills its gap once built. Deflated entries are compressed here and hashed by reading their bytes
    back from the zip (page cache). A source that changes while it is packed fails the build.
    """

    def __init__(self, path: Path, zip64_limit: int):
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        self._limit = zip64_limit
        self._position = 0
        self._entries: list[zipformat.Entry] = []
        self._pending: deque[Future[tuple[zipformat.Entry, bytes]]] = deque()
        self._sha256 = hashlib.sha256()  # the hashing thread's alone until finish()
        self._hash_buffer = bytearray(_COPY_BLOCK)
        self._crc_buffer = bytearray(_COPY_BLOCK)
        # One thread each, so each runs its tasks in order: CRCs run ahead, the sha256 follows.
        self._crcs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-crc")
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-hash")

    def __enter__(self) -> _ArchiveWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._crcs.shutdown(wait=True)  # queued entries end by themselves, closing their files
        self._hasher.shutdown(wait=True)
        os.close(self._fd)

    def add(self, path: Path, name: str) -> int:
        """Appends the file at `path` as `name`; returns its size."""
        # O_NOFOLLOW: a link put in place of a listed file could point out of the storage root.
        source = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            status = os.fstat(source)
            if not stat.S_ISREG(status.st_mode):
                raise StorageError(f"{name} is not a regular file")
            size = status.st_size
            deflate = _worth_deflating(name, source)
            zip64 = (size * 1.05 if deflate else size) >= self._limit  # deflating may grow it a little
            offset = self._position
            data_offset = offset + zipformat.local_header_size(name, zip64)
            entry = zipformat.Entry(
                name=name,
                method=zipformat.DEFLATED if deflate else zipformat.STORED,
                crc=0,
                compressed_size=size,
                size=size,
                date_time=_date_time(status.st_mtime),
                offset=offset,
                mode=status.st_mode,
            )
            if deflate:
                crc, compressed = _deflate(source, self._fd, data_offset, size, name)
                _check_unchanged(source, status, name)
                entry = replace(entry, crc=crc, compressed_size=compressed)
                self._pending.append(self._hasher.submit(self._hash_written, entry, zip64, data_offset))
            else:
                # The hashing thread closes its own descriptor of the file when done.
                hashed = os.dup(source)
                checksum = self._crcs.submit(_crc32, hashed, size, self._crc_buffer, name)
                self._pending.append(
                    self._hasher.submit(self._hash_stored, hashed, status, entry, zip64, checksum)
                )
                _copy(source, self._fd, data_offset, size, name)
        finally:
            os.close(source)
        self._position = data_offset + entry.compressed_size
        while self._pending and (len(self._pending) > _PIPELINE or self._pending[0].done()):
            self._collect()
        return size

    def finish(self) -> tuple[int, str]:
        """Writes the central directory and syncs the file; returns its size and sha256."""
        os.fsync(self._fd)  # the data goes to disk while the last checksums are computed
        while self._pending:
            self._collect()
        records = b"".join(zipformat.central_record(entry, self._limit) for entry in self._entries)
        directory = records + zipformat.end_records(
            len(self._entries), len(records), self._position, self._limit
        )
        _write(self._fd, directory, self._position)
        self._sha256.update(directory)
        os.fsync(self._fd)  # the headers and the directory: a few pages
        return self._position + len(directory), self._sha256.hexdigest()

    def _collect(self) -> None:
        entry, header = self._pending.popleft().result()
        _write(self._fd, header, entry.offset)
        self._entries.append(entry)

    def _hash_stored(
        self,
        source: int,
        status: os.stat_result,
        entry: zipformat.Entry,
        zip64: bool,
        crc: Future[int],
    ) -> tuple[zipformat.Entry, bytes]:
        try:
            entry = replace(entry, crc=crc.result())
            header = zipformat.local_header(entry, zip64)
            self._sha256.update(header)
            for block in _blocks(source, 0, entry.size, self._hash_buffer, entry.name):
                self._sha256.update(block)
            _check_unchanged(source, status, entry.name)
            return entry, header
        finally:
            os.close(source)

    def _hash_written(
        self, entry: zipformat.Entry, zip64: bool, data_offset: int
    ) -> tuple[zipformat.Entry, bytes]:
        header = zipformat.local_header(entry, zip64)
        self._sha256.update(header)
        for block in _blocks(self._fd, data_offset, entry.compressed_size, self._hash_buffer, entry.name):
            self._sha256.update(block)
        return entry, header


def _blocks(descriptor: int, offset: int, size: int, buffer: bytearray, name: str) -> Iterator[memoryview]:
    """The bytes [offset, offset + size) of a file, read into `buffer`: a block lasts until the next."""
    view = memoryview(buffer)
    end = offset + size
    while offset < end:
        read = os.preadv(descriptor, [view[: min(len(buffer), end - offset)]], offset)
        if read == 0:
            raise StorageError(f"{name} became shorter while it was packed")
        offset += read
        yield view[:read]


def _crc32(source: int, size: int, buffer: bytearray, name: str) -> int:
    crc = 0
    for block in _blocks(source, 0, size, buffer, name):
        crc = zlib.crc32(block, crc)
    return crc


def _check_unchanged(source: int, status: os.stat_result, name: str) -> None:
    now = os.fstat(source)
    if (now.st_size, now.st_mtime_ns) != (status.st_size, status.st_mtime_ns):
        raise StorageError(f"{name} changed while it was packed")


def _deflate(source: int, target: int, offset: int, size: int, name: str) -> tuple[int, int]:
    """Deflates the file into `target` at `offset`; returns its CRC-32 and the compressed size."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)  # raw, as zip wants
    crc = written = 0
    for block in _blocks(source, 0, size, bytearray(_COPY_BLOCK), name):
        crc = zlib.crc32(block, crc)
        written += _write(target, compressor.compress(block), offset + written)
    written += _write(target, compressor.flush(), offset + written)
    return crc, written


def _write(descriptor: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    while view:
        view = view[os.pwrite(descriptor, view, offset + len(data) - len(view)) :]
    return len(data)


def _copy(source: int, target: int, offset: int, size: int, name: str) -> None:
    """Moves the `size` bytes of `source` to `offset` in `target`: in the kernel when the two files
    allow it (copy_file_range, else sendfile), else through a buffer."""
    done = 0
    for move in _MOVES:
        try:
            while done < size:
                moved = move(source, target, done, offset + done, size - done)
                if moved == 0:
                    raise StorageError(f"{name} became shorter while it was packed")
                done += moved
            return
        except OSError as exc:
            if exc.errno not in _NOT_SUPPORTED or move is _MOVES[-1]:
                raise


def _by_copy_file_range(source: int, target: int, source_offset: int, target_offset: int, count: int) -> int:
    return os.copy_file_range(source, target, count, source_offset, target_offset)


def _by_sendfile(source: int, target: int, source_offset: int, target_offset: int, count: int) -> int:
    os.lseek(target, target_offset, os.SEEK_SET)  # sendfile writes at the target's position
    return os.sendfile(target, source, source_offset, count)


def _by_buffer(source: int, target: int, source_offset: int, target_offset: int, count: int) -> int:
    data = os.pread(source, min(count, _COPY_BLOCK), source_offset)
    return os.pwrite(target, data, target_offset) if data else 0


# copy_file_range refuses files on two filesystems (EXDEV) or a filesystem that cannot (EINVAL,
# EOPNOTSUPP); sendfile, a source that cannot be spliced. Other errors (ENOSPC above all) are real.
_NOT_SUPPORTED = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})
_MOVES = (_by_copy_file_range, _by_sendfile, _by_buffer) if sys.platform == "linux" else (_by_buffer,)


def _date_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    year, month, day, hour, minute, second = time.localtime(mtime)[:6]
    return year, month, day, hour, minute, second


def _worth_deflating(name: str, source: int) -> bool:
    if PurePosixPath(name).suffix.lower() in STORED_SUFFIXES:
        return False
    sample = os.pread(source, _SAMPLE, 0)
    return len(sample) < 512 or len(zlib.compress(sample, 1)) < 0.9 * len(sample)


def archive_filename(workshop_id: int, title: str) -> str:
    """A download name people recognise: '2831234567-my-wallpaper.zip' (ASCII, no path characters)."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_title).strip("-").lower()[:60].rstrip("-")
    return f"{workshop_id}-{slug}.zip" if slug else f"{workshop_id}.zip"
