"""The layout's promises (docs/ARCHITECTURE.md): small modules of one concept, dependencies that
point one way with no import cycle, and no library code driving the CLI with argv."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("variants", "harness", "studies", "reports")
LAYER = {"variants": 0, "harness": 1, "studies": 2, "reports": 3}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every project module ``name`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_modules_are_small() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_cycle() -> None:
    # A package's __init__ re-exporting its modules is not a cycle of theirs: importing a
    # submodule runs its parent __init__ first, which the graph does not model.
    graph = {m: {t for t in deps if not m.startswith(t + ".")} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_dependencies_point_one_way() -> None:
    # variants <- harness <- studies <- reports; the `eabench` entry point (harness.cli) wires
    # every package's commands and is the one module allowed to look up.
    upward = [(m, t) for m, deps in GRAPH.items() for t in deps
              if m != "harness.cli" and LAYER[t.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert not upward, f"imports against the layering: {upward}"
    assert not [t for t in GRAPH["variants"] | {d for m, ds in GRAPH.items() if m.startswith("variants.")
                                                for d in ds} if not t.startswith("variants")]


def test_no_library_code_calls_a_cli_main() -> None:
    offenders = []
    for name, path in MODULES.items():
        if name in ("harness.cli",):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        cli_names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                     and (n.module or "").endswith("cli") for a in n.names}
        cli_names |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                      for a in n.names if a.name == "main" and (n.module or "").split(".")[0] in PACKAGES}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
                if called == "main" and (owner in cli_names or called in cli_names):
                    offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"library code calling a CLI main: {offenders}"


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    # the cycle test is only worth something if imports inside functions count
    module = tmp_path / "fake.py"
    module.write_text("def f():\n    from harness.figures import frame_weight_figure\n"
                      "    import harness.train.schema as s\n")
    assert _imports("harness.fake", module) == {"harness.figures", "harness.train.schema"}
