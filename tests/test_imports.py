"""The package's import graph has no circle (function-level imports included: they
hid two, bench <-> profiling and data <-> userdata)."""
import ast
from pathlib import Path

import nasrt

PKG = Path(nasrt.__file__).parent


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for m in modules:
        deps = set()
        for node in ast.walk(ast.parse((PKG / f"{m}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("nasrt."):
                    deps.add(node.module.split(".")[1])
                elif node.module == "nasrt":
                    deps.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("nasrt."))
        graph[m] = (deps & modules) - {m}
    return graph


def _cycle(graph):
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_circle():
    graph = _graph()
    assert graph["userdata"] and graph["cli"], "import graph looks empty"
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
