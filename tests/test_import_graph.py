"""No import cycles between the project's modules (issue 13).

Every ``.py`` file under ``ptycho/``, ``ptycho_torch/`` and ``launcher/`` is parsed with ``ast`` (nothing is
imported). Every import statement counts: top level, inside functions and ``if`` blocks (``TYPE_CHECKING`` ones
too), ``import a.b``, ``from a.b import c`` (``a.b.c`` when ``c`` is a module file, else ``a.b``) and relative
imports. A package's ``__init__.py`` is the module ``pkg``. Only explicit statements make edges: ``import a.b.c``
is an edge to ``a.b.c`` alone, not to the parent packages ``a.b`` and ``a`` that Python also runs. Edges to modules
outside these packages are dropped. A cycle is a strongly connected component of more than one module, or a module
that imports itself.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ptycho", "ptycho_torch", "launcher")


@dataclass(frozen=True)
class ImportSite:
    source: str  # importing module
    target: str  # imported project module
    where: str  # path:line of the statement


def module_files(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the given top-level packages of ``root``."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    """The package that relative imports in ``module`` start from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _known_prefix(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name`` or its longest dotted prefix that is a project module (``import a.b`` where b is not a file)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_sites(root: Path, modules: Mapping[str, Path]) -> list[ImportSite]:
    """Every explicit import between project modules, one site per (statement, target)."""
    sites: list[ImportSite] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_known_prefix(alias.name, modules) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    package = _package_of(module, path).split(".")
                    if node.level - 1 > len(package) - 1:
                        continue  # beyond the top-level package: not importable, not an edge
                    base_parts = package[:len(package) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if alias.name != "*" and sub in modules else _known_prefix(base, modules))
            for target in dict.fromkeys(t for t in targets if t is not None):
                sites.append(ImportSite(module, target, f"{path.relative_to(root)}:{node.lineno}"))
    return sites


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, plus nodes with a self-loop (Tarjan, iterative).

    Each cycle is a sorted list of nodes; the list of cycles is sorted too.
    """
    adjacency = {node: sorted(set(targets)) for node, targets in graph.items()}
    for targets in list(adjacency.values()):
        for target in targets:
            adjacency.setdefault(target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(adjacency):
        if start in index:
            continue
        work = [(start, iter(adjacency[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(adjacency[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in adjacency[node]:
                        cycles.append(sorted(component))
    return sorted(cycles)


def _shortest_cycle(component: list[str], graph: Mapping[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first node (breadth-first inside the component)."""
    members, start = set(component), component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return [start, start]


def describe_cycles(sites: list[ImportSite]) -> tuple[list[list[str]], str]:
    graph: dict[str, set[str]] = {}
    for site in sites:
        graph.setdefault(site.source, set()).add(site.target)
    cycles = find_cycles(graph)
    lines = []
    for n, component in enumerate(cycles, 1):
        lines.append(f"cycle {n}: {' -> '.join(_shortest_cycle(component, graph))}")
        members = set(component)
        for site in sites:
            if site.source in members and site.target in members:
                lines.append(f"    {site.source} -> {site.target}  ({site.where})")
    return cycles, "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the repository


def test_no_import_cycles_between_project_modules():
    modules = module_files(REPO)
    assert {"ptycho", "ptycho_torch", "launcher"} <= set(modules), sorted(modules)[:10]
    sites = import_sites(REPO, modules)
    assert sites, "no project imports found: the parser is broken"
    cycles, report = describe_cycles(sites)
    assert not cycles, f"{len(cycles)} import cycle(s) between project modules:\n{report}"


# ---------------------------------------------------------------------------------------------- the checker itself


def test_find_cycles_on_a_synthetic_graph():
    graph = {
        "a": ["b"], "b": ["c"], "c": ["a", "d"],  # a -> b -> c -> a
        "d": ["e"], "e": [],  # acyclic tail
        "f": ["f"],  # self-loop
        "g": ["h"], "h": ["g", "a"],  # second component, pointing into the first
        "i": ["a", "g"],  # reaches both, in neither
    }
    assert find_cycles(graph) == [["a", "b", "c"], ["f"], ["g", "h"]]
    assert find_cycles({"a": ["b"], "b": ["c"], "x": []}) == []
    assert find_cycles({}) == []
    # a long chain must not hit the recursion limit
    chain = {str(i): [str(i + 1)] for i in range(5000)}
    assert find_cycles(chain) == []
    chain["5000"] = ["0"]
    assert find_cycles(chain) == [sorted(str(i) for i in range(5001))]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_import_sites_on_a_synthetic_package(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from .version import VERSION\n",
        "pkg/version.py": "VERSION = 1\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/alpha.py": "import os\nimport pkg.sub.beta\nfrom pkg.sub import gamma\n",
        "pkg/sub/beta.py": "def f():\n    from . import gamma\n    from ..version import VERSION\n",
        "pkg/sub/gamma.py": "from pkg.sub import helper_name\nfrom numpy import ndarray\nfrom pkg.sub.alpha import *\n",
        "other/__init__.py": "import pkg.sub.beta\n",  # outside the scanned packages: ignored
    })
    modules = module_files(tmp_path, ("pkg",))
    assert set(modules) == {"pkg", "pkg.version", "pkg.sub", "pkg.sub.alpha", "pkg.sub.beta", "pkg.sub.gamma"}
    edges = {(s.source, s.target) for s in import_sites(tmp_path, modules)}
    assert edges == {
        ("pkg", "pkg.version"),  # relative import from a package __init__
        ("pkg.sub.alpha", "pkg.sub.beta"),  # import a.b.c: no edges to the parents pkg.sub and pkg
        ("pkg.sub.alpha", "pkg.sub.gamma"),  # from pkg.sub import <submodule>
        ("pkg.sub.beta", "pkg.sub.gamma"),  # relative, inside a function
        ("pkg.sub.beta", "pkg.version"),  # level-2 relative import
        ("pkg.sub.gamma", "pkg.sub"),  # from pkg.sub import <name>: the package
        ("pkg.sub.gamma", "pkg.sub.alpha"),  # star import
    }
    cycles, report = describe_cycles(import_sites(tmp_path, modules))
    assert cycles == [["pkg.sub.alpha", "pkg.sub.beta", "pkg.sub.gamma"]]
    assert "cycle 1: pkg.sub.alpha -> pkg.sub.gamma -> pkg.sub.alpha" in report
    assert "pkg/sub/beta.py:2" in report
