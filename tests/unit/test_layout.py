"""The server's rooms keep their shape (docs/architecture.md): imports run down the floors only, no
two files import each other (however indirectly), servicers hold no queries, side effects go through
core.after_commit, and no hand-written file grows past 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server" / "wallwhale"
# Lower floors never import higher ones; rooms on the same floor do not import each other.
FLOORS = {
    "": 0,  # the lowest floor: wallwhale/*.py (config, errors, ids, log, metrics, network, private)
    "v1": 0,  # generated stubs
    "steam": 1,
    "storage": 1,
    "db": 2,
    "core": 3,
    "worker": 4,
    "rpc": 5,
    "app": 6,
    "cli": 7,  # the command line starts the app
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SERVER.rglob("*.py"):
        parts = path.relative_to(SERVER.parent).with_suffix("").parts
        if parts[1:2] == ("v1",):
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ours that importing `path` runs (imports under `if TYPE_CHECKING:` do not run)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return {name for name in found if name in known}


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in ("app", "cli"):
        return parts[1]
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FLOORS) else ""


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def test_imports_run_down_the_floors() -> None:
    wrong = []
    for module, imported in _graph().items():
        room = _room(module)
        for target in imported:
            other = _room(target)
            if other != room and (FLOORS[other] >= FLOORS[room] and other != ""):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_import_cycle_between_files() -> None:
    graph = _graph()
    # Tarjan's strongly connected components: any component of two or more files is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    assert cycles == []


def _lines_with(directory: Path, needles: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(SERVER)}:{number}"
        for path in sorted(directory.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(needle in line for needle in needles)
    ]


def test_servicers_hold_no_queries() -> None:
    assert _lines_with(SERVER / "rpc", ("select(", "session.get(")) == []


def test_side_effects_of_commits_happen_in_one_place() -> None:
    needles = ("hub.publish", "principals.clear")
    assert _lines_with(SERVER / "rpc", needles) + _lines_with(SERVER / "worker", needles) == []


def test_no_hand_written_file_is_over_600_lines() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > 600}
    assert long == {}
