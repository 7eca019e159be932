"""The demo's Steam: one account and a small Workshop catalog of Wallpaper Engine items.

The README's examples use these ids, and tests/ops/test_readme_examples.py runs them against a demo
stack, so a change here shows up there. Sizes are modest and content is paced (`BYTES_PER_SECOND`)
so that a download takes a few seconds and its progress can be watched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from wallwhale_simulator.steam import DEFAULT_GIF, FakeSteam

ACCOUNT_USERNAME = "wallwhale_demo"
ACCOUNT_PASSWORD = "demo-steam-password"  # noqa: S105 - the simulator's own account, not a secret
# A second account the demo does not add: the README's example of adding one.
SECOND_USERNAME = "wallwhale_demo2"
SECOND_PASSWORD = "second-demo-password"  # noqa: S105

VIDEO_ITEM = 3370000101
SCENE_ITEM = 3370000102
WEB_ITEM = 3370000103
UPDATED_ITEM = 3370000104  # a new version is published while the demo runs
PRIVATE_ITEM = 3370000105
REMOVED_ITEM = 3370000106
COLLECTION = 3370000200

BYTES_PER_SECOND = 4_000_000
MB = 1_000_000


@dataclass(frozen=True)
class Entry:
    workshop_id: int
    title: str
    kind: str  # what the README's table says about it


ENTRIES = (
    Entry(VIDEO_ITEM, "Rainy Neon Alley", "video wallpaper, 12 MB (about 3 s)"),
    Entry(SCENE_ITEM, "Northern Lights over the Fjord", "scene wallpaper, 6 MB"),
    Entry(WEB_ITEM, "Minimal Clock", "web wallpaper, 14 files, 8 MB"),
    Entry(UPDATED_ITEM, "Harbour at Dusk", "scene wallpaper whose update arrives later"),
    Entry(PRIVATE_ITEM, "Work in Progress", "private: refused before queueing"),
    Entry(REMOVED_ITEM, "Borrowed Artwork", "removed by Steam: refused before queueing"),
    Entry(COLLECTION, "Calm Desktops", "a collection of the first three"),
)


def _project(workshop_id: int, title: str, kind: str, file: str, version: int = 0) -> bytes:
    project = {
        "contentrating": "Everyone",
        "description": f"{title}: a demo wallpaper of the WallWhale Steam simulator.",
        "file": file,
        "preview": "preview.gif",
        "tags": ["Nature" if kind == "scene" else "Abstract"],
        "title": title,
        "type": kind,
        "version": version,
        "visibility": "public",
        "workshopid": str(workshop_id),
    }
    return (json.dumps(project, indent="\t") + "\n").encode()


def _web_files() -> dict[str, bytes | int]:
    index = (
        "<!doctype html>\n<html><head><meta charset='utf-8'><link rel='stylesheet' href='style.css'>"
        "</head>\n<body><div id='clock'></div><script src='script.js'></script></body></html>\n"
    )
    script = (
        "const clock = document.getElementById('clock');\n"
        "const tick = () => { clock.textContent = new Date().toLocaleTimeString(); };\n"
        "tick(); setInterval(tick, 1000);\n"
    )
    style = "body { margin: 0; background: url(images/slide-1.jpg) center / cover; }\n"
    return {
        "project.json": _project(WEB_ITEM, "Minimal Clock", "web", "index.html"),
        "preview.gif": DEFAULT_GIF,
        "index.html": index.encode(),
        "script.js": script.encode(),
        "style.css": style.encode(),
        "fonts/clock.woff2": 80_000,
        # A slideshow behind the clock: many files of a size, so the progress moves in steps.
        **{f"images/slide-{number}.jpg": 1 * MB for number in range(1, 9)},
    }


def _harbour(version: int) -> dict[str, bytes | int]:
    return {
        "project.json": _project(UPDATED_ITEM, "Harbour at Dusk", "scene", "scene.json", version),
        "preview.gif": DEFAULT_GIF,
        "scene.pkg": 4 * MB + version * 250_000,
    }


def build(
    directory: Path, *, updated: bool = False, bytes_per_second: int | None = BYTES_PER_SECOND
) -> FakeSteam:
    """Writes the demo's world into `directory` (replacing any) and returns it; `updated`: with the
    later version of UPDATED_ITEM already published."""
    steam = FakeSteam(directory)
    steam.set(bytes_per_second=bytes_per_second, record_runs=False)
    steam.add_account(ACCOUNT_USERNAME, ACCOUNT_PASSWORD)
    steam.add_account(SECOND_USERNAME, SECOND_PASSWORD)
    steam.add_item(
        VIDEO_ITEM,
        title="Rainy Neon Alley",
        files={
            "project.json": _project(VIDEO_ITEM, "Rainy Neon Alley", "video", "alley.mp4"),
            "preview.gif": DEFAULT_GIF,
            "alley.mp4": 12 * MB,
        },
    )
    steam.add_item(
        SCENE_ITEM,
        title="Northern Lights over the Fjord",
        files={
            "project.json": _project(SCENE_ITEM, "Northern Lights over the Fjord", "scene", "scene.json"),
            "preview.gif": DEFAULT_GIF,
            "scene.pkg": 6 * MB,
        },
    )
    steam.add_item(WEB_ITEM, title="Minimal Clock", files=_web_files())
    steam.add_item(UPDATED_ITEM, title="Harbour at Dusk", files=_harbour(1 if updated else 0))
    # Steam answers an anonymous question about a private item as about an unknown one.
    steam.add_item(
        PRIVATE_ITEM,
        title="Work in Progress",
        behaviour={"file_details_access_denied": True},
        web={"result": 9},
    )
    steam.add_item(
        REMOVED_ITEM,
        title="Borrowed Artwork",
        behaviour={"missing": True},
        web={"banned": 1, "ban_reason": "removed for a copyright claim"},
    )
    steam.add_collection(COLLECTION, [VIDEO_ITEM, SCENE_ITEM, WEB_ITEM], title="Calm Desktops")
    return steam


def publish_update(steam: FakeSteam) -> None:
    """Publishes the new version of UPDATED_ITEM: a new manifest, so a new content handle."""
    steam.add_item(UPDATED_ITEM, title="Harbour at Dusk", files=_harbour(1))
