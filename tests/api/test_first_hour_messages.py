"""A failed job says how to get out: the install command and the variable, how to add an account."""

from __future__ import annotations

from pathlib import Path

from tests.support.harness import Harness
from wallwhale.v1 import download_pb2 as D

ITEM = 2831234567


async def test_a_missing_binary_names_the_install_command_and_the_variable(
    harness: Harness, tmp_path: Path
) -> None:
    await harness.start(depotdownloader_path=tmp_path / "no-such-DepotDownloader", max_attempts=1)
    await harness.add_account("jack_we", "pw-jack")
    done = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert D.FailureReason.Name(done.failure.reason) == "FAILURE_REASON_DOWNLOADER_UNAVAILABLE"
    assert "wallwhale depotdownloader install" in done.failure.message
    assert "WALLWHALE_DEPOTDOWNLOADER_PATH" in done.failure.message
    assert str(tmp_path) not in done.failure.message


async def test_no_account_names_the_cli_and_rest_ways_to_add_one(harness: Harness) -> None:
    await harness.start()
    done = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert D.FailureReason.Name(done.failure.reason) == "FAILURE_REASON_NO_ACCOUNT_AVAILABLE"
    assert "wallwhale-cli accounts add" in done.failure.message
    assert "POST /v1/admin/steam-accounts" in done.failure.message
