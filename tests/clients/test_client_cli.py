"""wallwhale-cli end to end: the installed command run as a subprocess against the real server and the
test DepotDownloader; its progress output captured, its --json parsed, its exit codes checked."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import pytest_asyncio

from tests.fakes.steam import FakeSteam
from tests.support.cli_runner import Cli
from tests.support.harness import TIME_SCALE, Harness, seconds, unzip

ITEM = 2831234567
OTHER = 2831234568


@pytest_asyncio.fixture
async def cli(harness: Harness, tmp_path: Path) -> Cli:
    server = await harness.start()
    await harness.add_account("alice_we", "correct horse")
    return Cli(f"127.0.0.1:{server.port}", dict(harness.admin)["x-api-key"], tmp_path)


async def test_download_shows_progress_per_item_then_a_summary_table(harness: Harness, cli: Cli) -> None:
    harness.steam.add_item(ITEM, files={"scene.pkg": 50_000})
    harness.steam.add_item(OTHER, files={"scene.pkg": 60_000})
    url = f"https://steamcommunity.com/sharedfiles/filedetails/?id={ITEM}"
    run = await cli("download", url, str(OTHER), "--out", "zips")
    assert run.code == 0, run
    zips = sorted((cli.cwd / "zips").iterdir())
    assert [z.name.split(".")[0].split("-")[0] for z in zips] == [str(ITEM), str(OTHER)]
    assert unzip(zips[0].read_bytes()) == harness.steam.expected_files(ITEM)
    # Not a terminal: one line per change of state, for each item.
    lines = run.stderr.splitlines()
    for item in (url, str(OTHER)):
        stages = [line.split()[2] for line in lines if line.startswith(item + " ")]
        assert stages[0] == "QUEUED"
        assert "RUNNING" in stages
        assert stages[-2:] == ["SUCCEEDED", "SAVED"], run.stderr
    assert "Downloads" in run.stdout
    for path in zips:
        assert path.name in run.stdout
    assert run.stdout.count("SUCCEEDED") == 2


async def test_download_on_a_terminal_draws_progress_bars(harness: Harness, cli: Cli) -> None:
    harness.steam.add_item(ITEM, files={"scene.pkg": 50_000})
    run = await cli("download", str(ITEM), TTY_COMPATIBLE="1", TTY_INTERACTIVE="1")
    assert run.code == 0, run
    assert "━" in run.stderr  # the bar
    assert "100%" in run.stderr
    assert "SAVED" in run.stderr


async def test_download_json_reports_each_item_and_exit_codes_tell_user_errors_apart(
    harness: Harness, cli: Cli
) -> None:
    harness.steam.add_item(ITEM, files={"scene.pkg": 10_000})
    harness.steam.add_item(OTHER, behaviour={"missing": True})
    run = await cli("--json", "download", str(ITEM), "https://example.com/?id=1")
    assert run.code == 2, run  # a bad URL is the user's to fix
    good, bad = run.json()
    assert good["state"] == "SUCCEEDED"
    data = Path(good["path"]).read_bytes()  # noqa: ASYNC240
    assert good["sizeBytes"] == len(data)
    assert unzip(data) == harness.steam.expected_files(ITEM)
    assert good["error"] is None
    assert bad["error"]["code"] == "INVALID_ARGUMENT"
    assert bad["error"]["reason"] == "INVALID_WORKSHOP_ITEM"
    assert run.stderr == ""  # --json: nothing drawn

    run = await cli("--json", "download", str(OTHER))
    assert run.code == 2  # the item does not exist
    [failed] = run.json()
    assert failed["state"] == "FAILED"
    assert failed["error"]["reason"] == "ITEM_NOT_FOUND"

    harness.steam.add_item(OTHER, behaviour={"crash": True})
    run = await cli("--json", "download", str(OTHER), "--out", "crashed")
    assert run.code == 1  # the server could not do it
    assert run.json()[0]["error"]["reason"] == "PROCESS_CRASHED"  # after the automatic attempts

    run = await cli("--json", "jobs", "show", "0193aaaa-0000-7000-8000-000000000000")
    assert run.code == 2
    assert run.json()["error"]["reason"] == "NOT_FOUND"
    assert run.json()["error"]["requestId"]


async def test_jobs_list_show_cancel_retry_and_watch(harness: Harness, cli: Cli) -> None:
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 1000 for i in range(30)}, behaviour={"file_delay": seconds(0.2)}
    )
    created = await harness.create(str(ITEM))
    await harness.wait_for_progress(created.id)

    run = await cli("--json", "jobs", "list", "--state", "running")
    assert run.code == 0, run
    assert [job["id"] for job in run.json()] == [created.id]
    run = await cli("jobs", "list")
    assert created.id in run.stdout
    assert "RUNNING" in run.stdout

    run = await cli("--json", "jobs", "cancel", created.id)
    assert run.code == 0, run
    assert run.json()["state"] in ("DOWNLOAD_STATE_CANCELLED", "DOWNLOAD_STATE_RUNNING")  # stopping
    await harness.wait_for(created.id)
    run = await cli("jobs", "show", created.id)
    assert "CANCELLED" in run.stdout

    harness.steam.add_item(ITEM, files={"scene.pkg": 1000})
    run = await cli("--json", "jobs", "retry", created.id)
    assert run.code == 0, run
    assert run.json()["state"] == "DOWNLOAD_STATE_QUEUED"

    run = await cli("--json", "jobs", "watch", created.id)
    assert run.code == 0, run
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert events[-1]["finished"]["download"]["state"] == "DOWNLOAD_STATE_SUCCEEDED"
    sequences = [int(e["sequence"]) for e in events if "finished" not in e]
    assert sequences == sorted(set(sequences))
    run = await cli("jobs", "watch", created.id, "--no-logs", "--after", str(sequences[-3]))
    assert run.code == 0
    assert run.stdout.splitlines()[-1] == "finished: SUCCEEDED"
    assert " | " not in run.stdout  # no DepotDownloader lines

    run = await cli("jobs", "show", "0193aaaa-0000-7000-8000-000000000000")
    assert run.code == 2
    assert "NOT_FOUND" in run.stderr
    assert "request id" in run.stderr


async def test_keys_create_list_revoke_and_credentials_from_a_config_file(cli: Cli) -> None:
    run = await cli(
        "--json", "keys", "create", "ci", "--scope", "download:read", "--requests-per-minute", "600"
    )
    assert run.code == 0, run
    created = run.json()
    key, key_id = created["plaintextKey"], created["apiKey"]["id"]
    assert key.startswith("ww_")
    assert created["apiKey"]["limits"]["requestsPerMinute"] == 600

    config = cli.cwd / "client.toml"
    config.write_text(f'address = "{cli.address}"\napi_key = "{key}"\n')
    run = await cli("--config", str(config), "--json", "status", WALLWHALE_ADDRESS="", WALLWHALE_API_KEY="")
    assert run.code == 0, run
    assert run.json()["database"]["ok"] is True
    run = await cli("--config", str(config), "keys", "list", WALLWHALE_API_KEY="")
    assert run.code == 2  # download:read may not list keys
    assert "SCOPE_MISSING" in run.stderr

    run = await cli("keys", "list")
    assert key_id in run.stdout
    run = await cli("keys", "revoke", key_id)
    assert run.code == 0, run
    run = await cli("status", WALLWHALE_API_KEY=key)
    assert run.code == 2
    assert "API_KEY_REVOKED" in run.stderr
    assert key_id not in (await cli("keys", "list")).stdout
    assert key_id in (await cli("keys", "list", "--all")).stdout

    config.write_text('adress = "typo"\n')
    run = await cli("--config", str(config), "status")
    assert run.code == 2
    assert "unknown keys ['adress']" in run.stderr


async def test_accounts_add_list_guard_code_and_qr(harness: Harness, cli: Cli) -> None:
    harness.steam.add_account("bob_we", "s3cret")
    run = await cli(
        "--json", "accounts", "add", "bob_we", "--password-stdin", "--app", "431960", stdin="s3cret\n"
    )
    assert run.code == 0, run
    account_id = run.json()["id"]
    run = await cli("accounts", "list")
    assert "bob_we" in run.stdout
    assert "ACTIVE" in run.stdout
    run = await cli("accounts", "guard-code", account_id, "12345")
    assert run.code == 2  # nothing waits for a code
    assert "NO_STEAM_GUARD_PENDING" in run.stderr
    harness.steam.scan_qr("bob_we")  # taken by the first poll after the code is shown
    run = await cli("accounts", "qr", account_id)
    assert run.code == 0, run
    assert "Scan with the Steam app:" in run.stdout
    assert run.stdout.strip().endswith("logged in: bob_we")
    harness.steam.set(auth_timeout=seconds(0.3))
    run = await cli("accounts", "qr", account_id)
    assert run.code == 1
    assert "QR login failed: the QR code expired before it was scanned" in run.stdout
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("args", [["download"], ["jobs"], ["--timeout", "x", "status"]])
async def test_bad_command_lines_exit_2(cli: Cli, args: list[str]) -> None:
    run = await cli(*args)
    assert run.code == 2
    assert "usage:" in run.stderr


async def test_direct_mode_runs_a_local_depotdownloader_without_a_server(tmp_path: Path) -> None:
    steam = FakeSteam(tmp_path / "steam")
    steam.set(time_scale=TIME_SCALE)
    steam.add_account("carol_we", "hunter22")
    steam.add_item(ITEM, files={"project.json": b"{}", "scene.pkg": 40_000})
    steam.add_item(OTHER, behaviour={"missing": True})
    cli = Cli("127.0.0.1:1", "", tmp_path)  # no server at all
    common = ["--depotdownloader", str(steam.executable), "--username", "carol_we", "--password-stdin"]

    run = await cli(
        "direct", f"steam://url/CommunityFilePage/{ITEM}", *common, "--out", "direct", stdin="hunter22\n"
    )
    assert run.code == 0, run
    folder = tmp_path / "direct" / str(ITEM)
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert {k: v for k, v in files.items() if not k.startswith(".DepotDownloader")} == steam.expected_files(
        ITEM
    )
    stages = [line.split()[1] for line in run.stderr.splitlines() if line.startswith("steam://")]
    assert stages[0] == "CONNECTING", run.stderr
    assert "DOWNLOADING" in stages
    assert str(folder) in run.stdout
    [started] = steam.runs()
    assert not started["password_on_argv"]
    # The remembered login lives in a private HOME per account, kept between runs.
    assert started["HOME"] == str(tmp_path / "data" / "wallwhale-cli" / "steam" / "carol_we")

    run = await cli("--json", "direct", str(OTHER), *common, stdin="hunter22\n")
    assert run.code == 2
    assert run.json()["error"]["reason"] == "ITEM_NOT_FOUND"
    run = await cli("--json", "direct", str(ITEM), *common, "--out", "again", stdin="wrong\n")
    assert run.code == 0  # the login remembered by the first run needs no password
    run = await cli("--json", "direct", str(ITEM), *common, "--home", "fresh", stdin="wrong\n")
    assert run.code == 1
    assert run.json()["error"]["reason"] == "INVALID_CREDENTIALS"
    run = await cli("direct", "not a url", *common)
    assert run.code == 2
    assert "URL" in run.stderr


def test_qr_codes_are_drawn_square_with_a_light_border() -> None:
    from wallwhale_client.cli import qr_lines

    assert qr_lines(["# ", " #"], border=1) == ["████████", "██  ████", "████  ██", "████████"]


async def test_batch_saves_one_zip_with_a_folder_per_item_and_says_what_failed(
    harness: Harness, cli: Cli, tmp_path: Path
) -> None:
    harness.steam.add_item(ITEM, files={"scene.pkg": 40_000})
    harness.steam.add_item(OTHER, behaviour={"depot_key_denied": True})
    run = await cli("--json", "batch", str(ITEM), str(OTHER), "--out", "batches")
    assert run.code == 1, run.stderr  # partly succeeded: the zip is saved, but not all of it
    report = run.json()
    assert (report["state"], report["succeeded"], report["failed"], report["total"]) == (
        "PARTIALLY_SUCCEEDED",
        1,
        1,
        2,
    )
    with zipfile.ZipFile(report["path"]) as archive:
        names = archive.namelist()
    assert names
    assert all(name.startswith(f"{ITEM}/") for name in names)

    run = await cli("batch", str(ITEM), "--out", "batches")
    assert run.code == 0, run.stderr
    assert "SUCCEEDED" in run.stdout
    assert "1 of 1 final" in run.stderr
