"""The whole stack for the web console's browser tests: the real server with the test DepotDownloader
and the fake Steam Web API, behind the real Envoy serving the built console (web/dist).

    .venv/bin/python -m tests.support.web_stack

Prints one line `READY {json}` (the console's URL, the admin's and a USER's credentials, the items and
collection of the fake Steam, a Steam account that asks for Steam Guard, the fake Steam's folder) once
Envoy finds the server
healthy, and runs until its standard input is closed. Access tokens live 30 s (the shortest the server
allows), so the console's renewal runs during the tests. The web tests (web/e2e) start it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from tests.fakes.webapi import FakeWebApi
from tests.support import REPO_ROOT
from tests.support.envoy import proxy_socket, running_envoy
from tests.support.harness import harness_for, seconds
from wallwhale.config import to_async_url
from wallwhale.v1 import admin_pb2

WEB_DIR = REPO_ROOT / "web" / "dist"
ITEM = 2831234567  # quick: three files
SLOW_ITEM = 2831234570  # 30 files, 0.3 s each: progress moves for about 9 s
HANGING_ITEM = 2831234571  # stops mid-download until cancelled
MISSING_ITEM = 2831234568
GUARD_ITEM = 2831234572
COLLECTION = 2831239000
COLLECTION_ITEMS = (2831234580, 2831234581, 2831234582)
ADMIN_EMAIL, ADMIN_PASSWORD = "console-admin@example.test", "an admin's long password"
USER_EMAIL, USER_PASSWORD = "user@example.test", "a user's long password"
GUARD_ACCOUNT, GUARD_PASSWORD, GUARD_CODE = "guarded_we", "guarded password", "24680"


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="wallwhale-web-stack-") as directory:
        url = to_async_url(f"sqlite:///{Path(directory) / 'wallwhale.sqlite3'}")
        async for harness in harness_for(url, Path(directory)):
            steam = harness.steam
            steam.add_item(
                ITEM,
                title="Rain on glass",
                files={"project.json": b'{"title": "Rain"}', "scene.pkg": 300_000},
            )
            steam.add_item(
                SLOW_ITEM,
                title="Slow aurora",
                files={f"f{i}.bin": 20_000 for i in range(30)},
                behaviour={"file_delay": seconds(0.3)},
            )
            steam.add_item(HANGING_ITEM, title="Endless tide", behaviour={"hang": "progress"})
            steam.add_item(MISSING_ITEM, behaviour={"missing": True}, web={"result": 9})
            steam.add_item(GUARD_ITEM, title="Guarded dunes")
            for number, item in enumerate(COLLECTION_ITEMS):
                steam.add_item(item, title=f"Collected wallpaper {number + 1}")
            steam.add_collection(COLLECTION, COLLECTION_ITEMS, title="Calm evenings")
            # Known to Steam only: the admin adds it to WallWhale from the console.
            steam.add_account(GUARD_ACCOUNT, GUARD_PASSWORD, guard="authenticator", guard_code=GUARD_CODE)
            with FakeWebApi(steam) as web:
                server = await harness.start(
                    steam_web_api_url=web.base_url,
                    grpc_socket=proxy_socket(),
                    access_token_ttl_seconds=30,
                )
                await harness.add_account("alice_we", "correct horse")
                for email, password, role in (
                    (ADMIN_EMAIL, ADMIN_PASSWORD, admin_pb2.USER_ROLE_ADMIN),
                    (USER_EMAIL, USER_PASSWORD, admin_pb2.USER_ROLE_USER),
                ):
                    await harness.admin_api.CreateUser(
                        admin_pb2.CreateUserRequest(
                            user=admin_pb2.User(email=email, role=role), password=password
                        ),
                        metadata=harness.admin,
                    )
                async with running_envoy(
                    Path(directory) / "envoy", [server.upstream], extra_args=["--web-dir", str(WEB_DIR)]
                ) as envoy:
                    ready = {
                        "url": envoy.base_url,
                        "adminKey": dict(harness.admin)["x-api-key"],
                        "admin": {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                        "user": {"email": USER_EMAIL, "password": USER_PASSWORD},
                        "items": {
                            "quick": ITEM,
                            "slow": SLOW_ITEM,
                            "hanging": HANGING_ITEM,
                            "missing": MISSING_ITEM,
                            "guard": GUARD_ITEM,
                        },
                        "collection": {
                            "id": COLLECTION,
                            "items": list(COLLECTION_ITEMS),
                            "title": "Calm evenings",
                        },
                        "guard": {"username": GUARD_ACCOUNT, "password": GUARD_PASSWORD, "code": GUARD_CODE},
                        # Where a test "scans" a QR code (FakeSteam.scan_qr writes a file there).
                        "steamDirectory": str(steam.directory),
                    }
                    print("READY " + json.dumps(ready), flush=True)
                    await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
