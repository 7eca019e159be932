"""Unknown fields in a REST/JSON body are refused, naming the field.

Envoy's transcoder drops JSON fields it does not know (and cannot be told otherwise), so
`{"username": ...}` at the top level of CreateSteamAccount arrived as an empty account and the error
talked about something else. Envoy's Lua filter passes the body it transcoded along, base64 in
`x-wallwhale-rest-body` (it removes any such header a client sent); here the body's keys are
checked against the method's request message, from the part the `google.api.http` rule maps the
body to. Native gRPC and gRPC-Web calls carry binary messages and are not affected.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, MethodDescriptor

from wallwhale.errors import InvalidArgument

REST_BODY_HEADER = "x-wallwhale-rest-body"
# Messages with a JSON form of their own (Timestamp as a string, Struct as any object, ...).
_OWN_JSON_FORM = "google.protobuf."


def check_rest_body(method: str, metadata: dict[str, str]) -> None:
    encoded = metadata.get(REST_BODY_HEADER)
    if not encoded:
        return
    target = _body_message(method)
    if target is None:
        return
    try:
        body = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return  # the transcoder already refused a body that is not JSON
    _check(body, target, "")


@functools.cache
def _body_message(method: str) -> Descriptor | None:
    """The message the JSON body stands for ("/pkg.Service/Method"), or None when it has none."""
    service_name, _, method_name = method.lstrip("/").partition("/")
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        return None
    found: MethodDescriptor | None = service.methods_by_name.get(method_name)
    if found is None:
        return None
    options = found.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    body = options.Extensions[annotations_pb2.http].body
    if not body:
        return None
    if body == "*":
        return found.input_type
    field = found.input_type.fields_by_name.get(body)
    return field.message_type if field is not None else None


def _check(value: Any, message: Descriptor, path: str) -> None:
    if not isinstance(value, dict) or message.full_name.startswith(_OWN_JSON_FORM):
        return
    for key, item in value.items():
        field = message.fields_by_camelcase_name.get(key) or message.fields_by_name.get(key)
        if field is None:
            name = f"{path}{key}"
            raise InvalidArgument.field(name, f"unknown field: {message.full_name} has no field {key!r}")
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        here = f"{path}{field.name}"
        if isinstance(item, list):  # only a repeated field takes a JSON array
            for index, element in enumerate(item):
                _check(element, field.message_type, f"{here}[{index}].")
        else:
            _check(item, field.message_type, f"{here}.")
