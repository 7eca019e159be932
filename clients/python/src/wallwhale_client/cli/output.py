"""Where results go (rich tables for people, JSON for scripts) and how values are written."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table
from rich.text import Text

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
