"""Builds the server image with podman and runs it from its own file system (scripts/image_check.sh).

Where Docker Hub cannot be reached, the base image is made here: `debootstrap --variant=minbase
bookworm` with python3 and python3-venv, imported with `podman import` (kept for the next run). The
image is built with `podman build --isolation=chroot` from the Dockerfile, with DepotDownloader put
in by `wallwhale depotdownloader install` at build time: a release zip of the test DepotDownloader
(the simulator's, server/wallwhale_simulator/depotdownloader.py), served from 127.0.0.1 with
its sha256 given as a build argument.

`podman run` cannot start containers in this sandbox (crun cannot set rlimits), so the check runs
the image's entry point the way the runtime would: in the container's mounted file system (`podman
mount`), in new mount and PID namespaces, chrooted, as the image's user, with the image's
environment. It then checks that the server migrates a fresh PostgreSQL database, answers gRPC
health (through the image's own HEALTHCHECK command), and serves a download end to end through the
Python client; and that a SIGTERM stops it with exit 0.

The apt mirror and the pip index come from this machine's configuration at run time
(/etc/apt/sources.list*, `pip config list`), never from the repository.
"""

# ruff: noqa: S607 - podman, tar, unshare and chroot are the machine's own, found on PATH
from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.steam import FakeSteam  # noqa: E402
from tests.support.database import POSTGRES_ADMIN_URL  # noqa: E402

BASE_IMAGE = "localhost/wallwhale-check-base:bookworm"
NODE_IMAGE = "localhost/wallwhale-check-node:bookworm"
IMAGE = "localhost/wallwhale:check"
ENVOY_IMAGE = "localhost/wallwhale-envoy:check"
FAKE_DEPOTDOWNLOADER = ROOT / "server" / "wallwhale_simulator" / "depotdownloader.py"
DD_VERSION = "3.4.0"
WORLD_DIR = "/tmp/fake-steam"  # noqa: S108 - inside the image's file system, not this machine's
ITEM = 2_900_000_001


def step(message: str) -> None:
    print(f"[image-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def apt_mirror() -> str:
    """The archive this machine's apt uses for Debian bookworm's main suite (not -security)."""
    sources = Path("/etc/apt")
    files = [sources / "sources.list", *sorted(sources.glob("sources.list.d/*"))]
    for path in (p for p in files if p.is_file() and p.suffix in ("", ".list", ".sources")):
        text = path.read_text()
        entries = [  # (uri, suites) from one-line entries and from deb822 stanzas
            (m.group(1), m.group(2))
            for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.MULTILINE)
        ]
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites:
                entries.append((uris.group(1), suites.group(1)))
        for uri, suites in entries:
            if "bookworm" in suites.split() and not uri.rstrip("/").endswith("-security"):
                return uri.rstrip("/")
    raise SystemExit("no Debian bookworm archive in /etc/apt/sources.list*: debootstrap needs one")


