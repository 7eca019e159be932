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
import time
import unicodedata
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from wallwhale.ids import is_valid_id
from wallwhale.private import private_directory
from wallwhale.storage import zipformat
from wallwhale.storage.objects import ObjectMissing, ObjectStore

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
_PIPELINE = 4  # entries whose copy and hash may lag behind (each copy holds an open file)
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


class ArchiveGone(Exception):
    """The archive recorded is not in storage, or not as recorded (its size differs)."""


class Storage:
    """The local root (item folders, archives being built) and where finished archives live: the
    same root, or an object store (`objects`) that every instance reads."""

    def __init__(self, root: Path, objects: ObjectStore | None = None):
        self.root = root.resolve()
        self.work_root = self.root / "work"
        self.archive_root = self.root / "archives"
        self.objects = objects

    def prepare(self) -> None:
        for directory in (self.root, self.work_root, self.archive_root):
            private_directory(directory)

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
        """Removes a finished archive (an object's removal goes on in a thread: called after commits)."""
        self.path_of(relative_path).unlink(missing_ok=True)
        if self.objects is not None:
            self.objects.delete_soon(relative_path)

    def publish(self, info: ArchiveInfo) -> None:
        """Makes a built archive readable by every instance (blocking): with an object store it is
        uploaded (checked against its sha256) and the local copy removed; StoreUnavailable or
        ChecksumMismatch otherwise, and the local copy stays for another try."""
        if self.objects is None:
            return
        local = self.path_of(info.relative_path)
        self.objects.upload(local, info.relative_path, info.sha256)
        local.unlink(missing_ok=True)

    def open_archive(self, relative_path: str, size: int) -> BinaryIO:
        """A finished archive opened for reading (blocking); ArchiveGone when it is missing or its
        size is not `size`, StoreUnavailable when the object store does not answer."""
        if self.objects is not None:
            try:
                stored = self.objects.size(relative_path)
            except ObjectMissing:
                raise ArchiveGone("the archive is missing from storage") from None
            if stored != size:
                raise ArchiveGone("the archive in storage is damaged (its size changed)")
            return self.objects.open(relative_path, size)
        try:
            file = self.path_of(relative_path).open("rb")
        except (StorageError, OSError):
            raise ArchiveGone("the archive is missing from storage") from None
        if os.fstat(file.fileno()).st_size != size:
            file.close()
            raise ArchiveGone("the archive in storage is damaged (its size changed)")
        return file

    def archive_intact(self, relative_path: str, size: int) -> bool:
        """Whether the finished archive is in storage with the recorded size (blocking)."""
        if self.objects is not None:
            try:
                return self.objects.size(relative_path) == size
            except ObjectMissing:
                return False
        try:
            return self.path_of(relative_path).stat().st_size == size
        except (StorageError, OSError):
            return False

    def direct_url(self, relative_path: str, filename: str, seconds: int) -> str | None:
        """A short-lived URL that fetches the archive without the server, where the storage has one."""
        if self.objects is None:
            return None
        return self.objects.presign(relative_path, filename, seconds)

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
        if only is not None:
            self.verify_reported(source, only)
        files = sorted(self.content_files(source, only))
        try:
            with _ArchiveWriter(partial, zip64_limit) as writer:
                content_bytes = sum(
                    writer.add(path, entry_name(path.relative_to(source).as_posix())) for path in files
                )
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

    def verify_reported(self, source: Path, names: set[str]) -> None:
        """Each file DepotDownloader reported must be a plain name for a regular file inside `source`,
        reached without links: anything else wrote outside its folder, or would be silently missing
        from the archive."""
        root = source.resolve()
        for name in sorted(names):
            entry_name(name)
            path = root / name
            if os.path.realpath(path) != str(path):
                raise StorageError(f"DepotDownloader's file {name!r} leads out of its folder through a link")
            if path.is_symlink() or not path.is_file():
                raise StorageError(f"DepotDownloader reported {name!r}, but its folder has no such file")

    def used_bytes(self) -> int:
        return sum(entry.stat().st_size for entry in self.archive_root.glob("*.zip") if entry.is_file())


_DRIVE = re.compile(r"^[A-Za-z]:")


