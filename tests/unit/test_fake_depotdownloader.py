"""The DepotDownloader test double speaks DepotDownloader 3.4.0 as the reference describes it.

Plain subprocesses against tests/fakes/steam.py; no server. Prompts are read as raw chunks, as the
production wrapper reads them, never as lines.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import depotdownloader as dd
from tests.fakes.steam import FakeSteam

APP = 431960
ITEM = 3342703486
# Sizes 100 + 300 + 600 make the progress exactly 10, 40 and 100 percent.
FILES: dict[str, bytes | int] = {"a.txt": b"a" * 100, "b/c.bin": 300, "d.json": b'{"title": "d"}'.ljust(600)}
PASSWORD_PROMPT = b'Enter account password for "alice": '


@pytest.fixture
def steam(tmp_path: Path) -> FakeSteam:
    steam = FakeSteam(tmp_path / "steam")
    steam.set(time_scale=0.01)
    steam.add_account("alice", "hunter2")
    steam.add_item(ITEM, files=FILES)
    return steam


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def command(
    steam: FakeSteam, target: Path | str, *extra: str, user: str = "alice", item: int = ITEM
) -> list[str]:
    """The command line the production code builds (§1.3)."""
    head = [str(steam.executable), "-app", str(APP), "-pubfile", str(item)]
    login = ["-username", user, "-remember-password"] if user else []
    return [*head, *login, "-dir", str(target), "-loginid", "7", *extra]


def run(
    args: list[str], home: Path, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        args,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        env={"HOME": str(home)},
        cwd=cwd,
        timeout=20,
        check=False,
    )


def lines(output: bytes) -> list[str]:
    return output.decode("utf-8", errors="replace").splitlines()


def files_in(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and ".DepotDownloader" not in path.parts
    }


class Session:
    """A running fake whose stdout and stderr are read as raw chunks, with timeouts."""

    def __init__(self, args: list[str], home: Path):
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"HOME": str(home)},
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.streams = {self.process.stdout.fileno(): "stdout", self.process.stderr.fileno(): "stderr"}
        self.data = {"stdout": b"", "stderr": b""}
        self.open = set(self.streams)

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select(list(self.open), [], [], timeout)
        for descriptor in ready:
            chunk = os.read(descriptor, 65536)
            if chunk:
                self.data[self.streams[descriptor]] += chunk
            else:
                self.open.discard(descriptor)

    def wait_for(self, stream: str, marker: bytes, count: int = 1, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while self.data[stream].count(marker) < count:
            if time.monotonic() > deadline or not self.open:
                raise AssertionError(f"no {marker!r} on {stream}: {self.data}")
            self.pump(0.05)
        return self.data[stream]

    def quiet_for(self, seconds: float) -> bool:
        """True if nothing more was printed and the process is still running after `seconds`."""
        before = dict(self.data)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump(0.05)
        return self.data == before and self.process.poll() is None

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def finish(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.open and time.monotonic() < deadline:
            self.pump(0.05)
        return self.process.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def session(home: Path) -> Iterator[type[Session]]:
    started: list[Session] = []

    class Tracked(Session):
        def __init__(self, args: list[str], home: Path = home):
            super().__init__(args, home)
            started.append(self)

    yield Tracked
    for one in started:
        one.close()


def expected_transcript(steam: FakeSteam, target: Path) -> list[str]:
    manifest = steam.manifest(ITEM)
    created = time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(manifest["created"]))
    return [
        'Enter account password for "alice": ',
        "Connecting to Steam3... Done!",
        "Logging 'alice' into Steam3...",
        " Done!",
        "Using Steam3 suggested CellID: 198",
        "Got 2 licenses for account!",
        f"Got AppInfo for {APP}",
        f"Got depot key for {APP} result: OK",
        "",
        f"Processing depot {APP}",
        f"Downloading depot {APP} manifest",
        f"Got manifest request code for depot {APP} from app {APP}, manifest {manifest['id']}, "
        f"result: {manifest['request_code']}",
        f"Manifest {manifest['id']} ({created})",
        f"Downloading depot {APP}",
        f"Pre-allocating {target}/a.txt",
        f"Pre-allocating {target}/b/c.bin",
        f"Pre-allocating {target}/d.json",
        f" 10.00% {target}/a.txt",
        f" 40.00% {target}/b/c.bin",
        f"100.00% {target}/d.json",
        f"Depot {APP} - Downloaded {compressed(manifest)} bytes (1000 bytes uncompressed)",
        f"Total downloaded: {compressed(manifest)} bytes (1000 bytes uncompressed) from 1 depots",
        "Disconnected from Steam",
    ]


def compressed(manifest: dict[str, Any]) -> int:
    return sum(chunk["compressed"] for f in manifest["files"] for chunk in f["chunks"])


# -- the success path -----------------------------------------------------------------------------


def test_version_probe(steam: FakeSteam, home: Path) -> None:
    result = run([str(steam.executable), "-V"], home)
    assert result.returncode == 0
    assert lines(result.stdout) == [f"DepotDownloader v{dd.VERSION}", f"Runtime: {dd.RUNTIME}"]


def test_prompt_then_full_transcript_and_exact_files(
    steam: FakeSteam, session: type[Session], tmp_path: Path, home: Path
) -> None:
    target = tmp_path / "item"
    fake = session(command(steam, target))
    # The prompt arrives, without a newline, before anything was written to stdin.
    assert fake.wait_for("stdout", PASSWORD_PROMPT) == PASSWORD_PROMPT
    assert fake.quiet_for(0.1)
    assert fake.data["stderr"] == b""
    fake.send("hunter2")
    assert fake.finish() == 0
    assert lines(fake.data["stdout"]) == expected_transcript(steam, target)
    assert fake.data["stderr"] == b""
    assert (
        files_in(target)
        == steam.expected_files(ITEM)
        == {name: dd.file_bytes(ITEM, name, dd.file_spec(v)) for name, v in FILES.items()}
    )
    assert (target / ".DepotDownloader" / "depot.config").is_file()
    assert list(steam.stored_tokens(home)) == ["alice"]


def test_default_item_is_a_wallpaper_engine_project(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    steam.add_item(1234, title="Sunset")
    result = run(command(steam, tmp_path / "we", item=1234), home, b"hunter2\n")
    assert result.returncode == 0
    written = files_in(tmp_path / "we")
    assert written == steam.expected_files(1234)
    assert set(written) == {"project.json", "preview.gif", "scene.pkg"}
    assert b'"title": "Sunset"' in written["project.json"]


def test_token_is_remembered_and_a_rerun_is_a_quick_burst(
    steam: FakeSteam, tmp_path: Path, home: Path
) -> None:
    target = tmp_path / "item"
    assert run(command(steam, target), home, b"hunter2\n").returncode == 0
    again = run(command(steam, target), home)  # no stdin at all: no prompt may come
    assert again.returncode == 0, again.stdout
    out = lines(again.stdout)
    assert out[:2] == ["Connecting to Steam3... Done!", "Logging 'alice' into Steam3..."]
    assert f"Already have manifest {steam.manifest(ITEM)['id']} for depot {APP}." in out
    assert not any(line.startswith(("Pre-allocating", "Downloading depot 431960 manifest")) for line in out)
    assert out[-7:] == [
        f"Downloading depot {APP}",
        f" 10.00% {target}/a.txt",
        f" 40.00% {target}/b/c.bin",
        f"100.00% {target}/d.json",
        f"Depot {APP} - Downloaded 0 bytes (0 bytes uncompressed)",
        "Total downloaded: 0 bytes (0 bytes uncompressed) from 1 depots",
        "Disconnected from Steam",
    ]
    # Another HOME has no token: the password is asked again.
    elsewhere = run(command(steam, tmp_path / "other"), tmp_path / "other-home")
    assert elsewhere.stdout.startswith(PASSWORD_PROMPT + b"\n")


def test_stored_token_without_remember_password(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    steam.store_token("Alice", home)  # keys are case-insensitive
    args = [a for a in command(steam, tmp_path / "item") if a != "-remember-password"]
    result = run(args, home, b"hunter2\n")
    assert result.returncode == 0
    assert lines(result.stdout)[:2] == [
        'Account "alice" has stored credentials. Did you forget to specify -remember-password?',
        'Enter account password for "alice": ',
    ]


def test_rejected_token_is_deleted(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    steam.store_token("alice", home)
    steam.add_account("alice", "hunter2", token_rejected="Expired")
    result = run(command(steam, tmp_path / "item"), home)
    assert result.returncode == 1
    assert lines(result.stdout) == [
        "Connecting to Steam3... Done!",
        "Logging 'alice' into Steam3...",
        "Disconnected from Steam",
        "Access token was rejected (Expired).",
        "Unable to get steam3 credentials.",
        "Error: InitializeSteam failed",
    ]
    assert steam.stored_tokens(home) == {}
    retry = run(command(steam, tmp_path / "item"), home, b"hunter2\n")  # once more, with the password
    assert retry.returncode == 0
    assert retry.stdout.startswith(PASSWORD_PROMPT)


def test_relative_dir_and_update_in_place(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    assert run(command(steam, "item"), home, b"hunter2\n", cwd=tmp_path).returncode == 0
    assert files_in(tmp_path / "item") == steam.expected_files(ITEM)
    steam.add_item(ITEM, files={"b/c.bin": 300, "d.json": b"{}"})  # a new version of the item
    update = run(command(steam, "item"), home, cwd=tmp_path)
    out = lines(update.stdout)
    assert update.returncode == 0
    assert "Deleted item/a.txt" in out
    assert "100.00% item/d.json" in out
    assert files_in(tmp_path / "item") == steam.expected_files(ITEM)


def test_interrupted_download_is_validated_and_resumed(
    steam: FakeSteam, session: type[Session], tmp_path: Path, home: Path
) -> None:
    target = tmp_path / "item"
    steam.store_token("alice", home)
    steam.add_item(ITEM, files=FILES, behaviour={"hang": "preallocate"})
    fake = session(command(steam, target))
    fake.wait_for("stdout", f"Pre-allocating {target}/d.json\n".encode())
    assert fake.quiet_for(0.2)
    assert (target / "d.json").read_bytes() == bytes(600)  # full size, zero-filled
    fake.process.send_signal(signal.SIGTERM)
    assert fake.finish() == 143
    steam.add_item(ITEM, files=FILES)
    result = run(command(steam, target), home)
    out = lines(result.stdout)
    assert result.returncode == 0
    assert [line for line in out if line.startswith("Validating")] == [
        f"Validating {target}/{name}" for name in ("a.txt", "b/c.bin", "d.json")
    ]
    assert files_in(target) == steam.expected_files(ITEM)


# -- Steam Guard and QR -----------------------------------------------------------------------------


def test_authenticator_code_prompt_and_wrong_code_loop(
    steam: FakeSteam, session: type[Session], tmp_path: Path
) -> None:
    steam.add_account("alice", "hunter2", guard="authenticator", guard_code="F3K9Q")
    fake = session(command(steam, tmp_path / "item"))
    fake.wait_for("stdout", PASSWORD_PROMPT)
    fake.send("hunter2")
    prompt = dd.DEVICE_CODE_PROMPT.encode()
    assert fake.wait_for("stderr", prompt) == prompt  # on stderr, no newline
    assert fake.data["stdout"].endswith(b"Logging 'alice' into Steam3...\n")
    for attempt in range(1, 3):
        fake.send("00000")
        assert fake.wait_for("stderr", prompt, count=attempt + 1).endswith(
            dd.WRONG_CODE.encode() + b"\n" + prompt
        )
    fake.send("")  # an empty line asks again, without the "incorrect" line
    fake.wait_for("stderr", prompt, count=4)
    assert fake.data["stderr"].count(dd.WRONG_CODE.encode()) == 2
    fake.send("F3K9Q")
    assert fake.finish() == 0
    assert lines(fake.data["stdout"])[-1] == "Disconnected from Steam"


def test_email_code_end_of_input_and_guard_data(
    steam: FakeSteam, session: type[Session], tmp_path: Path, home: Path
) -> None:
    steam.add_account("alice", "hunter2", guard="email", email_hint="al***@mail.example")
    fake = session(command(steam, tmp_path / "item"))
    fake.wait_for("stdout", PASSWORD_PROMPT)
    fake.send("hunter2")
    fake.wait_for(
        "stderr", b"STEAM GUARD! Please enter the auth code sent to the email at al***@mail.example: "
    )
    fake.close_stdin()
    assert fake.finish() == 1
    assert fake.data["stderr"] == (  # the prompt has no newline: the failure continues its line
        b"STEAM GUARD! Please enter the auth code sent to the email at al***@mail.example: "
        b"Failed to authenticate with Steam: No code was provided by the authenticator.\n"
    )
    assert lines(fake.data["stdout"])[-3:] == [
        "Disconnected from Steam",
        "Unable to get steam3 credentials.",
        "Error: InitializeSteam failed",
    ]
    first = run(command(steam, tmp_path / "item"), home, b"hunter2\n24680\n")
    assert first.returncode == 0
    # The guard data of that login spares the email code at the next password login.
    args = [a for a in command(steam, tmp_path / "item") if a != "-remember-password"]
    second = run(args, home, b"hunter2\n")
    assert second.returncode == 0
    assert b"STEAM GUARD" not in second.stderr


def test_mobile_confirmation_approve_deny_and_no_mobile(
    steam: FakeSteam, session: type[Session], tmp_path: Path
) -> None:
    steam.add_account("carol", "pw", guard="mobile")
    fake = session(command(steam, tmp_path / "item", user="carol"))
    fake.wait_for("stdout", b'Enter account password for "carol": ')
    fake.send("pw")
    fake.wait_for("stderr", dd.PHONE_CONFIRMATION.encode() + b"\n")
    assert fake.quiet_for(0.2)  # waits for the phone
    steam.approve("carol")
    assert fake.finish() == 0
    assert b"Logging 'carol' into Steam3...\n Done!\n" in fake.data["stdout"]

    denied = session(command(steam, tmp_path / "item", user="carol"), tmp_path / "home2")
    denied.wait_for("stdout", b'"carol": ')
    denied.send("pw")
    denied.wait_for("stderr", dd.PHONE_CONFIRMATION.encode())
    steam.deny("carol")
    assert denied.finish() == 1
    assert "Failed to authenticate with Steam: Failed to poll status with result AccessDenied." in lines(
        denied.data["stderr"]
    )

    typed = session(command(steam, tmp_path / "item", "-no-mobile", user="carol"), tmp_path / "home3")
    typed.wait_for("stdout", b'"carol": ')
    typed.send("pw")
    typed.wait_for("stderr", dd.DEVICE_CODE_PROMPT.encode())
    typed.send("24680")
    assert typed.finish() == 0


def test_qr_login(steam: FakeSteam, session: type[Session], tmp_path: Path, home: Path) -> None:
    steam.set(qr_refresh=20)  # 0.2 s at this time scale
    fake = session(
        [
            str(steam.executable),
            "-app",
            str(APP),
            "-pubfile",
            str(ITEM),
            "-qr",
            "-remember-password",
            "-dir",
            str(tmp_path / "item"),
        ]
    )
    header = b"Use the Steam Mobile App to sign in with this QR code:\n"
    first = [row.encode() + b"\n" for row in steam.qr_rows(0)]
    fake.wait_for(
        "stdout",
        b"The QR code has changed:\n" + header + b"".join(row.encode() + b"\n" for row in steam.qr_rows(1)),
    )
    expected_start = (
        b"Connecting to Steam3... Done!\nLogging in with QR code...\n" + header + b"".join(first) + b"\n"
    )
    assert fake.data["stdout"].startswith(expected_start)
    rows = steam.qr_rows(0)
    assert len(rows) == 37  # 29 modules and two quiet zones of 4
    assert {len(row) for row in rows} == {74}  # 2 characters per module
    assert set("".join(rows)) == {"█", " "}
    assert rows[0] == " " * 74
    steam.scan_qr("alice")
    assert fake.finish() == 0
    out = lines(fake.data["stdout"])
    success = out.index(
        "Success! Next time you can login with -username alice -remember-password instead of -qr."
    )
    assert out[success + 1 : success + 4] == [
        " Done!",
        "Using Steam3 suggested CellID: 198",
        "Got 2 licenses for account!",
    ]
    assert list(steam.stored_tokens(home)) == ["alice"]
    assert files_in(tmp_path / "item") == steam.expected_files(ITEM)


# -- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "code", "tail"),
    [
        (
            {"missing": True},
            0,
            [f"Unable to locate manifest ID for published file {ITEM}", "Disconnected from Steam"],
        ),
        (
            {"unsupported_type": "Collection"},
            0,
            [
                f"Published file {ITEM} has unsupported file type Collection. Skipping file",
                "Disconnected from Steam",
            ],
        ),
        (
            {"depot_key_denied": True},
            0,
            [
                f"Got depot key for {APP} result: AccessDenied",
                f"No valid depot key for {APP}, unable to download.",
                "",
                "Total downloaded: 0 bytes (0 bytes uncompressed) from 0 depots",
                "Disconnected from Steam",
            ],
        ),
        (
            {"depot_key_denied": "Blocked"},
            0,
            [
                f"Got depot key for {APP} result: Blocked",
                f"No valid depot key for {APP}, unable to download.",
                "",
                "Total downloaded: 0 bytes (0 bytes uncompressed) from 0 depots",
                "Disconnected from Steam",
            ],
        ),
        (
            {"zero_depots": True},
            0,
            [
                f"Depot {APP} is not available from this account.",
                "",
                "Total downloaded: 0 bytes (0 bytes uncompressed) from 0 depots",
                "Disconnected from Steam",
            ],
        ),
        (
            {"manifest_401": True},
            1,
            [
                "Encountered 401 for depot manifest 431960 {manifest}. Aborting.",
                "",
                "Unable to download manifest {manifest} for depot 431960",
                "App 431960 was not completely downloaded.",
                "The operation was canceled.",
                "Disconnected from Steam",
            ],
        ),
        (
            {"disk_full": True},
            1,
            [
                "Pre-allocating {target}/d.json",
                "Failed to allocate file {target}/d.json: No space left on device : '{target}/d.json'",
                "Disconnected from Steam",
            ],
        ),
        (
            {"no_files": True},
            0,
            [
                f"Downloading depot {APP}",
                f"Depot {APP} - Downloaded 0 bytes (0 bytes uncompressed)",
                "Total downloaded: 0 bytes (0 bytes uncompressed) from 1 depots",
                "Disconnected from Steam",
            ],
        ),
        (
            {"exit_code": 3},
            3,
            [
                "Total downloaded: {total} bytes (1000 bytes uncompressed) from 1 depots",
                "Disconnected from Steam",
            ],
        ),
    ],
)
def test_item_failure_modes(
    steam: FakeSteam, tmp_path: Path, home: Path, behaviour: dict[str, object], code: int, tail: list[str]
) -> None:
    steam.add_item(ITEM, files=FILES, behaviour=behaviour)
    target = tmp_path / "item"
    result = run(command(steam, target), home, b"hunter2\n")
    manifest = steam.manifest(ITEM)
    expected = [
        line.format(manifest=manifest["id"], target=target, total=compressed(manifest)) for line in tail
    ]
    assert result.returncode == code
    assert lines(result.stdout)[-len(expected) :] == expected
    assert result.stderr == b""
    complete = files_in(target) == steam.expected_files(ITEM) if target.exists() else False
    assert complete == ("exit_code" in behaviour or "no_files" in behaviour)  # no_files: nothing, as promised


def test_unknown_item_and_other_app_are_missing(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    for item, app in ((999, APP), (ITEM, 4000)):
        args = command(steam, tmp_path / "x", item=item)
        args[args.index("-app") + 1] = str(app)
        result = run(args, home, b"hunter2\n")
        assert result.returncode == 0
        assert lines(result.stdout)[-2:] == [
            f"Unable to locate manifest ID for published file {item}",
            "Disconnected from Steam",
        ]
        assert not (tmp_path / "x").exists()


def test_file_details_access_denied_crashes(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    steam.add_item(ITEM, files=FILES, behaviour={"file_details_access_denied": True})
    result = run(command(steam, tmp_path / "item"), home, b"hunter2\n")
    assert result.returncode == -signal.SIGABRT
    message = f"EResult 15 (AccessDenied) while retrieving file details for pubfile {ITEM}."
    assert lines(result.stdout)[-3:] == [
        "Got 2 licenses for account!",
        f"Download failed to due to an unhandled exception: {message}",
        "Disconnected from Steam",
    ]
    err = lines(result.stderr)
    assert err[0] == f"Unhandled exception. System.Exception: {message}"
    assert err[1].startswith("   at ")


def test_crash_after_some_progress(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    steam.add_item(ITEM, files=FILES, behaviour={"crash": True})
    target = tmp_path / "item"
    result = run(command(steam, target), home, b"hunter2\n")
    assert result.returncode == -6
    out = lines(result.stdout)
    assert f" 10.00% {target}/a.txt" in out
    assert out[-2:] == [
        f"Download failed to due to an unhandled exception: Input/output error : '{target}/b/c.bin'",
        "Disconnected from Steam",
    ]
    assert (
        lines(result.stderr)[0]
        == f"Unhandled exception. System.IO.IOException: Input/output error : '{target}/b/c.bin'"
    )
    assert steam.runs()[-1]["exit_code"] == -6


@pytest.mark.parametrize(
    ("account", "stderr"),
    [
        ({"password": "wrong"}, "Authentication failed with result InvalidPassword."),
        ({"login_result": "RateLimitExceeded"}, "Authentication failed with result RateLimitExceeded."),
        (
            {"login_result": "AccountLoginDeniedThrottle"},
            "Authentication failed with result AccountLoginDeniedThrottle.",
        ),
    ],
)
def test_login_failures(
    steam: FakeSteam, tmp_path: Path, home: Path, account: dict[str, str], stderr: str
) -> None:
    steam.add_account(
        "alice", account.get("password", "hunter2"), login_result=account.get("login_result", "OK")
    )
    result = run(command(steam, tmp_path / "item"), home, b"hunter2\nhunter2\n")
    assert result.returncode == 1
    assert lines(result.stderr) == [f"Failed to authenticate with Steam: {stderr}"]  # asked once, never again
    assert lines(result.stdout) == [
        'Enter account password for "alice": ',
        "Connecting to Steam3... Done!",
        "Logging 'alice' into Steam3...",
        "Disconnected from Steam",
        "Unable to get steam3 credentials.",
        "Error: InitializeSteam failed",
    ]
    assert steam.stored_tokens(home) == {}


def test_app_not_owned_and_anonymous(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    steam.add_account("dave", "pw", owns=())
    result = run(command(steam, tmp_path / "item", user="dave"), home, b"pw\n")
    assert result.returncode == 1
    assert lines(result.stdout)[-4:] == [
        "Got 1 licenses for account!",
        f"Got AppInfo for {APP}",
        f"App {APP} (Wallpaper Engine) is not available from this account.",
        "Disconnected from Steam",
    ]
    anonymous = run(command(steam, tmp_path / "item", user=""), home)
    assert anonymous.returncode == 1
    assert lines(anonymous.stdout)[:4] == [
        "No username given. Using anonymous account with dedicated server subscription.",
        "Connecting to Steam3... Done!",
        "Logging anonymously into Steam3... Done!",
        "Using Steam3 suggested CellID: 198",
    ]


@pytest.mark.parametrize("mode", ["fail", "flaky"])
def test_connection_failures(steam: FakeSteam, tmp_path: Path, home: Path, mode: str) -> None:
    steam.set(connect=mode, time_scale=0.001)
    steam.store_token("alice", home)
    result = run(command(steam, tmp_path / "item"), home)
    out = lines(result.stdout)
    assert out[0] == "Connecting to Steam3...Connection to Steam failed. Trying again (#1)..."
    if mode == "fail":
        assert result.returncode == 1
        assert out[1:] == [
            *(f"Connection to Steam failed. Trying again (#{n})..." for n in range(2, 11)),
            "Could not connect to Steam after 10 tries",
            "Unable to get steam3 credentials.",
            "Error: InitializeSteam failed",
        ]
    else:
        assert result.returncode == 0
        assert out[1:3] == ["Connection to Steam failed. Trying again (#2)...", " Done!"]


def test_end_of_input_at_the_password_prompt_crashes(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    result = run(command(steam, tmp_path / "item"), home)
    assert result.returncode == -6
    assert (
        result.stdout
        == PASSWORD_PROMPT + b"\nConnecting to Steam3... Done!\nLogging 'alice' into Steam3...\n"
    )
    assert lines(result.stderr)[0] == (
        "Unhandled exception. System.ArgumentException: "
        "LogOn requires a username and password or access token to be set in 'details'."
    )


def test_chunk_errors_repeat_until_killed(
    steam: FakeSteam, session: type[Session], tmp_path: Path, home: Path
) -> None:
    steam.store_token("alice", home)
    steam.add_item(ITEM, files=FILES, behaviour={"chunk_errors": True})
    target = tmp_path / "item"
    fake = session(command(steam, target))
    chunk = dd.sha1(steam.expected_files(ITEM)["d.json"])
    error = f"Encountered error downloading chunk {chunk}: NotFound\n"
    error += f"Connection timeout downloading chunk {chunk}\n"
    out = fake.wait_for("stdout", error.encode(), count=3)
    assert f" 40.00% {target}/b/c.bin\n".encode() in out
    assert b"100.00%" not in out
    fake.process.send_signal(signal.SIGTERM)
    assert fake.finish() == 143
    assert steam.runs()[-1]["exit_code"] == 143


@pytest.mark.parametrize(
    ("phase", "marker"),
    [
        ("login", "Logging 'alice' into Steam3...\n"),
        ("manifest", "Got manifest request code for depot 431960"),
        ("preallocate", "Pre-allocating {target}/d.json\n"),
        ("progress", " 10.00% {target}/a.txt\n"),
    ],
)
def test_hangs_until_terminated(
    steam: FakeSteam, session: type[Session], tmp_path: Path, home: Path, phase: str, marker: str
) -> None:
    steam.store_token("alice", home)
    steam.add_item(ITEM, files=FILES, behaviour={"hang": phase})
    target = tmp_path / "item"
    fake = session(command(steam, target))
    fake.wait_for("stdout", marker.format(target=target).encode())
    assert fake.quiet_for(0.3)
    fake.process.send_signal(signal.SIGTERM)
    assert fake.finish() == 143  # .NET 9, no cleanup


def test_sigterm_and_sigint_at_the_password_prompt(
    steam: FakeSteam, session: type[Session], tmp_path: Path
) -> None:
    for sent, code in ((signal.SIGTERM, 143), (signal.SIGINT, -2)):
        fake = session(command(steam, tmp_path / "item"))
        fake.wait_for("stdout", PASSWORD_PROMPT)
        fake.process.send_signal(sent)
        assert fake.finish() == code
    assert [run["exit_code"] for run in steam.runs()] == [143, -2]


def test_garbage_and_huge_output(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    steam.store_token("alice", home)
    steam.add_item(ITEM, files=FILES, behaviour={"garbage": True, "huge_output": 20_000})
    result = run(command(steam, tmp_path / "item"), home)
    assert result.returncode == 0
    assert dd.GARBAGE in result.stdout
    with pytest.raises(UnicodeDecodeError):
        result.stdout.decode()
    out = lines(result.stdout)
    assert len(out) > 20_000
    assert sum(line.startswith("[CMClient]") for line in out) == 10_000
    assert out[-2:] == [
        f"Total downloaded: {compressed(steam.manifest(ITEM))} bytes (1000 bytes uncompressed) from 1 depots",
        "Disconnected from Steam",
    ]


# -- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "first", "inner"),
    [
        (
            ["-app", "431960", "-pubfile", "abc"],
            "abc is not a valid value for UInt64. (Parameter 'value')",
            "System.FormatException: The input string 'abc' was not in a correct format.",
        ),
        (
            ["-app", "WE", "-pubfile", "1"],
            "WE is not a valid value for UInt32. (Parameter 'value')",
            "System.FormatException: The input string 'WE' was not in a correct format.",
        ),
        (
            ["-app", "431960", "-pubfile", "1", "-loginid", "-1"],
            "-1 is not a valid value for UInt32. (Parameter 'value')",
            "System.OverflowException: Value was either too large or too small for a UInt32.",
        ),
    ],
)
def test_bad_numbers_crash_like_dotnet(
    steam: FakeSteam, home: Path, args: list[str], first: str, inner: str
) -> None:
    result = run([str(steam.executable), *args], home)
    assert result.returncode == -6
    assert result.stdout == b""
    assert lines(result.stderr)[:2] == [
        f"Unhandled exception. System.ArgumentException: {first}",
        f" ---> {inner}",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-app", "431960", "-pubfile", "1", "-remember-password"],
            "Error: -remember-password can not be used without -username or -qr.",
        ),
        (
            ["-app", "431960", "-pubfile", "1", "-qr", "-username", "alice"],
            "Error: -qr can not be used with -username.",
        ),
        (["-pubfile", "1", "-username", "alice"], "Error: -app not specified!"),
    ],
)
def test_command_line_errors(steam: FakeSteam, home: Path, args: list[str], message: str) -> None:
    result = run([str(steam.executable), *args], home)
    assert (result.returncode, lines(result.stdout), result.stderr) == (1, [message], b"")


def test_unused_arguments_are_reported(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    steam.store_token("alice", home)
    args = command(steam, tmp_path / "item", "-os", "windows", "-max-servers", "20")
    result = run(args, home)
    assert result.returncode == 0
    assert lines(result.stderr) == [
        "Argument #12 -os was not used.",
        "Argument #13 windows was not used.",
        "Argument #14 -max-servers was not used.",
        "Argument #15 20 was not used.",
        "Make sure you specified the arguments correctly. Check --help for correct arguments.",
        "",
    ]


# -- the run log ------------------------------------------------------------------------------------


def test_run_log_and_overlap(steam: FakeSteam, tmp_path: Path, home: Path) -> None:
    steam.add_account("bob", "pw")
    steam.add_item(ITEM, files=FILES, behaviour={"file_delay": 20})  # 0.2 s per file at this time scale
    environment = {"HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    steam.store_token("alice", home, home / "data")
    processes = [
        subprocess.Popen(
            command(steam, tmp_path / f"item{n}"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=environment,
        )
        for n in range(2)
    ]
    assert [process.wait(10) for process in processes] == [0, 0]
    password_run = run([*command(steam, tmp_path / "item3", user="bob"), "-password", "pw"], home)
    assert password_run.returncode == 0
    runs = steam.runs()
    assert [r["exit_code"] for r in runs] == [0, 0, 0]
    first = next(r for r in runs if r["dir"] == str(tmp_path / "item0"))
    assert first["argv"] == command(steam, tmp_path / "item0")[1:]
    assert (first["username"], first["loginid"], first["account"]) == ("alice", "7", "alice")
    assert first["env_names"] == ["HOME", "XDG_DATA_HOME"]  # only what the caller passed
    assert first["XDG_DATA_HOME"] == str(home / "data")
    assert first["HOME"] == str(home)
    assert first["end"] > first["start"] + 0.5
    assert not first["password_on_argv"]
    assert runs[2]["password_on_argv"]
    assert steam.max_overlap() == 2
    assert steam.max_overlap("ALICE") == 2
    assert steam.max_overlap("bob") == 1
    assert steam.max_overlap("nobody") == 0
