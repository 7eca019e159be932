"""The cost of tracing on the REST read: GET /v1/downloads/{id} through Envoy, tracing off vs on.

    apt-get install -y wrk
    .venv/bin/python bench/trace_cost.py [--rounds 5] [--seconds 5] [--connections 32]

Three stacks, each a `wallwhale serve` process (its own SQLite database and a real SUCCEEDED download
run by the test DepotDownloader) with Envoy in front, rendered by scripts/envoy_config.py:
  off   no WALLWHALE_OTLP_ENDPOINT, Envoy without a tracer (the default)
  on    the server with WALLWHALE_OTLP_ENDPOINT and Envoy with --otlp-endpoint: every request is
        sampled; Envoy's span and the RPC's span are exported over OTLP/gRPC
  10%   the same with WALLWHALE_OTLP_SAMPLE_RATIO=0.1 and Envoy's --trace-sampling 10 (as run.sh
        renders it): one request in ten traced, the others carry an unsampled traceparent
  edge, server (with --stacks): only Envoy's tracer, or only the server's spans, to see which costs
Both export to one OTLP receiver in this process (tests/support/otlp.py, counting only), so the
figures include the export, not a collector's work. The two are measured in turn, the order
swapped every round so that drift hits both alike; the ratio is of the medians of this run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from support import (  # isort: skip
    ENVOY_SOURCE,
    ServerProcess,
    command,
    machine,
    require,
    server_env,
    start_envoy,
    succeeded_download,
)

from tests.fakes.steam import FakeSteam
from tests.support.otlp import OtlpReceiver

ITEM = 2_960_000_001


@dataclass(frozen=True)
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    failed: int
    # CPU time per request (user + system) of the server process and of Envoy, over the measured
    # seconds and the warm-up: steadier than req/s when other work shares the machine.
    server_cpu_ms: float = float("nan")
    envoy_cpu_ms: float = float("nan")


def wrk(args: argparse.Namespace, port: int, path: str, key: str) -> Result:
    def load(seconds: float) -> str:
        return subprocess.run(
            [
                require("wrk", "wrk"),
                "-t",
                "1",
                "-c",
                str(args.connections),
                "-d",
                f"{max(1, round(seconds))}s",
                "--latency",
                "-H",
                f"x-api-key: {key}",
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    if args.warmup:
        load(args.warmup)
    out = load(args.seconds)
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if not total:
        raise SystemExit(f"bench: cannot read wrk's output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    seconds = float(total[2]) / (1000 if total[3] == "ms" else 1)
    failed = int(bad[1]) if bad else 0
    return Result((int(total[1]) - failed) / seconds, _latency(out, "50%"), _latency(out, "99%"), failed)


def process_cpu_seconds(process: subprocess.Popen[bytes] | None) -> float:
    """User + system CPU seconds of a child process so far (Linux /proc)."""
    assert process is not None
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _latency(out: str, label: str) -> float:
    found = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if not found:
        return float("nan")
    return float(found[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found[2]]


@dataclass
class Stack:
    name: str
    server: ServerProcess
    envoy: subprocess.Popen[bytes] | None = None
    port: int = 0
    key: str = ""
    path: str = ""


# Each stack: (the server's share of calls traced, Envoy's), None where tracing is off.
STACKS: dict[str, tuple[float | None, float | None]] = {
    "off": (None, None),
    "on": (100.0, 100.0),
    "10%": (10.0, 10.0),
    "edge": (None, 100.0),  # Envoy's tracer only: where the cost is
    "server": (100.0, None),  # the server's spans only (Envoy passes no traceparent)
}


async def start_stack(name: str, directory: Path, receiver: OtlpReceiver) -> Stack:
    """A server and its Envoy, traced as STACKS[name] says."""
    percent, edge_percent = STACKS[name]
    traced = percent is not None
    (directory / "data").mkdir(parents=True)
    steam = FakeSteam(directory / "steam")
    steam.set(time_scale=0.01)
    tracing = {"otlp_endpoint": receiver.endpoint, "otlp_sample_ratio": f"{(percent or 0) / 100:g}"}
    if not traced:
        tracing = {}
    env = server_env(
        directory / "data",
        f"sqlite:///{directory / 'data' / 'wallwhale.sqlite3'}",
        depotdownloader_path=str(steam.executable),
        # The test DepotDownloader keeps its Steam world there: its sandbox must let it write.
        depotdownloader_writable=str(steam.directory.resolve()),
        trusted_proxies=ENVOY_SOURCE,
        **tracing,
    )
    stack = Stack(name, ServerProcess(directory, env))
    stack.server.cli("migrate")
    bootstrap = stack.server.cli("bootstrap", "--json", "--email", "bench@example.test")
    stack.key = json.loads(bootstrap)["api_key"]
    await stack.server.start()
    steam.add_item(ITEM)
    try:
        download = await succeeded_download(stack.server.port, (("x-api-key", stack.key),), steam, ITEM, 60)
    except SystemExit:
        print(stack.server.log_tail(40))
        raise
    stack.path = f"/v1/downloads/{download.id}"
    extra = []
    if edge_percent is not None:
        extra = ["--otlp-endpoint", receiver.endpoint, f"--trace-sampling={edge_percent:g}"]
    stack.envoy, stack.port = start_envoy(directory / "envoy", stack.server.port, extra_args=extra)
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.port}{stack.path}", headers={"x-api-key": stack.key}
    )
    for attempt in range(50):  # Envoy's listener may open a moment after its health checks pass
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310, ASYNC210 - before measuring
                body = json.loads(reply.read())
            break
        except urllib.error.URLError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)
    if body["download"]["state"] != "DOWNLOAD_STATE_SUCCEEDED":
        raise SystemExit(f"bench: unexpected reply {body}")
    return stack


async def stop_stack(stack: Stack) -> None:
    if stack.envoy is not None:
        stack.envoy.send_signal(signal.SIGTERM)
        await asyncio.to_thread(stack.envoy.wait, 30)
    await stack.server.stop()


async def run(args: argparse.Namespace) -> None:
    require("wrk", "wrk")
    with (
        tempfile.TemporaryDirectory(prefix="wallwhale-bench-") as temporary,
        OtlpReceiver(keep=False) as receiver,
    ):
        directory = Path(temporary)
        stacks: list[Stack] = []
        try:
            for name in args.stacks.split(","):
                stacks.append(await start_stack(name, directory / name.strip("%"), receiver))
            await asyncio.sleep(1)  # the first health checks and audit flushes settle
            print(
                f"GET /v1/downloads/{{id}} through Envoy (REST, HTTP/1.1 keep-alive), wrk {args.connections}"
                f" connections, {args.rounds} rounds of {args.seconds:g}s after {args.warmup:g}s warm-up,"
                " SQLite, server log level INFO",
                flush=True,
            )
            results: dict[str, list[Result]] = {stack.name: [] for stack in stacks}
            spans_on = 0
            requests_on = 0
            for number in range(1, args.rounds + 1):
                order = stacks[number % len(stacks) :] + stacks[: number % len(stacks)]  # each first in turn
                for stack in order:
                    before = receiver.received
                    cpu = (stack.server.cpu_seconds(), process_cpu_seconds(stack.envoy))
                    result = await asyncio.to_thread(wrk, args, stack.port, stack.path, stack.key)
                    served = result.rate * (args.seconds + args.warmup)
                    result = dataclasses.replace(
                        result,
                        server_cpu_ms=(stack.server.cpu_seconds() - cpu[0]) * 1000 / served,
                        envoy_cpu_ms=(process_cpu_seconds(stack.envoy) - cpu[1]) * 1000 / served,
                    )
                    results[stack.name].append(result)
                    # The last batches leave before the next measurement, whichever stack it is.
                    await asyncio.sleep(3)
                    if stack.name == "on":
                        spans_on += receiver.received - before
                        requests_on += round(result.rate * (args.seconds + args.warmup))
                    print(
                        f"  round {number} {stack.name:<4} {result.rate:8.0f} req/s"
                        f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
                        f"  CPU/request: server {result.server_cpu_ms:.2f} ms,"
                        f" Envoy {result.envoy_cpu_ms:.2f} ms"
                        f"  ({result.failed} failed)",
                        flush=True,
                    )
        finally:
            for stack in stacks:
                await stop_stack(stack)
    median = {
        name: Result(*(statistics.median(getattr(r, f) for r in rs) for f in Result.__dataclass_fields__))
        for name, rs in results.items()
    }
    print()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    print(
        f"{'tracing':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'server CPU ms/req':>18} {'Envoy CPU ms/req':>17}"
    )
    for name, value in median.items():
        print(
            f"{name:<8} {value.rate:>8.0f} {value.p50_ms:>8.2f} {value.p99_ms:>8.2f}"
            f" {value.server_cpu_ms:>18.3f} {value.envoy_cpu_ms:>17.3f}"
        )
    print("(medians of the rounds)")
    off = median["off"]
    for name in [name for name in median if name != "off"]:
        print(
            f"throughput {name} / off: {median[name].rate / median['off'].rate:.2f};"
            f" p50 {name} - off: {median[name].p50_ms - median['off'].p50_ms:+.2f} ms;"
            f" CPU per request {name} - off: server {median[name].server_cpu_ms - off.server_cpu_ms:+.3f} ms,"
            f" Envoy {median[name].envoy_cpu_ms - off.envoy_cpu_ms:+.3f} ms"
        )
    # Warm-ups are traced too: this counts spans per measured request, roughly (Envoy's + the RPC's).
    if "on" in median:
        print(f"spans received per request while on: {spans_on / max(1, requests_on):.2f} (about 2 expected)")
    if any(r.failed for rs in results.values() for r in rs):
        print("WARNING: some requests failed; see the rounds above")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--stacks", default="off,on,10%", help=f"which, comma-separated, 'off' first: {', '.join(STACKS)}"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured per stack and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (requests in flight)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
