"""Generate the Python stubs (with .pyi type stubs) from proto/wallwhale/v1, for the server and the client.

    python scripts/generate_protos.py          # write the stubs
    python scripts/generate_protos.py --check  # fail if the committed stubs differ from fresh ones

Targets: server/wallwhale/v1 (imported as wallwhale.v1) and clients/python/src/wallwhale_client/v1
(imported as wallwhale_client.v1, so the client installs without the server). protoc names imports
after the proto path (`from wallwhale.v1 import ...`); the client's copy has them rewritten. Both
register the same files in protobuf's descriptor pool, which accepts identical files twice.

Only our own protos are generated: the google.* modules come from googleapis-common-protos at run
time (generating them here would shadow that package).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_PACKAGE = Path("wallwhale") / "v1"
# Python package -> the directory it lives in.
TARGETS = {
    "wallwhale": ROOT / "server",
    "wallwhale_client": ROOT / "clients" / "python" / "src",
}
_IMPORT = re.compile(r"^from wallwhale\.v1 import ", re.MULTILINE)


def _plugin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        sys.exit(f"{name} not found next to {sys.executable}; install the 'codegen' extra")
    return f"--plugin={name}={path}"


def _protoc(out_root: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))
    (out_root / PROTO_PACKAGE).mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        _plugin("protoc-gen-mypy"),
        _plugin("protoc-gen-mypy_grpc"),
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_ROOT)


def generate(out_root: Path) -> None:
    """Writes every target's v1 package under out_root (out_root/<package>/v1)."""
    with tempfile.TemporaryDirectory() as tmp:
        _protoc(Path(tmp))
        generated = sorted((Path(tmp) / PROTO_PACKAGE).iterdir())
        for package in TARGETS:
            target = out_root / package / "v1"
            target.mkdir(parents=True, exist_ok=True)
            for source in generated:
                text = _IMPORT.sub(f"from {package}.v1 import ", source.read_text())
                (target / source.name).write_text(text)
            (target / "__init__.py").write_text(
                '"""Generated from proto/wallwhale/v1 by scripts/generate_protos.py; do not edit."""\n'
            )
            (target / "py.typed").write_text("")


def _differences(expected: Path, actual: Path) -> list[str]:
    if not actual.is_dir():
        return [f"missing: {actual}"]
    cmp = filecmp.dircmp(expected, actual)
    problems = [f"missing: {name}" for name in cmp.left_only]
    problems += [f"not generated: {name}" for name in cmp.right_only if name != "__pycache__"]
    _, mismatch, errors = filecmp.cmpfiles(expected, actual, cmp.common_files, shallow=False)
    problems += [f"differs: {name}" for name in mismatch + errors]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed stubs, write nothing"
    )
    args = parser.parse_args()
    if not args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            for package, root in TARGETS.items():
                shutil.rmtree(root / package / "v1", ignore_errors=True)
                shutil.copytree(Path(tmp) / package / "v1", root / package / "v1")
                print(f"generated {(root / package / 'v1').relative_to(ROOT)}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        problems = [
            f"{package}.v1 {problem}"
            for package, root in TARGETS.items()
            for problem in _differences(Path(tmp) / package / "v1", root / package / "v1")
        ]
    if problems:
        print("generated stubs are out of date (run scripts/generate_protos.py):", *problems, sep="\n  ")
        sys.exit(1)
    print("generated stubs are up to date")


if __name__ == "__main__":
    main()
