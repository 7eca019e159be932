"""Confines DepotDownloader to its folder with bubblewrap (`bwrap`).

DepotDownloader joins the manifest's file names onto -dir, so a name with `../` could write anywhere
the server's user can. Inside the sandbox the whole system is read-only, the server's own places
(the data directory, the storage root, the database file) are hidden behind an empty read-only
tmpfs, and only the run's folder (-dir), the account's home and folders an admin named are
writable. The network stays (DepotDownloader talks to Steam).

bubblewrap needs no privileges where unprivileged user namespaces are allowed (the default on
Debian and Ubuntu); it is the only way we found that works on a normal host without root-only
tricks (a separate Unix user needs root to switch to, Landlock needs kernel 5.13+ and its own
bindings). Without it the runs are not confined and the server says so loudly at start.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class SandboxMode(StrEnum):
    BWRAP = "bwrap"
    NONE = "none"


@functools.cache
def bwrap_executable() -> str | None:
    """The bwrap binary when it can make a sandbox here (user namespaces may be turned off)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    try:
        subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--", "true"],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bwrap


@dataclass(frozen=True)
class Sandbox:
    """How runs are confined. `hidden`: folders and files DepotDownloader must not see (their
    contents); `writable`: folders it may write besides its own folder and home."""

    mode: SandboxMode
    hidden: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()

    def wrap(self, argv: Sequence[str], directory: Path, home: Path) -> list[str]:
        """argv to run `argv` confined: writes only in `directory`, `home` and `writable`."""
        if self.mode is SandboxMode.NONE:
            return list(argv)
        bwrap = bwrap_executable()
        if bwrap is None:
            raise OSError("bubblewrap (bwrap) cannot create a sandbox on this host")
        env = shutil.which("env") or "/usr/bin/env"
        # bwrap itself ignores SIGTERM, so a stop reaches DepotDownloader and bwrap waits for it and
        # reaps it (else it would die first and leave its child to init); the child gets the default
        # back (coreutils env 8.31+).
        args = [
            env,
            "--ignore-signal=TERM",
            bwrap,
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--die-with-parent",
        ]
        for folder in self.writable:
            args += ["--bind", str(folder), str(folder)]
        masked_folders = []
        for place in self.hidden:
            if place.is_dir():
                args += ["--tmpfs", str(place)]
                masked_folders.append(place)
            elif place.exists():
                args += ["--ro-bind", "/dev/null", str(place)]
        executable = Path(argv[0]).resolve().parent
        if any(executable.is_relative_to(folder) for folder in masked_folders):
            args += ["--ro-bind", str(executable), str(executable)]  # an install inside the data dir
        for folder in (directory, home):
            args += ["--bind", str(folder), str(folder)]
        # The masks stay read-only: a `../` name finds no writable place between the binds.
        for folder in masked_folders:
            args += ["--remount-ro", str(folder)]
        return [*args, "--chdir", str(directory), "--", env, "--default-signal=TERM", "--", *argv]


UNCONFINED = Sandbox(SandboxMode.NONE)
