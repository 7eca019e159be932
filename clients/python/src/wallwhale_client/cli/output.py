"""Where results go (rich tables for people, JSON for scripts) and how values are written."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table
from rich.text import Text

from wallwhale_client.cli.exits import UsageError
from wallwhale_client.errors import WallWhaleError
from wallwhale_client.v1 import download_pb2


class Output:
    """Where results go: rich tables for people, JSON for scripts."""

    def __init__(self, as_json: bool, stdout: TextIO, stderr: TextIO):
        self.json = as_json
        self.out = Console(file=stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=stderr, highlight=False)

    def data(self, value: Any) -> None:
        self.out.out(json.dumps(value, indent=2 if self.out.is_terminal else None))

    def line(self, text: str) -> None:
        self.out.print(text, markup=False)

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = Table(title=title, show_lines=False)
        for column in columns:
            # Ids are copied into the next command: never cut or wrapped, even on a narrow terminal.
            whole = column in ("ID", "Download")
            table.add_column(column, no_wrap=whole, min_width=26 if whole else None, overflow="fold")
        for row in rows:
            table.add_row(*(Text(str(cell)) for cell in row))  # Text: brackets in values are not markup
        self.out.print(table)


def as_dict(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping, as REST clients get it (lowerCamelCase, enums by name)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def error_dict(error: WallWhaleError) -> dict[str, Any]:
    return {
        "code": error.code.name if error.code is not None else None,
        "reason": error.reason,
        "message": error.message,
        "requestId": error.request_id or None,
    }


def state_name(state: download_pb2.DownloadState.ValueType) -> str:
    return download_pb2.DownloadState.Name(state).removeprefix("DOWNLOAD_STATE_")


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def when(message: Message, field: str) -> str:
    return (
        getattr(message, field).ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if message.HasField(field) else ""
    )


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str, option: str) -> timedelta:
    """'90s', '10m', '2h', '1d', or combined ('1h30m'); `option` names the flag in the error."""
    parts = _DURATION.findall(text.strip().lower())
    if not parts or "".join(number + unit for number, unit in parts) != text.strip().lower():
        raise UsageError(f"{option}: {text!r} is not a duration such as 90s, 10m, 2h or 1d")
    return timedelta(seconds=sum(float(number) * _UNITS[unit] for number, unit in parts))


def duration_text(seconds: int) -> str:
    """A whole number of seconds as parse_duration reads it: 3600 -> '1h', 5400 -> '1h30m'."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"
