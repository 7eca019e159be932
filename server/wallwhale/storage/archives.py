"""The storage root: a working directory per job for DepotDownloader, and the zips it leaves behind.

Every path is derived from a job id that the server generated, and checked to stay under the root:
no client-chosen name ever reaches the filesystem.

Zips are written in one pass through a hashing writer (streamed entries with data descriptors), so
the sha256 costs no second read; a zip appears under its final name only when complete and synced.
Already-compressed media are stored as they are; other files are deflated unless a sample shows
that deflating would not pay.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from wallwhale.ids import is_valid_id

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

    def build_archive(self, download_id: str, source: Path, only: set[str] | None = None) -> ArchiveInfo:
        """Packs the files in `source` (an item dir) into archives/<id>.zip (blocking: run it in a thread).

        `only`: the relative paths to pack (the files DepotDownloader reported), when known.
        """
        final = self.archive_root / f"{_checked_id(download_id)}.zip"
        partial = final.with_suffix(".zip.partial")
        self.archive_root.mkdir(parents=True, exist_ok=True)
        files = sorted(self.content_files(source, only))
        try:
            with partial.open("wb") as raw:
                writer = _HashingWriter(raw)
                with zipfile.ZipFile(writer, "w", allowZip64=True) as archive:  # type: ignore[call-overload]
                    content_bytes = sum(_add(archive, path, source) for path in files)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(partial, final)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError("the disk is full: cannot write the archive") from exc
            raise StorageError(f"cannot write the archive: {exc.strerror or exc}") from exc
        return ArchiveInfo(
            relative_path=final.relative_to(self.root).as_posix(),
            size=writer.size,
            sha256=writer.sha256.hexdigest(),
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


def _add(archive: zipfile.ZipFile, path: Path, source: Path) -> int:
    info = zipfile.ZipInfo.from_file(path, path.relative_to(source).as_posix())
    info.compress_type = zipfile.ZIP_DEFLATED if _worth_deflating(path) else zipfile.ZIP_STORED
    with path.open("rb") as data, archive.open(info, "w", force_zip64=info.file_size > 2**31) as entry:
        shutil.copyfileobj(data, entry, _COPY_BLOCK)
    return info.file_size


def _worth_deflating(path: Path) -> bool:
    if path.suffix.lower() in STORED_SUFFIXES:
        return False
    with path.open("rb") as data:
        sample = data.read(_SAMPLE)
    return len(sample) < 512 or len(zlib.compress(sample, 1)) < 0.9 * len(sample)


class _HashingWriter:
    """A forward-only file for ZipFile: it has no seek(), so entries are streamed, and it hashes."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._raw.flush()


def archive_filename(workshop_id: int, title: str) -> str:
    """A download name people recognise: '2831234567-my-wallpaper.zip' (ASCII, no path characters)."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_title).strip("-").lower()[:60].rstrip("-")
    return f"{workshop_id}-{slug}.zip" if slug else f"{workshop_id}.zip"
