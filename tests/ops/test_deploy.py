"""The deployment files: the Kubernetes manifests against Kubernetes' own schemas (kubernetes-validate,
offline, strict), deploy/compose.yaml against the Compose specification's schema (check-jsonschema's
copy, offline), what each must promise (probes, secrets, budgets, one public port), and Envoy's
configuration as compose and Kubernetes render it: servers named, not numbered (STRICT_DNS).

The image itself is built and started by scripts/image_check.sh (minutes, not in CI)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support import REPO_ROOT
from tests.support.envoy import http, running_envoy
from wallwhale.app import LIVENESS, WallWhaleServer

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
COMPOSE = REPO_ROOT / "deploy" / "compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests promise (gRPC probes are GA in 1.27)
SECRETS = {"WALLWHALE_SECRET_KEY", "WALLWHALE_JWT_SECRET", "WALLWHALE_DATABASE_URL"}


def _documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _documents() if doc["kind"] == kind]


def _image_users() -> dict[str, int]:
    """The numeric USER of each final stage of the Dockerfile."""
    users, stage = {}, ""
    for line in DOCKERFILE.read_text().splitlines():
        if match := re.match(r"FROM \S+ AS (\S+)", line):
            stage = match.group(1)
        elif match := re.match(r"USER (\d+):", line):
            users[stage] = int(match.group(1))
    return users


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, kubernetes_validate.utils.latest_version()])
def test_manifests_pass_the_kubernetes_schemas(version: str) -> None:
    documents = _documents()
    assert {doc["kind"] for doc in documents} >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "Job",
        "PersistentVolumeClaim",
    }
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_schema_check_fails_on_a_wrong_field() -> None:
    (deployment,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == "wallwhale"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["prot"] = 50051
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_server_pods_probe_grpc_health_request_resources_and_read_secrets() -> None:
    (server,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == "wallwhale"]
    pod = server["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["grpc"] == {"port": 50051}  # service "": the database answers
    assert container["startupProbe"]["grpc"] == {"port": 50051}
    assert container["livenessProbe"]["grpc"] == {"port": 50051, "service": LIVENESS}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    from_secrets = {env["name"] for env in container["env"] if "secretKeyRef" in env.get("valueFrom", {})}
    assert from_secrets == SECRETS
    assert not _of_kind("Secret"), "secrets are made by the operator, never committed"
    assert pod["securityContext"]["runAsUser"] == _image_users()["server"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # Every pod disruption budget covers a Deployment's pods.
    selectors = [d["spec"]["selector"]["matchLabels"] for d in _of_kind("Deployment")]
    budgets = [b["spec"]["selector"]["matchLabels"] for b in _of_kind("PodDisruptionBudget")]
    assert sorted(map(str, budgets)) == sorted(map(str, selectors))


def test_envoy_pods_run_as_the_envoy_image_user_and_name_the_headless_service() -> None:
    (envoy,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == "wallwhale-envoy"]
    pod = envoy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == _image_users()["envoy"]
    upstreams = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}["WALLWHALE_UPSTREAMS"]
    (headless,) = [s for s in _of_kind("Service") if s["spec"].get("clusterIP") == "None"]
    assert upstreams.startswith(f"{headless['metadata']['name']}.")


def test_compose_file_passes_the_compose_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_publishes_only_envoy_and_reads_secrets_from_env_files() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "server-1", "server-2", "envoy"}
    assert [name for name, service in services.items() if service.get("ports")] == ["envoy"]
    for name in ("server-1", "server-2"):
        server = services[name]
        assert server["env_file"] == ["wallwhale.env"]
        assert not SECRETS & set(server["environment"]), "secrets only from the env file"
        assert server["build"]["target"] == "server"
    assert services["postgres"]["env_file"] == ["postgres.env"]
    # The servers believe x-forwarded-for only from Envoy's fixed address.
    envoy_address = services["envoy"]["networks"]["wallwhale"]["ipv4_address"]
    assert services["server-1"]["environment"]["WALLWHALE_TRUSTED_PROXIES"] == f"{envoy_address}/32"
    upstreams = services["envoy"]["environment"]["WALLWHALE_UPSTREAMS"].split(",")
    assert upstreams == ["server-1:50051", "server-2:50051"]
    # The examples name every secret the servers need; the real files stay out of git.
    example = (REPO_ROOT / "deploy" / "wallwhale.env.example").read_text()
    assert {line.split("=")[0] for line in example.splitlines() if re.match(r"[A-Z_]+=", line)} == SECRETS
    assert "/deploy/*.env" in (REPO_ROOT / ".gitignore").read_text().splitlines()


async def test_envoy_finds_a_server_by_name_and_routes_to_it(server: WallWhaleServer, tmp_path: Path) -> None:
    """As in compose (server-1:50051) and Kubernetes (the headless Service): a name, resolved by DNS."""
    async with running_envoy(
        tmp_path / "envoy", [], extra_args=[f"--upstream=localhost:{server.port}"], wait_healthy=False
    ) as envoy:
        config = (tmp_path / "envoy" / "envoy.yaml").read_text()
        assert config.count("type: STRICT_DNS") == 2  # both clusters: calls and archives
        await envoy.wait_healthy([server.port])
        ready = await http("GET", envoy.url("/readyz"))
        assert ready.status == 200, ready.body
