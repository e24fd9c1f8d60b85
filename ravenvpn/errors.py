"""ravenvpn's exceptions, importable from one place.

Every exception here is a :class:`RavenError`: its ``str()`` is one complete line naming the problem
(the object, field, file or port), so a command line prints it as ``ravenvpn: <reason>`` and never a
traceback. The family::

    RavenError
    ├── ClusterError      a cluster description is inconsistent (also a ValueError)
    ├── ApplyError        the kernel refused a route, rule or sysctl change (all of it undone)
    ├── StartupError      an interface could not be brought up (nothing left behind)
    └── UapiError         a UAPI request failed (carries the errno the client sees)

Other modules add subclasses for their own command lines (``UsageError`` of ``ravenvpn-wg``,
``CliError`` of ``ravenvpn``); catching RavenError catches them too.
"""
from __future__ import annotations

import errno as _errno

__all__ = ["RavenError", "ClusterError", "ApplyError", "StartupError", "UapiError"]


class RavenError(Exception):
    """A failure whose str() is a complete one-line explanation for the user."""


class ClusterError(RavenError, ValueError):
    """An inconsistency in the cluster description, as one line naming object and field.

    Example: ``Gateway gw-hangzhou: spec.endpoints[0].config.publicKey: missing``.
    Messages are forced onto one line so that a CLI can print them as-is (the
    RavenError contract) and a test can assert on them without caring about
    YAML's multi-line diagnostics. Raised by the cluster loader and the planner.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class ApplyError(RavenError):
    """The kernel refused a route, rule or sysctl change; what this apply changed has been undone."""


class StartupError(RavenError):
    """The daemon could not bring its interface up; nothing is left behind."""


class UapiError(RavenError):
    """A UAPI request failed; `errno` is the positive errno the client sees (negated on the wire)."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno


def invalid(message: str) -> UapiError:
    """A UapiError with EINVAL (a malformed or out-of-range value in a request)."""
    return UapiError(_errno.EINVAL, message)


def protocol(message: str) -> UapiError:
    """A UapiError with EPROTO (a request that breaks the UAPI's syntax)."""
    return UapiError(_errno.EPROTO, message)
