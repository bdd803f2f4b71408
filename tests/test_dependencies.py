"""Every dependency setup.cfg declares is imported by the code that declares
it: the package's by the package, the test extras by the tests."""
from __future__ import annotations

import ast
import configparser
import re

from harness import REPO

IMPORT_NAME = {"grpcio": "grpc", "grpcio-tools": "grpc_tools"}


def _declared(key: str, section: str = "options") -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [l.strip() for l in cfg[section][key].splitlines() if l.strip()]
    return {re.split(r"[=<>!~\[ ]", l, maxsplit=1)[0] for l in lines}


def _imported(dirs: list[str]) -> set[str]:
    found = set()
    for d in dirs:
        for path in (REPO / d).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def test_package_dependencies_are_imported_by_the_package():
    used = _imported(["minidocker", "cni", "cni_bridge"])
    unused = {d for d in _declared("install_requires") if IMPORT_NAME.get(d, d) not in used}
    assert unused == set(), f"declared in install_requires, imported by no module: {sorted(unused)}"


def test_test_extras_are_imported_by_the_tests():
    used = _imported(["tests"])
    unused = {d for d in _declared("test", "options.extras_require") if IMPORT_NAME.get(d, d) not in used}
    assert unused == set(), f"declared as test extras, imported by no test: {sorted(unused)}"
