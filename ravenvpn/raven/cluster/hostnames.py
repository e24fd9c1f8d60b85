"""Resolving Gateway ``publicIP`` hostnames: the one piece of cluster input that needs I/O.

The planner stays pure: a node runtime calls :func:`resolve_hostnames` on
:attr:`Cluster.hostnames <ravenvpn.raven.cluster.model.Cluster.hostnames>` each time it
(re)plans (start, file change, SIGHUP) and passes the result to
:func:`~ravenvpn.raven.plan.planner.plan`.  A name that does not resolve is a warning for
the endpoints that use it (they get no endpoint), never a failure of the cluster.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import Any

from .addresses import IPAddress, parse_ip

#: hostname -> its address, or the reason it has none (one line, for the plan's warning).
Resolved = dict[str, IPAddress | str]


def resolve_hostnames(names: Iterable[str], *,
                      getaddrinfo: Callable[..., list[Any]] = socket.getaddrinfo) -> Resolved:
    """Resolve each name as ``wg`` resolves an endpoint: the system resolver (``/etc/hosts``, then
    DNS, per nsswitch.conf), UDP, only families the host has addresses for, the first answer
    (RFC 6724 order).  Blocks for as long as the resolver does (a DNS timeout: seconds).

    ``getaddrinfo`` is injectable for tests.  Never raises: a failure is the mapped value.
    """
    out: Resolved = {}
    for name in names:
        try:
            infos = getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, socket.AI_ADDRCONFIG)
            out[name] = parse_ip(str(infos[0][4][0]).split("%")[0]) if infos else "no address"
        except (OSError, UnicodeError, ValueError) as exc:   # socket.gaierror is an OSError
            out[name] = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return out
