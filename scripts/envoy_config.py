"""Build what Envoy needs to stand in front of WallWhale: the descriptor set and envoy.yaml.

    python scripts/envoy_config.py --out-dir var/envoy \\
        --listen 127.0.0.1:8080 --admin-port 9901 \\
        --upstream 127.0.0.1:50051 --upstream 127.0.0.1:50052 \\
        --cors-origin http://localhost:5173 --validate

writes OUT/wallwhale.pb (compiled from proto/ with every import, plus google/rpc/error_details.proto
for the error details the server sends) and OUT/envoy.yaml (envoy/envoy.template.yaml with its
slots filled; one route per RPC, read from the descriptor set). Both are build output, never
committed: they are made again from the protos on every run, so they cannot drift from them.
--validate then runs `envoy --mode validate` on the result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from envoy_web import web_routes
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
TEMPLATE = ROOT / "envoy" / "envoy.template.yaml"
PACKAGE = "wallwhale.v1"
# Status and every detail type the server packs into google.rpc.Status (ErrorInfo, BadRequest,
# ResourceInfo, QuotaFailure, RetryInfo live in error_details.proto). Without them in the descriptor
# set, the transcoder cannot decode grpc-status-details-bin and REST clients get an empty body.
ERROR_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")
# Reads are retried on another instance when they were not served: the connection failed or was
# cut, the stream was refused or reset, or the instance answered CANCELLED or UNAVAILABLE at once
# (what a server that is stopping does to calls that reach it in the moment before Envoy's health
# checks take it out). Writes are never retried.
READ_RETRIES = "connect-failure,refused-stream,reset,cancelled,unavailable"
ENVOY = Path(sys.executable).parent / "envoy"


@dataclass(frozen=True)
class Method:
    path: str  # /wallwhale.v1.Service/Method
    http: str  # e.g. "GET /v1/downloads/{id}"
    server_streaming: bool

    @property
    def is_read(self) -> bool:
        return self.http.startswith("GET ")


def build_descriptor_set(output: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "wallwhale" / "v1").glob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            "--include_imports",
            f"--descriptor_set_out={output.resolve()}",
            *protos,
            *ERROR_PROTOS,
        ],
        check=True,
        cwd=PROTO_ROOT,
    )


def _http_rule(options: descriptor_pb2.MethodOptions) -> str:
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    if verb is None:
        return ""
    if verb == "custom":
        return f"{rule.custom.kind} {rule.custom.path}"
    return f"{verb.upper()} {getattr(rule, verb)}"


def read_services(descriptor_set: Path) -> tuple[list[str], list[Method]]:
    """The services of our package and each of their methods, from the compiled descriptor set."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    services: list[str] = []
    methods: list[Method] = []
    for file in files.file:
        if file.package != PACKAGE:
            continue
        for service in file.service:
            name = f"{PACKAGE}.{service.name}"
            services.append(name)
            for method in service.method:
                http = _http_rule(method.options)
                if not http:
                    raise SystemExit(f"{name}.{method.name} has no google.api.http annotation")
                methods.append(Method(f"/{name}/{method.name}", http, method.server_streaming))
    return services, methods


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _route(method: Method, unary_timeout: str, stream_idle_timeout: str, *, first_read: bool) -> str:
    lines = [
        f"              - match: {{ path: {json.dumps(method.path)} }}  # {method.http}",
        "                route:",
        "                  cluster: wallwhale",
    ]
    if method.server_streaming:
        lines += ["                  timeout: 0s", f"                  idle_timeout: {stream_idle_timeout}"]
    else:
        lines.append(f"                  timeout: {unary_timeout}")
    if method.is_read and not first_read:
        lines.append("                  retry_policy: *read_retries")
    elif method.is_read:  # written out once, then referred to by its YAML anchor
        lines += [
            "                  retry_policy: &read_retries",
            f'                    retry_on: "{READ_RETRIES}"',
            "                    num_retries: 2",
            "                    retry_host_predicate:  # the retry goes to another instance",
            "                    - name: envoy.retry_host_predicates.previous_hosts",
            "                      typed_config:",
            '                        "@type": type.googleapis.com/'
            "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
            "                    host_selection_retry_max_attempts: 3",
        ]
    return "\n".join(lines)


