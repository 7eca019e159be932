"""`wallwhale doctor`: what a download needs, each with its fix; exit 0 only when one can run."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import FAKE_DEPOTDOWNLOADER
from wallwhale import cli, log
from wallwhale.app import keyring_for
from wallwhale.config import load_settings
from wallwhale.core import steam_accounts
from wallwhale.db import engine as db_engine
from wallwhale.db import migrate
from wallwhale.db.types import utcnow


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main configures logging for a process; in-process it would point the root logger at this
    test's captured (soon closed) stream for every later test."""
    monkeypatch.setattr(log, "configure", lambda *args, **kwargs: None)


@pytest.fixture
def web_api() -> Iterator[str]:
    """Answers GetPublishedFileDetails like Steam does for an id it does not know."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.dumps(
                {
                    "response": {
                        "result": 1,
                        "resultcount": 1,
                        "publishedfiledetails": [{"publishedfileid": "1", "result": 9}],
                    }
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, dict[str, object]], bool]:
    code = cli.main(["doctor", "--json"])
    result = json.loads(capsys.readouterr().out)
    return code, {check["name"]: check for check in result["checks"]}, result["ready"]


async def add_account(data_dir: Path) -> None:
    settings = load_settings(data_dir=data_dir)
    engine = db_engine.create_engine(settings.resolved_database_url)
    try:
        async with db_engine.session_factory(engine).begin() as session:
            await steam_accounts.create_account(
                session, steam_accounts.AccountInput(username="doc_we"), "pw", keyring_for(settings), utcnow()
            )
    finally:
        await engine.dispose()


def test_a_fresh_install_is_not_ready_and_each_problem_names_its_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WALLWHALE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WALLWHALE_STEAM_WEB_API_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WALLWHALE_DEPOTDOWNLOADER_PATH", str(tmp_path / "no-such-DepotDownloader"))
    code, checks, ready = doctor(capsys)
    assert code == 1
    assert not ready
    assert not checks["database"]["ok"]
    assert "wallwhale migrate" in str(checks["database"]["fix"])
    downloader = str(checks["depotdownloader"]["detail"]) + str(checks["depotdownloader"]["fix"])
    assert "wallwhale depotdownloader install" in downloader
    assert "WALLWHALE_DEPOTDOWNLOADER_PATH" in downloader
    assert checks["storage"]["ok"]
    assert not checks["steam_web_api"]["ok"]
    assert not checks["steam_web_api"]["required"]


def test_ready_when_a_download_can_run(
    tmp_path: Path, web_api: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("WALLWHALE_DATA_DIR", str(data))
    monkeypatch.setenv("WALLWHALE_STEAM_WEB_API_URL", web_api)
    monkeypatch.setenv("WALLWHALE_DEPOTDOWNLOADER_PATH", str(FAKE_DEPOTDOWNLOADER))
    migrate.upgrade(load_settings(data_dir=data).resolved_database_url)

    code, checks, ready = doctor(capsys)
    assert code == 1  # migrated, a binary, but no Steam account
    assert "wallwhale-cli accounts add" in str(checks["steam_accounts"]["fix"])
    assert "POST /v1/admin/steam-accounts" in str(checks["steam_accounts"]["fix"])

    asyncio.run(add_account(data))
    code, checks, ready = doctor(capsys)
    assert ready, checks
    assert code == 0
    assert checks["depotdownloader"]["detail"].startswith("3.4.0+")  # type: ignore[union-attr]
    assert checks["steam_web_api"]["ok"]
    assert checks["database"]["ok"]

    # The human form says the same.
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "ok   steam_accounts: 1 active" in out
    assert "ready: a download can run" in out
