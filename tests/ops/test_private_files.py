"""The server's files are its user's alone whatever the umask (issue 15 item 9): `wallwhale serve`
started with umask 000 on a data directory left 0777 narrows it to 0700, and the SQLite database with
its -wal and -shm files, the secret key and every folder it makes are private; archives are 0600 and
their folders 0700 (Storage, also with umask 000). scripts/run.sh and Envoy's log: test_edge_run_script."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.cli import wallwhale_env
from wallwhale.ids import new_id
from wallwhale.storage.archives import Storage


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    saved = os.umask(mask)
    try:
        yield
    finally:
        os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_private(root: Path) -> None:
    assert _mode(root) == 0o700, oct(_mode(root))
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        assert _mode(path) & 0o077 == 0, f"{path} is {oct(_mode(path))}"


def test_serve_with_umask_000_keeps_the_data_directory_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    port_file = tmp_path / "port"
    env = wallwhale_env(data, WALLWHALE_GRPC_PORT="0", WALLWHALE_GRPC_HOST="127.0.0.1")
    env.pop("WALLWHALE_DATABASE_URL", None)
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "wallwhale.cli", "serve", "--port-file", str(port_file)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            umask=0,
        )
    try:
        deadline = time.monotonic() + 90
        while not port_file.exists() or not port_file.read_text().strip():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        database = data / "wallwhale.sqlite3"
        for name in ("wallwhale.sqlite3", "wallwhale.sqlite3-wal", "wallwhale.sqlite3-shm"):
            assert (data / name).exists(), sorted(p.name for p in data.iterdir())
            assert _mode(data / name) == 0o600, (name, oct(_mode(data / name)))
        assert database.stat().st_size > 0  # migrated
        _assert_private(data)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    _assert_private(data)


def test_archives_and_their_folders_are_private_with_umask_000(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "storage")
    with _umask(0):
        storage.prepare()
        source = storage.item_dir(431960, 1)
        source.mkdir(parents=True)
        (source / "scene.pkg").write_bytes(b"x" * 1000)
        info = storage.build_archive(new_id(), source)
    archive = storage.path_of(info.relative_path)
    assert _mode(archive) == 0o600
    for folder in (storage.root, storage.archive_root, storage.work_root):
        assert _mode(folder) == 0o700, folder
