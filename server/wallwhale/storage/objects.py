"""Finished archives in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, R2, Garage, rclone).

With `WALLWHALE_STORAGE_URL=s3://bucket/prefix` an archive is still built in the local storage root,
then uploaded here and the local copy removed: every instance reads it from the bucket, so instances
on separate hosts need no shared folder. The object's key is the prefix plus the archive's relative
path (`archives/<job>.zip`), the same string the database records.

An upload is always a multipart upload: nothing is visible under the key until it is completed, and
it is completed only after every part was sent and the sha256 of the bytes sent matches the one the
archive was built with; otherwise it is aborted. Reads are ranged GETs (`RangeReader`), so FetchArchive
and the batch zip (zipfile over the reader) never copy an object to local disk.

The client is boto3 (botocore): the AWS SDK, maintained by AWS, speaks every S3-compatible server,
presigns URLs, and finds credentials the usual way (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a
shared credentials file, AWS_PROFILE, instance roles). It is synchronous: callers run it in threads.
Error messages handed on are our own sentences: a server's message could echo request details.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from wallwhale.config import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PART_SIZE = 16 * 1024 * 1024  # S3 wants parts of 5 MiB or more (but the last), at most 10,000 parts
_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


class StoreUnavailable(Exception):
    """The object store did not answer, or refused (credentials, bucket): the operation may be retried."""


class ObjectMissing(Exception):
    """No object under that key."""


class ChecksumMismatch(Exception):
    """The bytes uploaded do not have the sha256 the archive was built with: the upload was aborted."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ending in "/"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("must look like s3://bucket/prefix")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")


def from_settings(settings: Settings) -> ObjectStore | None:
    """The object store WALLWHALE_STORAGE_URL names, or None for the local storage directory."""
    if not settings.storage_url:
        return None
    return ObjectStore(
        S3Location.parse(settings.storage_url),
        endpoint_url=settings.storage_s3_endpoint or None,
        region=settings.storage_s3_region or None,
        path_style=settings.storage_s3_path_style,
    )


