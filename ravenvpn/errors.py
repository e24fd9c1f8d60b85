"""Exceptions that carry a one-line, user-facing reason (no traceback is shown for these)."""
from __future__ import annotations

import errno as _errno


class RavenError(Exception):
    """A failure whose str() is a complete one-line explanation for the user."""


class StartupError(RavenError):
    """The daemon could not bring its interface up; nothing is left behind."""


class UapiError(RavenError):
    """A UAPI request failed; `errno` is the positive errno the client sees (negated on the wire)."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno


def invalid(message: str) -> UapiError:
    return UapiError(_errno.EINVAL, message)


def protocol(message: str) -> UapiError:
    return UapiError(_errno.EPROTO, message)
