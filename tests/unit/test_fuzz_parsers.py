"""Property-based fuzzing of the receive path, the UAPI parser and the cluster loader (benchmarks/fuzz.py).

CI runs a short bounded run of each property (``max_examples`` below; ~1 minute in all on the 2-core
machine); ``python3 -m benchmarks.reliability fuzz --seconds N`` runs them for as long as asked. The
regression tests at the end replay each crash the fuzzing found, byte for byte.
"""
from __future__ import annotations

import pytest

from benchmarks import fuzz

# examples per property in CI: the receive path costs a round trip (two AEAD operations per message and
# sometimes a handshake) per example, the parsers much less
CI_EXAMPLES = {"receive path": 600, "uapi set": 800, "uapi serve": 500, "cluster loader": 500}


@pytest.mark.parametrize("name", list(CI_EXAMPLES))
def test_fuzz(name: str) -> None:
    target = next(t for t in fuzz.targets() if t.name == name)
    fuzz.property_test(target, CI_EXAMPLES[name])()


def test_world_captures_every_message_kind() -> None:
    """The corpus the receive-path fuzzing mutates holds real messages of all four types."""
    world = fuzz.World()
    for kind, size in (("initiation", 148), ("response", 92), ("cookie", 64)):
        assert world.corpus[kind] and all(len(m) == size for m in world.corpus[kind]), kind
    assert all(m[0] == 4 and len(m) > 32 for m in world.corpus["transport"])
