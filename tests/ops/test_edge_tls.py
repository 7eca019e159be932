"""TLS at the edge (issue 17): Envoy serves HTTPS and gRPC over TLS with certificates from
`wallwhale certs dev`, refuses old protocols and weak suites, picks up renewed certificates without
a restart, redirects its plain port and answers ACME challenges there, and talks mutual TLS to the
instances. Security headers on every REST response, Envoy's own replies included.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import client as http_client
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from cryptography import x509
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.database import prepare_database
from tests.support.envoy import ENVOY_ADDRESS, Envoy, free_port, http, running_envoy, servers_behind_envoy
from tests.support.server import make_settings
from wallwhale import certs
from wallwhale.app import WallWhaleServer
from wallwhale.config import to_async_url
from wallwhale.v1 import status_pb2, status_pb2_grpc

pytestmark = pytest.mark.slow

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "strict-transport-security": "max-age=31536000",
}


def assert_security_headers(headers: dict[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (name, headers)
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def client_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


# ---- wallwhale certs dev ------------------------------------------------------------------------


def _certs_dev(*args: str) -> str:
    """`wallwhale certs dev ARGS` as a person runs it (its own process: the CLI sets up logging)."""
    done = subprocess.run(
        [sys.executable, "-m", "wallwhale.cli", "certs", "dev", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_certs_dev_makes_a_ca_and_certificates_for_the_hosts(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    printed = _certs_dev("--out", str(out), "--host", "wallwhale.example")
    assert "Created a new development CA" in printed
    assert f"--cacert {out.resolve()}/ca.pem" in printed
    assert "update-ca-certificates" in printed
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for key in out.glob("*-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name in ("server", "instance", "envoy-client"):
        leaf = x509.load_pem_x509_certificate((out / f"{name}.pem").read_bytes())
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert leaf.issuer == ca.subject
        leaf.verify_directly_issued_by(ca)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(names.get_values_for_type(x509.DNSName)) == {"wallwhale.example", "localhost"}
        assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    # Run again: the CA (and so the trust placed in it) stays, the leaves are new.
    assert "Reused the development CA" in _certs_dev("--out", str(out))
    assert x509.load_pem_x509_certificate((out / "ca.pem").read_bytes()) == ca


# ---- HTTPS and gRPC over TLS ---------------------------------------------------------------------


@dataclass
class TlsStack:
    envoy: Envoy
    server: WallWhaleServer
    api_key: str
    certs: Path
    live: Path  # the folder Envoy reads the certificate from (as certbot's live/)
    redirect_port: int
    webroot: Path

    @property
    def context(self) -> ssl.SSLContext:
        return client_context(self.certs / "ca.pem")

    @property
    def key(self) -> dict[str, str]:
        return {"x-api-key": self.api_key}


def install(source: Path, target: Path) -> None:
    """Replaces `target` the way certbot and cert-manager do: a new file renamed over the old."""
    staged = target.with_name(f".{target.name}.new")
    staged.write_bytes(source.read_bytes())
    os.replace(staged, target)


@pytest_asyncio.fixture(scope="module")
async def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TlsStack]:
    directory = tmp_path_factory.mktemp("tls")
    made = certs.make_dev_certificates(directory / "certs")
    live = directory / "live"
    live.mkdir()
    install(made.path("server.pem"), live / "fullchain.pem")
    install(made.path("server-key.pem"), live / "privkey.pem")
    webroot = directory / "webroot"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    url = to_async_url(f"sqlite:///{directory / 'wallwhale.sqlite3'}")
    admin = await prepare_database(url)
    redirect_port = free_port()
    args = [
        f"--tls-cert={live / 'fullchain.pem'}",
        f"--tls-key={live / 'privkey.pem'}",
        f"--redirect-port={redirect_port}",
        f"--acme-webroot={webroot}",
    ]
    async with servers_behind_envoy(directory, url, envoy_args=args) as (envoy, [server]):
        yield TlsStack(envoy, server, admin.api_key, made.directory, live, redirect_port, webroot)


async def test_https_rest_with_the_dev_ca_and_security_headers(tls_stack: TlsStack) -> None:
    assert tls_stack.envoy.base_url.startswith("https://")
    reply = await http(
        "GET", tls_stack.envoy.url("/v1/status"), headers=tls_stack.key, ssl_context=tls_stack.context
    )
    assert reply.status == 200, reply
    assert reply.json()["instanceId"] == tls_stack.server.instance_id
    assert_security_headers(reply.headers)
    assert reply.headers["cache-control"] == "no-store"
    # Envoy's own replies (unknown path, no credentials) carry them too.
    for path, status in (("/v1/nothing", 404), ("/v1/downloads/x/y/z", 404)):
        refused = await http("GET", tls_stack.envoy.url(path), ssl_context=tls_stack.context)
        assert refused.status == status
        assert refused.from_envoy
        assert_security_headers(refused.headers)
    unauthenticated = await http("GET", tls_stack.envoy.url("/v1/status"), ssl_context=tls_stack.context)
    assert unauthenticated.status == 401
    assert_security_headers(unauthenticated.headers)


async def test_secrets_are_never_cached(tls_stack: TlsStack) -> None:
    created = await http(
        "POST",
        tls_stack.envoy.url("/v1/admin/api-keys"),
        json_body={"apiKey": {"name": "edge", "scopes": ["download:read"]}},
        headers=tls_stack.key,
        ssl_context=tls_stack.context,
    )
    assert created.status == 200, created
    assert created.json()["plaintextKey"]
    assert created.headers["cache-control"] == "no-store"


async def test_curl_speaks_http2_over_tls_and_a_wrong_ca_is_refused(tls_stack: TlsStack) -> None:
    url = tls_stack.envoy.url("/v1/status")
    done = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-sS", "--http2", "--cacert", str(tls_stack.certs / "ca.pem"), "-o", "/dev/null",
         "-w", "%{http_version} %{http_code}", "-H", f"x-api-key: {tls_stack.api_key}", url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.stdout == "2 200", done
    untrusted = await asyncio.to_thread(
        subprocess.run, ["curl", "-sS", url], capture_output=True, text=True, check=False
    )
    assert untrusted.returncode == 60, untrusted  # the peer certificate cannot be authenticated


async def test_grpc_over_tls_through_envoy(tls_stack: TlsStack) -> None:
    credentials = grpc.ssl_channel_credentials((tls_stack.certs / "ca.pem").read_bytes())
    async with aio.secure_channel(tls_stack.envoy.grpc_target, credentials) as channel:
        reply = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            status_pb2.GetStatusRequest(), metadata=tuple(tls_stack.key.items()), timeout=5
        )
    assert reply.instance_id == tls_stack.server.instance_id
    # Plain h2c on the TLS port gets nowhere.
    async with aio.insecure_channel(tls_stack.envoy.grpc_target) as plain:
        with pytest.raises(grpc.RpcError) as refused:
            await status_pb2_grpc.StatusServiceStub(plain).GetStatus(
                status_pb2.GetStatusRequest(), metadata=tuple(tls_stack.key.items()), timeout=2
            )
    assert refused.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _handshake(port: int, context: ssl.SSLContext) -> str:
    import socket

    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return f"{tls.version()} {tls.cipher()[0]}"


def test_old_protocols_and_weak_suites_are_refused(tls_stack: TlsStack) -> None:
    port = tls_stack.envoy.port
    modern = tls_stack.context
    assert _handshake(port, modern).startswith("TLSv1.3")
    tls12 = tls_stack.context
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(port, tls12).startswith("TLSv1.2 ECDHE-")
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        legacy = tls_stack.context
        legacy.set_ciphers("ALL:@SECLEVEL=0")  # so that this client offers them at all
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            legacy.minimum_version = legacy.maximum_version = old
        with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|NO_PROTOCOLS"):
            _handshake(port, legacy)
    for weak in ("ECDHE-ECDSA-AES128-SHA", "AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-SHA384"):
        cbc = tls_stack.context
        cbc.maximum_version = ssl.TLSVersion.TLSv1_2
        cbc.set_ciphers(weak)
        with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|NO_SHARED_CIPHER"):
            _handshake(port, cbc)


async def test_the_plain_port_redirects_and_serves_acme_challenges(tls_stack: TlsStack) -> None:
    plain = f"http://127.0.0.1:{tls_stack.redirect_port}"
    moved = await http("GET", f"{plain}/v1/downloads?pageSize=5")
    assert moved.status == 308
    assert moved.headers["location"] == f"https://127.0.0.1:{tls_stack.envoy.port}/v1/downloads?pageSize=5"
    assert moved.headers["x-content-type-options"] == "nosniff"
    challenges = tls_stack.webroot / ".well-known" / "acme-challenge"
    (challenges / "Tok3n_-abc").write_text("Tok3n_-abc.thumbprint")
    answered = await http("GET", f"{plain}/.well-known/acme-challenge/Tok3n_-abc")
    assert (answered.status, answered.body) == (200, b"Tok3n_-abc.thumbprint")
    assert answered.headers["content-type"] == "text/plain"
    (tls_stack.webroot / "secret").write_text("not a challenge")
    for path in ("/.well-known/acme-challenge/unknown", "/.well-known/acme-challenge/..%2Fsecret",
                 "/.well-known/acme-challenge/../../secret", "/.well-known/acme-challenge/a.b"):  # fmt: skip
        refused = await http("GET", f"{plain}{path}")
        assert refused.status in {404, 308}, (path, refused)
        assert b"not a challenge" not in refused.body


def _peer_serial(connection: http_client.HTTPSConnection) -> int:
    assert connection.sock is not None
    der = connection.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _serial_on_a_new_connection(port: int, context: ssl.SSLContext) -> int:
    connection = http_client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        return _peer_serial(connection)
    finally:
        connection.close()


async def test_a_renewed_certificate_is_served_without_a_restart(tls_stack: TlsStack) -> None:
    port, context = tls_stack.envoy.port, tls_stack.context
    old_serial = await asyncio.to_thread(_serial_on_a_new_connection, port, context)
    # An open HTTP/1.1 connection and an open gRPC stream, both over the old certificate.
    kept = http_client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    await asyncio.to_thread(kept.request, "GET", "/healthz")
    assert json.loads((await asyncio.to_thread(kept.getresponse)).read()) == {"status": "alive"}
    assert _peer_serial(kept) == old_serial
    health = tls_stack.server.health
    await health.set("edge-rotation", health_pb2.HealthCheckResponse.SERVING)
    credentials = grpc.ssl_channel_credentials((tls_stack.certs / "ca.pem").read_bytes())
    channel = aio.secure_channel(tls_stack.envoy.grpc_target, credentials)
    stream = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="edge-rotation"), metadata=tuple(tls_stack.key.items())
    )
    assert (await stream.read()).status == health_pb2.HealthCheckResponse.SERVING
    try:
        renewed = certs.make_dev_certificates(tls_stack.certs)
        install(renewed.path("server.pem"), tls_stack.live / "fullchain.pem")
        install(renewed.path("server-key.pem"), tls_stack.live / "privkey.pem")
        new_serial = x509.load_pem_x509_certificate(renewed.path("server.pem").read_bytes()).serial_number
        deadline = time.monotonic() + 10
        while (seen := await asyncio.to_thread(_serial_on_a_new_connection, port, context)) != new_serial:
            assert seen == old_serial
            assert time.monotonic() < deadline, "the renewed certificate was not picked up"
            await asyncio.sleep(0.2)
        # The open connection and the open stream carry on, on the certificate they began with.
        await asyncio.to_thread(kept.request, "GET", "/healthz")
        assert (await asyncio.to_thread(kept.getresponse)).status == 200
        assert _peer_serial(kept) == old_serial
        await health.set("edge-rotation", health_pb2.HealthCheckResponse.NOT_SERVING)
        update = await asyncio.wait_for(stream.read(), 5)
        assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        stream.cancel()
        kept.close()
        await channel.close()


# ---- mutual TLS between Envoy and the instances --------------------------------------------------


async def test_mutual_tls_to_the_instance_and_a_client_without_certificate_refused(tmp_path: Path) -> None:
    made = certs.make_dev_certificates(tmp_path / "certs")
    url = to_async_url(f"sqlite:///{tmp_path / 'wallwhale.sqlite3'}")
    admin = await prepare_database(url)
    server = WallWhaleServer(
        make_settings(
            url,
            tmp_path / "server",
            trusted_proxies=[ENVOY_ADDRESS],
            upstream_tls_ca_file=made.path("ca.pem"),
            upstream_tls_cert_file=made.path("instance.pem"),
            upstream_tls_key_file=made.path("instance-key.pem"),
        )
    )
    await server.start()
    key = (("x-api-key", admin.api_key),)
    try:
        args = [
            f"--upstream-tls-ca={made.path('ca.pem')}",
            f"--upstream-tls-cert={made.path('envoy-client.pem')}",
            f"--upstream-tls-key={made.path('envoy-client-key.pem')}",
        ]
        async with running_envoy(tmp_path / "envoy", [server.port], extra_args=args) as envoy:
            reply = await http("GET", envoy.url("/v1/status"), headers=dict(key))
            assert reply.status == 200, reply
            async with aio.insecure_channel(envoy.grpc_target) as channel:
                status = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                    status_pb2.GetStatusRequest(), metadata=key, timeout=5
                )
            assert status.instance_id == server.instance_id
        target = f"127.0.0.1:{server.port}"
        ca = made.path("ca.pem").read_bytes()
        refused_channels = (
            aio.insecure_channel(target),  # no TLS at all
            aio.secure_channel(target, grpc.ssl_channel_credentials(ca)),  # TLS, no client certificate
        )
        for channel in refused_channels:
            async with channel:
                with pytest.raises(grpc.RpcError) as refused:
                    await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                        status_pb2.GetStatusRequest(), metadata=key, timeout=3
                    )
            assert refused.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
        with_certificate = grpc.ssl_channel_credentials(
            ca, made.path("envoy-client-key.pem").read_bytes(), made.path("envoy-client.pem").read_bytes()
        )
        async with aio.secure_channel(target, with_certificate) as channel:
            status = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                status_pb2.GetStatusRequest(), metadata=key, timeout=5
            )
        assert status.instance_id == server.instance_id
    finally:
        await server.stop(grace=0)


def test_upstream_tls_settings_go_together(tmp_path: Path) -> None:
    from wallwhale.config import ConfigError, load_settings

    made = certs.make_dev_certificates(tmp_path / "certs")
    with pytest.raises(ConfigError, match=r"UPSTREAM_TLS_CA_FILE also need .*UPSTREAM_TLS_CERT_FILE"):
        load_settings(upstream_tls_ca_file=made.path("ca.pem"))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(
            upstream_tls_ca_file=made.path("ca.pem"),
            upstream_tls_cert_file=tmp_path / "missing.pem",
            upstream_tls_key_file=made.path("instance-key.pem"),
        )
