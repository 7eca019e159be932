"""The demo's Steam (server/wallwhale_simulator): its catalog answers as the README says, its
DepotDownloader paces content so progress shows, the update arrives, and the server never imports it
(it is reached only through WALLWHALE_DEPOTDOWNLOADER_PATH and WALLWHALE_STEAM_WEB_API_URL)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO_ROOT
from wallwhale_simulator import catalog
from wallwhale_simulator.webapi import DETAILS_PATH, FakeWebApi


def _details(web: FakeWebApi, *ids: int) -> dict[int, dict[str, Any]]:
    form = {"itemcount": str(len(ids))} | {f"publishedfileids[{i}]": str(v) for i, v in enumerate(ids)}
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(web.base_url + DETAILS_PATH, body)  # noqa: S310 (127.0.0.1)
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 (the simulator on 127.0.0.1)
        entries = json.load(reply)["response"]["publishedfiledetails"]
    return {int(entry["publishedfileid"]): entry for entry in entries}


def test_the_server_never_imports_the_simulator() -> None:
    offenders = []
    for path in (REPO_ROOT / "server" / "wallwhale").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "wallwhale_simulator"]
    assert offenders == []


def test_the_catalog_answers_as_the_readme_says(tmp_path: Path) -> None:
    steam = catalog.build(tmp_path)
    with FakeWebApi(steam) as web:
        found = _details(web, *(entry.workshop_id for entry in catalog.ENTRIES))
        assert found[catalog.PRIVATE_ITEM]["result"] == 9
        assert found[catalog.REMOVED_ITEM]["banned"] == 1
        for item in (catalog.VIDEO_ITEM, catalog.SCENE_ITEM, catalog.WEB_ITEM, catalog.UPDATED_ITEM):
            assert found[item]["result"] == 1
            assert found[item]["title"] == next(e.title for e in catalog.ENTRIES if e.workshop_id == item)
        assert int(found[catalog.VIDEO_ITEM]["file_size"]) > 12_000_000
        handle = found[catalog.UPDATED_ITEM]["hcontent_file"]
        catalog.publish_update(steam)
        assert _details(web, catalog.UPDATED_ITEM)[catalog.UPDATED_ITEM]["hcontent_file"] != handle
    readme = (REPO_ROOT / "README.md").read_text()
    assert all(f"`{entry.workshop_id}`" in readme for entry in catalog.ENTRIES)


@pytest.mark.slow
def test_a_download_takes_seconds_and_small_files_complete_first(tmp_path: Path) -> None:
    steam = catalog.build(tmp_path / "steam", bytes_per_second=20_000_000)
    started = time.monotonic()
    done = subprocess.run(
        [str(steam.executable), "-app", "431960", "-pubfile", str(catalog.VIDEO_ITEM),
         "-username", catalog.ACCOUNT_USERNAME, "-dir", str(tmp_path / "out")],
        input=catalog.ACCOUNT_PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert elapsed >= 0.5  # 12 MB at 20 MB/s: paced, not instant
    completed = [Path(m[1]).name for m in re.finditer(r"^ *\d+\.\d\d% (.+)$", done.stdout, re.M)]
    assert completed == ["preview.gif", "project.json", "alley.mp4"]  # by size, as parallel fetches end
    assert (tmp_path / "out" / "alley.mp4").stat().st_size == 12_000_000
    assert not (tmp_path / "steam" / "runs.jsonl").exists()  # the demo's world is read-only in the sandbox
