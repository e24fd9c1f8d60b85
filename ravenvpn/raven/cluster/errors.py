"""The single exception type of the Raven layer."""

from __future__ import annotations

from ...errors import RavenError


class ClusterError(RavenError, ValueError):
    """An inconsistency in the cluster description, as one line naming object and field.

    Example: ``Gateway gw-hangzhou: spec.endpoints[0].config.publicKey: missing``.
    Messages are forced onto one line so that a CLI can print them as-is (the
    RavenError contract) and a test can assert on them without caring about
    YAML's multi-line diagnostics.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
