"""The package's shape: no import cycles, a torch-free runtime, no function longer than 80 lines.

Read from the source with :mod:`ast` (nothing is imported, so a module that another change is still writing
only needs to parse):

* an **import edge** A → B is any ``import``/``from … import`` statement in module A, at module level or inside
  a function or class (a lazy import still makes A need B, and a circle of lazy imports is still a circle),
  except under ``if TYPE_CHECKING:``, that names the ``wearspec`` module B: ``from wearspec.x import y`` is an
  edge to ``wearspec.x.y`` when that is a module, else to ``wearspec.x``. Relative imports are resolved. The
  parent packages that Python imports on the way (``wearspec/x/__init__.py`` for ``wearspec.x.y``) are not
  edges: a package that re-exports its submodules would otherwise always be in a circle with them.
* the **runtime** check follows module-level statements only (what ``import wearspec.deploy.runtime.<m>``
  executes): from every module of ``wearspec/deploy/runtime``, through the ``wearspec`` modules it imports at
  module level, no module imports torch or timm at module level.
* a **function's length** is from its ``def`` line to its last line (decorators not counted), for every function
  and method, nested ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wearspec"
MAX_LINES = 80
HEAVY = ("torch", "timm")

# Functions still over MAX_LINES while they are being split, as "path/from/wearspec.py::qualified.name". The list
# can only shrink: an entry that is no longer over the limit (or no longer exists) fails the test.
ALLOWED_LONG: set[str] = set()


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    """{dotted module name: (file, parsed tree)} of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = (path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


MODULES = _modules()


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the statements under ``if TYPE_CHECKING:`` (never executed)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(name: str, tree: ast.Module, module_level: bool) -> list[str]:
    """Dotted names of the modules that the import statements of module ``name`` name (see the module
    docstring), ``wearspec`` modules resolved to files of the package, others as written."""
    is_package = MODULES[name][0].name == "__init__.py"
    skip = _type_checking_blocks(tree)
    nodes = _module_level(tree.body) if module_level else ast.walk(tree)
    out = []
    for node in nodes:
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module or ""
            out += [f"{parent}.{a.name}" if f"{parent}.{a.name}" in MODULES else parent for a in node.names]
    return [_package_module(m) for m in out]


def _module_level(body: list[ast.stmt]):
    """The statements that run on import: the body, and the bodies of module-level ``if``/``try``/``with``."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody"):
                yield from _module_level(getattr(stmt, field, []))
            for handler in getattr(stmt, "handlers", []):
                yield from _module_level(handler.body)


def _package_module(dotted: str) -> str:
    """``wearspec.a.b.c`` → the longest prefix that is a module of the package (others unchanged)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in MODULES:
            return ".".join(parts[:n])
    return dotted


def _graph(module_level: bool) -> dict[str, set[str]]:
    return {name: {m for m in _imports(name, tree, module_level) if m in MODULES and m != name}
            for name, (_, tree) in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_lazy_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(_graph(module_level=False))
    assert not cycles, "import cycles (modules that import each other, lazily or not): " + "; ".join(
        " ↔ ".join(c) for c in cycles)


def test_runtime_imports_no_torch_at_module_level():
    graph = _graph(module_level=True)
    runtime = [m for m in MODULES if m.startswith("wearspec.deploy.runtime")]
    assert "wearspec.deploy.runtime.stream" in runtime
    seen, todo = set(), list(runtime)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += graph[name]
    offenders = sorted(f"{name} imports {m}" for name in seen
                       for m in _imports(name, MODULES[name][1], module_level=True) if m.split(".")[0] in HEAVY)
    assert not offenders, "deploy/runtime must run without torch/timm (a Jetson has numpy, tensorrt, " \
                          "cuda-python): " + "; ".join(offenders)


def _function_lengths() -> dict[str, int]:
    """{"path::qualified.name": lines} of every function and method in the package."""
    lengths = {}

    def visit(node: ast.AST, prefix: str, path: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[f"{path}::{name}"] = child.end_lineno - child.lineno + 1
                visit(child, name + ".", path)
            else:
                visit(child, prefix, path)

    for path, tree in MODULES.values():
        visit(tree, "", path.relative_to(PACKAGE.parent).as_posix())
    return lengths


def test_no_function_longer_than_80_lines():
    lengths = _function_lengths()
    too_long = sorted(f"{k} ({n} lines)" for k, n in lengths.items() if n > MAX_LINES and k not in ALLOWED_LONG)
    assert not too_long, f"functions over {MAX_LINES} lines (split them by concept): " + "; ".join(too_long)
    done = sorted(k for k in ALLOWED_LONG if lengths.get(k, 0) <= MAX_LINES)
    assert not done, f"within {MAX_LINES} lines now or gone, remove it from the allow-list: " + "; ".join(done)


@pytest.mark.parametrize("name", ["wearspec.demo.report", "wearspec.deploy.runtime.trt"])
def test_the_known_circles_stay_open(name):
    """The two circles this layout removed: the demo report read the step list from the recipe, and the
    TensorRT backend imported the ONNX Runtime module that opened it."""
    graph = _graph(module_level=False)
    back = {"wearspec.demo.report": "wearspec.demo.recipe", "wearspec.deploy.runtime.trt":
            "wearspec.deploy.runtime.backends"}[name]
    assert back not in graph[name]
