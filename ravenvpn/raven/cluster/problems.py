"""What the loader skipped: one-line warnings, and the nodes whose own plan they break.

A cluster file is shared by every node, and one stale or odd object in it (a label
naming a deleted Gateway, ``subnets: [""]`` written for a node without pod CIDR, a
deleted node still named in a Gateway) must not stop every node's agent.  So the
loader skips exactly what is broken, records a warning naming the object and field,
and plans the rest.  A problem in a node's *own* objects (its Node, its tunnel
endpoint) is also remembered as that node's error: its plan would be guesswork, so
:func:`~ravenvpn.raven.plan.planner.plan` refuses it, while every other node plans.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ...errors import ClusterError
from .addresses import IPNetwork
from .fields import Field

T = TypeVar("T")
#: What a warning says when a whole document or object was left out (the planner quotes these
#: when a node is not found: its Node may be among them).
OBJECT_SKIPPED = "object skipped"


class Problems:
    """Collects the problems of one load (not thread-safe; one instance per load).

    ``warnings`` are in the order found (document order, then check order), so the
    same file always gives the same list; ``node_errors`` maps a node name to the
    first problem found in its own objects.
    """

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.node_errors: dict[str, str] = {}

    def skip(self, problem: str, skipped: str, *, node: str | None = None) -> None:
        """Record ``problem`` (one line naming object and field) and what was left out.

        ``node``: the node whose own plan this makes impossible, if any.
        """
        problem = " ".join(problem.split())
        self.warnings.append(f"{problem} ({skipped})")
        if node is not None:
            self.node_errors.setdefault(node, problem)

    def attempt(self, parse: Callable[[], T], default: T, skipped: str, *, node: str | None = None) -> T:
        """``parse()``, or ``default`` with a warning when it raises a ClusterError."""
        try:
            return parse()
        except ClusterError as exc:
            self.skip(str(exc), skipped, node=node)
            return default

    def cidr(self, field: Field, skipped: str, *, node: str | None = None) -> IPNetwork | None:
        """``field`` as a network (:meth:`Field.cidr`), or None with a warning (``skipped``).

        Host bits set (``10.244.1.5/24``) are cleared with a warning and no node error: Kubernetes
        accepts such a ``spec.podCIDR`` and Raven (Go's ``net.ParseCIDR``) routes its network, so
        refusing it would leave the node's pods unreachable (or the node down) where Raven carries on.
        An empty string (``podCIDR: ""``, a node without pod CIDR as field case F12) is no CIDR at
        all: skipped with a warning, no node error either.
        """
        if isinstance(field.value, str) and not field.value.strip():
            self.skip(f"{field.owner}: {field.path}: empty", skipped)
            return None
        try:
            return field.cidr()
        except ClusterError as exc:
            loose = field.cidr_with_host_bits()
            if loose is None:
                self.skip(str(exc), skipped, node=node)
                return None
            self.skip(str(exc), f"{loose} used")
            return loose

    def mapping(self, field: Field, *, node: str | None = None) -> Field:
        """``field`` if it is a mapping (or absent), else an absent field, with a warning."""
        try:
            field.mapping()
            return field
        except ClusterError as exc:
            self.skip(str(exc), "read as empty", node=node)
            return Field(field.owner, field.path)
