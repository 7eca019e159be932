"""The reading of DepotDownloader's output (pure functions); the workshop references that reach its
command line: test_workshop_refs.py.

Transcripts are the reference's (docs/depotdownloader-reference.md §2.3, §4, §7).
"""

from __future__ import annotations

import pytest

from wallwhale.steam.output import (
    AccountEffect,
    Line,
    OutputReader,
    Phase,
    Progress,
    Prompt,
    PromptKind,
    Reason,
    Stream,
    Transcript,
    verdict,
)


def test_prompts_are_found_without_a_newline_and_lines_keep_their_order() -> None:
    reader = OutputReader()
    assert reader.feed(Stream.STDOUT, b"Connecting to Steam3...") == []
    assert reader.feed(Stream.STDOUT, b" Done!\r\nEnter account pass") == [
        Line(Stream.STDOUT, "Connecting to Steam3... Done!")
    ]
    found = reader.feed(Stream.STDOUT, b'word for "alice": ')
    assert found == [
        Line(Stream.STDOUT, 'Enter account password for "alice": '),
        Prompt(PromptKind.PASSWORD, "alice"),
    ]
    found = reader.feed(
        Stream.STDERR, b"STEAM GUARD! Please enter the auth code sent to the email at a***@x.test: "
    )
    assert found[-1] == Prompt(PromptKind.EMAIL_CODE, "a***@x.test")
    # A prompt on the wrong stream is only text.
    assert reader.feed(Stream.STDERR, b'Enter account password for "bob": ') == []
    assert reader.finish() == [Line(Stream.STDERR, 'Enter account password for "bob": ')]


def test_garbage_is_decoded_safely_and_cut_into_bounded_lines() -> None:
    reader = OutputReader()
    found = reader.feed(Stream.STDOUT, b"\xff\xfe\x1b]9;4;1;50\x07ok\n" + b"x" * 10_000)
    assert isinstance(found[0], Line)
    assert "ok" in found[0].text
    assert all(isinstance(item, Line) and len(item.text) <= 4096 for item in found)


SUCCESS = """\
Connecting to Steam3... Done!
Logging 'alice' into Steam3...
 Done!
Using Steam3 suggested CellID: 198
Got 24 licenses for account!
Got AppInfo for 431960
Got depot key for 431960 result: OK

Processing depot 431960
Downloading depot 431960 manifest
Manifest 266457897950858871 (10/11/2024 08:15:02)
Downloading depot 431960
Pre-allocating project.json
Pre-allocating scene.pkg
 00.07% project.json
 42.17% scene.pkg
 05.50% preview.gif
100.00% scene.pkg
Depot 431960 - Downloaded 7391024 bytes (7455561 bytes uncompressed)
Total downloaded: 7391024 bytes (7455561 bytes uncompressed) from 1 depots
Disconnected from Steam
"""


def _transcript(text: str, stream: Stream = Stream.STDOUT) -> tuple[Transcript, list[Phase | Progress]]:
    transcript = Transcript()
    changes: list[Phase | Progress] = []
    for line in text.splitlines():
        changes += transcript.observe(Line(stream, line))
    return transcript, changes


def test_a_successful_run_reports_phases_and_monotonic_progress() -> None:
    transcript, changes = _transcript(SUCCESS)
    phases = [change for change in changes if isinstance(change, Phase)]
    assert phases == [Phase.CONNECTING, Phase.LOGGING_IN, Phase.FETCHING_MANIFEST, Phase.DOWNLOADING]
    percents = [change.percent for change in changes if isinstance(change, Progress)]
    assert percents == [0.07, 42.17, 42.17, 100.0]  # out-of-order lines never lower it
    assert transcript.depots == 1
    assert verdict(transcript, 0) is None
    assert transcript.prepared_files == ["project.json", "scene.pkg"]


