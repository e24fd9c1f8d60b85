"""pytest plugin of the real-network tests: the ``netns`` marker, node fixtures and daemon logs on failure.

Loaded by ``pytest_plugins = ["tools.pytest_plugin"]`` in ``tests/conftest.py``; ``tools`` is importable
because setup.cfg's ``[tool:pytest] pythonpath`` puts the repository root on ``sys.path``.

Real-network tests use ``node_factory`` (network + mount namespaces, :class:`tools.node.Node`). They need
root, netns and /dev/net/tun: CI runs as root, so if that is missing the tests *fail* with a clear
message instead of skipping (a silently skipped suite proves nothing). Tests that use no node (unit
tests) are unaffected. Every test that uses ``netns_env`` (so every ``node_factory`` user) gets the
``netns`` marker automatically, so ``-m "not netns"`` runs just the unit tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import pytest

from tools.node import Node, cleanup_stale, require_root

if TYPE_CHECKING:
    from tools.lab import Lab

__all__ = ["netns_env", "node_factory"]

#: Lines of each daemon log attached to a failed test's report.
LOG_TAIL_LINES = 80


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: needs root, network namespaces, /dev/net/tun and wireguard-go")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "netns_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.netns)


@pytest.fixture(scope="session")
def netns_env() -> Iterator[None]:
    """Check the environment once, clear leftovers of crashed runs, and clean up again at session end."""
    problem = None
    try:
        require_root()
    except RuntimeError as exc:
        problem = str(exc)
    if problem:  # outside the except block: no "during handling of the above exception" noise
        pytest.fail(problem, pytrace=False)
    cleanup_stale()
    yield
    cleanup_stale()


@pytest.fixture
def node_factory(netns_env: None, request: pytest.FixtureRequest) -> Iterator[Callable[..., Node]]:
    """``make(label)`` creates a :class:`tools.node.Node`; all are closed at teardown, even on failure."""
    nodes: list[Node] = []
    request.node._rvt_nodes = nodes  # for the failure report hook below

    def make(label: str = "n") -> Node:
        node = Node(label)
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        errors = []
        for node in reversed(nodes):
            try:
                node.close()
            except Exception as exc:  # keep closing the others
                errors.append(f"{node}: {exc!r}")
        if errors:
            pytest.fail("node teardown failed: " + "; ".join(errors), pytrace=False)


@pytest.fixture(autouse=True)
def _attach_lab_logs(request: pytest.FixtureRequest) -> None:
    """A test that uses a module's ``lab`` fixture (a :class:`tools.lab.Lab`) gets the ``up`` logs of
    every lab node attached to its failure report (the hook below)."""
    if "lab" in request.fixturenames:
        lab = request.getfixturevalue("lab")
        request.node._rvt_nodes = [lab.node(n) for n in lab.names]


def wait_lab_tunnels(lab: Lab, timeout: float = 40) -> float:
    """``lab.wait_tunnels(timeout)`` (seconds it took), a timeout failing the test in one line."""
    try:
        return lab.wait_tunnels(timeout=timeout)
    except TimeoutError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach the tail of every daemon log of the test's nodes to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    for node in getattr(item, "_rvt_nodes", []):
        for log in sorted(node.tmpdir.glob("*.log")) if node.tmpdir.is_dir() else []:
            lines = log.read_text(errors="replace").splitlines()
            rep.sections.append((f"daemon log {node.name}:{log.name}", "\n".join(lines[-LOG_TAIL_LINES:])))
