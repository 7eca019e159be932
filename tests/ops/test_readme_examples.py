"""The README cannot drift from the product: `scripts/run.sh --demo` starts the demo stack (the
server, Envoy and the Steam simulator), and every README block marked `<!-- runnable -->` (bash,
Python) or `<!-- runnable: PATH -->` (TypeScript, saved to PATH and run with node) runs against it
as written, in order, from a folder that has the checkout's `.venv`, `clients` and `node_modules`
(issue 16). The commands the demo prints are the README's, `wallwhale doctor` against the demo exits
0, and the curl example ends with a zip whose sha256 is the server's x-archive-sha256."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO_ROOT
from tests.support.envoy import free_port

pytestmark = pytest.mark.slow

README = REPO_ROOT / "README.md"
_MARKED = re.compile(r"<!-- runnable(?::\s*(?P<path>\S+))?\s*-->\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.S)


@dataclass(frozen=True)
class Example:
    lang: str
    code: str
    path: str | None  # where a TypeScript block is saved, relative to the working folder
    line: int

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def runnable_examples(text: str) -> list[Example]:
    return [
        Example(m["lang"], m["code"], m["path"], text.count("\n", 0, m.start()) + 1)
        for m in _MARKED.finditer(text)
    ]


def test_the_readme_marks_examples_of_every_kind() -> None:
    examples = runnable_examples(README.read_text())
    assert {example.lang for example in examples} >= {"bash", "python", "ts"}
    assert all(example.path for example in examples if example.lang == "ts")
    assert not {example.lang for example in examples} - {"bash", "python", "ts"}


def test_the_demo_refuses_a_data_directory_that_is_not_a_demo(tmp_path: Path) -> None:
    (tmp_path / "wallwhale.sqlite3").write_text("")
    done = subprocess.run(
        ["bash", "scripts/run.sh", "--demo"],  # noqa: S607 (bash from PATH, as a person runs it)
        cwd=REPO_ROOT,
        env={**os.environ, "WALLWHALE_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "not a demo's" in done.stderr
    assert "WALLWHALE_DATA_DIR" in done.stderr
    assert (tmp_path / "wallwhale.sqlite3").exists()


@pytest.mark.timeout(900)
def test_every_runnable_readme_example_runs_against_the_demo(tmp_path: Path) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required (the TypeScript example)")
    data, work = tmp_path / "demo", tmp_path / "work"
    work.mkdir()
    for name in (".venv", "clients", "node_modules"):
        (work / name).symlink_to(REPO_ROOT / name)
    envoy_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WALLWHALE_")},
        "WALLWHALE_SKIP_SETUP": "1",
        "WALLWHALE_DATA_DIR": str(data),
        "WALLWHALE_GRPC_PORT": str(free_port()),
        "WALLWHALE_METRICS_PORT": str(free_port()),
        "WALLWHALE_ENVOY_PORT": str(envoy_port),
        "WALLWHALE_ENVOY_ADMIN_PORT": str(free_port()),
    }
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["bash", "scripts/run.sh", "--demo"],  # noqa: S607
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while "Stop with Ctrl-C" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)
        printed = log_path.read_text()
        export = re.search(
            r"^export (WALLWHALE_URL=\S+ WALLWHALE_ADDRESS=\S+ WALLWHALE_API_KEY=\S+)$", printed, re.M
        )
        assert export is not None, printed
        variables = dict(pair.split("=", 1) for pair in export[1].split())
        assert variables["WALLWHALE_URL"] == f"http://127.0.0.1:{envoy_port}"
        assert variables["WALLWHALE_API_KEY"].startswith("ww_")
        assert re.search(r"password: +\S{12,}", printed), printed

        # What the demo prints is what the README shows.
        readme = README.read_text()
        commands = printed.split("then any of these three", 1)[1].split("Stop with Ctrl-C", 1)[0]
        for line in commands.splitlines()[1:]:
            if line.strip() and not line.startswith("#"):
                assert line in readme, f"run.sh --demo prints a line the README lacks: {line!r}"

        check = re.search(r"Check: +(.*wallwhale doctor)$", printed, re.M)
        assert check is not None, printed
        doctor = subprocess.run(
            ["bash", "-c", check[1]],  # noqa: S607 cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr

        example_env = {**env, **variables}
        del example_env["WALLWHALE_SKIP_SETUP"]
        outputs = []
        for example in runnable_examples(readme):
            outputs.append((example, _run(example, work, example_env)))

        curl = next(out for example, out in outputs if "x-archive-sha256" in example.code)
        announced = re.search(r"x-archive-sha256: ([0-9a-f]{64})", curl, re.I)
        assert announced is not None, curl
        assert re.search(rf"^{announced[1]}  item.zip$", curl, re.M), curl
        assert "DOWNLOAD_STATE_SUCCEEDED" in curl
        refusals = next(out for example, out in outputs if '"3370000105"' in example.code)
        assert refusals.count("WORKSHOP_ITEM_UNAVAILABLE") == 2, refusals
        assert sorted(p.name for p in (work / "wallpapers").glob("3370000104-*.zip"))  # the update
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def _run(example: Example, work: Path, env: dict[str, str]) -> str:
    if example.lang == "bash":
        argv, cwd = ["bash", "-euo", "pipefail", "-c", example.code], work
    elif example.lang == "python":
        argv, cwd = [str(REPO_ROOT / ".venv" / "bin" / "python"), "-c", example.code], work
    else:
        assert example.path is not None
        target = work / example.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(example.code + "\n")
        argv, cwd = ["node", target.name], target.parent
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{example} failed (exit {done.returncode}):\n{example.code}\n---\n{output}"
    return output
