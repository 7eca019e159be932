"""DepotDownloader stays in its folder (issue 15, item 7): a manifest name with `../` that aims at
another job's archive fails the job, and with the sandbox the other archive is untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.support.harness import Harness
from wallwhale.steam.sandbox import bwrap_executable
from wallwhale.v1 import download_pb2 as D

VICTIM = 2831234567
ATTACKER = 2831234568


async def _attack(harness: Harness) -> tuple[Path, bytes, D.Download]:
    """The victim's archive, its bytes before the attack, and the attacker's finished job."""
    await harness.add_account("dave_we", "pw-dave")
    harness.steam.add_item(VICTIM, files={"scene.json": b'{"victim": true}'})
    victim = await harness.wait_for((await harness.create(str(VICTIM))).id)
    assert D.DownloadState.Name(victim.state) == "DOWNLOAD_STATE_SUCCEEDED"
    archive = harness.data_dir / "storage" / "archives" / f"{victim.id}.zip"
    before = archive.read_bytes()
    # The item folder is storage/work/<app>/<item>: three levels up is the storage root.
    harness.steam.add_item(
        ATTACKER,
        files={"scene.json": b"{}", f"../../../archives/{victim.id}.zip": b"PK overwritten by the attacker"},
    )
    attacker = await harness.wait_for((await harness.create(str(ATTACKER))).id)
    return archive, before, attacker


async def test_a_traversing_file_name_fails_the_job_and_leaves_other_archives_intact(
    harness: Harness,
) -> None:
    await harness.start(max_attempts=1)
    archive, before, attacker = await _attack(harness)
    assert D.DownloadState.Name(attacker.state) == "DOWNLOAD_STATE_FAILED", attacker
    assert hashlib.sha256(archive.read_bytes()).digest() == hashlib.sha256(before).digest()
    assert not (harness.data_dir / "storage" / "archives" / f"{attacker.id}.zip").exists()


async def test_unconfined_a_reported_name_outside_the_folder_still_fails_the_job(harness: Harness) -> None:
    await harness.start(max_attempts=1, depotdownloader_sandbox="none")
    _, _, attacker = await _attack(harness)
    assert D.DownloadState.Name(attacker.state) == "DOWNLOAD_STATE_FAILED", attacker
    assert D.FailureReason.Name(attacker.failure.reason) == "FAILURE_REASON_STORAGE_ERROR"
    assert "../../../archives" in attacker.failure.message


def test_bwrap_makes_sandboxes_here() -> None:
    """The suite runs DepotDownloader sandboxed (scripts/setup.sh installs bubblewrap in CI)."""
    assert bwrap_executable() is not None
