"""The package's layers, read from the source: no import cycles (imports inside functions count too), bertctl
modules import each other at the top outside the CLI (the lazy boundary), and the problem-type strings live in
bertctl.problems (and the recipe schema, which names them as choices)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bertctl"
MAX_IMPORTS_IN_FUNCTIONS = 10  # outside bertctl/cli: each one says why in a comment on its line
PROBLEM_TYPE_HOMES = {"problems.py", "recipe.py", "recipe/schema.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(node: ast.AST, here: str, is_package: bool, known: set[str]) -> set[str]:
    """The bertctl modules an import statement loads (the longest known prefix of each name)."""
    if isinstance(node, ast.ImportFrom):
        base = here if is_package else here.rsplit(".", 1)[0]
        if node.level:
            base = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        names = [f"{target}.{alias.name}" for alias in node.names] + [target]
    else:
        names = [alias.name for alias in node.names]
    found = set()
    for name in names:
        while name and name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != here:
            found.add(name)
    return found


def import_graph() -> tuple[dict[str, set[str]], list[tuple[Path, int, str]]]:
    """Every import edge, and the imports of bertctl modules that sit inside functions (file, line, source line)."""
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    inside: list[tuple[Path, int, str]] = []
    for name, path in mods.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        in_function = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = imported(node, name, path.name == "__init__.py", set(mods))
                graph[name] |= targets
                if targets and id(node) in in_function:
                    inside.append((path, node.lineno, text.splitlines()[node.lineno - 1]))
    return graph, inside


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), minus a package and its own submodules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 and not all(m == min(component) or m.startswith(min(component) + ".") for m in component):
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_layers_have_no_import_cycle():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_layers_cycle_finder_sees_a_cycle_through_a_function_level_import():
    assert cycles({"bertctl.a": {"bertctl.b"}, "bertctl.b": {"bertctl.c"}, "bertctl.c": {"bertctl.a"}}) == [["bertctl.a", "bertctl.b", "bertctl.c"]]
    assert cycles({"bertctl.inference": {"bertctl.inference.forward"}, "bertctl.inference.forward": {"bertctl.inference"}}) == []


def test_layers_bertctl_imports_sit_at_the_top_outside_the_cli():
    _, inside = import_graph()
    outside_cli = [(p, line, src) for p, line, src in inside if "cli" not in p.relative_to(PACKAGE).parts]
    shown = "\n".join(f"{p.relative_to(PACKAGE.parent)}:{line}: {src.strip()}" for p, line, src in outside_cli)
    assert len(outside_cli) <= MAX_IMPORTS_IN_FUNCTIONS, shown
    assert all("#" in src for _, _, src in outside_cli), f"each import inside a function says why:\n{shown}"


def test_layers_problem_type_strings_live_in_problems():
    strings = ('"single_label_classification"', '"multi_label_classification"', '"regression"', "'regression'")
    naming = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if any(s in p.read_text(encoding="utf-8") for s in strings))
    assert set(naming) <= PROBLEM_TYPE_HOMES and "problems.py" in naming, naming
