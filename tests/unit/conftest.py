"""tests/unit runs without root (``python3 -m pytest -q tests/unit`` as any user): a test here that asks for
namespaces fails at once, naming where it belongs, instead of failing on a machine without root."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _unit_tests_need_no_root(request: pytest.FixtureRequest) -> None:
    if "netns_env" in request.fixturenames or request.node.get_closest_marker("netns"):
        pytest.fail(f"{request.node.nodeid} needs namespaces (root): it belongs in tests/netns", pytrace=False)
