"""The package's import graph: no circle (function-level imports included: they hid
two, bench <-> profiling and data <-> userdata), and the layers of docs/DESIGN.md:
each package imports only the ones below it. (Which package may import torch or the
compiled core is ruff's banned-api rule in pyproject.toml.)"""
import ast
from pathlib import Path

import nasrt

PKG = Path(nasrt.__file__).parent

# package -> the nasrt packages it may import (docs/DESIGN.md's map). "base" is the
# shared top-level modules (errors, _io, _progress).
LAYERS = {
    "base": {"base"},
    "contract": {"base", "contract"},
    "data": {"base", "contract", "data"},
    "quant": {"base", "contract", "data", "quant"},
    "runtime": {"base", "contract", "data", "runtime"},
    "search": {"base", "contract", "data", "runtime", "search"},  # measures what it derives
    "app": {"base", "contract", "data", "quant", "runtime", "search", "app"},  # cli, pipeline, plots
}
APP = {"cli", "pipeline", "plots"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _resolve(name: str, modules) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path, modules) -> list[tuple[str, bool]]:
    """(module imported, at module level?) for every nasrt import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for b in tree.body:  # `if TYPE_CHECKING:` and `try: ... except ImportError` at module level
        if isinstance(b, (ast.If, ast.Try)):
            top |= {id(n) for n in b.body}
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("nasrt"):
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("nasrt")]
        for n in names:
            if not n.startswith("nasrt._core") and (m := _resolve(n, modules)):
                out.append((m, id(node) in top))
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "app"  # the package face
    if parts[1] in APP:
        return "app"
    return parts[1] if parts[1] in LAYERS else "base"


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {d for d, _ in _imports(p, modules) if d != m and not m.startswith(d + ".") and d != "nasrt"}
            for m, p in modules.items()}


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
    assert graph["nasrt.data.user"] and graph["nasrt.cli"], "import graph looks empty"
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_each_package_imports_only_the_layers_below():
    bad = [f"{m} imports {d}" for m, deps in _graph().items() for d in sorted(deps)
           if _layer(d) not in LAYERS[_layer(m)]]
    assert not bad, "\n".join(bad)


def test_nasrt_imports_inside_functions_only_where_torch_or_the_core_is_optional():
    """A function-level import of a nasrt module hides the graph: allowed only in
    the app layer (so `nasrt run` and `--help` do not import torch) and the package
    faces' lazy attributes."""
    modules = _modules()
    bad = [f"{m} imports {d} inside a function" for m, p in modules.items()
           if _layer(m) != "app" and not p.name == "__init__.py"
           for d, at_top in _imports(p, modules) if not at_top]
    assert not bad, "\n".join(bad)


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