class ObjectStore:
    """One bucket (and prefix) holding the archives; thread-safe (boto3 clients are)."""

    def __init__(
        self,
        location: S3Location,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        path_style: bool = False,
        client: S3Client | None = None,
    ):
        self.location = location
        self.endpoint = endpoint_url or "AWS S3"
        self._client: S3Client = client or boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if path_style else "auto"},
                # Other S3 servers do not all know the newer checksum headers.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=64,
            ),
        )
        self._deleter = ThreadPoolExecutor(max_workers=2, thread_name_prefix="object-delete")
        self.last_error = ""  # what the last failed operation said, "" once one succeeds

    def key(self, relative_path: str) -> str:
        return self.location.prefix + relative_path

    def describe(self) -> str:
        return f"s3://{self.location.bucket}/{self.location.prefix} at {self.endpoint}"

    # --- writes ----------------------------------------------------------------------------------

    def upload(self, path: Path, relative_path: str, sha256: str) -> None:
        """Uploads the file as one multipart upload, completed only when the bytes sent have `sha256`."""
        key = self.key(relative_path)
        bucket = self.location.bucket
        with self._call("upload an archive"):
            upload_id = self._client.create_multipart_upload(
                Bucket=bucket, Key=key, ContentType="application/zip", Metadata={"sha256": sha256}
            )["UploadId"]
        try:
            digest = hashlib.sha256()
            parts: list[dict[str, Any]] = []
            with path.open("rb") as source, self._call("upload an archive"):
                while True:
                    block = source.read(PART_SIZE)
                    if not block and parts:
                        break
                    digest.update(block)
                    number = len(parts) + 1
                    etag = self._client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=block
                    )["ETag"]
                    parts.append({"ETag": etag, "PartNumber": number})
                    if len(block) < PART_SIZE:
                        break
            if digest.hexdigest() != sha256:
                raise ChecksumMismatch(
                    f"{relative_path}: the bytes read have sha256 {digest.hexdigest()}, not {sha256}"
                )
            with self._call("upload an archive"):
                self._client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                )
        except BaseException:
            # Never half-visible: the parts sent so far are dropped (if the store answers; a bucket
            # lifecycle rule for incomplete uploads catches the rest).
            with contextlib.suppress(BotoCoreError, ClientError):
                self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
        size = self.size(relative_path)
        if size != path.stat().st_size:  # the store kept something else: it must not be served
            self.delete(relative_path)
            raise ChecksumMismatch(
                f"{relative_path}: the store holds {size} bytes, not {path.stat().st_size}"
            )

    def delete(self, relative_path: str) -> None:
        with self._call("delete an archive"):
            self._client.delete_object(Bucket=self.location.bucket, Key=self.key(relative_path))

    def delete_soon(self, relative_path: str) -> None:
        """delete() in a thread of its own (called after a commit, on the event loop)."""
        self._deleter.submit(self._delete_logged, relative_path)

    def _delete_logged(self, relative_path: str) -> None:
        from wallwhale.log import get_logger

        try:
            self.delete(relative_path)
        except StoreUnavailable as exc:
            get_logger("wallwhale.storage").warning(
                "could not delete an archive object", path=relative_path, error=str(exc)
            )

    # --- reads -----------------------------------------------------------------------------------

    def size(self, relative_path: str) -> int:
        """The object's size; ObjectMissing when there is none."""
        with self._call("read an archive"):
            return self._client.head_object(Bucket=self.location.bucket, Key=self.key(relative_path))[
                "ContentLength"
            ]

    def recorded_sha256(self, relative_path: str) -> str:
        with self._call("read an archive"):
            head = self._client.head_object(Bucket=self.location.bucket, Key=self.key(relative_path))
        return {name.lower(): value for name, value in head.get("Metadata", {}).items()}.get("sha256", "")

    def open(self, relative_path: str, size: int) -> io.BufferedReader:
        """A seekable reader of the object (ranged GETs); `size` as recorded (the caller checked it)."""
        return io.BufferedReader(RangeReader(self, self.key(relative_path), size), buffer_size=256 * 1024)

    def presign(self, relative_path: str, filename: str, seconds: int) -> str:
        """A GET URL that works without credentials for `seconds`, saving the file as `filename`."""
        with self._call("sign a URL"):
            return self._client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.location.bucket,
                    "Key": self.key(relative_path),
                    "ResponseContentDisposition": f'attachment; filename="{filename}"',
                    "ResponseContentType": "application/zip",
                },
                ExpiresIn=seconds,
            )

    def check(self) -> str:
        """'' when the bucket answers, else why not (for GetStatus and `wallwhale doctor`)."""
        try:
            with self._call("reach the bucket"):
                self._client.head_bucket(Bucket=self.location.bucket)
        except (StoreUnavailable, ObjectMissing) as exc:
            return str(exc)
        return ""

    def _get(self, key: str, start: int, end: int) -> Any:
        with self._call("read an archive"):
            return self._client.get_object(
                Bucket=self.location.bucket, Key=key, Range=f"bytes={start}-{end - 1}"
            )["Body"]

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Turns botocore's errors into ours, in our own words, and remembers the store's state."""
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _MISSING or status == 404:
                raise ObjectMissing(f"no such object in {self.describe()}") from None
            self.last_error = f"the object store refused to {what} ({code or status}) ({self.describe()})"
            raise StoreUnavailable(self.last_error) from None
        except BotoCoreError:
            self.last_error = f"the object store is unreachable: could not {what} ({self.describe()})"
            raise StoreUnavailable(self.last_error) from None
        self.last_error = ""


class RangeReader(io.RawIOBase):
    """An object read with ranged GETs: one open stream from the current position to the end, a new
    one after a seek. zipfile reads the batch zip's item archives through it."""

    def __init__(self, store: ObjectStore, key: str, size: int):
        super().__init__()
        self._store = store
        self._key = key
        self._size = size
        self._position = 0
        self._body: Any = None  # the open GET's streaming body, positioned at _position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        target = max(0, base + offset)
        if target != self._position:
            self._drop()
            self._position = target
        return target

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._size - self._position)
        if wanted <= 0:
            return 0
        if self._body is None:
            try:
                self._body = self._store._get(self._key, self._position, self._size)
            except (ObjectMissing, StoreUnavailable) as exc:  # readers of files expect OSError
                raise OSError(str(exc)) from None
        try:
            data = self._body.read(wanted)
        except (BotoCoreError, OSError) as exc:
            self._drop()
            raise OSError(
                f"reading the archive from the object store broke off: {type(exc).__name__}"
            ) from None
        if not data:
            raise OSError("the object in the store is shorter than recorded")
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        self._drop()
        super().close()

    def _drop(self) -> None:
        if self._body is not None:
            body, self._body = self._body, None
            with contextlib.suppress(Exception):  # a broken connection is dropped either way
                body.close()
