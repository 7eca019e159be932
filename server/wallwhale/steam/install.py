"""`wallwhale depotdownloader install`: fetch a DepotDownloader release, verify it, unpack it, check it.

The release zips (docs/depotdownloader-reference.md §6) are self-contained single-file builds named
`DepotDownloader-<os>-<arch>.zip` under `<url>/DepotDownloader_<version>/`. A download is trusted only
when its sha256 matches a pinned one (below) or one the caller gives; anything else is deleted.
The copy is unpacked under `<data_dir>/depotdownloader/<version>/`, answers `-V` in the minimal
environment jobs get, and only then becomes the current one (config.installed_depotdownloader).
"""

from __future__ import annotations

import asyncio
import hashlib
import platform
import shutil
import stat
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from wallwhale.config import DEPOTDOWNLOADER_CURRENT, DEPOTDOWNLOADER_DIR, installed_depotdownloader
from wallwhale.steam import depotdownloader

PINNED_VERSION = "3.4.0"
# sha256 of release assets as published builds check them. Only what could be confirmed is pinned;
# other platforms need --sha256 (a published checksum) until a value is added here.
PINNED_SHA256: dict[tuple[str, str], str] = {
    ("3.4.0", "DepotDownloader-linux-x64.zip"): (
        "a999dec66b4850fc961bd50366696d23c2d0fad7b18790e6a5647b2f19097a53"
    ),
}
_MACHINES = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}
_SYSTEMS = {"linux": "linux", "darwin": "macos", "win32": "windows"}
_CHUNK = 256 * 1024
# The single-file build is about 40 MB; a zip that unpacks to far more is not a release.
_MAX_UNPACKED_BYTES = 512 * 1024 * 1024


class InstallError(Exception):
    """The install did not happen; the message says why and what to do."""


@dataclass(frozen=True)
class Installed:
    version: str
    executable: Path
    reported_version: str
    already: bool  # it was installed and current before this run


def platform_asset() -> str:
    system = _SYSTEMS.get(sys.platform)
    machine = _MACHINES.get(platform.machine().lower())
    if system is None or machine is None:
        raise InstallError(
            f"no DepotDownloader release for {sys.platform}/{platform.machine()}; "
            "build it yourself and set WALLWHALE_DEPOTDOWNLOADER_PATH"
        )
    return f"DepotDownloader-{system}-{machine}.zip"


def release_url(base: str, version: str, asset: str) -> str:
    return f"{base.rstrip('/')}/DepotDownloader_{version}/{asset}"


def install(
    data_dir: Path,
    *,
    version: str = PINNED_VERSION,
    base_url: str,
    sha256: str | None = None,
    asset: str | None = None,
    timeout: float = 60.0,
) -> Installed:
    if not version or not all(c.isalnum() or c in ".-+" for c in version) or version.startswith("."):
        raise InstallError(f"--version {version!r}: expected a release number such as {PINNED_VERSION}")
    asset = asset or platform_asset()
    expected = (sha256 or PINNED_SHA256.get((version, asset), "")).strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise InstallError(
            f"no pinned sha256 for {asset} of DepotDownloader {version}: pass --sha256 with the published"
            " checksum of that file (64 hex digits)"
            if not sha256
            else "--sha256 must be 64 hex digits"
        )
    root = (data_dir / DEPOTDOWNLOADER_DIR).resolve()
    target = root / version
    current = installed_depotdownloader(data_dir)
    if current is not None and current.parent == target:
        info = asyncio.run(depotdownloader.probe(current, home=root / "home"))
        if info.available:
            return Installed(version, current, info.version, already=True)
    root.mkdir(parents=True, exist_ok=True)
    url = release_url(base_url, version, asset)
    with tempfile.TemporaryDirectory(dir=root, prefix=".install-") as scratch:
        archive = Path(scratch) / asset
        _download(url, archive, expected, timeout)
        unpacked = Path(scratch) / "unpacked"
        executable_name = _unpack(archive, unpacked)
        archive.unlink()
        home = root / "home"
        home.mkdir(exist_ok=True)
        (home / "tmp").mkdir(exist_ok=True)
        info = asyncio.run(depotdownloader.probe(unpacked / executable_name, home=home))
        if not info.available:
            raise InstallError(f"the downloaded DepotDownloader does not run: {info.error}")
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)
    marker = root / f".{DEPOTDOWNLOADER_CURRENT}.tmp"
    marker.write_text(version + "\n")
    marker.replace(root / DEPOTDOWNLOADER_CURRENT)
    return Installed(version, target / executable_name, info.version, already=False)


def _download(url: str, destination: Path, expected: str, timeout: float) -> None:
    digest = hashlib.sha256()
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise InstallError(f"{url} answered HTTP {response.status_code}")
            with destination.open("wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    except httpx.HTTPError as exc:
        destination.unlink(missing_ok=True)
        raise InstallError(f"cannot download {url}: {exc or type(exc).__name__}") from None
    if digest.hexdigest() != expected:
        destination.unlink(missing_ok=True)
        raise InstallError(
            f"{url}: sha256 {digest.hexdigest()} is not the expected {expected}; the file was deleted"
        )


def _unpack(archive: Path, directory: Path) -> str:
    """Extracts into `directory` only (no absolute paths, no `..`, no links); returns the binary's name."""
    directory.mkdir()
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            if sum(member.file_size for member in members) > _MAX_UNPACKED_BYTES:
                raise InstallError(f"{archive.name} unpacks to more than {_MAX_UNPACKED_BYTES} bytes")
            for member in members:
                name = member.filename
                parts = Path(name).parts
                if name.startswith(("/", "\\")) or ".." in parts or ":" in name or "\\" in name:
                    raise InstallError(f"{archive.name} holds an unsafe path {name!r}; not installed")
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise InstallError(f"{archive.name} holds a link {name!r}; not installed")
                destination = (directory / name).resolve()
                if not destination.is_relative_to(directory.resolve()):
                    raise InstallError(f"{archive.name} holds an unsafe path {name!r}; not installed")
                if member.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, destination.open("wb") as out:
                    shutil.copyfileobj(source, out)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise InstallError(f"{archive.name} is not a valid zip: {exc}") from None
    for name in ("DepotDownloader", "DepotDownloader.exe"):
        binary = directory / name
        if binary.is_file():
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            return name
    raise InstallError(f"{archive.name} holds no DepotDownloader executable at its top level")


def describe(installed: Installed) -> str:
    state = "already installed" if installed.already else "installed"
    return (
        f"DepotDownloader {installed.reported_version} {state} at {installed.executable}; the server uses"
        " it when WALLWHALE_DEPOTDOWNLOADER_PATH is not set"
    )
