"""Renders the Grafana dashboard's panels (deploy/grafana/wallwhale.json) as a PNG, without Grafana.

A temporary Prometheus (Debian's `prometheus` package) scrapes the given WallWhale metrics endpoints
every second; after --seconds, each panel's queries are evaluated by that Prometheus (query_range:
real PromQL, the expressions exactly as in the JSON), drawn as SVG in one HTML page laid out by the
panels' gridPos, and the page is screenshotted by headless Chromium.

With --demo (no --target) the script first starts a WallWhale server of its own on a scratch SQLite
database, with the test DepotDownloader and the fake Steam Web API (tests/fakes), and keeps it busy
while Prometheus watches: successes, cache hits, archive fetches and a mix of failures.

    .venv/bin/python scripts/dashboard_snapshot.py --demo --out docs/screenshots/dashboard.png
    .venv/bin/python scripts/dashboard_snapshot.py --target 10.0.0.5:9464 --seconds 120 --out dash.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.fakes in --demo
DASHBOARD = ROOT / "deploy" / "grafana" / "wallwhale.json"
COLOURS = ["#3274d9", "#e02f44", "#56a64b", "#ff9830", "#a352cc", "#37872d", "#8ab8ff", "#fade2a"]
CELL, ROW = 60, 34  # pixels per grid column and grid row


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def prometheus(targets: list[str], directory: Path):  # type: ignore[no-untyped-def]
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is missing (apt-get install prometheus)")
    port = free_port()
    config = directory / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [{"job_name": "wallwhale", "static_configs": [{"targets": targets}]}],
            }
        )
    )
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(directory / "prometheus.log").open("w"),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).read()  # noqa: S310 - our http URL
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit((directory / "prometheus.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def query_range(url: str, expression: str, start: float, end: float) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expression, "start": start, "end": end, "step": "2"})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{query}", timeout=30) as answer:  # noqa: S310
        reply = json.loads(answer.read())
    return list(reply["data"]["result"])


def legend(template: str, labels: dict[str, str]) -> str:
    for key, value in labels.items():
        template = template.replace("{{" + key + "}}", value or '""')
    return template


def draw_panel(panel: dict[str, Any], series: list[tuple[str, list[tuple[float, float]]]], start: float,
               end: float) -> str:  # fmt: skip
    grid = panel["gridPos"]
    width, height = grid["w"] * CELL - 8, grid["h"] * ROW - 8
    box = f"left:{grid['x'] * CELL}px;top:{grid['y'] * ROW}px;width:{width}px;height:{height}px"
    title = html.escape(panel["title"])
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    if panel["type"] == "stat":
        values = [points[-1][1] for _, points in series if points]
        text = format_value(values[0], unit) if values else "no data"
        return f'<div class="panel" style="{box}"><h3>{title}</h3><div class="stat">{text}</div></div>'
    plot_w, plot_h = width - 70, height - 70
    values = [value for _, points in series for _, value in points]
    top = max(values, default=1.0) or 1.0
    lines, keys = [], []
    for index, (name, points) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(
            f"{50 + (t - start) / (end - start) * plot_w:.1f},{10 + plot_h - v / top * plot_h:.1f}"
            for t, v in points
        )
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        keys.append(f'<span style="color:{colour}">&#9632;</span> {html.escape(name)}')
    axis = (
        f'<line x1="50" y1="{10 + plot_h}" x2="{50 + plot_w}" y2="{10 + plot_h}" stroke="#555"/>'
        f'<text x="46" y="16" text-anchor="end">{format_value(top, unit)}</text>'
        f'<text x="46" y="{10 + plot_h}" text-anchor="end">0</text>'
    )
    empty = "" if series else f'<text x="{width / 2}" y="{height / 2 - 20}">no data</text>'
    svg = f'<svg width="{width}" height="{plot_h + 20}">{axis}{"".join(lines)}{empty}</svg>'
    keys_line = f'<div class="keys">{" ".join(keys)}</div>'
    return f'<div class="panel" style="{box}"><h3>{title}</h3>{svg}{keys_line}</div>'


def format_value(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        return f"{value:.3g} s"
    if unit == "Bps":
        return f"{value / 1024:.3g} KiB/s"
    return f"{value:.3g}"


def render(url: str, start: float, end: float, out: Path, directory: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    blocks, bottom = [], 0
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        bottom = max(bottom, (grid["y"] + grid["h"]) * ROW)
        if panel["type"] == "row":
            top = f"left:0;top:{grid['y'] * ROW}px"
            blocks.append(f'<div class="row" style="{top}">{html.escape(panel["title"])}</div>')
            continue
        series = []
        for target in panel["targets"]:
            for result in query_range(url, target["expr"], start, end):
                points = [
                    (float(t), float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")
                ]
                series.append((legend(target.get("legendFormat", ""), result["metric"]), points))
        blocks.append(draw_panel(panel, series, start, end))
    page = directory / "dashboard.html"
    page.write_text(
        "<!doctype html><meta charset=utf-8><style>"
        "body{margin:0;background:#111217;color:#ccccdc;font:12px sans-serif}"
        ".panel{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:3px;"
        "overflow:hidden}.panel h3{margin:4px 8px;font-size:13px}"
        ".stat{font-size:34px;text-align:center;margin-top:14px;color:#73bf69}"
        ".row{position:absolute;font-size:15px;font-weight:bold;padding:6px}"
        "svg text{fill:#9fa7b3;font-size:10px}.keys{padding:0 8px;font-size:11px}"
        f"</style><title>{html.escape(dashboard['title'])}</title><body>{''.join(blocks)}</body>"
    )
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={24 * CELL},{bottom + 10}",
            f"--screenshot={out.resolve()}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


@contextlib.asynccontextmanager
async def demo_server(directory: Path) -> AsyncIterator[tuple[str, Any]]:
    """A WallWhale server on scratch SQLite with the test DepotDownloader: (metrics target, driver)."""
    from tests.fakes.steam import FakeSteam
    from tests.fakes.webapi import FakeWebApi
    from wallwhale.app import WallWhaleServer
    from wallwhale.config import Settings
    from wallwhale.core.bootstrap import bootstrap_admin
    from wallwhale.db import migrate
    from wallwhale.db.engine import create_engine, session_factory

    steam = FakeSteam(directory / "steam")
    steam.set(time_scale=0.01)
    url = f"sqlite+aiosqlite:///{directory / 'demo.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = create_engine(url)
    admin = await bootstrap_admin(session_factory(engine), "admin@example.test")
    await engine.dispose()
    with FakeWebApi(steam) as web:
        settings = Settings(
            database_url=url, data_dir=directory / "data", grpc_port=0, metrics_port=0,
            depotdownloader_path=steam.executable, steam_web_api_url=web.base_url, migrate_on_start=False,
            retry_base_seconds=0.5, retry_max_seconds=2, max_attempts=2, steam_throttle_cooldown_seconds=5,
        )  # fmt: skip
        server = WallWhaleServer(settings)
        await server.start()
        try:
            assert server.metrics_server is not None
            yield f"127.0.0.1:{server.metrics_server.port}", (server, steam, (("x-api-key", admin.api_key),))
        finally:
            await server.stop(grace=0)


async def keep_busy(driver: Any, seconds: float) -> None:
    from grpc import aio

    from wallwhale.v1 import admin_pb2, admin_pb2_grpc, download_pb2, download_pb2_grpc

    server, steam, admin = driver
    behaviours: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({}, {}), ({}, {}), ({}, {}), ({}, {"crash": True}), ({}, {"disk_full": True}),
        ({}, {"no_files": True}), ({"owns": ()}, {}), ({}, {}),
    ]  # fmt: skip
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        admin_api = admin_pb2_grpc.AdminServiceStub(channel)
        downloads = download_pb2_grpc.DownloadServiceStub(channel)
        deadline, case = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            account, behaviour = behaviours[case % len(behaviours)]
            username = f"demo{case}"
            steam.add_account(username, "pw", **account)
            await admin_api.CreateSteamAccount(
                admin_pb2.CreateSteamAccountRequest(
                    steam_account=admin_pb2.SteamAccount(username=username),
                    password="pw",  # noqa: S106 - the fake Steam's
                ),
                metadata=admin,
            )
            workshop_id = 2_950_000_000 + case % 20  # items come back: the cache serves them
            if case < 20:
                steam.add_item(workshop_id, behaviour=behaviour, files={"scene.pkg": 300_000 + case * 1000})
            with contextlib.suppress(Exception):
                created = await downloads.CreateDownload(
                    download_pb2.CreateDownloadRequest(url_or_id=str(workshop_id)), metadata=admin
                )
                if created.download.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED:
                    call = downloads.FetchArchive(
                        download_pb2.FetchArchiveRequest(id=created.download.id), metadata=admin
                    )
                    async for _ in call:
                        pass
            case += 1
            await asyncio.sleep(1.5)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", action="append", default=[], help="host:port of a /metrics endpoint")
    parser.add_argument("--demo", action="store_true", help="start a busy server of its own to scrape")
    parser.add_argument("--seconds", type=float, default=90, help="how long Prometheus scrapes")
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"))
    args = parser.parse_args()
    if bool(args.target) == args.demo:
        raise SystemExit("give --target (one or more) or --demo")
    with tempfile.TemporaryDirectory(prefix="wallwhale-dashboard-") as scratch:
        directory = Path(scratch)
        async with contextlib.AsyncExitStack() as stack:
            targets, driver = args.target, None
            if args.demo:
                target, driver = await stack.enter_async_context(demo_server(directory))
                targets = [target]
            with prometheus(targets, directory) as url:
                start = time.time()
                if driver is not None:
                    await keep_busy(driver, args.seconds)
                else:
                    await asyncio.sleep(args.seconds)
                await asyncio.sleep(3)  # the last scrapes
                await asyncio.to_thread(render, url, start, time.time(), args.out, directory)
    print(f"dashboard_snapshot: {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
