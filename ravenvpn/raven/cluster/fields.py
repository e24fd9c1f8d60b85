"""A path-tracking view of parsed YAML, so every error names its object and field.

Kubernetes objects arrive as plain dicts/lists from PyYAML.  Instead of sprinkling
isinstance checks with hand-built messages, parsers walk a :class:`Field`, which
remembers who owns the value (``Gateway gw-hz``) and where it sits
(``spec.endpoints[0].port``); every accessor raises a one-line ClusterError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .addresses import IPAddress, IPNetwork, parse_cidr, parse_ip
from ...errors import ClusterError


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Field:
    """A value of a parsed object with its owner and path; accessors check its type and raise a
    ClusterError naming both (``Gateway gw-hz: spec.endpoints[0].port: invalid port 0``).

    ``value`` is :data:`MISSING` when the key is absent; YAML's null counts as absent too.
    """

    owner: str          # "Gateway gw-hangzhou", "Node hz-1", "document 3"
    path: str           # "spec.endpoints[0]"; "" for the object itself
    value: Any = MISSING

    # --- navigation -------------------------------------------------------

    @property
    def present(self) -> bool:
        """True unless absent or null (YAML `key:` with no value is null; Kubernetes treats it like
        an omitted field)."""
        return self.value is not MISSING and self.value is not None

    def child(self, key: str) -> Field:
        """The field at ``<path>.<key>`` (absent if this field is absent). Raises ClusterError (via
        :meth:`mapping`) if this field is not a mapping."""
        mapping = self.mapping()
        value = MISSING if mapping is None else mapping.get(key, MISSING)
        return Field(self.owner, f"{self.path}.{key}" if self.path else key, value)

    def first_child(self, *keys: str) -> Field:
        """The first of several spellings that is present (Raven writes `Replicas`)."""
        for key in keys:
            field = self.child(key)
            if field.present:
                return field
        return self.child(keys[0])

    def keyed(self, key: str) -> Field:
        """Child addressed as path[key], for map keys containing dots (label names)."""
        mapping = self.mapping()
        value = MISSING if mapping is None else mapping.get(key, MISSING)
        return Field(self.owner, f"{self.path}[{key}]", value)

    def items(self) -> list[Field]:
        """The elements of a list as fields ``<path>[i]``; [] when absent.

        Raises:
            ClusterError: the value is not a list.
        """
        if not self.present:
            return []
        if not isinstance(self.value, list):
            raise self.error(f"expected a list, got {_type_name(self.value)}")
        return [Field(self.owner, f"{self.path}[{i}]", v) for i, v in enumerate(self.value)]

    def mapping(self) -> dict[str, Any] | None:
        """The value as a dict; None when absent.

        Raises:
            ClusterError: the value is not a mapping.
        """
        if not self.present:
            return None
        if not isinstance(self.value, dict):
            raise self.error(f"expected a mapping, got {_type_name(self.value)}")
        return self.value

    # --- errors -----------------------------------------------------------

    def error(self, message: str) -> ClusterError:
        """A ClusterError ``<owner>: <path>: <message>`` for the caller to raise."""
        where = f"{self.owner}: {self.path}" if self.path else self.owner
        return ClusterError(f"{where}: {message}")

    # --- scalars ----------------------------------------------------------

    def string(self, default: str | None = None, *, required: bool = False) -> str | None:
        """The value as text (numbers are accepted as YAML often unquotes them); ``default`` when absent.

        Raises:
            ClusterError: not a scalar; or, with ``required``, absent or blank.
        """
        if not self.present:
            if required:
                raise self.error("missing")
            return default
        if isinstance(self.value, bool) or not isinstance(self.value, (str, int, float)):
            raise self.error(f"expected a string, got {_type_name(self.value)}")
        text = str(self.value)
        if required and not text.strip():
            raise self.error("empty")
        return text

    def required_string(self) -> str:
        """Like :meth:`string` with ``required=True``; raises ClusterError when absent or blank."""
        text = self.string(required=True)
        assert text is not None
        return text

    def boolean(self, default: bool = False) -> bool:
        """A YAML boolean; ``default`` when absent.

        Raises:
            ClusterError: anything but true or false (the string "true" included).
        """
        if not self.present:
            return default
        if not isinstance(self.value, bool):
            raise self.error(f"expected true or false, got {self.value!r}")
        return self.value

    def integer(self, default: int, *, minimum: int = 0) -> int:
        """An integer of at least ``minimum``; ``default`` when absent.

        Raises:
            ClusterError: not an integer (a boolean is not one), or below ``minimum``.
        """
        if not self.present:
            return default
        # bool is an int subclass in Python; `replicas: true` is a mistake, not 1.
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.error(f"expected an integer, got {self.value!r}")
        if self.value < minimum:
            raise self.error(f"must be >= {minimum}, got {self.value}")
        return self.value

    def port(self, default: int | None = None) -> int | None:
        """A port number 1-65535; ``default`` when absent.

        Raises:
            ClusterError: anything else.
        """
        if not self.present:
            return default
        if isinstance(self.value, bool) or not isinstance(self.value, int) \
                or not 1 <= self.value <= 65535:
            raise self.error(f"invalid port {self.value!r} (expected 1-65535)")
        return self.value

    def ip(self, *, required: bool = False) -> IPAddress | None:
        """An IPv4 or IPv6 address; None when absent or blank (unless ``required``).

        Raises:
            ClusterError: not an address; or, with ``required``, absent.
        """
        text = self.string(required=required)
        if text is None or not text.strip():
            return None
        try:
            return parse_ip(text)
        except ValueError:
            raise self.error(f"invalid IP address {text!r}") from None

    def required_ip(self) -> IPAddress:
        """Like :meth:`ip` with ``required=True``.

        Raises:
            ClusterError: absent, blank or not an address.
        """
        ip = self.ip(required=True)
        if ip is None:  # whitespace only
            raise self.error("empty")
        return ip

    def cidr(self) -> IPNetwork:
        """A required network in CIDR notation, host bits clear (``10.244.1.0/24``).

        Raises:
            ClusterError: absent, or not such a network (the reason is given for host bits or a
                missing prefix length).
        """
        text = self.required_string()
        try:
            return parse_cidr(text)
        except ValueError as exc:
            reason = str(exc)
            detail = f" ({reason})" if "host bits" in reason or "prefix" in reason else ""
            raise self.error(f"invalid CIDR {text!r}{detail}") from None

    def cidr_with_host_bits(self) -> IPNetwork | None:
        """The network of a CIDR written with host bits set (``10.244.1.5/24`` -> ``10.244.1.0/24``),
        None when the value is no such CIDR (absent, malformed, or already without host bits)."""
        if not isinstance(self.value, str):
            return None
        try:
            loose = parse_cidr(self.value, strict=False)
        except ValueError:
            return None
        return None if str(loose) == self.value.strip() else loose

    def cidr_list(self) -> tuple[IPNetwork, ...]:
        """A list of CIDRs (see :meth:`cidr`); () when absent. Raises ClusterError for a bad entry."""
        return tuple(item.cidr() for item in self.items())
