"""Steam's public Web API (ISteamRemoteStorage) simulated over real HTTP, answering from a FakeSteam world.

    web = FakeWebApi(steam)          # serves the items and collections of the world file
    web.start()                      # 127.0.0.1 on a free port (or host=, port=); web.base_url for the server
    web.mode = "down"                # HTTP 503 from now on ("garbage": HTML with 200; "ok" again)
    web.requests                     # [(endpoint, [ids...]), ...] in arrival order
    web.stop()

It answers the way Steam does: form-encoded POSTs with `itemcount`/`collectioncount` and
`publishedfileids[i]`, HTTP 400 for a malformed request or more than 100 ids, HTTP 200 with
`{"response": {...}}` otherwise, one entry per id: the full details of a known item (64-bit numbers as
decimal strings), `{"publishedfileid", "result": 9}` for an unknown or private one. The item's content
handle is its depot manifest id, as on Steam, so it changes when the item's files change. An item's
`web` overrides (FakeSteam.add_item(web=...)) replace fields, e.g. {"result": 9} for a private item or
{"banned": 1, "ban_reason": "..."}.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from wallwhale_simulator import depotdownloader as dd
from wallwhale_simulator.steam import FakeSteam

DETAILS_PATH = "/ISteamRemoteStorage/GetPublishedFileDetails/v1/"
COLLECTION_PATH = "/ISteamRemoteStorage/GetCollectionDetails/v1/"
MODES = ("ok", "down", "garbage")
CREATOR = "76561198000000001"


class FakeWebApi:
    def __init__(self, steam: FakeSteam, host: str = "127.0.0.1", port: int = 0):
        self.steam = steam
        self._address = (host, port)
        self.mode = "ok"
        self.requests: list[tuple[str, list[int]]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    def start(self) -> FakeWebApi:
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer(self._address, handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-web-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeWebApi:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def asked(self, endpoint: str = DETAILS_PATH) -> list[int]:
        """Every id asked at `endpoint`, in order (repeats included)."""
        with self._lock:
            return [value for path, ids in self.requests if path == endpoint for value in ids]

    # -- answers ---------------------------------------------------------------------------------

    def _world(self) -> dict[str, Any]:
        world: dict[str, Any] = json.loads(self.steam.world_file.read_text())
        return world

    def details(self, workshop_id: int) -> dict[str, Any]:
        world = self._world()
        key = str(workshop_id)
        if key in world.get("collections", {}):
            collection = world["collections"][key]
            entry = self._common(
                workshop_id, collection["app_id"], collection["title"], created=1_600_000_000
            )
            entry.update({"file_size": "0", "file_url": "", "hcontent_file": "0"})
            return entry
        item = world["items"].get(key)
        if item is None:
            return {"publishedfileid": key, "result": 9}
        manifest = dd.build_manifest(workshop_id, item)
        entry = self._common(workshop_id, item["app_id"], item["title"], created=manifest["created"])
        entry.update(
            {
                "file_size": str(sum(file["size"] for file in manifest["files"])),
                "file_url": "",
                "hcontent_file": str(manifest["id"]),
                "time_updated": manifest["created"],
            }
        )
        entry.update(item.get("web", {}))
        if entry.get("result") != 1:
            return {"publishedfileid": key, "result": entry["result"]}
        return entry

    @staticmethod
    def _common(workshop_id: int, app_id: int, title: str, *, created: int) -> dict[str, Any]:
        return {
            "publishedfileid": str(workshop_id),
            "result": 1,
            "creator": CREATOR,
            "creator_app_id": app_id,
            "consumer_app_id": app_id,
            "filename": "",
            "preview_url": f"https://images.steamusercontent.example/ugc/{workshop_id}/preview/",
            "hcontent_preview": str(workshop_id * 7 % 2**63),
            "title": title,
            "description": f"The description of {title}.",
            "time_created": created,
            "time_updated": created,
            "visibility": 0,
            "banned": 0,
            "ban_reason": "",
            "subscriptions": 10,
            "favorited": 2,
            "lifetime_subscriptions": 12,
            "lifetime_favorited": 3,
            "views": 100,
            "tags": [{"tag": "Scene"}],
        }

    def collection(self, workshop_id: int) -> dict[str, Any]:
        world = self._world()
        key = str(workshop_id)
        collections = world.get("collections", {})
        if key not in collections:
            known = key in world["items"]
            return {"publishedfileid": key, "result": 1 if known else 9}
        children = [
            {
                "publishedfileid": str(child),
                "sortorder": order,
                "filetype": 2 if str(child) in collections else 0,
            }
            for order, child in enumerate(collections[key]["children"], start=1)
        ]
        return {"publishedfileid": key, "result": 1, "children": children}


class _Handler(BaseHTTPRequestHandler):
    api: FakeWebApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
        endpoint, count_field, answer = {
            DETAILS_PATH: (DETAILS_PATH, "itemcount", self.api.details),
            COLLECTION_PATH: (COLLECTION_PATH, "collectioncount", self.api.collection),
        }.get(self.path, (None, "", None))
        if endpoint is None or answer is None:
            return self._send(HTTPStatus.NOT_FOUND, b"<html><body>Not Found</body></html>", "text/html")
        ids = _ids(form, count_field)
        if ids is None or not 1 <= len(ids) <= 100:
            return self._send(HTTPStatus.BAD_REQUEST, b"<html><body>Bad Request</body></html>", "text/html")
        with self.api._lock:
            self.api.requests.append((endpoint, ids))
        if self.api.mode == "down":
            return self._send(
                HTTPStatus.SERVICE_UNAVAILABLE, b"<html>Service Unavailable</html>", "text/html"
            )
        if self.api.mode == "garbage":
            return self._send(HTTPStatus.OK, b"<html>Steam is busy</html>", "text/html")
        key = "publishedfiledetails" if endpoint == DETAILS_PATH else "collectiondetails"
        body = {"response": {"result": 1, "resultcount": len(ids), key: [answer(value) for value in ids]}}
        self._send(HTTPStatus.OK, json.dumps(body).encode(), "application/json; charset=UTF-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _ids(form: dict[str, list[str]], count_field: str) -> list[int] | None:
    try:
        count = int(form[count_field][0])
        return [int(form[f"publishedfileids[{index}]"][0]) for index in range(count)]
    except (KeyError, ValueError, IndexError):
        return None