def entry_name(name: str) -> str:
    """`name` if it unpacks inside the target folder on any system, else StorageError naming why."""
    problem = None
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in name):
        problem = "a control character"
    elif "\\" in name:
        problem = "a backslash"
    elif name.startswith("/"):
        problem = "an absolute path"
    elif _DRIVE.match(name):
        problem = "a drive letter"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        problem = "an empty, '.' or '..' component"
    if problem is not None:
        raise StorageError(f"the file name {name!r} is refused: it has {problem}")
    return name


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
    """Writes a zip entry by entry, its data and its sha256 in two more threads.

    A stored entry's local header needs the CRC-32 of its data, and the sha256 needs that header
    before the data. So the copying thread reads the source in blocks, takes their CRC-32 and writes
    them after a gap for the header, then fills the gap; the hashing thread, once that entry is
    written, hashes its header and its bytes read back from the zip (page cache), while the copying
    thread goes on with the next entry. The sha256 thus covers the exact bytes of the file in order,
    and the copy and the hash of consecutive entries run at once (zlib and hashlib release the GIL).
    Deflated entries are compressed here, then hashed the same way. A source that changes while it
    is copied fails the build.

    (copy_file_range is not used: at the unaligned offsets of zip entries it cost more CPU than the
    read + pwrite the CRC-32 needs anyway, and was no faster: docs/benchmarks.md, "Archive build
    and FetchArchive".)
    """

    def __init__(self, path: Path, zip64_limit: int):
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._limit = zip64_limit
        self._position = 0
        self._entries: list[zipformat.Entry] = []
        # Per entry: its copy (stored entries) and its hash; at most _PIPELINE in flight.
        self._pending: deque[tuple[Future[_Written] | None, Future[zipformat.Entry]]] = deque()
        self._sha256 = hashlib.sha256()  # the hashing thread's alone until finish()
        self._copy_buffer = bytearray(_COPY_BLOCK)
        self._hash_buffer = bytearray(_COPY_BLOCK)
        # One thread each, so each takes its tasks in order.
        self._copier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-copy")
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-hash")

    def __enter__(self) -> _ArchiveWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._copier.shutdown(wait=True)  # queued entries end by themselves, closing their files
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
            data_offset = self._position + zipformat.local_header_size(name, zip64)
            entry = zipformat.Entry(
                name=name,
                method=zipformat.DEFLATED if deflate else zipformat.STORED,
                crc=0,
                compressed_size=size,
                size=size,
                date_time=_date_time(status.st_mtime),
                offset=self._position,
                mode=status.st_mode,
            )
            if deflate:
                crc, compressed = _deflate(source, self._fd, data_offset, size, name)
                _check_unchanged(source, status, name)
                entry = replace(entry, crc=crc, compressed_size=compressed)
                header = zipformat.local_header(entry, zip64)
                _write(self._fd, header, entry.offset)
                written: Future[_Written] | None = None
                hashed = self._hasher.submit(self._hash, _Written(entry, header, data_offset))
            else:
                # The copying thread gets a descriptor of its own: this one is closed on return.
                written = self._copier.submit(
                    self._copy_stored, os.dup(source), status, entry, zip64, data_offset
                )
                hashed = self._hasher.submit(self._hash_after, written)
        finally:
            os.close(source)
        self._pending.append((written, hashed))
        self._position = data_offset + entry.compressed_size
        while self._pending and (len(self._pending) > _PIPELINE or self._pending[0][1].done()):
            self._entries.append(self._pending.popleft()[1].result())
        return size

    def finish(self) -> tuple[int, str]:
        """Writes the central directory and syncs the file; returns its size and sha256."""
        wait([written for written, _ in self._pending if written is not None])
        os.fsync(self._fd)  # the data goes to disk while the last entries are hashed
        while self._pending:
            self._entries.append(self._pending.popleft()[1].result())
        records = b"".join(zipformat.central_record(entry, self._limit) for entry in self._entries)
        directory = records + zipformat.end_records(
            len(self._entries), len(records), self._position, self._limit
        )
        _write(self._fd, directory, self._position)
        self._sha256.update(directory)
        os.fsync(self._fd)  # the directory: a few pages
        return self._position + len(directory), self._sha256.hexdigest()

    def _copy_stored(
        self, source: int, status: os.stat_result, entry: zipformat.Entry, zip64: bool, data_offset: int
    ) -> _Written:
        try:
            crc = 0
            position = data_offset
            for block in _blocks(source, 0, entry.size, self._copy_buffer, entry.name):
                crc = zlib.crc32(block, crc)
                position += _write(self._fd, block, position)
            _check_unchanged(source, status, entry.name)
        finally:
            os.close(source)
        entry = replace(entry, crc=crc)
        header = zipformat.local_header(entry, zip64)
        _write(self._fd, header, entry.offset)
        return _Written(entry, header, data_offset)

    def _hash_after(self, written: Future[_Written]) -> zipformat.Entry:
        return self._hash(written.result())

    def _hash(self, written: _Written) -> zipformat.Entry:
        entry = written.entry
        self._sha256.update(written.header)
        for block in _blocks(
            self._fd, written.data_offset, entry.compressed_size, self._hash_buffer, entry.name
        ):
            self._sha256.update(block)
        return entry


@dataclass(frozen=True)
class _Written:
    """An entry whose header and data are in the zip."""

    entry: zipformat.Entry
    header: bytes
    data_offset: int


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


def _write(descriptor: int, data: bytes | memoryview, offset: int) -> int:
    view = memoryview(data)
    while view:
        view = view[os.pwrite(descriptor, view, offset + len(data) - len(view)) :]
    return len(data)


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
