"""Generate the Python stubs (with .pyi type stubs) from proto/ into server/wallwhale/v1.

    python scripts/generate_protos.py          # write the stubs
    python scripts/generate_protos.py --check  # fail if the committed stubs differ from fresh ones

Only our own protos are generated: the google.* modules come from googleapis-common-protos at run
time (generating them here would shadow that package).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("wallwhale") / "v1"
OUTPUT_ROOT = ROOT / "server"
INIT_TEXT = '"""Generated from proto/wallwhale/v1 by scripts/generate_protos.py; do not edit."""\n'


def _plugin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        sys.exit(f"{name} not found next to {sys.executable}; install the 'codegen' extra")
    return f"--plugin={name}={path}"


def generate(out_root: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    target = out_root / PACKAGE_DIR
    target.mkdir(parents=True, exist_ok=True)
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
    (target / "__init__.py").write_text(INIT_TEXT)
    (target / "py.typed").write_text("")


def _differences(expected: Path, actual: Path) -> list[str]:
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
        shutil.rmtree(OUTPUT_ROOT / PACKAGE_DIR, ignore_errors=True)
        generate(OUTPUT_ROOT)
        print(f"generated {OUTPUT_ROOT / PACKAGE_DIR}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        problems = _differences(Path(tmp) / PACKAGE_DIR, OUTPUT_ROOT / PACKAGE_DIR)
    if problems:
        print("generated stubs are out of date (run scripts/generate_protos.py):", *problems, sep="\n  ")
        sys.exit(1)
    print("generated stubs are up to date")


if __name__ == "__main__":
    main()
