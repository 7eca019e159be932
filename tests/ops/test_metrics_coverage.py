"""Every series the Grafana dashboard and the alert rules query is served by a live server.

A real server (the test DepotDownloader, the fake Steam Web API) runs real jobs: successes, a cache
hit, and each failure class the engine tests provoke, permanent and transient, plus a Steam Guard
wait. Then its /metrics is scraped and every metric named in deploy/grafana/wallwhale.json and
deploy/prometheus/alerts.yml must be there, with the label values the expressions match on. The
names come from the expressions themselves, so a panel or rule added later is checked too.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.webapi import FakeWebApi
from tests.support.envoy import http, servers_behind_envoy
from tests.support.harness import Harness
from wallwhale.v1 import download_pb2

D = download_pb2
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "wallwhale.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Series Prometheus makes itself (`up`) or Envoy serves are not the server's to export.
NOT_OURS = re.compile(r"^(up|envoy_.*)$")
# A metric name, optionally followed by its matchers: {label="value", other!="x"}
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
EQUALS = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
# Words inside PromQL that look like names but are not metrics.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "increase", "irate", "histogram_quantile", "by",
    "without", "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "le", "instance", "job", "priority", "status", "outcome", "reason", "result", "method", "code",
    "source",
}  # fmt: skip


# How the test DepotDownloader (tests/fakes) fails, one case per failure class: (account, item behaviour).
FAILURE_CLASSES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"login_result": "InvalidPassword"}, {}),
    ({"login_result": "RateLimitExceeded"}, {}),
    ({"owns": ()}, {}),
    ({"guard": "authenticator"}, {}),  # nobody answers: a Steam Guard wait, then its timeout
    ({}, {"missing": True}),
    ({}, {"depot_key_denied": True}),
    ({}, {"zero_depots": True}),
    ({}, {"no_files": True}),
    ({}, {"disk_full": True}),
    ({}, {"file_details_access_denied": True}),
    ({}, {"manifest_401": True}),
    ({}, {"crash": True}),
    ({}, {"chunk_errors": True}),
]


def dashboard_expressions() -> list[str]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for panel in panels:
            yield from (target["expr"] for target in panel.get("targets", []))
            yield from walk(panel.get("panels", []))

    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def selectors(expression: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(metric name, its equality matchers) for each metric the expression reads."""
    without_ranges = re.sub(r"\[[^\]]*\]", "", expression)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges)
    for name, matchers in SELECTOR.findall(without_groupings):
        if name in PROMQL_WORDS or re.fullmatch(r"[0-9.e]+", name):
            continue
        # Only the names not followed by "(" are metrics (the rest are functions).
        yield name, dict(EQUALS.findall(re.sub(r'!=\s*"[^"]*"', "", matchers)))


@pytest.fixture
def web(harness: Harness) -> Iterator[FakeWebApi]:
    with FakeWebApi(harness.steam) as server:
        yield server


def test_the_expressions_name_the_metrics_they_use() -> None:
    """The parser below finds what it should (else the live check could pass on nothing)."""
    found = list(selectors('sum by (le) (rate(wallwhale_x_bucket{outcome="failed", code!="OK"}[5m])) > 0.5'))
    assert found == [("wallwhale_x_bucket", {"outcome": "failed"})]
    expressions = dashboard_expressions() + rule_expressions()
    names = {name for expression in expressions for name, _ in selectors(expression)}
    assert len(names) >= 20, names
    assert {"wallwhale_downloads_finished_total", "wallwhale_queue_oldest_age_seconds", "up"} <= names


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is missing")
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    # promtool parses recording rules' expressions: one rule per panel query.
    rules = [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(dashboard_expressions())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_imports_with_a_datasource_input() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    assert [entry["name"] for entry in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]


async def test_every_series_of_the_dashboard_and_the_rules_is_served(
    harness: Harness, web: FakeWebApi
) -> None:
    server = await harness.start(
        steam_web_api_url=web.base_url,
        steam_web_api_retry_seconds=0,
        max_attempts=2,
        chunk_error_limit=5,
        steam_guard_timeout_seconds=1.0,
    )
    jobs: list[str] = []

    async def job(case: int, account: dict[str, Any], behaviour: dict[str, Any], **item: Any) -> None:
        account_id = await harness.add_account(f"user{case}_we", "pw", **account)
        workshop_id = 2_900_000_000 + case
        harness.steam.add_item(workshop_id, behaviour=behaviour, **item)
        try:
            created = await harness.create(str(workshop_id), steam_account_id=account_id)
        except grpc.RpcError:
            return  # refused before queueing (Steam's Web API does not know the item): not a job
        jobs.append(created.id)

    for case, (account, behaviour) in enumerate([*FAILURE_CLASSES, ({}, {})]):  # the last succeeds
        await job(case, account, behaviour)
    finished = [await harness.wait_for(download_id, limit=60) for download_id in jobs]
    succeeded = [download for download in finished if download.state == D.DOWNLOAD_STATE_SUCCEEDED]
    assert succeeded, finished
    reasons = {
        D.FailureReason.Name(download.failure.reason).removeprefix("FAILURE_REASON_")
        for download in finished
        if download.state == D.DOWNLOAD_STATE_FAILED
    }
    assert len(reasons) >= 8, reasons
    await harness.fetch(succeeded[0].id)
    # The same content again: served from the archive cache.
    again = await harness.create(str(succeeded[0].workshop_id))
    assert again.from_cache

    assert server.metrics_server is not None
    url = f"http://127.0.0.1:{server.metrics_server.port}/metrics"
    # Off the event loop: the shared figures are read on it while the scrape waits.
    text = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())).decode()
    served: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            served.setdefault(sample.name, []).append(sample.labels)

    finished_series = served["wallwhale_downloads_finished_total"]
    failed = {labels["reason"] for labels in finished_series if labels["outcome"] == "failed"}
    assert reasons <= failed  # every failure is counted under its own reason
    missing = []
    for source, expressions in (("dashboard", dashboard_expressions()), ("rules", rule_expressions())):
        for expression in expressions:
            for name, wanted in selectors(expression):
                if NOT_OURS.match(name):
                    continue
                if not any(wanted.items() <= labels.items() for labels in served.get(name, [])):
                    missing.append(f"{source}: {name}{wanted or ''} in {expression}")
    assert not missing, "\n".join(missing)


async def test_envoys_metrics_are_on_its_loopback_admin_port(
    migrated_database_url: str, tmp_path: Path, admin: tuple[tuple[str, str], ...]
) -> None:
    async with servers_behind_envoy(tmp_path, migrated_database_url) as (envoy, _):
        reply = await http("GET", envoy.url("/v1/status"), headers=dict(admin))
        assert reply.status == 200
        text = await envoy.admin("/stats/prometheus")
        families = {family.name for family in text_string_to_metric_families(text)}
        # The per-route and per-upstream figures the README's scrape config collects.
        assert {"envoy_cluster_upstream_rq", "envoy_http_downstream_rq"} & families, sorted(families)[:50]
        dump = await envoy.config_dump()
        [bootstrap] = [c["bootstrap"] for c in dump["configs"] if c["@type"].endswith("BootstrapConfigDump")]
        assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
