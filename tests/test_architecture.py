"""The shape of the code, read from its source (nothing is imported or run):
no import cycle among minidocker, cni and cni_bridge; no module reaching
into another's `_private` names; no module over MAX_MODULE lines and no
function over MAX_FUNCTION lines unless its docstring says why; minidocker
speaks to cni_bridge only through its public entry points; click only in
command-line modules."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
PACKAGES = ("minidocker", "cni", "cni_bridge")
MAX_MODULE = 400
MAX_FUNCTION = 60
#: How a docstring says why its module or function is long: "(long: <why>)".
LONG_MARK = "(long:"

#: "module -> private name of another module" accesses that stay, with why.
PRIVATE_ALLOWED: dict[tuple[str, str], str] = {}

#: Import cycles that stay, with why.
CYCLES_ALLOWED: dict[tuple[str, ...], str] = {}

#: Modules over MAX_MODULE lines that another change is splitting.
LONG_MODULES_ALLOWED: dict[str, str] = {}

#: The only cni_bridge module minidocker may import: the plugin's public
#: surface for runtimes (api.py; the executable is for exec).
CNI_BRIDGE_PUBLIC = {"cni_bridge.api"}

#: Modules that may import click: the command-line modules and their prompt.
CLICK_MODULES = {"minidocker.cli", "minidocker.cli_network", "minidocker.cli_system",
                 "minidocker.cli_cni", "minidocker.cli_service", "minidocker.cli_lifecycle", "minidocker.cli_volume",
                 "minidocker.cli_image",
                 "minidocker.cluster.command", "minidocker.confirm"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((TOP / pkg).rglob("*.py")):
            parts = list(path.relative_to(TOP).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[module].name == "__init__.py"
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, tree=None):
    """(imported module, names taken from it, the import node) of every
    import in `module`, at any depth (a function-level import counts too)."""
    for node in ast.walk(tree or TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node
        elif isinstance(node, ast.ImportFrom):
            src = _absolute(module, node)
            for alias in node.names:
                sub = f"{src}.{alias.name}"
                if sub in MODULES:
                    yield sub, [], node
                else:
                    yield src, [alias.name], node


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for target, _names, _node in _imports(name):
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checks_see_the_code():
    """The graph is not empty: a parser that found nothing would pass the rest."""
    graph = _graph()
    assert len(MODULES) > 50
    assert "minidocker.records" in graph["minidocker.teardown"]
    assert "minidocker.network.attach" in graph["minidocker.network.modes"]  # function-level
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    reach = ast.parse("from minidocker import state\nfrom minidocker.network import store as s\n"
                      "from minidocker.paths import _env\n"
                      "def f():\n    return state._x, s._y, state.read_json, s.__doc__\n")
    assert sorted(_private_uses("minidocker.shim", reach)) == [
        "minidocker.network.store._y", "minidocker.paths._env", "minidocker.state._x"]


def test_no_import_cycle():
    assert [c for c in _cycles(_graph()) if tuple(c) not in CYCLES_ALLOWED] == []


def _private_uses(module: str, tree=None):
    """'other.module._name' for each private name of another project
    module that `module` names."""
    tree = tree or TREES[module]
    aliases: dict[str, str] = {}
    for target, names, node in _imports(module, tree):
        if target not in MODULES or target == module:
            continue
        for name in names:
            if name.startswith("_") and not name.startswith("__"):
                yield f"{target}.{name}"
        for alias in node.names:
            full = f"{_absolute(module, node)}.{alias.name}" if isinstance(node, ast.ImportFrom) \
                else alias.name
            if full == target and not names and (alias.asname or "." not in alias.name):
                aliases[alias.asname or alias.name.split(".")[0]] = target
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            yield f"{aliases[node.value.id]}.{node.attr}"


def test_no_private_names_across_modules():
    found = sorted({(m, use) for m in MODULES for use in _private_uses(m)} - set(PRIVATE_ALLOWED))
    assert found == []


def _long(doc: str | None) -> bool:
    return bool(doc) and LONG_MARK in doc


def test_module_and_function_sizes():
    too_long = []
    for name, path in MODULES.items():
        rel = str(path.relative_to(TOP))
        lines = len(path.read_text().splitlines())
        tree = TREES[name]
        if lines > MAX_MODULE and rel not in LONG_MODULES_ALLOWED and not _long(ast.get_docstring(tree)):
            too_long.append(f"{rel}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION and not _long(ast.get_docstring(node)):
                    too_long.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []


def test_minidocker_uses_only_cni_bridge_entry_points():
    reached = sorted({(m, t) for m in MODULES if m.startswith("minidocker")
                      for t, _n, _node in _imports(m)
                      if t.startswith("cni_bridge") and t not in CNI_BRIDGE_PUBLIC})
    assert reached == []


def test_click_only_in_command_line_modules():
    users = sorted(m for m in MODULES if any(t == "click" for t, _n, _node in _imports(m)))
    assert set(users) <= CLICK_MODULES, users


@pytest.mark.parametrize("module", ["minidocker.network.modes", "minidocker.network.runopts"])
def test_no_type_tests_on_modes(module):
    """Modes say what they accept (accepts_ports, sandbox()...); nobody
    asks a mode for its class name."""
    text = MODULES[module].read_text()
    assert "__name__ ==" not in text and "isinstance(mode" not in text