def pip_settings() -> dict[str, str]:
    """pip's own configuration on this machine: index URLs (network ones only), trusted hosts, CA."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    config: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        config[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    for name in ("index-url", "extra-index-url", "trusted-host", "cert"):
        env = os.environ.get(f"PIP_{name.upper().replace('-', '_')}")
        if env:
            config[name] = env
    settings = {}
    for name in ("index-url", "extra-index-url"):
        urls = [u for u in config.get(name, "").split() if u.startswith(("http://", "https://"))]
        if urls:
            settings[f"PIP_{name.upper().replace('-', '_')}"] = " ".join(urls)
    if config.get("trusted-host"):
        settings["PIP_TRUSTED_HOST"] = config["trusted-host"]
    cert = config.get("cert") or "/etc/ssl/certs/ca-certificates.crt"
    if Path(cert).is_file():
        settings["cert"] = cert
    return settings


def ensure_base(mirror: str) -> None:
    if subprocess.run(["podman", "image", "exists", BASE_IMAGE], check=False).returncode == 0:
        step(f"base image {BASE_IMAGE} is there (podman rmi it to make it again)")
        return
    step(f"debootstrap --variant=minbase bookworm from {mirror}")
    with tempfile.TemporaryDirectory(prefix="wallwhale-base-") as folder:
        rootfs = Path(folder) / "rootfs"
        run(
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
            mirror,
            stdout=subprocess.DEVNULL,
        )
        # What the official slim images leave out too: package lists and caches, docs, translations.
        for leftover in (
            "var/cache/apt",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
            "usr/share/info",
        ):
            for path in (rootfs / leftover).glob("*"):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        step(f"podman import -> {BASE_IMAGE}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run("podman", "import", "-", BASE_IMAGE, stdin=tar.stdout, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise SystemExit("tar of the base file system failed")


def release_zip() -> bytes:
    """A DepotDownloader release as `wallwhale depotdownloader install` expects it, holding the test
    DepotDownloader: a launcher that points it at the fake Steam's world inside the image."""
    launcher = (
        "#!/bin/sh\n"
        "# The simulator's DepotDownloader (server/wallwhale_simulator/depotdownloader.py) against the\n"
        "# fake Steam of scripts/image_check.py.\n"
        'here=$(dirname "$(readlink -f "$0")")\n'
        "# No world yet (the -V of the install at build time): an empty Steam.\n"
        f"world={WORLD_DIR}/world.json\n"
        '[ ! -f "$world" ] || export FAKE_STEAM_WORLD="$world"\n'
        "export PYTHONCOERCECLOCALE=0\n"
        'exec python3 "$here/depotdownloader.py" "$@"\n'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("DepotDownloader", launcher)
        bundle.write(FAKE_DEPOTDOWNLOADER, "depotdownloader.py")
    return buffer.getvalue()


@contextmanager
def release_server(body: bytes) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != f"/DepotDownloader_{DD_VERSION}/DepotDownloader-linux-x64.zip":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def ensure_node_base() -> None:
    """The web stage's NODE_IMAGE: the base image with this machine's Node and npm copied in."""
    if subprocess.run(["podman", "image", "exists", NODE_IMAGE], check=False).returncode == 0:
        return
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SystemExit("node and npm are needed for the envoy image's web stage (or pass --server-only)")
    step(f"{NODE_IMAGE}: the base image with this machine's node and npm")
    with tempfile.TemporaryDirectory(prefix="wallwhale-node-") as folder:
        context = Path(folder)
        shutil.copy2(Path(node).resolve(), context / "node")
        shutil.copytree(Path(npm).resolve().parents[1], context / "npm", symlinks=True)
        (context / "Containerfile").write_text(
            f"FROM {BASE_IMAGE}\n"
            "COPY node /usr/local/bin/node\n"
            "COPY npm /usr/local/lib/node_modules/npm\n"
            "RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm"
            " && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx\n"
        )
        run(
            "podman",
            "build",
            "--isolation=chroot",
            "--force-rm",
            f"--tag={NODE_IMAGE}",
            str(context),
            stdout=subprocess.DEVNULL,
        )


def build(mirror: str, target: str, tag: str) -> float:
    pip = pip_settings()
    body = release_zip()
    started = time.monotonic()
    with release_server(body) as url:
        argv = [
            "podman",
            "build",
            "--isolation=chroot",
            "--network=host",
            "--format=docker",
            "--force-rm",
            # The server is the last stage: built as a plain `docker build` would, without --target.
            *([f"--target={target}"] if target != "server" else []),
            f"--tag={tag}",
            f"--build-arg=BASE_IMAGE={BASE_IMAGE}",
            f"--build-arg=DEBIAN_MIRROR={mirror}",
            f"--build-arg=DEPOTDOWNLOADER_VERSION={DD_VERSION}",
            f"--build-arg=DEPOTDOWNLOADER_URL={url}",
            f"--build-arg=DEPOTDOWNLOADER_SHA256={hashlib.sha256(body).hexdigest()}",
        ]
        argv += [f"--build-arg={k}={v}" for k, v in pip.items() if k != "cert"]
        if target == "envoy":
            registry = subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True)
            argv += [
                f"--build-arg=NODE_IMAGE={NODE_IMAGE}",
                f"--build-arg=NPM_REGISTRY={registry.stdout.strip()}",
            ]
        if "cert" in pip:
            argv.append(f"--secret=id=ca-bundle,src={pip['cert']}")
        chosen = f"--target={target}" if target != "server" else "(no --target: the last stage)"
        step(f"podman build --isolation=chroot {chosen} -> {tag} (log: the lines below)")
        run(*argv, str(ROOT))
    return time.monotonic() - started


