"""The code's dependency rules, read from the import statements (no module is imported): no two
modules import each other, even lazily; ``lib/`` imports nothing from ``utils/``; ``eval/`` imports
no torch; nothing imports a top-level script or a test helper."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

from tests.cli_checks import REPO

PACKAGES = ("lib", "utils", "eval")
SCRIPTS = ("train", "inference", "demo", "hubconf")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Set[str]:
    """Every module ``path`` imports, at any depth of the file (relative imports resolved);
    ``from package import module`` counts as an import of the module alone."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names}
            found.update(submodules)
            if not all(_is_module(name) for name in submodules):
                found.add(base)
    return found


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph() -> Dict[str, Set[str]]:
    """Project module -> the project modules it imports."""
    files = [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]
    files += [REPO / f"{script}.py" for script in SCRIPTS]
    modules = {_module_name(p): p for p in files}
    return {name: {m for m in _imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def test_no_two_modules_import_each_other():
    graph = _graph()
    state: Dict[str, int] = {}
    cycles = []

    def visit(module: str, trail: list) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target):] + [target] if target in trail else [module, target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # a package's __init__ importing its own submodules is not a cycle of two modules
    cycles = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") or
                                           c[0].startswith(m + ".") for m in c)]
    assert cycles == [], cycles


def test_dependencies_point_one_way():
    for module, path in ((m, p) for package in PACKAGES for p in (REPO / package).rglob("*.py")
                         for m in [_module_name(p)]):
        roots = {name.split(".")[0] for name in _imports(path)}
        assert not roots & set(SCRIPTS), f"{module} imports a top-level script"
        assert "tests" not in roots, f"{module} imports a test helper"
        if module.startswith("lib"):
            assert "utils" not in roots, f"{module} imports utils"
        if module.startswith("eval"):
            assert "torch" not in roots, f"{module} imports torch"
