"""The server's files are its user's alone, whatever the umask it was started with.

The data directory holds the SQLite database (password hashes, e-mails, the audit trail), the key
that encrypts Steam passwords, the archives and DepotDownloader's homes: another local user must not
read any of it. `restrict_process()` widens the process's umask to 077, so that everything created
later (SQLite's -wal and -shm files, archives, a log a deployment points into the data directory) is
0600 and every directory 0700; `private_directory()` makes a directory 0700 even when it was there
before with a looser mode.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_UMASK = 0o077


def restrict_process() -> None:
    """The umask every file of this process is made with: the one given, without group and others."""
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)


def private_directory(path: Path) -> None:
    """Creates `path` as 0700 (missing parents by the umask) or narrows it to 0700 if it is ours."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # not ours (e.g. a mount point): leave it as it is
        path.chmod(0o700)


def private_file(path: Path) -> None:
    """Creates `path` empty as 0600 if it is missing, or narrows it to 0600 if it is ours: SQLite
    gives its -wal and -shm files the database file's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        with contextlib.suppress(PermissionError):
            path.chmod(0o600)