def inspect(image: str) -> dict[str, Any]:
    data = json.loads(run("podman", "image", "inspect", image, capture_output=True).stdout)[0]
    config = data["Config"]
    return {
        "size": int(data["Size"]),
        "user": config.get("User"),
        "entrypoint": config.get("Entrypoint"),
        "cmd": config.get("Cmd"),
        "volumes": sorted(config.get("Volumes") or {}),
        "env": config.get("Env") or [],
        "healthcheck": (data.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test"),
        "workdir": config.get("WorkingDir"),
    }


def check_contents(rootfs: Path) -> None:
    """No build tools in the final image."""
    present = [
        tool
        for tool in (
            "usr/bin/gcc",
            "usr/bin/cc",
            "usr/bin/make",
            "opt/wallwhale/bin/pip",
            "usr/bin/npm",
            "usr/bin/node",
        )
        if (rootfs / tool).exists()
    ]
    lists = list((rootfs / "var/lib/apt/lists").glob("*_Packages"))
    if present or lists:
        raise SystemExit(f"build tools or apt lists in the final image: {present + [str(p) for p in lists]}")
    if not (rootfs / "opt/depotdownloader/DepotDownloader").exists():
        raise SystemExit("DepotDownloader was not installed into the image")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Chroot:
    """The image's file system, entered as the container runtime would enter it."""

    def __init__(self, rootfs: Path, env: dict[str, str], user: str):
        self.rootfs = rootfs
        self.env = env
        self.user = user

    def argv(self, *command: str) -> list[str]:
        # A private mount namespace (the mounts go when it ends) and a PID namespace in which the
        # entry point is PID 1, as in a container; the network stays this machine's.
        enter = (
            'root="$1"; user="$2"; shift 2; '
            'mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" '
            '&& exec chroot --userspec="$user" "$root" "$@"'
        )
        return [
            "unshare",
            "--mount",
            "--pid",
            "--fork",
            "--propagation",
            "private",
            "sh",
            "-c",
            enter,
            "sh",
            str(self.rootfs),
            self.user,
            *command,
        ]

    def run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*command), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self, *command: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                self.argv(*command),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def describe(image: str, facts: dict[str, Any]) -> None:
    step(
        f"image {image}: {facts['size'] / 1e6:.0f} MB, user {facts['user']}, entrypoint "
        f"{facts['entrypoint']} {facts['cmd'] or ''}, volumes {facts['volumes']}, "
        f"healthcheck {facts['healthcheck']}"
    )
    if facts["user"] in (None, "", "0", "root"):
        raise SystemExit(f"{image} must run as a non-root user")


