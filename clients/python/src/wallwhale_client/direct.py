"""`wallwhale-cli direct`: one item with a local DepotDownloader and no server, for quick use.

DepotDownloader is run by the server's own runner (wallwhale.steam.runner: argv, private HOME with the
remembered login, password only on its prompt, output parsing, every failure marker, limits), so the
server package must be installed beside the client (the client's `direct` extra,
wallwhale-client[direct]). The files land in OUT/<workshop id>/.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from wallwhale_client.errors import WallWhaleError

if TYPE_CHECKING:
    from wallwhale.steam import output as steam_output

WALLPAPER_ENGINE = 431960
# DepotDownloader's -loginid (its default is 0x534B32; the server's accounts count up from 0x57570000).
DIRECT_LOGIN_ID = 0x5757FFFF


class Screen(Protocol):
    """What the command line gives direct mode to show progress on (cli.ProgressView's shape)."""

    def phase(self, name: str, percent: float) -> None: ...

    def say(self, text: str) -> None: ...


def _steam_home(username: str) -> Path:
    """Where DepotDownloader keeps this account's remembered login between runs."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "wallwhale-cli" / "steam" / username.lower()


def _ask(prompt: str) -> str | None:
    if not sys.stdin.isatty():
        return None
    return getpass.getpass(prompt)


async def download_direct(args: argparse.Namespace, password: str | None, screen: Screen) -> dict[str, Any]:
    """Runs DepotDownloader for args.item; returns what was downloaded, raises WallWhaleError on failure."""
    try:
        from wallwhale.errors import InvalidArgument
        from wallwhale.steam import output, runner, workshop
    except ModuleNotFoundError as missing:
        if missing.name != "wallwhale":
            raise  # the server package is there but broken: its own error says more
        raise WallWhaleError(
            "direct mode runs DepotDownloader with the server's runner, and the server package (wallwhale) "
            "is not installed: install it beside the client (the `direct` extra, wallwhale-client[direct])"
        ) from None
    try:
        workshop_id = workshop.parse_workshop_id(args.item, "URL")
        app_id = workshop.check_app_id(args.app, "--app")
    except InvalidArgument as error:
        raise ValueError(error.message) from None
    directory = (args.out / str(workshop_id)).resolve()

    class Hooks(runner.RunHooks):
        async def line(self, line: steam_output.Line) -> None:
            if args.verbose:
                screen.say(line.text)

        async def changes(self, changes: list[steam_output.Phase | steam_output.Progress]) -> None:
            for change in changes:
                if isinstance(change, output.Progress):
                    screen.phase("DOWNLOADING", change.percent)
                else:
                    screen.phase(change.value, 100.0 if change is output.Phase.DONE else 0.0)

        async def answer(self, prompt: steam_output.Prompt, previous_rejected: bool) -> str | None:
            if prompt.kind is output.PromptKind.PASSWORD:
                return password if password is not None else await asyncio.to_thread(_ask, "Steam password: ")
            if prompt.kind is output.PromptKind.MOBILE_CONFIRMATION:
                screen.say("Steam Guard: approve this sign-in in the Steam mobile app")
                return None
            where = f" (sent to {prompt.hint})" if prompt.hint else ""
            again = "that code was wrong; " if previous_rejected else ""
            return await asyncio.to_thread(_ask, f"Steam Guard: {again}enter the code{where}: ")

    request = runner.RunRequest(
        executable=Path(args.depotdownloader),
        app_id=app_id,
        workshop_id=workshop_id,
        username=args.username,
        login_id=DIRECT_LOGIN_ID,
        directory=directory,
        home=(args.home or _steam_home(args.username)).resolve(),
        time_limit=args.time_limit,
        inactivity_limit=300.0,
        guard_limit=600.0,
        stop_grace=10.0,
    )
    result = await runner.Runner(request, Hooks()).run()
    if result.failure is not None:
        raise WallWhaleError(result.failure.message, reason=result.failure.reason.value)
    files = [p for p in directory.rglob("*") if p.is_file() and ".DepotDownloader" not in p.parts]
    return {
        "workshopId": workshop_id,
        "appId": app_id,
        "directory": str(directory),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "seconds": round(result.duration, 3),
    }
