"""The package layout: no import circle, no private name imported across modules, layers import downwards.

Every import counts, module level or inside a function: an import deferred for speed still ties the modules.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "export", "recipes")
# Which packages each may import: zoo <- export <- recipes.
ALLOWED = {"zoo": {"zoo"}, "export": {"zoo", "export"}, "recipes": {"zoo", "export", "recipes"}}


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def imported_names(name, path):
    """(module, imported name or None) for every import of a project module in a file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield from ((base, alias.name) for alias in node.names)


def imports(name):
    """The project modules a module imports: `from a import b` is module a.b when that is one, else a."""
    found = set()
    for module, imported in imported_names(name, MODULES[name]):
        target = f"{module}.{imported}" if f"{module}.{imported}" in MODULES else module
        if target in MODULES and target != name:
            found.add(target)
    return found


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while node not in component:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_circle():
    # A submodule importing its own package (`zoo.conv` -> `zoo`) only needs that package initialised: no circle.
    graph = {name: {t for t in imports(name) if not name.startswith(t + ".")} for name in MODULES}
    assert cycles(graph) == []


def test_no_private_name_is_imported_across_modules():
    private = [
        f"{name} imports {module}.{imported}"
        for name, path in MODULES.items()
        for module, imported in imported_names(name, path)
        if imported and imported.startswith("_") and module.split(".")[0] in PACKAGES
    ]
    assert private == []


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_downwards(package):
    upward = [
        f"{name} imports {target}"
        for name in MODULES if name.split(".")[0] == package
        for target in imports(name) if target.split(".")[0] not in ALLOWED[package]
    ]
    assert upward == []
