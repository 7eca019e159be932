"""The access rule of every RPC, read from the `(wallwhale.v1.access)` method option in the protos.

The protos are the one place that says which scope each RPC needs; the server refuses to start
when a method of a served service declares no rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor

from wallwhale.v1 import access_pb2, admin_pb2, auth_pb2, download_pb2, status_pb2, watch_pb2, webhook_pb2

SERVICES: tuple[descriptor.ServiceDescriptor, ...] = (
    download_pb2.DESCRIPTOR.services_by_name["DownloadService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    status_pb2.DESCRIPTOR.services_by_name["StatusService"],
    watch_pb2.DESCRIPTOR.services_by_name["WatchService"],
    webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"],
)


@dataclass(frozen=True)
class Rule:
    method: str
    scope: str
    allow_anonymous: bool
    mutating: bool


def full_method(service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor) -> str:
    return f"/{service.full_name}/{method.name}"


def load_rules() -> dict[str, Rule]:
    """Every WallWhale method's rule, by full method path (/wallwhale.v1.Service/Method)."""
    rules: dict[str, Rule] = {}
    missing: list[str] = []
    for service in SERVICES:
        for method in service.methods:
            name = full_method(service, method)
            options = method.GetOptions()
            if not options.HasExtension(access_pb2.access):
                missing.append(name)
                continue
            rule = options.Extensions[access_pb2.access]
            rules[name] = Rule(name, rule.scope, rule.allow_anonymous, rule.mutating)
    if missing:
        raise RuntimeError("methods without an access rule: " + ", ".join(missing))
    return rules
