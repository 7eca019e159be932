"""The object store (storage.objects) against a real S3 server (rclone serve s3, tests/support/s3.py):
uploads that are complete or invisible, ranged reads, the batch zip over objects, presigned URLs
that expire, and errors that name no credentials."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support.s3 import S3Server
from wallwhale.storage.bundle import Bundle, Source
from wallwhale.storage.objects import (
    PART_SIZE,
    ChecksumMismatch,
    ObjectMissing,
    ObjectStore,
    S3Location,
    StoreUnavailable,
)

pytestmark = pytest.mark.slow


def store_for(s3: S3Server) -> ObjectStore:
    return ObjectStore(
        S3Location.parse(f"s3://{s3.bucket}/{s3.prefix}"), endpoint_url=s3.endpoint, path_style=True
    )


def write_zip(path: Path, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_location_parses_bucket_and_prefix() -> None:
    assert S3Location.parse("s3://bucket") == S3Location("bucket", "")
    assert S3Location.parse("s3://bucket/a/b/") == S3Location("bucket", "a/b/")
    for bad in ("http://bucket/x", "s3:///x", "s3://b/x?y=1"):
        with pytest.raises(ValueError, match=r"s3://bucket|query"):
            S3Location.parse(bad)


def test_a_multipart_upload_is_read_back_in_ranges(s3: S3Server, tmp_path: Path) -> None:
    store = store_for(s3)
    data = os.urandom(PART_SIZE + 12345)  # two parts
    path = tmp_path / "a.zip"
    path.write_bytes(data)
    store.upload(path, "archives/a.zip", hashlib.sha256(data).hexdigest())
    assert s3.keys() == [f"{s3.prefix}/archives/a.zip"]
    assert s3.object_path("archives/a.zip").read_bytes() == data
    assert store.size("archives/a.zip") == len(data)
    assert store.recorded_sha256("archives/a.zip") == hashlib.sha256(data).hexdigest()
    with store.open("archives/a.zip", len(data)) as reader:
        reader.seek(PART_SIZE - 10)
        assert reader.read(20) == data[PART_SIZE - 10 : PART_SIZE + 10]
        reader.seek(5)
        assert reader.read(7) == data[5:12]
        reader.seek(-3, io.SEEK_END)
        assert reader.read() == data[-3:]
        assert reader.read(10) == b""
    reader = store.open("archives/a.zip", len(data))  # checked, then removed before the first read
    store.delete("archives/a.zip")
    assert s3.keys() == []
    with pytest.raises(OSError, match="no such object"):
        reader.read(10)
    reader.close()
    with pytest.raises(ObjectMissing):
        store.size("archives/a.zip")


def test_a_wrong_sha256_aborts_the_upload_and_leaves_nothing_visible(s3: S3Server, tmp_path: Path) -> None:
    store = store_for(s3)
    path = tmp_path / "b.zip"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(ChecksumMismatch, match="sha256"):
        store.upload(path, "archives/b.zip", "0" * 64)
    assert s3.keys() == []
    assert s3.pending_uploads() == []


def test_an_upload_cut_off_midway_is_never_visible(s3: S3Server, tmp_path: Path) -> None:
    store = store_for(s3)
    pipe = tmp_path / "c.zip"
    os.mkfifo(pipe)
    first, rest = os.urandom(PART_SIZE), os.urandom(1000)
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            store.upload(pipe, "archives/c.zip", hashlib.sha256(first + rest).hexdigest())
        except BaseException as exc:
            errors.append(exc)

    uploader = threading.Thread(target=upload)
    uploader.start()
    with pipe.open("wb") as writer:
        writer.write(first)
        writer.flush()
        deadline = time.monotonic() + 30
        while not _parts_received(s3):  # the first part reached the store
            assert time.monotonic() < deadline
            time.sleep(0.05)
        s3.stop()
        writer.write(rest)
    uploader.join(60)
    assert len(errors) == 1, errors
    assert isinstance(errors[0], StoreUnavailable), errors
    assert "unreachable" in str(errors[0])
    s3.start()
    assert s3.keys() == []


def _parts_received(s3: S3Server) -> bool:
    client = s3.client()
    for upload in client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []):
        parts = client.list_parts(Bucket=s3.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        if parts.get("Parts"):
            return True
    return False


def test_the_batch_zip_reads_item_objects_in_ranges(s3: S3Server, tmp_path: Path) -> None:
    store = store_for(s3)
    items = {"111": {"a.txt": b"alpha" * 1000, "sub/b.bin": os.urandom(70000)}, "222": {"c.txt": b"gamma"}}
    sources = []
    for folder, files in items.items():
        path = tmp_path / f"{folder}.zip"
        sha = write_zip(path, files)
        store.upload(path, f"archives/{folder}.zip", sha)
        size = path.stat().st_size
        path.unlink()  # nothing local: only the objects
        key = f"archives/{folder}.zip"
        sources.append((folder, Source(key, lambda key=key, size=size: store.open(key, size))))
    bundle = Bundle.plan(sources)
    whole = b"".join(bundle.chunks(0, bundle.size, 4096))
    assert len(whole) == bundle.size
    with zipfile.ZipFile(io.BytesIO(whole)) as archive:
        assert {name: archive.read(name) for name in archive.namelist()} == {
            f"{folder}/{name}": data for folder, files in items.items() for name, data in files.items()
        }
    tail = b"".join(bundle.chunks(1000, bundle.size, 4096))  # a resumed fetch
    assert tail == whole[1000:]


def test_presigned_urls_name_the_file_and_expire(s3: S3Server, tmp_path: Path) -> None:
    store = store_for(s3)
    path = tmp_path / "d.zip"
    data = os.urandom(5000)
    path.write_bytes(data)
    store.upload(path, "archives/d.zip", hashlib.sha256(data).hexdigest())
    url = store.presign("archives/d.zip", "123-my-item.zip", seconds=2)
    assert s3.secret_key not in url
    reply = httpx.get(url)
    assert reply.status_code == 200
    assert reply.content == data
    assert reply.headers["content-disposition"] == 'attachment; filename="123-my-item.zip"'
    ranged = httpx.get(url, headers={"range": "bytes=100-"})
    # rclone answers a range 200 (AWS: 206), with the part and its Content-Range either way.
    assert ranged.headers["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    assert ranged.content == data[100:]
    time.sleep(3.5)
    expired = httpx.get(url)
    assert expired.status_code in (400, 403)
    assert "AccessDenied" in expired.text


def test_errors_say_what_failed_without_credentials(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_for(s3)
    assert store.check() == ""
    s3.stop()
    unreachable = store.check()
    assert "unreachable" in unreachable
    assert s3.endpoint in unreachable
    path = tmp_path / "e.zip"
    path.write_bytes(b"x")
    with pytest.raises(StoreUnavailable) as raised:
        store.upload(path, "archives/e.zip", hashlib.sha256(b"x").hexdigest())
    s3.start()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + s3.secret_key)
    refused = store_for(s3).check()  # a new client reads the (wrong) credentials
    assert "refused" in refused
    for text in (unreachable, str(raised.value), refused):
        assert s3.secret_key not in text
        assert s3.access_key not in text
