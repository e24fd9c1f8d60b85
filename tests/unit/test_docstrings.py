"""Every public name of the package (ravenvpn/**) has a docstring; one that raises says so in a "Raises:"
section (no root; an AST scan, nothing is imported). The package's front door, ``ravenvpn.__all__``,
is checked on the imported objects too.

Public: a module-level function or class whose name has no leading underscore, and every such method or
property of a public class. A function "raises" when its own body (not a nested function) holds a
``raise SomeError(...)``; a bare ``raise`` (passing on what it caught) does not count.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ravenvpn"
FILES = sorted(PACKAGE.rglob("*.py"))


def _own_raises(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    stack: list[ast.AST] = list(func.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Raise) and node.exc is not None:
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False


def _public(name: str) -> bool:
    return not name.startswith("_")


def public_definitions(path: Path) -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of the module itself and of its public classes, functions and methods."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    yield ".".join(rel.parts), tree
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and _public(node.name):
            yield node.name, node
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(item.name):
                    setter = any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter")
                                 for d in item.decorator_list)
                    if not setter:
                        yield f"{node.name}.{item.name}", item


def problems() -> list[str]:
    found: list[str] = []
    for path in FILES:
        rel = path.relative_to(PACKAGE.parent)
        for name, node in public_definitions(path):
            if isinstance(node, ast.Module) and path.name == "__init__.py" and not node.body:
                continue    # an empty package marker
            doc = ast.get_docstring(node)  # type: ignore[arg-type]
            if not doc:
                found.append(f"{rel}: {name}: no docstring")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _own_raises(node) \
                    and "Raises:" not in doc:
                found.append(f"{rel}: {name}: raises, but its docstring has no 'Raises:' section")
    return found


def test_every_public_name_has_a_docstring_with_its_raises() -> None:
    found = problems()
    assert not found, f"{len(found)} problems:\n" + "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    pass\n", ["f: no docstring"]),
    ('def f():\n    """Doc."""\n    raise ValueError("x")\n', ["f: raises, but its docstring has no 'Raises:' section"]),
    ('def f():\n    """Doc.\n\n    Raises:\n        ValueError: x\n    """\n    raise ValueError("x")\n', []),
    ('def f():\n    """Doc."""\n    try:\n        pass\n    except OSError:\n        raise\n', []),
    ('def f():\n    """Doc."""\n    def g():\n        raise ValueError\n', []),
    ('class C:\n    """Doc."""\n    def m(self):\n        pass\n    def _private(self):\n        pass\n',
     ["C.m: no docstring"]),
])
def test_the_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: list[str]) -> None:
    pkg = tmp_path / "ravenvpn" / "raven"
    pkg.mkdir(parents=True)
    (pkg / "mod.py").write_text('"""Module."""\n' + source)
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "ravenvpn")
    monkeypatch.setattr(__import__(__name__), "FILES", [pkg / "mod.py"])
    assert problems() == [f"ravenvpn/raven/mod.py: {e}" for e in expected]


def test_every_name_of_the_public_api_is_documented() -> None:
    import inspect

    import ravenvpn
    missing = [name for name in ravenvpn.__all__ if name != "__version__"
               and not inspect.getdoc(getattr(ravenvpn, name))]
    assert not missing, missing
    for cls in (ravenvpn.Tunnel, ravenvpn.Device, ravenvpn.Applier, ravenvpn.Agent):
        undocumented = [name for name, member in vars(cls).items() if not name.startswith("_")
                        and callable(member) and not inspect.getdoc(member)]
        assert not undocumented, (cls.__name__, undocumented)
