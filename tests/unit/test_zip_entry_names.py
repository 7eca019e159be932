"""Zip entry names unpack inside the target folder anywhere, and every file DepotDownloader reported
is packed or the build fails (issue 15, item 7)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from wallwhale.storage.archives import Storage, StorageError, entry_name

JOB = "01m8xmv5mqd6q4adj6g2ck4ymh"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a\\b.txt", "backslash"),
        ("C:/Windows/x", "drive letter"),
        ("c:x", "drive letter"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty"),
        ("./a", "'.'"),
        ("a\nb", "control character"),
        ("a\x1b[31mb", "control character"),
        ("a\x85b", "control character"),
        ("", "empty"),
    ],
)
def test_unsafe_names_are_refused_naming_why(name: str, why: str) -> None:
    with pytest.raises(StorageError, match="refused") as raised:
        entry_name(name)
    assert why in str(raised.value)


def test_plain_names_pass() -> None:
    for name in ("scene.json", "materials/ü b.png", "a/b/c..d.txt", ".hidden"):
        assert entry_name(name) == name


def _storage(tmp_path: Path) -> tuple[Storage, Path]:
    storage = Storage(tmp_path / "storage")
    storage.prepare()
    source = storage.item_dir(431960, 1)
    source.mkdir(parents=True)
    (source / "scene.json").write_text("{}")
    return storage, source


def test_a_reported_file_that_is_missing_fails_the_build(tmp_path: Path) -> None:
    storage, source = _storage(tmp_path)
    with pytest.raises(StorageError, match=r"'gone\.txt'"):
        storage.build_archive(JOB, source, {"scene.json", "gone.txt"})
    assert not list(storage.archive_root.iterdir())


def test_a_reported_file_reached_through_a_link_fails_the_build(tmp_path: Path) -> None:
    storage, source = _storage(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    os.symlink(outside, source / "linked")
    with pytest.raises(StorageError, match="link"):
        storage.build_archive(JOB, source, {"scene.json", "linked/secret.txt"})


def test_a_reported_name_leaving_the_folder_fails_the_build(tmp_path: Path) -> None:
    storage, source = _storage(tmp_path)
    (source.parent / "escaped.txt").write_text("x")
    with pytest.raises(StorageError, match="refused"):
        storage.verify_reported(source, {"../escaped.txt"})


def test_a_file_name_with_a_backslash_on_disk_is_not_packed(tmp_path: Path) -> None:
    storage, source = _storage(tmp_path)
    (source / "evil\\..\\x").write_text("x")
    with pytest.raises(StorageError, match="backslash"):
        storage.build_archive(JOB, source)


def test_reported_files_are_all_packed(tmp_path: Path) -> None:
    storage, source = _storage(tmp_path)
    info = storage.build_archive(JOB, source, {"scene.json"})
    with zipfile.ZipFile(storage.path_of(info.relative_path)) as archive:
        assert archive.namelist() == ["scene.json"]
