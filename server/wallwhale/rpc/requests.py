"""Checks that every request passes before its handler, whatever the method."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from wallwhale.errors import InvalidArgument


def check_request(request: Any) -> None:
    """Refuses a NUL character in any string field: PostgreSQL cannot store it in text (the call would
    fail deep inside as an internal error, where SQLite would store it) and no field has a use for it."""
    if isinstance(request, Message) and (path := _nul_field(request)) is not None:
        raise InvalidArgument.field(path, "must not contain NUL characters")


def _nul_field(message: Message, prefix: str = "") -> str | None:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if isinstance(key, str) and "\0" in key:
                    return path
                if found := _in_value(value_field, item, path):
                    return found
        elif field.is_repeated:
            for item in value:
                if found := _in_value(field, item, path):
                    return found
        elif found := _in_value(field, value, path):
            return found
    return None


def _in_value(field: FieldDescriptor, value: Any, path: str) -> str | None:
    if field.type == FieldDescriptor.TYPE_STRING:
        return path if "\0" in value else None
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _nul_field(value, f"{path}.")
    return None
