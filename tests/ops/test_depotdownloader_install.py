"""`wallwhale depotdownloader install` against a release server of the test's own on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.depotdownloader import RUNTIME, VERSION
from wallwhale import cli, log
from wallwhale.config import load_settings
from wallwhale.steam import install


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main configures logging for a process; in-process it would point the root logger at this
    test's captured (soon closed) stream for every later test."""
    monkeypatch.setattr(log, "configure", lambda *args, **kwargs: None)


# Answers -V as the reference says (docs/depotdownloader-reference.md §1.1).
FAKE_BINARY = f"""#!/bin/sh
if [ "$1" = "-V" ] && [ $# -eq 1 ]; then
  echo "DepotDownloader v{VERSION}"
  echo "Runtime: {RUNTIME}"
  exit 0
fi
exit 1
"""
VERSION_NUMBER = "3.4.0"


def release_zip(entries: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, text in (entries or {"DepotDownloader": FAKE_BINARY}).items():
            bundle.writestr(name, text)  # no exec bit on purpose: the installer sets it
    return buffer.getvalue()


class Release:
    """What the HTTP server serves; `truncate` cuts the body short of its Content-Length."""

    def __init__(self) -> None:
        self.body = release_zip()
        self.truncate = False
        self.requests: list[str] = []

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@pytest.fixture
def release() -> Iterator[tuple[Release, str]]:
    served = Release()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append(self.path)
            if self.path != f"/DepotDownloader_{VERSION_NUMBER}/{install.platform_asset()}":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(served.body)))
            self.end_headers()
            self.wfile.write(served.body[: len(served.body) // 2] if served.truncate else served.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run(tmp_path: Path, base: str, *extra: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("WALLWHALE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("WALLWHALE_DEPOTDOWNLOADER_PATH", raising=False)
    return cli.main(["depotdownloader", "install", "--url", base, "--version", VERSION_NUMBER, *extra])


def test_install_verifies_unpacks_checks_and_becomes_the_default(
    tmp_path: Path,
    release: tuple[Release, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served, base = release
    assert load_settings(data_dir=tmp_path / "data").resolved_depotdownloader_path == Path("DepotDownloader")

    assert run(tmp_path, base, "--sha256", served.sha256.upper(), monkeypatch=monkeypatch) == 0

    binary = (tmp_path / "data" / "depotdownloader" / VERSION_NUMBER / "DepotDownloader").resolve()
    assert binary.stat().st_mode & 0o111 == 0o111
    assert f"DepotDownloader {VERSION} installed at {binary}" in capsys.readouterr().out
    assert load_settings(data_dir=tmp_path / "data").resolved_depotdownloader_path == binary
    # An explicit setting still wins over the installed copy.
    explicit = load_settings(data_dir=tmp_path / "data", depotdownloader_path=Path("/opt/dd"))
    assert explicit.resolved_depotdownloader_path == Path("/opt/dd")
    # Nothing but the unpacked release stays behind (no zip, no scratch folder).
    leftovers = sorted(p.name for p in (tmp_path / "data" / "depotdownloader").iterdir())
    assert leftovers == ["3.4.0", "current", "home"]


def test_the_minimal_environment_is_what_the_check_runs_with(tmp_path: Path) -> None:
    script = tmp_path / "DepotDownloader"
    script.write_text(FAKE_BINARY)
    script.chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WALLWHALE_SECRET_FOR_TEST", "server-only")
        info = asyncio.run(install.depotdownloader.probe(script, home=tmp_path / "home"))
        assert info.available
        assert info.version == VERSION
        # With `home` the check runs as a job would: the server's own variables stay out.
        env = install.depotdownloader.minimal_environment(tmp_path / "home")
    assert "WALLWHALE_SECRET_FOR_TEST" not in env
    assert env["HOME"] == str(tmp_path / "home")


def test_a_second_run_finds_it_installed_without_downloading(
    tmp_path: Path,
    release: tuple[Release, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served, base = release
    assert run(tmp_path, base, "--sha256", served.sha256, monkeypatch=monkeypatch) == 0
    assert len(served.requests) == 1
    capsys.readouterr()
    assert run(tmp_path, base, "--sha256", served.sha256, monkeypatch=monkeypatch) == 0
    assert "already installed" in capsys.readouterr().out
    assert len(served.requests) == 1


def test_a_checksum_mismatch_refuses_and_deletes_the_file(
    tmp_path: Path,
    release: tuple[Release, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served, base = release
    assert run(tmp_path, base, "--sha256", "0" * 64, monkeypatch=monkeypatch) == 1
    err = capsys.readouterr().err
    assert f"sha256 {served.sha256} is not the expected {'0' * 64}" in err
    assert "deleted" in err
    root = tmp_path / "data" / "depotdownloader"
    assert [p.name for p in root.iterdir()] == []  # no zip, no version folder, nothing current
    assert load_settings(data_dir=tmp_path / "data").resolved_depotdownloader_path == Path("DepotDownloader")


def test_a_truncated_download_is_refused(
    tmp_path: Path,
    release: tuple[Release, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served, base = release
    served.truncate = True
    assert run(tmp_path, base, "--sha256", served.sha256, monkeypatch=monkeypatch) == 1
    assert f"cannot download {base}/DepotDownloader_3.4.0/" in capsys.readouterr().err
    assert list((tmp_path / "data" / "depotdownloader").iterdir()) == []


def test_an_unreachable_host_names_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    base = f"http://127.0.0.1:{port}"
    assert run(tmp_path, base, "--sha256", "a" * 64, monkeypatch=monkeypatch) == 1
    err = capsys.readouterr().err
    assert f"cannot download {base}/DepotDownloader_3.4.0/{install.platform_asset()}" in err
    assert "Traceback" not in err


def test_without_a_pinned_or_given_checksum_nothing_is_downloaded(
    tmp_path: Path,
    release: tuple[Release, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served, base = release
    monkeypatch.setenv("WALLWHALE_DATA_DIR", str(tmp_path / "data"))
    code = cli.main(["depotdownloader", "install", "--url", base, "--version", "9.9.9"])
    assert code == 1
    assert "pass --sha256" in capsys.readouterr().err
    assert served.requests == []


@pytest.mark.parametrize(
    "entries",
    [
        {"../evil": "x", "DepotDownloader": FAKE_BINARY},
        {"/abs/evil": "x", "DepotDownloader": FAKE_BINARY},
        {"sub/DepotDownloader": FAKE_BINARY},  # not at the top: not a release layout
    ],
)
def test_archives_cannot_write_outside_the_target(
    tmp_path: Path,
    release: tuple[Release, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    entries: dict[str, str],
) -> None:
    served, base = release
    served.body = release_zip(entries)
    assert run(tmp_path, base, "--sha256", served.sha256, monkeypatch=monkeypatch) == 1
    err = capsys.readouterr().err
    assert "not installed" in err or "holds no DepotDownloader executable" in err
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "data" / "evil").exists()
    assert not (tmp_path / "data" / "depotdownloader" / "current").exists()


def test_a_binary_that_does_not_answer_version_is_not_made_current(
    tmp_path: Path,
    release: tuple[Release, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served, base = release
    served.body = release_zip({"DepotDownloader": "#!/bin/sh\necho nope\nexit 3\n"})
    assert run(tmp_path, base, "--sha256", served.sha256, monkeypatch=monkeypatch) == 1
    assert "does not run" in capsys.readouterr().err
    assert not (tmp_path / "data" / "depotdownloader" / "current").exists()
