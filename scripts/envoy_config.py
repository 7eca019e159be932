"""Build what Envoy needs to stand in front of WallWhale: the descriptor set and envoy.yaml.

    python scripts/envoy_config.py --out-dir var/envoy \\
        --listen 127.0.0.1:8080 --admin-port 9901 \\
        --upstream 127.0.0.1:50051 --upstream 127.0.0.1:50052 \\
        --cors-origin http://localhost:5173 --validate

An upstream may be a Unix socket, `--upstream unix:/path/grpc.sock` (an Envoy `pipe` address): the
way to a server on this host, whose socket only the service user can open.

writes OUT/wallwhale.pb (compiled from proto/ with every import, plus google/rpc/error_details.proto
for the error details the server sends), OUT/static/ (the OpenAPI document generated from that
descriptor set by scripts/openapi.py, and the docs page) and OUT/envoy.yaml (envoy/envoy.template.yaml
with its slots filled; one route per RPC, read from the descriptor set). All are build output, never
committed: they are made again from the protos on every run, so they cannot drift from them
(docs/openapi.json is a committed copy of the document, checked against the protos in CI).

Envoy serves the static files as direct responses read from OUT/static when it starts: a handful
of files of known names (no path from a request ever reaches the file system), no extra process;
the price is a restart to change them, which a build needs anyway.
--validate then runs `envoy --mode validate` on the result.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from envoy_static import MAX_FILE_BYTES, file_route
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
DOCS_PAGE = ROOT / "envoy" / "docs"
SWAGGER_UI = ROOT / "node_modules" / "swagger-ui-dist"
# The docs page may load its own scripts, styles and images and call the API on this origin:
# nothing inline, nothing from elsewhere, never framed.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


HTTP_BODY = ".google.api.HttpBody"


@dataclass(frozen=True)
class Method:
    path: str  # /wallwhale.v1.Service/Method
    http: str  # e.g. "GET /v1/downloads/{id}"
    server_streaming: bool
    output_type: str = ""  # e.g. ".google.api.HttpBody"

    @property
    def is_read(self) -> bool:
        return self.http.startswith("GET ")

    @property
    def is_archive(self) -> bool:
        """A stream of raw bytes (a zip): it goes through the archive cluster."""
        return self.server_streaming and self.output_type == HTTP_BODY


def build_descriptor_set(output: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "wallwhale" / "v1").glob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            "--include_imports",
            # Comments too: the OpenAPI document's descriptions come from them.
            "--include_source_info",
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
                methods.append(
                    Method(f"/{name}/{method.name}", http, method.server_streaming, method.output_type)
                )
    return services, methods


def _seconds(value: float) -> str:
    return f"{value:g}s"


@dataclass(frozen=True)
class Timeouts:
    unary: str
    stream_idle: str
    archive_idle: str


def _route(method: Method, timeouts: Timeouts, *, first_read: bool) -> str:
    lines = [
        f"              - match: {{ path: {json.dumps(method.path)} }}  # {method.http}",
        "                route:",
        f"                  cluster: {'wallwhale_archives' if method.is_archive else 'wallwhale'}",
    ]
    if method.is_archive:
        # A client that stops reading stops the bytes; then nothing moves and this resets it.
        lines += ["                  timeout: 0s", f"                  idle_timeout: {timeouts.archive_idle}"]
    elif method.server_streaming:
        lines += ["                  timeout: 0s", f"                  idle_timeout: {timeouts.stream_idle}"]
    else:
        lines.append(f"                  timeout: {timeouts.unary}")
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


def _routes(methods: list[Method], timeouts: Timeouts) -> str:
    first_read = next((m for m in methods if m.is_read), None)
    return "\n".join(_route(m, timeouts, first_read=m is first_read) for m in methods)


UNIX = "unix:"


def _upstream(value: str) -> tuple[str, int]:
    """HOST:PORT, or unix:/absolute/path (kept whole, port 0)."""
    if value.startswith(UNIX):
        if not Path(value[len(UNIX) :]).is_absolute():
            raise argparse.ArgumentTypeError(f"{value!r}: a Unix socket needs an absolute path")
        return value, 0
    return _host_port(value)


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _otlp_endpoint(value: str) -> tuple[str, int]:
    """The collector's address, given as the servers' WALLWHALE_OTLP_ENDPOINT or as HOST:PORT."""
    if value.startswith("https://"):
        raise argparse.ArgumentTypeError(
            "Envoy exports to a plain (h2c) OTLP/gRPC collector: http://HOST:PORT"
        )
    return _host_port(value.removeprefix("http://").rstrip("/"))


def _origins(values: list[str]) -> str:
    origins = [o.strip() for v in values for o in v.split(",") if o.strip()]
    matchers = [{"safe_regex": {"regex": ".*"}} if o == "*" else {"exact": o} for o in origins]
    return json.dumps(matchers)


@dataclass(frozen=True)
class EdgeTls:
    """TLS on the public port: the PEM files (chain allowed), and the optional plain port."""

    cert_file: Path
    key_file: Path
    redirect_port: int | None = None
    acme_webroot: Path | None = None


@dataclass(frozen=True)
class UpstreamTls:
    """Mutual TLS to the instances: the CA both sides trust, and Envoy's client certificate."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class StaticFile:
    """A file Envoy answers GET `path` with (read when Envoy starts)."""

    path: str
    file: Path
    content_type: str
    # Sent with it; the default Content-Security-Policy (nothing may load) covers the rest.
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Options:
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    admin_port: int = 9901
    upstreams: tuple[tuple[str, int], ...] = (("127.0.0.1", 50051),)
    upstream_source_address: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 1024 * 1024
    unary_timeout: float = 30.0
    stream_idle_timeout: float = 300.0
    # An archive stream that moves no byte for this long (its client stopped reading) is reset.
    archive_idle_timeout: float = 60.0
    archive_streams_per_connection: int = 8
    # What Envoy buffers per connection, client or upstream, before it stops reading it.
    buffer_limit_bytes: int = 64 * 1024
    health_check_interval: float = 2.0
    max_connections: int = 10000
    tls: EdgeTls | None = None
    upstream_tls: UpstreamTls | None = None
    # The OTLP/gRPC collector for Envoy's spans (HOST, PORT); None: no tracing at the edge.
    otlp_endpoint: tuple[str, int] | None = None
    # The share of requests Envoy traces (a client's traceparent decides for its own).
    trace_sampling_percent: float = 100.0


