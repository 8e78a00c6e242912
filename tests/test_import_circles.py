"""No import circles inside the `streamproc` package.

A circle makes the import order matter, hides which module depends on which, and is how a low
module ends up needing a high one (the pipeline and the retry consumer importing each other).
The graph is read with the standard library's `ast` from the source files, without importing
anything:

- module-level imports count, including those under `if`/`try`/`with` at module level;
- imports inside functions and methods (lazy imports) count too: a lazy import still makes the two
  modules depend on each other, it only postpones the failure to the first call;
- imports under `if TYPE_CHECKING:` do not count: they exist for the type checker only and never
  run, so they cannot make an import order matter.

`from package import name` depends on `package.name` when that is a module, else on `package`.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "streamproc"


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, leaving out the bodies of `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (i for child in node.orelse for i in _imports_in(child))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _imports(node)


def dependencies(name: str, source: str, known: Collection[str], *, is_package: bool = False) -> set[str]:
    """The modules of the package that module `name` (its `source`) imports."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_circles() -> None:
    known = modules()
    graph = {
        name: dependencies(name, path.read_text(), known, is_package=path.name == "__init__.py")
        for name, path in known.items()
    }
    assert graph.get("streamproc.pipeline")  # the graph was read
    assert list(circles(graph)) == []


def test_a_circle_is_found_and_type_checking_imports_are_not_counted() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    source = (
        "from typing import TYPE_CHECKING\n"
        "import streamproc.errors\n"
        "if TYPE_CHECKING:\n"
        "    from streamproc import router\n"
        "def later():\n"
        "    from streamproc.kafka import dlq\n"
    )
    known = {"streamproc", "streamproc.errors", "streamproc.router", "streamproc.kafka.dlq"}
    assert dependencies("streamproc.probe", source, known) == {"streamproc.errors", "streamproc.kafka.dlq"}