def _routes(methods: list[Method], unary_timeout: str, stream_idle_timeout: str) -> str:
    first_read = next((m for m in methods if m.is_read), None)
    return "\n".join(
        _route(m, unary_timeout, stream_idle_timeout, first_read=m is first_read) for m in methods
    )


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _origins(values: list[str]) -> str:
    origins = [o.strip() for v in values for o in v.split(",") if o.strip()]
    matchers = [{"safe_regex": {"regex": ".*"}} if o == "*" else {"exact": o} for o in origins]
    return json.dumps(matchers)


def render(
    descriptor_set: Path,
    *,
    listen: tuple[str, int],
    admin_port: int,
    upstreams: list[tuple[str, int]],
    upstream_source_address: str | None,
    cors_origins: list[str],
    max_request_bytes: int,
    unary_timeout: float,
    stream_idle_timeout: float,
    health_check_interval: float,
    max_connections: int = 10000,
    web_dir: Path | None = None,
) -> str:
    services, methods = read_services(descriptor_set)
    unary, idle = _seconds(unary_timeout), _seconds(stream_idle_timeout)
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
        for host, port in upstreams
    ]
    bind = ""
    if upstream_source_address:
        # Envoy connects to the servers from this address: the one to list in the servers'
        # WALLWHALE_TRUSTED_PROXIES.
        bind = (
            "    upstream_bind_config:\n"
            f"      source_address: {{ address: {upstream_source_address}, port_value: 0 }}"
        )
    return Template(TEMPLATE.read_text()).substitute(
        admin_port=admin_port,
        listen_address=listen[0],
        listen_port=listen[1],
        cors_origins=_origins(cors_origins),
        unary_timeout=unary,
        stream_idle_timeout=idle,
        method_routes=_routes(methods, unary, idle),
        max_request_bytes=max_request_bytes,
        proto_descriptor=json.dumps(str(descriptor_set.resolve())),
        services=json.dumps(services),
        upstream_bind_config=bind,
        health_check_interval=_seconds(health_check_interval),
        endpoints=json.dumps(endpoints),
        max_connections=max_connections,
        web_routes=web_routes(web_dir),
    )


def validate(config: Path) -> None:
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "--log-level", "error"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"envoy --mode validate failed:\n{result.stdout}{result.stderr}")
    print(result.stdout.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", type=Path, required=True, help="where envoy.yaml and wallwhale.pb go")
    parser.add_argument(
        "--listen", type=_host_port, default=("127.0.0.1", 8080), help="REST/gRPC/gRPC-Web address"
    )
    parser.add_argument("--admin-port", type=int, default=9901, help="admin interface (127.0.0.1 only)")
    parser.add_argument(
        "--upstream", type=_host_port, action="append", help="a server's gRPC HOST:PORT (repeatable)"
    )
    parser.add_argument(
        "--upstream-source-address",
        help="local address Envoy connects to the servers from (the servers' trusted proxy)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="browser origin allowed to call (repeatable or comma-separated; '*' for any)",
    )
    parser.add_argument("--max-request-bytes", type=int, default=1024 * 1024)
    parser.add_argument("--unary-timeout", type=float, default=30.0, help="seconds, for non-streaming RPCs")
    parser.add_argument(
        "--stream-idle-timeout", type=float, default=300.0, help="seconds of silence that cut a stream"
    )
    parser.add_argument("--health-check-interval", type=float, default=2.0, help="seconds")
    parser.add_argument("--max-connections", type=int, default=10000, help="open client connections at most")
    parser.add_argument(
        "--web-dir", type=Path, help="the built web console (web/dist) to serve at /; none: API only"
    )
    parser.add_argument("--validate", action="store_true", help="run envoy --mode validate on the result")
    args = parser.parse_args(argv)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    descriptor_set = args.out_dir / "wallwhale.pb"
    build_descriptor_set(descriptor_set)
    config = args.out_dir / "envoy.yaml"
    config.write_text(
        render(
            descriptor_set,
            listen=args.listen,
            admin_port=args.admin_port,
            upstreams=args.upstream or [("127.0.0.1", 50051)],
            upstream_source_address=args.upstream_source_address,
            cors_origins=args.cors_origin,
            max_request_bytes=args.max_request_bytes,
            unary_timeout=args.unary_timeout,
            stream_idle_timeout=args.stream_idle_timeout,
            health_check_interval=args.health_check_interval,
            max_connections=args.max_connections,
            web_dir=args.web_dir,
        )
    )
    if args.validate:
        validate(config)


if __name__ == "__main__":
    main()