@pytest.mark.parametrize(
    ("lines", "exit_code", "reason", "effect"),
    [
        (
            [
                "Failed to authenticate with Steam: Authentication failed with result InvalidPassword.",
                "Disconnected from Steam",
                "Unable to get steam3 credentials.",
                "Error: InitializeSteam failed",
            ],
            1,
            Reason.INVALID_CREDENTIALS,
            AccountEffect.BAD_PASSWORD,
        ),
        (
            ["Failed to authenticate with Steam: Authentication failed with result RateLimitExceeded."],
            1,
            Reason.STEAM_RATE_LIMITED,
            AccountEffect.THROTTLED,
        ),
        (
            [
                "Failed to authenticate with Steam: "
                "Authentication failed with result AccountLoginDeniedThrottle."
            ],
            1,
            Reason.STEAM_RATE_LIMITED,
            AccountEffect.THROTTLED,
        ),
        (
            ["App 431960 (Wallpaper Engine) is not available from this account."],
            1,
            Reason.APP_NOT_OWNED,
            AccountEffect.NOT_OWNED,
        ),
        (
            [
                "Got 108 licenses for account!",
                "Unable to locate manifest ID for published file 3730273288",
                "Disconnected from Steam",
            ],
            0,
            Reason.ITEM_NOT_FOUND,
            None,
        ),
        (
            [
                "Got depot key for 431960 result: AccessDenied",
                "No valid depot key for 431960, unable to download.",
                "Total downloaded: 0 bytes (0 bytes uncompressed) from 0 depots",
            ],
            0,
            Reason.ACCESS_DENIED,
            None,
        ),
        (["Total downloaded: 0 bytes (0 bytes uncompressed) from 0 depots"], 0, Reason.NO_CONTENT, None),
        (["Disconnected from Steam"], 0, Reason.NO_CONTENT, None),
        (
            [
                "Connecting to Steam3...Connection to Steam failed. Trying again (#1)...",
                "Could not connect to Steam after 10 tries",
            ],
            1,
            Reason.STEAM_UNAVAILABLE,
            None,
        ),
        (
            ["Access token was rejected (Expired).", "Unable to get steam3 credentials."],
            1,
            Reason.STEAM_UNAVAILABLE,
            AccountEffect.TOKEN_REJECTED,
        ),
        (
            [
                "Download failed to due to an unhandled exception: "
                "EResult 15 (AccessDenied) while retrieving file details for pubfile 1.",
                "Disconnected from Steam",
                "Unhandled exception. SteamKit2.SteamKitWebRequestException: AccessDenied",
            ],
            -6,
            Reason.ITEM_NOT_FOUND,
            None,
        ),
        (["Failed to allocate file /x/scene.pkg: No space left on device"], 1, Reason.STORAGE_ERROR, None),
        (["Unhandled exception. System.FormatException: bad"], -6, Reason.PROCESS_CRASHED, None),
        ([" 42.00% scene.pkg"], 143, Reason.PROCESS_CRASHED, None),
        (
            [
                "Encountered 401 for depot manifest 431960 1. Aborting.",
                "Unable to download manifest 1 for depot 431960",
                "App 431960 was not completely downloaded.",
            ],
            1,
            Reason.ACCESS_DENIED,
            None,
        ),
        (
            ["Published file 5 has unsupported file type Guide. Skipping file"],
            0,
            Reason.UNSUPPORTED_ITEM,
            None,
        ),
    ],
)
def test_each_failure_marker_decides_the_outcome(
    lines: list[str], exit_code: int, reason: Reason, effect: AccountEffect | None
) -> None:
    transcript, _ = _transcript("\n".join(lines))
    failure = verdict(transcript, exit_code)
    assert failure is not None
    assert (failure.reason, failure.account_effect) == (reason, effect)
    assert failure.message


def test_chunk_errors_are_counted_up_to_the_limit() -> None:
    transcript = Transcript(chunk_error_limit=3)
    for _ in range(3):
        assert not transcript.too_many_chunk_errors
        transcript.observe(Line(Stream.STDOUT, "Encountered error downloading chunk 0a1b: NotFound"))
    assert transcript.too_many_chunk_errors


def test_retry_semantics_of_reasons() -> None:
    transcript, _ = _transcript(
        "Failed to authenticate with Steam: Authentication failed with result RateLimitExceeded."
    )
    failure = verdict(transcript, 1)
    assert failure is not None
    assert failure.transient
    assert failure.retryable
    transcript, _ = _transcript("Unable to locate manifest ID for published file 1")
    failure = verdict(transcript, 0)
    assert failure is not None
    assert not failure.transient
    assert not failure.retryable
