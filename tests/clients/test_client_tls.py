"""TLS to Envoy from the Python client and wallwhale-cli: the real Envoy serves TLS in front of the real
server with the CA of `wallwhale certs dev`. With that CA (Tls(ca_cert=...), --ca-cert or
WALLWHALE_CA_CERT) calls go through; without it the refusal says the certificate is not trusted and what
to give, at once (not retried). The TypeScript client's side is clients/typescript/test/tls.test.ts."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.envoy import Envoy, proxy_socket, running_envoy
from tests.support.harness import Harness
from wallwhale import certs
from wallwhale_client import AsyncClient, Client, Tls, UntrustedCertificate

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).parent / "wallwhale-cli"


@dataclass
class TlsEdge:
    envoy: Envoy
    ca: Path
    api_key: str
    instance_id: str


@pytest_asyncio.fixture
async def edge(harness: Harness, tmp_path: Path) -> AsyncIterator[TlsEdge]:
    server = await harness.start(grpc_socket=proxy_socket())
    made = certs.make_dev_certificates(tmp_path / "certs")
    tls = [f"--tls-cert={made.path('server.pem')}", f"--tls-key={made.path('server-key.pem')}"]
    async with running_envoy(tmp_path / "envoy", [server.upstream], extra_args=tls) as envoy:
        yield TlsEdge(envoy, made.path("ca.pem"), dict(harness.admin)["x-api-key"], server.instance_id)


async def test_the_python_client_calls_through_envoy_with_the_dev_ca(edge: TlsEdge) -> None:
    async with AsyncClient(edge.envoy.grpc_target, api_key=edge.api_key, tls=Tls(ca_cert=edge.ca)) as client:
        assert (await client.get_status()).instance_id == edge.instance_id
    # The same CA given as bytes, and through the blocking client.
    roots = Tls(root_certificates=edge.ca.read_bytes())
    with Client(edge.envoy.grpc_target, api_key=edge.api_key, tls=roots) as blocking:
        status = await asyncio.to_thread(blocking.get_status)
    assert status.instance_id == edge.instance_id


async def test_without_the_ca_the_python_client_says_the_certificate_is_not_trusted(edge: TlsEdge) -> None:
    started = time.monotonic()
    async with AsyncClient(edge.envoy.grpc_target, api_key=edge.api_key, tls=True, timeout=10) as client:
        with pytest.raises(UntrustedCertificate) as refused:
            await client.get_status()
    assert time.monotonic() - started < 5  # not retried: only another CA helps
    assert refused.value.reason == "TLS_CERTIFICATE_UNTRUSTED"
    assert "certificate is not trusted" in str(refused.value)
    assert "ca_cert" in str(refused.value)
    assert "--ca-cert" in str(refused.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)


async def _cli(edge: TlsEdge, *args: str, **env: str) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WALLWHALE_")}
    environ |= {"WALLWHALE_ADDRESS": edge.envoy.grpc_target, "WALLWHALE_API_KEY": edge.api_key} | env
    environ["XDG_CONFIG_HOME"] = str(edge.ca.parent / "no-config")
    process = await asyncio.create_subprocess_exec(
        CLI, *args, env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), " ".join(err.decode().split())  # unwrapped


async def test_the_cli_takes_the_ca_as_a_flag_or_from_the_environment(edge: TlsEdge) -> None:
    code, out, err = await _cli(edge, "--ca-cert", str(edge.ca), "--json", "status")
    assert code == 0, err
    assert edge.instance_id in out
    code, out, err = await _cli(edge, "--json", "status", WALLWHALE_CA_CERT=str(edge.ca))
    assert code == 0, err
    assert edge.instance_id in out
    code, out, err = await _cli(edge, "--tls", "status")
    assert code == 1, (out, err)
    assert "certificate is not trusted" in err, err
    assert "--ca-cert" in err, err
    code, out, err = await _cli(edge, "--ca-cert", str(edge.ca.parent / "missing.pem"), "status")
    assert code == 2, (out, err)
    assert "missing.pem" in err, err
    assert "no such file" in err, err
