"""The package's layout: imports between ngl_keras modules go one way (no import circle).

Module-level imports only: an import inside a function runs on first use, after every module has
loaded, and is how a module reaches one that imports it (`data.placement` -> `layers`)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ngl_keras"


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(package=PACKAGE):
    """{module: set of ngl_keras modules it imports at module level}."""
    modules = {_module_name(path): path for path in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.parse(path.read_text()).body:  # top level only: not inside functions or classes
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                             else node.module for alias in node.names)
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def cycles(graph):
    """Every import circle of `graph`, each as a list of modules that starts and ends with the same one."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_cycles_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_circle():
    graph = module_imports()
    assert {"ngl_keras.training", "ngl_keras.grid", "ngl_keras.data.readers"} <= set(graph)
    assert "ngl_keras.records" in graph["ngl_keras.training"]
    assert cycles(graph) == [], f"import circles: {cycles(graph)}"
