"""The OpenAPI 3.1 description of WallWhale's REST API, generated from the descriptor set Envoy loads.

    python scripts/openapi.py --descriptor-set build/envoy/wallwhale.pb --out docs/openapi.json
    python scripts/openapi.py --check docs/openapi.json     # exit 1 when the file drifted from proto/

What Envoy's gRPC-JSON transcoder does is what the document says (see envoy/envoy.template.yaml):
paths and verbs from each RPC's google.api.http rule; path variables and, for rules without a
`body: "*"`, the remaining fields as query parameters; schemas in the proto3 JSON mapping with the
transcoder's print options (lowerCamelCase names, enums by name, 64-bit integers as strings,
Timestamp/Duration/FieldMask as strings, zero values printed); google.api.field_behavior as
`required` / `readOnly` / `writeOnly`; proto comments as descriptions; every error as a
google.rpc.Status; server streams as Server-Sent Events and google.api.HttpBody streams as the raw
file (archives: application/zip, resumable with Range). Who may call what comes from the
`wallwhale.v1.access` option: anonymous RPCs need no credentials, the others an API key
(x-api-key) or a bearer access token, with the scope named in the description.

No maintained generator fits (the ones for OpenAPI 3 are Go programs or buf remote plugins, neither
installable here, and gnostic's emits 3.0); this one reads the descriptors with protobuf itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

from wallwhale.v1 import access_pb2  # registers the access option before descriptors are read

sys.path.insert(0, str(Path(__file__).resolve().parent))

PACKAGE = "wallwhale.v1"
FieldType = descriptor_pb2.FieldDescriptorProto
Schema = dict[str, Any]
ERROR = {"$ref": "#/components/responses/Error"}
HTTP_BODY = ".google.api.HttpBody"
# Descriptor path components (descriptor.proto field numbers) for looking up comments.
MESSAGE_TYPE, ENUM_TYPE, SERVICE, FIELD, NESTED_TYPE, NESTED_ENUM, ENUM_VALUE, METHOD = 4, 5, 6, 2, 3, 4, 2, 2

WELL_KNOWN: dict[str, Schema] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": "A duration in seconds with an `s` suffix, e.g. `3.5s`.",
    },
    ".google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths in lowerCamelCase, e.g. `displayName,role`.",
    },
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    ".google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    ".google.protobuf.StringValue": {"type": ["string", "null"]},
    ".google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
    ".google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    ".google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0, "maximum": 4294967295},
    ".google.protobuf.Int64Value": {"type": ["string", "null"], "pattern": "^-?[0-9]+$", "format": "int64"},
    ".google.protobuf.UInt64Value": {"type": ["string", "null"], "pattern": "^[0-9]+$"},
    ".google.protobuf.FloatValue": {"type": ["number", "null"]},
    ".google.protobuf.DoubleValue": {"type": ["number", "null"]},
}

SCALARS: dict[int, Schema] = {
    FieldType.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldType.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldType.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 4294967295},
    FieldType.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 4294967295},
    # 64-bit integers are strings in the proto3 JSON mapping (JavaScript numbers lose precision).
    FieldType.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldType.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldType.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldType.TYPE_UINT64: {"type": "string", "pattern": "^[0-9]+$"},
    FieldType.TYPE_FIXED64: {"type": "string", "pattern": "^[0-9]+$"},
    FieldType.TYPE_BOOL: {"type": "boolean"},
    FieldType.TYPE_STRING: {"type": "string"},
    FieldType.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}

ARCHIVE_HEADERS = {
    "Content-Disposition": '`attachment; filename="..."`: the name to save the archive under.',
    "X-Archive-Size": "Bytes of the whole archive (the reply itself is chunked).",
    "X-Archive-Sha256": "Lower-case hex SHA-256 of the whole archive (single archives).",
    "X-Archive-Filename": "The archive's file name, plain.",
}


def _comment(text: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in text.strip("\n").splitlines()]
    # Directives for buf's linter are not documentation.
    return "\n".join(line for line in lines if not line.startswith("buf:lint:")).strip()


@dataclass
class Descriptors:
    """Messages, enums and comments of every file in the set, by full name (leading dot)."""

    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)  # full name (fields: Message.field) -> text
    services: list[tuple[str, descriptor_pb2.ServiceDescriptorProto]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Descriptors:
        found = cls()
        for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file:
            by_path = {
                tuple(location.path): _comment(location.leading_comments)
                for location in file.source_code_info.location
                if location.leading_comments.strip()
            }
            prefix = f".{file.package}" if file.package else ""
            for i, message in enumerate(file.message_type):
                found._message(message, prefix, (MESSAGE_TYPE, i), by_path)
            for i, enum in enumerate(file.enum_type):
                found._enum(enum, prefix, (ENUM_TYPE, i), by_path)
            for i, service in enumerate(file.service):
                name = f"{prefix}.{service.name}"
                found.comments[name] = by_path.get((SERVICE, i), "")
                for j, method in enumerate(service.method):
                    found.comments[f"{name}.{method.name}"] = by_path.get((SERVICE, i, METHOD, j), "")
                if file.package == PACKAGE:
                    found.services.append((name.lstrip("."), service))
        return found

    def _message(
        self,
        message: descriptor_pb2.DescriptorProto,
        prefix: str,
        path: tuple[int, ...],
        by_path: dict[tuple[int, ...], str],
    ) -> None:
        name = f"{prefix}.{message.name}"
        self.messages[name] = message
        self.comments[name] = by_path.get(path, "")
        for k, item in enumerate(message.field):
            self.comments[f"{name}.{item.name}"] = by_path.get((*path, FIELD, k), "")
        for i, nested in enumerate(message.nested_type):
            self._message(nested, name, (*path, NESTED_TYPE, i), by_path)
        for i, enum in enumerate(message.enum_type):
            self._enum(enum, name, (*path, NESTED_ENUM, i), by_path)

    def _enum(
        self,
        enum: descriptor_pb2.EnumDescriptorProto,
        prefix: str,
        path: tuple[int, ...],
        by_path: dict[tuple[int, ...], str],
    ) -> None:
        name = f"{prefix}.{enum.name}"
        self.enums[name] = enum
        self.comments[name] = by_path.get(path, "")
        for k, value in enumerate(enum.value):
            self.comments[f"{name}.{value.name}"] = by_path.get((*path, ENUM_VALUE, k), "")


def _behaviors(item: descriptor_pb2.FieldDescriptorProto) -> set[int]:
    return set(item.options.Extensions[field_behavior_pb2.field_behavior])


class Builder:
    def __init__(self, descriptors: Descriptors):
        self.d = descriptors
        self.schemas: dict[str, Schema] = {}

    # ---- schemas -------------------------------------------------------------------------------

    def ref(self, type_name: str) -> Schema:
        """A reference to the schema of a message or enum (made on first use)."""
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        key = type_name.lstrip(".")
        if key not in self.schemas:
            self.schemas[key] = {}  # placeholder: recursive messages refer to themselves
            self.schemas[key] = (
                self._enum_schema(type_name) if type_name in self.d.enums else self._message_schema(type_name)
            )
        return {"$ref": f"#/components/schemas/{key}"}

    def _enum_schema(self, type_name: str) -> Schema:
        enum = self.d.enums[type_name]
        schema: Schema = {"type": "string", "enum": [value.name for value in enum.value]}
        lines = [self.d.comments.get(type_name, "")]
        for value in enum.value:
            if text := self.d.comments.get(f"{type_name}.{value.name}"):
                lines.append(f"- `{value.name}`: {text}")
        if description := "\n".join(line for line in lines if line).strip():
            schema["description"] = description
        return schema

    def field_schema(self, item: descriptor_pb2.FieldDescriptorProto) -> Schema:
        if item.type in (FieldType.TYPE_MESSAGE, FieldType.TYPE_GROUP):
            entry = self.d.messages.get(item.type_name)
            if entry is not None and entry.options.map_entry:
                _, value = entry.field
                return {"type": "object", "additionalProperties": self._single(value)}
        single = self._single(item)
        if item.label == FieldType.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single

    def _single(self, item: descriptor_pb2.FieldDescriptorProto) -> Schema:
        if item.type in (FieldType.TYPE_MESSAGE, FieldType.TYPE_GROUP, FieldType.TYPE_ENUM):
            return self.ref(item.type_name)
        return dict(SCALARS[item.type])

    def _message_schema(self, type_name: str) -> Schema:
        message = self.d.messages[type_name]
        return self.object_schema(type_name, list(message.field), self.d.comments.get(type_name, ""))

    def object_schema(
        self, type_name: str, fields: list[descriptor_pb2.FieldDescriptorProto], description: str
    ) -> Schema:
        message = self.d.messages[type_name]
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for item in fields:
            schema = self.field_schema(item)
            behaviors = _behaviors(item)
            notes = [self.d.comments.get(f"{type_name}.{item.name}", "")]
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                schema["readOnly"] = True
            if field_behavior_pb2.INPUT_ONLY in behaviors:
                schema["writeOnly"] = True
            if field_behavior_pb2.IMMUTABLE in behaviors:
                notes.append("Set when created; cannot be changed afterwards.")
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(item.json_name)
            if item.HasField("oneof_index") and not item.proto3_optional:
                group = message.oneof_decl[item.oneof_index].name
                siblings = [
                    f.json_name
                    for f in message.field
                    if f.HasField("oneof_index") and f.oneof_index == item.oneof_index
                ]
                notes.append(f"One of `{group}`: at most one of {', '.join(f'`{s}`' for s in siblings)}.")
            if text := "\n\n".join(note for note in notes if note):
                schema["description"] = text
            properties[item.json_name] = schema
        schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        if description:
            schema["description"] = description
        return schema

    # ---- operations ----------------------------------------------------------------------------

    def _resolve(self, type_name: str, dotted: str) -> descriptor_pb2.FieldDescriptorProto:
        message = self.d.messages[type_name]
        head, _, rest = dotted.partition(".")
        for item in message.field:
            if head in (item.name, item.json_name):
                return self._resolve(item.type_name, rest) if rest else item
        raise SystemExit(f"{type_name} has no field {dotted!r} (named in an http rule)")

    def _query_parameters(
        self, root: str, type_name: str, skip: set[str], prefix: str = "", depth: int = 0
    ) -> list[Schema]:
        """Fields the transcoder takes from the query string: scalars, enums and repeated ones,
        message fields as dotted names."""
        parameters: list[Schema] = []
        for item in self.d.messages[type_name].field:
            proto_path = f"{prefix}{item.name}"
            if proto_path in skip:
                continue
            entry = self.d.messages.get(item.type_name)
            is_message = item.type == FieldType.TYPE_MESSAGE and item.type_name not in WELL_KNOWN
            if entry is not None and entry.options.map_entry:
                continue
            if is_message:
                if item.label != FieldType.LABEL_REPEATED and depth < 3:
                    parameters += self._query_parameters(item.type_name, skip, f"{proto_path}.", depth + 1)
                continue
            schema = self.field_schema(item)
            if field_behavior_pb2.OUTPUT_ONLY in _behaviors(item):
                continue
            parameter: Schema = {
                "name": ".".join(_json_path(self.d, root, proto_path)),
                "in": "query",
                "schema": schema,
            }
            if text := self.d.comments.get(f"{type_name}.{item.name}"):
                parameter["description"] = text
            if item.label == FieldType.LABEL_REPEATED:
                parameter["style"], parameter["explode"] = "form", True
            parameters.append(parameter)
        return parameters

    def _owner(self, type_name: str, proto_path: str) -> str:
        *parents, _ = proto_path.split(".")
        for parent in parents:
            type_name = self._resolve(type_name, parent).type_name
        return type_name

    def operation(
        self, service: str, method: descriptor_pb2.MethodDescriptorProto, rule: http_pb2.HttpRule
    ) -> tuple[str, str, Schema]:
        verb = rule.WhichOneof("pattern")
        if verb is None or verb == "custom":
            raise SystemExit(f"{service}.{method.name}: unsupported http rule {rule}")
        template = getattr(rule, verb)
        path, variables = _path_template(template)
        request = method.input_type
        parameters = []
        for variable in variables:
            item = self._resolve(request, variable)
            json_path = _json_path(self.d, request, variable)
            # A nested field (`{user.id}`) is named by its last part (`id`), as other rules on the
            # same path name it (OpenAPI takes paths that differ only in a variable's name for one
            # path), unless that is a field of the request too; never with dots, which templating
            # tools (schemathesis among them) read as attribute access.
            name = json_path[-1]
            if len(json_path) > 1 and any(f.json_name == name for f in self.d.messages[request].field):
                name = json_path[0] + "".join(part[:1].upper() + part[1:] for part in json_path[1:])
            path = path.replace("{" + variable + "}", "{" + name + "}")
            parameter: Schema = {"name": name, "in": "path", "required": True, "schema": self._single(item)}
            notes = [self.d.comments.get(f"{self._owner(request, variable)}.{item.name}", "")]
            if len(json_path) > 1:
                notes.append(f"The field `{'.'.join(json_path)}` of the request.")
            if text := "\n\n".join(note for note in notes if note):
                parameter["description"] = text
            parameters.append(parameter)
        bound = set(variables)
        operation: Schema = {
            "operationId": f"{service.rsplit('.', 1)[1]}_{method.name}",
            "tags": [service.rsplit(".", 1)[1]],
        }
        text = self.d.comments.get(f".{service}.{method.name}", "")
        if text:
            operation["summary"] = text.split("\n\n")[0].replace("\n", " ")
            operation["description"] = text
        if rule.body == "*":
            top_bound = {v for v in variables if "." not in v}
            fields = [f for f in self.d.messages[request].field if f.name not in top_bound]
            # Fields bound in the path are not taken from the body.
            body = self.object_schema(request, fields, "") if top_bound else self.ref(request)
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        else:
            if rule.body:
                item = self._resolve(request, rule.body)
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": self.field_schema(item)}},
                }
                bound.add(rule.body)
            parameters += self._query_parameters(request, request, bound)
        access = method.options.Extensions[access_pb2.access]
        if access.allow_anonymous:
            operation["security"] = []
        elif access.scope:
            scope = f"Needs the scope `{access.scope}`."
            operation["description"] = f"{operation.get('description', '')}\n\n{scope}".strip()
        is_archive = method.server_streaming and method.output_type == HTTP_BODY
        if is_archive:
            parameters.append(
                {
                    "name": "Range",
                    "in": "header",
                    "required": False,
                    "description": "`bytes=START-` or `bytes=START-END` resumes or cuts the download "
                    "(206 Partial Content); other forms get the whole file.",
                    "schema": {"type": "string"},
                }
            )
        if parameters:
            operation["parameters"] = parameters
        operation["responses"] = self._responses(method, rule, is_archive)
        return path, verb, operation

    def _responses(
        self, method: descriptor_pb2.MethodDescriptorProto, rule: http_pb2.HttpRule, is_archive: bool
    ) -> Schema:
        errors = {"4XX": ERROR, "5XX": ERROR}
        if is_archive:
            headers = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in ARCHIVE_HEADERS.items()
            }
            zip_body = {
                "application/zip": {"schema": {"type": "string", "contentMediaType": "application/zip"}}
            }
            partial = {
                **headers,
                "Content-Range": {"description": "`bytes START-END/SIZE`", "schema": {"type": "string"}},
            }
            return {
                "200": {
                    "description": "The archive (a zip), streamed.",
                    "headers": headers,
                    "content": zip_body,
                },
                "206": {
                    "description": "The part of the archive asked for.",
                    "headers": partial,
                    "content": zip_body,
                },
                **errors,
            }
        output = self.ref(method.output_type)
        if rule.response_body:
            output = self.field_schema(self._resolve(method.output_type, rule.response_body))
        if method.server_streaming:
            name = method.output_type.rsplit(".", 1)[1]
            return {
                "200": {
                    "description": f"Server-Sent Events: each event is one line `data: <{name} as JSON>` "
                    "and a blank line, sent as it happens. An error before the first event is a JSON "
                    "google.rpc.Status with its HTTP status; afterwards the stream ends with its final "
                    "event.",
                    "content": {
                        "text/event-stream": {
                            "schema": {"type": "string"},
                            "x-event-schema": output,
                        }
                    },
                },
                **errors,
            }
        return {"200": {"description": "OK", "content": {"application/json": {"schema": output}}}, **errors}

    # ---- the document --------------------------------------------------------------------------

    def document(self) -> Schema:
        paths: dict[str, dict[str, Schema]] = {}
        tags = []
        for service_name, service in self.d.services:
            tag: Schema = {"name": service.name}
            if text := self.d.comments.get(f".{service_name}"):
                tag["description"] = text
            tags.append(tag)
            for method in service.method:
                rule: http_pb2.HttpRule = method.options.Extensions[annotations_pb2.http]
                for number, binding in enumerate([rule, *rule.additional_bindings], start=1):
                    path, verb, operation = self.operation(service_name, method, binding)
                    if number > 1:
                        # Operation ids are unique in a document: an additional binding is _2, _3...
                        operation["operationId"] += f"_{number}"
                    if verb in paths.setdefault(path, {}):
                        raise SystemExit(f"{verb.upper()} {path} is bound twice")
                    paths[path][verb] = operation
        paths.update(_edge_paths())
        self.ref(".google.rpc.Status")
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "WallWhale REST API",
                "version": "v1",
                "description": (
                    "Steam Workshop downloads over REST/JSON, served by Envoy's gRPC-JSON transcoder in "
                    "front of the gRPC API (the same API over gRPC and gRPC-Web: proto/wallwhale/v1). "
                    "Generated from the protos by scripts/openapi.py; do not edit."
                ),
            },
            "tags": tags,
            "security": [{"apiKey": []}, {"bearer": []}],
            "paths": dict(sorted(paths.items())),
            "components": {
                "securitySchemes": {
                    "apiKey": {
                        "type": "apiKey",
                        "in": "header",
                        "name": "x-api-key",
                        "description": "An API key (AdminService.CreateApiKey).",
                    },
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "An access token from AuthService.Login or RefreshToken.",
                    },
                },
                "responses": {
                    "Error": {
                        "description": "An error: the HTTP status follows the gRPC code, the body is a "
                        "google.rpc.Status with its details (ErrorInfo, BadRequest, QuotaFailure, "
                        "RetryInfo...).",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}
                        },
                    }
                },
                "schemas": dict(sorted(self.schemas.items())),
            },
        }


def _json_path(d: Descriptors, type_name: str, proto_path: str) -> list[str]:
    names = []
    for part in proto_path.split("."):
        item = next(f for f in d.messages[type_name].field if f.name == part)
        names.append(item.json_name)
        type_name = item.type_name
    return names


def _path_template(template: str) -> tuple[str, list[str]]:
    """`/v1/{name=things/*}:do` -> (`/v1/{name}:do`, [name])."""
    path, variables, i = "", [], 0
    while i < len(template):
        if template[i] == "{":
            end = template.index("}", i)
            name = template[i + 1 : end].split("=", 1)[0]
            variables.append(name)
            path += "{" + name + "}"
            i = end + 1
        else:
            path += template[i]
            i += 1
    return path, variables


def _edge_paths() -> dict[str, dict[str, Schema]]:
    """What Envoy answers by itself (envoy/envoy.template.yaml)."""

    def health(summary: str, word: str) -> Schema:
        body = {
            "type": "object",
            "properties": {"status": {"type": "string"}, "message": {"type": "string"}},
            "required": ["status"],
        }
        return {
            "get": {
                "operationId": f"Edge_{word}",
                "tags": ["Edge"],
                "summary": summary,
                "security": [],
                "responses": {
                    "200": {"description": word, "content": {"application/json": {"schema": body}}},
                    "503": {"description": "not " + word, "content": {"application/json": {"schema": body}}},
                },
            }
        }

    return {
        "/healthz": health("Envoy is up and not draining.", "alive"),
        "/readyz": health("An instance answers with SERVING: it runs and its database answers.", "ready"),
        "/v1/openapi.json": {
            "get": {
                "operationId": "Edge_OpenApi",
                "tags": ["Edge"],
                "summary": "This document.",
                "security": [],
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {}}}}
                },
            }
        },
    }


def build(descriptor_set: Path) -> Schema:
    return Builder(Descriptors.load(descriptor_set)).document()


def dumps(document: Schema) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--descriptor-set", type=Path, help="compiled protos (default: compile proto/ now)")
    parser.add_argument("--out", type=Path, help="write the document here")
    parser.add_argument("--check", type=Path, help="fail when this file differs from the generated document")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        descriptor_set = args.descriptor_set
        if descriptor_set is None:
            from envoy_config import build_descriptor_set

            descriptor_set = Path(scratch) / "wallwhale.pb"
            build_descriptor_set(descriptor_set)
        text = dumps(build(descriptor_set))
    if args.out:
        args.out.write_text(text)
    if args.check:
        if not args.check.is_file() or args.check.read_text() != text:
            print(
                f"{args.check} is out of date: python scripts/openapi.py --out {args.check}", file=sys.stderr
            )
            return 1
        print(f"{args.check} matches the protos")
    if not args.out and not args.check:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