def wait_for(what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path) -> float:
    began = time.monotonic()
    while not ready():
        if process.poll() is not None or time.monotonic() - began > 120:
            print(log.read_text()[-4000:], file=sys.stderr)
            raise SystemExit(f"{what}: not ready (exit code {process.poll()})")
        time.sleep(0.5)
    return time.monotonic() - began


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our own 127.0.0.1
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.headers.get("content-type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("content-type", ""), error.read()
    except OSError:
        return 0, "", b""


def stop(name: str, process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    code = process.wait(timeout=60)
    if code != 0:
        raise SystemExit(f"SIGTERM: {name} exited with {code}")
    step(f"SIGTERM: {name} stopped, exit 0")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server-only", action="store_true", help="build and check the server image only")
    args = parser.parse_args()
    started = time.monotonic()
    if os.geteuid() != 0:
        raise SystemExit("image_check needs root (podman build, mount, chroot)")
    for tool in ("podman", "debootstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install podman debootstrap")
    mirror = apt_mirror()
    ensure_base(mirror)
    build_seconds = build(mirror, "server", IMAGE)
    facts = inspect(IMAGE)
    describe(IMAGE, facts)
    if facts["healthcheck"] is None:
        raise SystemExit("the server image must carry a health check")
    envoy_facts: dict[str, Any] | None = None
    if not args.server_only:
        ensure_node_base()
        build_seconds += build(mirror, "envoy", ENVOY_IMAGE)
        envoy_facts = inspect(ENVOY_IMAGE)
        describe(ENVOY_IMAGE, envoy_facts)

    import psycopg
    from alembic.script import ScriptDirectory
    from psycopg import sql

    containers: list[str] = []
    processes: list[subprocess.Popen[bytes]] = []
    database = f"wallwhale_image_{secrets.token_hex(4)}"
    base_url = POSTGRES_ADMIN_URL.rpartition("/")[0]
    work = Path(tempfile.mkdtemp(prefix="wallwhale-image-check-"))

    def mounted(image: str) -> Path:
        containers.append(run("podman", "create", image, capture_output=True).stdout.strip())
        return Path(run("podman", "mount", containers[-1], capture_output=True).stdout.strip())

    try:
        rootfs = mounted(IMAGE)
        check_contents(rootfs)
        steam = FakeSteam(rootfs / WORLD_DIR.lstrip("/"))
        steam.add_account("alice_we", "correct horse")
        steam.add_item(ITEM, files={"project.json": b'{"title": "Image check"}', "scene.pkg": 250_000})
        steam.add_item(ITEM + 1, files={"project.json": b'{"title": "Through Envoy"}', "scene.pkg": 90_000})
        for path in (steam.directory, *steam.directory.iterdir()):
            shutil.chown(path, 10001, 10001)
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))

        grpc_port, metrics_port = free_port(), free_port()
        env = dict(entry.split("=", 1) for entry in facts["env"])
        env.update(
            HOME="/var/lib/wallwhale",
            WALLWHALE_DATABASE_URL=f"{base_url}/{database}",
            WALLWHALE_SECRET_KEY=b64encode(secrets.token_bytes(32)).decode(),
            WALLWHALE_JWT_SECRET=secrets.token_urlsafe(48),
            WALLWHALE_GRPC_PORT=str(grpc_port),
            WALLWHALE_METRICS_PORT=str(metrics_port),
            WALLWHALE_STEAM_WEB_API_URL="",
            WALLWHALE_LOG_FORMAT="console",
        )
        chroot = Chroot(rootfs, env, facts["user"])
        entry = [*facts["entrypoint"], *facts["cmd"]]
        step(f"starting the entry point {entry} in the image's file system (gRPC :{grpc_port})")
        server_log = work / "server.log"
        processes.append(server := chroot.start(*entry, log=server_log))
        health = facts["healthcheck"][1:]  # ["CMD", ...]
        seconds = wait_for(
            "server", lambda: chroot.run(*health, timeout=30).returncode == 0, server, server_log
        )
        step(f"healthy after {seconds:.1f} s: {chroot.run(*health).stdout.strip()} (the image's HEALTHCHECK)")

        with psycopg.connect(f"{base_url}/{database}") as connection:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        head = ScriptDirectory(str(ROOT / "migrations")).get_current_head()
        if row is None or row[0] != head:
            raise SystemExit(f"the database is at {row}, not at the head {head}")
        step(f"migrated to {head}")

        made = chroot.run("wallwhale", "bootstrap", "--json")
        if made.returncode != 0:
            raise SystemExit(f"bootstrap failed: {made.stderr}")
        api_key = json.loads(made.stdout.strip().splitlines()[-1])["api_key"]
        doctor = chroot.run("wallwhale", "doctor", "--json")
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        step(f"doctor: {next(c['detail'] for n, c in checks.items() if 'depotdownloader' in n.lower())}")
        sandbox = re.search(r"[^\n]*(?:sandbox|bwrap|bubblewrap)[^\n]*", server_log.read_text(), re.I)
        step(f"DepotDownloader's confinement: {sandbox.group(0).strip()[:200] if sandbox else 'not logged'}")

        from wallwhale_client import Client

        def download(address: str, item: int) -> None:
            with Client(address, api_key=api_key) as client:
                path = client.download(str(item), work)
            with zipfile.ZipFile(path) as archive:
                got = {name: archive.read(name) for name in archive.namelist()}
            if got != steam.expected_files(item):
                raise SystemExit(f"the archive of {item} holds {sorted(got)}")
            step(
                f"download via {address}: {path.name}, {len(got)} files, {sum(map(len, got.values()))} bytes"
            )

        with Client(f"127.0.0.1:{grpc_port}", api_key=api_key) as client:
            client.create_steam_account("alice_we", "correct horse")
        download(f"127.0.0.1:{grpc_port}", ITEM)

        if envoy_facts is not None:
            envoy_root = mounted(ENVOY_IMAGE)
            http_port, admin_port = free_port(), free_port()
            envoy_env = dict(entry.split("=", 1) for entry in envoy_facts["env"])
            envoy_env.update(
                HOME="/tmp",  # noqa: S108 - inside the image
                WALLWHALE_UPSTREAMS=f"localhost:{grpc_port}",
                ENVOY_LISTEN=f"127.0.0.1:{http_port}",
                ENVOY_ADMIN_PORT=str(admin_port),
                ENVOY_LOG_LEVEL="warn",
            )
            envoy = Chroot(envoy_root, envoy_env, envoy_facts["user"])
            step(
                f"starting the Envoy image's entry point (HTTP :{http_port}, upstream localhost:{grpc_port})"
            )
            envoy_log = work / "envoy.log"
            processes.append(edge := envoy.start(*envoy_facts["entrypoint"], log=envoy_log))
            base = f"http://127.0.0.1:{http_port}"
            seconds = wait_for("envoy", lambda: get(f"{base}/readyz")[0] == 200, edge, envoy_log)
            step(f"Envoy ready after {seconds:.1f} s (its config rendered at start)")
            status, kind, page = get(f"{base}/")
            if status != 200 or "text/html" not in kind or b"<script" not in page:
                raise SystemExit(f"the console at /: {status} {kind}")
            status, kind, _ = get(f"{base}/v1/status", {"x-api-key": api_key})
            if status != 200 or "json" not in kind:
                raise SystemExit(f"GET /v1/status through Envoy: {status} {kind}")
            step("through Envoy: the console at / (text/html), GET /v1/status 200 (REST)")
            # deploy/compose.yaml's health check of Envoy, run in the Envoy image (its port moved).
            import yaml

            compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
            test = compose["services"]["envoy"]["healthcheck"]["test"][1:]
            test = [part.replace("127.0.0.1:8080", f"127.0.0.1:{http_port}") for part in test]
            probe = envoy.run(*test)
            if probe.returncode != 0:
                raise SystemExit(f"compose's Envoy health check fails in the image: {probe.stderr}")
            step("compose's Envoy health check passes inside the Envoy image")
            download(f"127.0.0.1:{http_port}", ITEM + 1)
            stop("envoy", edge)
        stop("the server", server)
        step(
            f"done in {time.monotonic() - started:.0f} s (builds {build_seconds:.0f} s); image sizes: "
            f"server {facts['size'] / 1e6:.0f} MB"
            + (f", envoy {envoy_facts['size'] / 1e6:.0f} MB" if envoy_facts else "")
        )
        return 0
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for container in containers:
            subprocess.run(["podman", "umount", container], check=False, capture_output=True)
            subprocess.run(["podman", "rm", "--force", container], check=False, capture_output=True)
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
