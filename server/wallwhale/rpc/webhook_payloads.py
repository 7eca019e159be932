"""The body of a webhook delivery: the Standard Webhooks envelope around the resource as the REST
API shows it (JSON of the proto message as Envoy's transcoder prints it: lowerCamelCase names,
zero values printed, enums by name).

    {"type": "download.succeeded", "timestamp": "2026-12-03T14:00:00.123456+00:00",
     "data": {"id": "...", "state": "DOWNLOAD_STATE_SUCCEEDED", ...}}

The worker gets `render` from app.py: it sends, this floor knows the messages.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from wallwhale.core.batches import Member
from wallwhale.core.snapshots import DownloadSnapshot
from wallwhale.db.models import Batch, BatchState, DownloadState
from wallwhale.db.watch_models import WatchChange, WatchVersion
from wallwhale.rpc import convert
from wallwhale.rpc.servicers.watch import version_message


def _rest_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def _batch(stored: dict[str, Any]) -> dict[str, Any]:
    row = Batch(
        id=stored["id"],
        state=BatchState(stored["state"]),
        collection_id=stored.get("collection_id"),
        title=stored.get("title") or "",
        owner_user_id=stored.get("owner_user_id"),
        api_key_id=stored.get("api_key_id"),
        create_time=datetime.fromisoformat(stored["create_time"]),
        end_time=datetime.fromisoformat(stored["end_time"]) if stored.get("end_time") else None,
    )
    members = [Member(m[0], m[1], DownloadState(m[2]), m[3]) for m in stored.get("members", [])]
    return _rest_json(convert.batch(row, members))


def _watch_version(stored: dict[str, Any]) -> dict[str, Any]:
    row = WatchVersion(
        id=stored["id"],
        watch_id=stored["watch_id"],
        workshop_id=stored["workshop_id"],
        change=WatchChange(stored["change"]),
        title=stored["title"],
        content_handle=stored["content_handle"],
        item_update_time=_time(stored["item_update_time"]),
        download_id=stored["download_id"],
        detail=stored["detail"],
        create_time=_time(stored["create_time"]),
    )
    return _rest_json(version_message(row))


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def resource_json(payload: dict[str, Any]) -> dict[str, Any]:
    """The REST JSON of what an outbox row stored (see core.webhooks.enqueue_event_sync)."""
    if "download" in payload:
        return _rest_json(convert.download(DownloadSnapshot.from_json(payload["download"])))
    if "batch" in payload:
        return _batch(payload["batch"])
    if "watch_version" in payload:
        return _watch_version(payload["watch_version"])
    return dict(payload.get("data", {}))


def render(event_type: str, event_time: datetime, payload: dict[str, Any]) -> bytes:
    envelope = {"type": event_type, "timestamp": event_time.isoformat(), "data": resource_json(payload)}
    return json.dumps(envelope, separators=(",", ":")).encode()