def _snippet(name: str, indent: int, **values: object) -> str:
    """envoy/NAME.template.yaml filled in and indented by `indent` spaces (its comments dropped:
    they are read in the file)."""
    source = (TEMPLATE.parent / f"{name}.template.yaml").read_text().splitlines()
    kept = "\n".join(line for line in source if line.strip() and not line.lstrip().startswith("#"))
    lines = Template(kept).substitute(**values).splitlines()
    return "\n".join(" " * indent + line for line in lines)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cluster_type(upstreams: tuple[tuple[str, int], ...]) -> str:
    """STATIC for addresses and Unix sockets; STRICT_DNS as soon as one server is given by name."""
    fixed = all(host.startswith(UNIX) or _is_address(host) for host, _ in upstreams)
    return "STATIC" if fixed else "STRICT_DNS"


def _san_matchers(upstreams: tuple[tuple[str, int], ...]) -> str:
    matchers = []
    for host, _ in dict.fromkeys(upstreams):
        if host.startswith(UNIX):
            continue
        kind = "IP_ADDRESS" if _is_address(host) else "DNS"
        matchers.append({"san_type": kind, "matcher": {"exact": host}})
    return json.dumps(matchers)


def write_sds(out_dir: Path, tls: EdgeTls) -> Path:
    """The SDS resource naming the certificate files; Envoy watches the certificate's folder."""
    directory = out_dir / "sds"
    directory.mkdir(exist_ok=True)
    cert, key = tls.cert_file.resolve(), tls.key_file.resolve()
    certificate: dict[str, object] = {
        "certificate_chain": {"filename": str(cert)},
        "private_key": {"filename": str(key)},
    }
    if cert.parent == key.parent:
        # A rename into the folder (certbot's symlink swap, cert-manager's ..data swap) reloads
        # the pair, read together so a half-replaced pair is never served.
        certificate["watched_directory"] = {"path": str(cert.parent)}
    secret = {
        "resources": [
            {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": "edge_certificate",
                "tls_certificate": certificate,
            }
        ]
    }
    path = directory / "edge-certificate.json"
    staged = directory / "edge-certificate.json.new"
    staged.write_text(json.dumps(secret, indent=2) + "\n")
    staged.replace(path)  # Envoy watches the folder for files moved in
    return path


