"""The package's import graph: no cycles, no submodule importing a package above it (no root needed).

Every ``import``/``from ... import`` statement of every ravenvpn module counts, wherever it sits (module
level, inside a function, under ``if TYPE_CHECKING``): a deferred import only hides a cycle until
someone calls that function first. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, else to ``pkg`` itself (its ``__init__``).

A package's ``__init__`` may import its submodules (that is how ``ravenvpn/__init__.py`` offers its public
names), so a submodule must never import an enclosing package: Python would hand it a half-initialised
one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "ravenvpn"
ROOT = "ravenvpn"


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    return {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ravenvpn modules ``name`` (at ``path``) imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` runs a.b.c; name the deepest ravenvpn module of the dotted path
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] == ROOT:
                found.add(target)
    return found


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    modules = all_modules(package_dir)
    return {name: imports_of(name, path, modules) - {name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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


def test_the_scan_sees_the_package() -> None:
    graph = import_graph()
    assert "ravenvpn.raven.node.agent" in graph and "ravenvpn.protocol.tunnel" in graph
    # a function-level import counts (cli.py imports the Raven commands inside a function)
    assert "ravenvpn.raven.node.commands" in graph["ravenvpn.cli"]


def test_no_import_cycles_in_the_package() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles (each line: modules that import each other):\n" + \
        "\n".join(" <-> ".join(c) for c in found)


def test_no_module_imports_an_enclosing_package() -> None:
    bad = [f"{name} imports {target}" for name, targets in import_graph().items() for target in targets
           if name.startswith(target + ".")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("model_source, expect_cycle", [
    ("def load():\n    from .loader import load_cluster\n", True),   # deferred, still a cycle
    ("def load():\n    from . import loader\n", True),
    ("import ravenvpn.pkg.loader\n", True),
    ("from .addresses import X\n", False),
])
def test_the_scan_finds_a_deferred_cycle(tmp_path: Path, model_source: str, expect_cycle: bool) -> None:
    pkg = tmp_path / "ravenvpn" / "pkg"
    pkg.mkdir(parents=True)
    (tmp_path / "ravenvpn" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "addresses.py").write_text("X = 1\n")
    (pkg / "loader.py").write_text("from .model import Cluster\n")
    (pkg / "model.py").write_text(model_source)
    found = cycles(import_graph(tmp_path / "ravenvpn"))
    assert bool(found) is expect_cycle, found
    if expect_cycle:
        assert found == [["ravenvpn.pkg.loader", "ravenvpn.pkg.model"]]


def test_the_scan_finds_an_import_of_the_package_root(tmp_path: Path) -> None:
    pkg = tmp_path / "ravenvpn" / "pkg"
    pkg.mkdir(parents=True)
    (tmp_path / "ravenvpn" / "__init__.py").write_text("from .pkg import mod\n")
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("def f():\n    from .. import errors_of_root\n")
    graph = import_graph(tmp_path / "ravenvpn")
    assert graph["ravenvpn.pkg.mod"] == {"ravenvpn"}
    assert cycles(graph) == [["ravenvpn", "ravenvpn.pkg.mod"]]


def test_ravenvpn_wg_does_not_load_the_raven_layer() -> None:
    """``ravenvpn-wg`` (``ravenvpn.device.daemon``) is a plain WireGuard daemon: importing it must not
    pull in the Raven layer, PyYAML or pyroute2 through the package's public names (eager imports in
    ``ravenvpn/__init__.py`` did: 22 -> 57 MiB resident at start, most of the 60 MB budget for 1,000
    peers). The public names still resolve, to the same objects as their modules'."""
    import subprocess
    import sys

    code = (
        "import sys, ravenvpn.device.daemon\n"
        "heavy = sorted(m for m in ('yaml', 'pyroute2', 'ravenvpn.raven') if m in sys.modules)\n"
        "import ravenvpn\n"
        "from ravenvpn.protocol.tunnel import Tunnel\n"
        "from ravenvpn.raven.node.agent import Agent\n"
        "assert ravenvpn.Tunnel is Tunnel and ravenvpn.Agent is Agent\n"
        "assert set(ravenvpn.__all__) <= set(dir(ravenvpn))\n"
        "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"ravenvpn-wg's import loads {out.stdout.strip()}"
    with pytest.raises(AttributeError, match="no attribute 'Nonesuch'"):
        import ravenvpn
        ravenvpn.Nonesuch  # noqa: B018
