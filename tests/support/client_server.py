"""The real server with the test DepotDownloader, for the client test suites of other languages.

    .venv/bin/python -m tests.support.client_server [--tls-envoy]

Prints one line `READY {json}` (address, admin API key, the items the fake Steam has, and each item's
files with their sha256) once the server serves, and runs until its standard input is closed. The server's
own log lines go to standard output too, before and after. With --tls-envoy the real Envoy serves TLS in
front of it with certificates from `wallwhale certs dev`: READY adds `tlsAddress` and `caCert` (the CA's
PEM file).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from tests.support.envoy import proxy_socket, running_envoy
from tests.support.harness import harness_for
from wallwhale import certs
from wallwhale.config import to_async_url

ITEM = 2831234567
MISSING_ITEM = 2831234568


async def main(tls_envoy: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="wallwhale-client-server-") as directory:
        url = to_async_url(f"sqlite:///{Path(directory) / 'wallwhale.sqlite3'}")
        async for harness in harness_for(url, Path(directory)):
            server = await harness.start(grpc_socket=proxy_socket())
            await harness.add_account("alice_we", "correct horse")
            # 600 kB of pseudo-random bytes: an archive of three 256 KiB chunks (the last one shorter).
            harness.steam.add_item(ITEM, files={"project.json": b'{"title": "Rain"}', "scene.pkg": 600_000})
            harness.steam.add_item(MISSING_ITEM, behaviour={"missing": True})
            ready = {
                "address": f"127.0.0.1:{server.port}",
                "apiKey": dict(harness.admin)["x-api-key"],
                "item": ITEM,
                "missingItem": MISSING_ITEM,
                "files": {
                    name: hashlib.sha256(data).hexdigest()
                    for name, data in harness.steam.expected_files(ITEM).items()
                },
            }
            if not tls_envoy:
                print("READY " + json.dumps(ready), flush=True)
                await asyncio.to_thread(sys.stdin.read)
                continue
            made = certs.make_dev_certificates(Path(directory) / "certs")
            tls = [f"--tls-cert={made.path('server.pem')}", f"--tls-key={made.path('server-key.pem')}"]
            async with running_envoy(Path(directory) / "envoy", [server.upstream], extra_args=tls) as envoy:
                ready |= {"tlsAddress": envoy.grpc_target, "caCert": str(made.path("ca.pem"))}
                print("READY " + json.dumps(ready), flush=True)
                await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main("--tls-envoy" in sys.argv[1:]))
