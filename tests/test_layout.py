"""The folders show the architecture: the decoder library imports nothing from outside itself (and none of
Ray, pyarrow, fsspec), and no project module imports itself back through others (no import cycle)."""
from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("decoder", "stages", "driver", "report", "settings", "training", "embedded")
FOREIGN_TO_DECODER = ("ray", "pyarrow", "fsspec", "s3fs", "omegaconf", "tqdm", "matplotlib")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}   # `from pkg import module`
    return found


def project_modules() -> dict[str, pathlib.Path]:
    mods = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    mods["pipeline"] = ROOT / "pipeline.py"
    return mods


def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, each with its parent packages (their __init__ runs first)."""
    mods = project_modules()
    edges = {}
    for name, path in mods.items():
        targets = set()
        for imp in imports(path):
            parts = imp.split(".")
            targets |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(mods)
        edges[name] = targets - {name} - {p for p in _parents(name)}
    return edges


def _parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_the_decoder_library_imports_only_itself_and_no_ray_pyarrow_fsspec() -> None:
    bad = []
    for path in (ROOT / "decoder").rglob("*.py"):
        for imp in imports(path):
            top = imp.split(".")[0]
            if (top in PACKAGES and top != "decoder") or top == "pipeline" or top in FOREIGN_TO_DECODER:
                bad.append(f"{path.relative_to(ROOT)} imports {imp}")
    assert bad == []


def test_no_import_cycle_among_project_modules() -> None:
    edges, state, cycles = graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack
                              else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch) -> None:
    """The check can fail: two modules importing each other are reported."""
    edges = {"a": {"b"}, "b": {"a"}}
    monkeypatch.setattr(sys.modules[__name__], "graph", lambda: edges)
    try:
        test_no_import_cycle_among_project_modules()
    except AssertionError:
        return
    raise AssertionError("a cycle a <-> b went unnoticed")