def _static_routes(files: list[StaticFile]) -> str:
    get = {"name": ":method", "string_match": {"exact": "GET"}}
    return "\n".join(
        file_route(
            {"path": item.path, "headers": [get]},
            item.file,
            {"content-type": item.content_type, **dict(item.headers)},
        )
        for item in files
    )


def render(
    descriptor_set: Path,
    options: Options,
    *,
    sds_file: Path | None = None,
    static: list[StaticFile] | None = None,
    web_dir: Path | None = None,
) -> str:
    services, methods = read_services(descriptor_set)
    timeouts = Timeouts(
        _seconds(options.unary_timeout),
        _seconds(options.stream_idle_timeout),
        _seconds(options.archive_idle_timeout),
    )
    endpoints = [
        {"endpoint": {"address": {"pipe": {"path": host[len(UNIX) :]}}}}
        if host.startswith(UNIX)
        else {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
        for host, port in options.upstreams
    ]
    over_tcp = any(not host.startswith(UNIX) for host, _ in options.upstreams)
    bind = ""
    if options.upstream_source_address and over_tcp:
        # Envoy connects to the servers from this address: the one to list in the servers'
        # WALLWHALE_TRUSTED_PROXIES.
        bind = (
            "    upstream_bind_config:\n"
            f"      source_address: {{ address: {options.upstream_source_address}, port_value: 0 }}"
        )
    downstream_tls = hsts = redirect = ""
    if options.tls is not None:
        if sds_file is None:
            raise ValueError("TLS needs the SDS file (write_sds)")
        downstream_tls = _snippet(
            "edge-tls", 6, sds_file=json.dumps(str(sds_file)), sds_directory=json.dumps(str(sds_file.parent))
        ).lstrip()
        hsts = (
            "                - append: { header: { key: strict-transport-security, value: max-age=31536000 },"
            " append_action: OVERWRITE_IF_EXISTS_OR_ADD }"
        )
        if options.tls.redirect_port is not None:
            public_port = options.listen[1]
            webroot = options.tls.acme_webroot
            folder = str((webroot / ".well-known" / "acme-challenge").resolve()) if webroot else ""
            redirect = _snippet(
                "redirect-listener",
                2,
                listen_address=options.listen[0],
                redirect_port=options.tls.redirect_port,
                port_redirect="" if public_port == 443 else f"port_redirect: {public_port},",
                acme_folder=json.dumps(folder),
            )
    upstream_tls = ""
    if options.upstream_tls is not None:
        upstream_tls = _snippet(
            "upstream-tls",
            4,
            client_cert=json.dumps(str(options.upstream_tls.cert_file.resolve())),
            client_key=json.dumps(str(options.upstream_tls.key_file.resolve())),
            ca_file=json.dumps(str(options.upstream_tls.ca_file.resolve())),
            san_matchers=_san_matchers(options.upstreams),
        )
    tracing = otlp_cluster = ""
    if options.otlp_endpoint is not None:
        tracing = _snippet("tracing", 10, sampling_percent=f"{options.trace_sampling_percent:g}").lstrip()
        host, port = options.otlp_endpoint
        otlp_cluster = _snippet("otlp-cluster", 2, otlp_host=json.dumps(host), otlp_port=port)
    static = static or []
    return Template(TEMPLATE.read_text()).substitute(
        admin_port=options.admin_port,
        listen_address=options.listen[0],
        listen_port=options.listen[1],
        cors_origins=_origins(list(options.cors_origins)),
        unary_timeout=timeouts.unary,
        stream_idle_timeout=timeouts.stream_idle,
        archive_idle_timeout=timeouts.archive_idle,
        archive_streams_per_connection=options.archive_streams_per_connection,
        buffer_limit=options.buffer_limit_bytes,
        method_routes=_routes(methods, timeouts),
        static_routes=_static_routes(static),
        max_static_bytes=MAX_FILE_BYTES,
        max_request_bytes=options.max_request_bytes,
        proto_descriptor=json.dumps(str(descriptor_set.resolve())),
        services=json.dumps(services),
        upstream_bind_config=bind,
        upstream_transport_socket=upstream_tls,
        downstream_transport_socket=downstream_tls,
        hsts_mutation=hsts,
        redirect_listener=redirect,
        health_check_interval=_seconds(options.health_check_interval),
        endpoints=json.dumps(endpoints),
        cluster_type=_cluster_type(options.upstreams),
        max_connections=options.max_connections,
        web_routes=web_routes(web_dir),
        tracing=tracing,
        otlp_cluster=otlp_cluster,
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", type=Path, required=True, help="where envoy.yaml and wallwhale.pb go")
    parser.add_argument(
        "--listen", type=_host_port, default=("127.0.0.1", 8080), help="REST/gRPC/gRPC-Web address"
    )
    parser.add_argument("--admin-port", type=int, default=9901, help="admin interface (127.0.0.1 only)")
    parser.add_argument(
        "--upstream",
        type=_upstream,
        action="append",
        help="a server's gRPC HOST:PORT or unix:/PATH of its socket (repeatable); a host name is"
        " resolved by DNS, also while Envoy runs",
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
    parser.add_argument(
        "--archive-idle-timeout",
        type=float,
        default=60.0,
        help="seconds an archive stream may move no byte (its client stopped reading) before it is reset",
    )
    parser.add_argument(
        "--archive-streams-per-connection",
        type=int,
        default=8,
        help="archive streams per upstream connection",
    )
    parser.add_argument(
        "--buffer-limit-bytes", type=int, default=64 * 1024, help="bytes buffered per connection"
    )
    parser.add_argument("--health-check-interval", type=float, default=2.0, help="seconds")
    parser.add_argument("--max-connections", type=int, default=10000, help="open client connections at most")
    parser.add_argument(
        "--web-dir", type=Path, help="the built web console (web/dist) to serve at /; none: API only"
    )
    tls = parser.add_argument_group("TLS on the public port")
    tls.add_argument(
        "--tls-cert", type=Path, help="PEM certificate (chain allowed): serve HTTPS and gRPC over TLS"
    )
    tls.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    tls.add_argument("--redirect-port", type=int, help="plain HTTP port that redirects to HTTPS")
    tls.add_argument(
        "--acme-webroot", type=Path, help="answer /.well-known/acme-challenge/ on the redirect port from here"
    )
    upstream = parser.add_argument_group("mutual TLS to the server instances")
    upstream.add_argument("--upstream-tls-ca", type=Path, help="CA that signed the instances' certificates")
    upstream.add_argument("--upstream-tls-cert", type=Path, help="Envoy's client certificate (PEM)")
    upstream.add_argument("--upstream-tls-key", type=Path, help="Envoy's client key (PEM)")
    parser.add_argument(
        "--otlp-endpoint",
        type=_otlp_endpoint,
        help="OTLP/gRPC collector (HOST:PORT or http://HOST:PORT) for Envoy's spans; none: no tracing",
    )
    parser.add_argument(
        "--trace-sampling",
        type=float,
        default=100.0,
        help=(
            "percent of requests Envoy traces, with --otlp-endpoint"
            " (run.sh: 100 x WALLWHALE_OTLP_SAMPLE_RATIO)"
        ),
    )
    parser.add_argument("--validate", action="store_true", help="run envoy --mode validate on the result")
    return parser


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            parser.error("--tls-cert and --tls-key go together")
        tls = EdgeTls(args.tls_cert, args.tls_key, args.redirect_port, args.acme_webroot)
    elif args.redirect_port or args.acme_webroot:
        parser.error("--redirect-port and --acme-webroot need --tls-cert and --tls-key")
    upstream_tls = None
    given = [args.upstream_tls_ca, args.upstream_tls_cert, args.upstream_tls_key]
    if any(given):
        if not all(given):
            parser.error("--upstream-tls-ca, --upstream-tls-cert and --upstream-tls-key go together")
        upstream_tls = UpstreamTls(args.upstream_tls_ca, args.upstream_tls_cert, args.upstream_tls_key)
    for path in [p for p in (args.tls_cert, args.tls_key, *given) if p is not None]:
        if not path.is_file():
            parser.error(f"{path}: no such file")
    return Options(
        listen=args.listen,
        admin_port=args.admin_port,
        upstreams=tuple(args.upstream or [("127.0.0.1", 50051)]),
        upstream_source_address=args.upstream_source_address,
        cors_origins=tuple(args.cors_origin),
        max_request_bytes=args.max_request_bytes,
        unary_timeout=args.unary_timeout,
        stream_idle_timeout=args.stream_idle_timeout,
        archive_idle_timeout=args.archive_idle_timeout,
        archive_streams_per_connection=args.archive_streams_per_connection,
        buffer_limit_bytes=args.buffer_limit_bytes,
        health_check_interval=args.health_check_interval,
        max_connections=args.max_connections,
        tls=tls,
        upstream_tls=upstream_tls,
        otlp_endpoint=args.otlp_endpoint,
        trace_sampling_percent=args.trace_sampling,
    )


def write_static(out_dir: Path, descriptor_set: Path) -> list[StaticFile]:
    """The OpenAPI document (from the descriptor set) and the docs page, copied into OUT/static."""
    import openapi

    if not (SWAGGER_UI / "swagger-ui-bundle.js").is_file():
        raise SystemExit(f"{SWAGGER_UI} is missing: run scripts/setup.sh (npm ci)")
    static = out_dir / "static"
    static.mkdir(exist_ok=True)
    (static / "openapi.json").write_text(openapi.dumps(openapi.build(descriptor_set)))
    for source in (
        DOCS_PAGE / "index.html",
        DOCS_PAGE / "docs.js",
        SWAGGER_UI / "swagger-ui-bundle.js",
        SWAGGER_UI / "swagger-ui.css",
    ):
        shutil.copyfile(source, static / source.name)
    page = (("content-security-policy", DOCS_POLICY), ("cache-control", "no-cache"))
    asset = (("cache-control", "max-age=3600"),)
    return [
        StaticFile(
            "/v1/openapi.json", static / "openapi.json", "application/json", (("cache-control", "no-cache"),)
        ),
        StaticFile("/docs", static / "index.html", "text/html; charset=utf-8", page),
        StaticFile("/docs/", static / "index.html", "text/html; charset=utf-8", page),
        StaticFile("/docs/docs.js", static / "docs.js", "text/javascript", asset),
        StaticFile("/docs/swagger-ui-bundle.js", static / "swagger-ui-bundle.js", "text/javascript", asset),
        StaticFile("/docs/swagger-ui.css", static / "swagger-ui.css", "text/css", asset),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    options = _options(parser, args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    descriptor_set = args.out_dir / "wallwhale.pb"
    build_descriptor_set(descriptor_set)
    static = write_static(args.out_dir, descriptor_set)
    sds_file = write_sds(args.out_dir, options.tls) if options.tls else None
    config = args.out_dir / "envoy.yaml"
    config.write_text(render(descriptor_set, options, sds_file=sds_file, static=static, web_dir=args.web_dir))
    if args.validate:
        validate(config)


if __name__ == "__main__":
    main()
