"""How many forwarding hops away another edge's NAT router is, and the TTLs of NAT openers.

Hole punching (punch.py) has the non-initiating edge open its own NAT toward the other edge's
public endpoint before the other edge's first handshake initiation arrives there. An opener that
reached the *other* NAT router too early would leave a conntrack entry there that spoils that
router's own mapping (see punch.py's module doc), so openers carry an IP TTL high enough to pass the
local NAT (hop 1) and any router up to hop ``H - 1``, and too low to reach hop ``H``, the other NAT
router, whose public address is the endpoint.

``H`` is found once per endpoint address, traceroute-style (RFC 792 time exceeded, RFC 1122
§3.2.2.1 port unreachable): one UDP probe per TTL 1..:data:`MAX_TTL` from a socket of its own (so
no probe touches the tunnel port's NAT mapping), each to port ``33434 + TTL`` of the address (a
port nothing listens on; each probe its own conntrack entry, apart from the tunnel's), with
``IP_RECVERR`` so that the ICMP errors coming back are read from the socket's error queue
(``MSG_ERRQUEUE``, ip(7)). The first TTL at which the address itself answers (port unreachable) is
``H``; a router that answers nothing to unsolicited UDP (a home router's input firewall) makes
``H`` one more than the farthest TTL that expired on the way. Underestimating ``H`` is harmless
(the openers still pass the local NAT, which is hop 1); no answer at all gives None.

The pure part (:func:`hop_count`, :func:`opener_ttls`, :func:`parse_error`) is tested without
sockets; :func:`discover_hops` does the I/O and blocks up to ``timeout`` seconds, so the runtime
calls it in a worker thread (:class:`HopFinder`), never on the packet pump.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["hop_count", "opener_ttls", "parse_error", "discover_hops", "HopFinder", "IcmpError",
           "PROBE_BASE_PORT", "MAX_TTL", "DISCOVERY_TIMEOUT"]

log = logging.getLogger("ravenvpn.direct")

PROBE_BASE_PORT = 33434          # traceroute's: a probe with TTL t goes to port 33434 + t
MAX_TTL = 8                      # probes with TTL 1..8; a farther NAT router gets H = 9 (a safe lower bound)
DISCOVERY_TIMEOUT = 0.3          # seconds to wait for ICMP answers (within the round's 0.5 s lead)
QUIET_MIN = 0.05                 # seconds without a new answer that end a discovery early
SOL_IP = getattr(socket, "SOL_IP", 0)
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
SO_EE_ORIGIN_ICMP = 2
ICMP_DEST_UNREACH = 3
ICMP_TIME_EXCEEDED = 11
#: errors an ICMP answer leaves pending on the socket (sk_err), reported by the next send
_REPORTED = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EPROTO,
                       errno.EHOSTDOWN, errno.ENETDOWN, errno.EACCES, errno.EPERM})
_EXTENDED_ERR = struct.Struct("=IBBBBII")     # struct sock_extended_err (linux/errqueue.h)


@dataclass(frozen=True)
class IcmpError:
    """One ICMP error from the error queue: its type and code (RFC 792) and who sent it."""

    type: int
    code: int
    offender: str


def parse_error(ancdata: Iterable[tuple[int, int, bytes]]) -> IcmpError | None:
    """The ICMP error of a ``recvmsg(..., MSG_ERRQUEUE)`` answer's control messages: the
    ``IP_RECVERR`` message holds a ``struct sock_extended_err`` followed by the offender's
    ``sockaddr_in`` (SO_EE_OFFENDER). None when there is none, or it is no ICMPv4 error."""
    for level, kind, data in ancdata:
        if level != SOL_IP or kind != IP_RECVERR or len(data) < _EXTENDED_ERR.size:
            continue
        _errno, origin, icmp_type, code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(data)
        if origin != SO_EE_ORIGIN_ICMP:
            continue
        offender = ""
        rest = data[_EXTENDED_ERR.size:]
        if len(rest) >= 8 and struct.unpack_from("=H", rest)[0] == socket.AF_INET:
            offender = socket.inet_ntoa(rest[4:8])
        return IcmpError(icmp_type, code, offender)
    return None


def hop_count(answers: Iterable[tuple[int, IcmpError]], target: str) -> int | None:
    """``H``, the hops to ``target`` (its own hop included), from ``(probe TTL, ICMP error)`` pairs.

    The smallest TTL that ``target`` itself answered (destination unreachable from the target);
    without such an answer, one more than the largest TTL that expired on the way (time exceeded);
    None when nothing answered. Other errors (a router's net unreachable) say nothing about ``H``."""
    reached = [ttl for ttl, err in answers if err.type == ICMP_DEST_UNREACH and err.offender == target]
    if reached:
        return min(reached)
    expired = [ttl for ttl, err in answers if err.type == ICMP_TIME_EXCEEDED]
    return max(expired) + 1 if expired else None


def opener_ttls(hops: int | None) -> tuple[int, ...]:
    """The TTLs of NAT openers toward an address ``hops`` away: every TTL in ``2 .. hops - 1``,
    which passes the local NAT (hop 1; a TTL of 1 dies there before it is NATed) and dies before
    the other NAT router (hop ``hops``). Each TTL once, so that every NAT on the way out (a
    carrier-grade NAT behind the home router) gets its mapping too. Empty when no TTL is safe (the
    two NATs are neighbours, ``hops <= 2``) or ``hops`` is unknown: then openers go unlimited."""
    if hops is None or hops <= 2:
        return ()
    return tuple(range(2, hops))


def discover_hops(host: str, *, timeout: float = DISCOVERY_TIMEOUT, max_ttl: int = MAX_TTL,
                  fwmark: int = 0) -> int | None:
    """Probe the hop count to IPv4 ``host`` (see the module doc); blocks up to ``timeout`` seconds:
    less when the host answers, or when after some answers none came for twice as long as the
    slowest took (at least :data:`QUIET_MIN`). None when nothing answered, for an IPv6 host (not yet probed),
    or when the socket cannot be made (logged at debug). ``fwmark``: SO_MARK for the probes (0:
    none). Thread-safe (a socket per call)."""
    try:
        if ipaddress.ip_address(host).version != 4:
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    except (ValueError, OSError) as exc:
        log.debug("hop discovery to %s: %s", host, exc)
        return None
    with sock:
        try:
            sock.setsockopt(SOL_IP, IP_RECVERR, 1)
            if fwmark:
                sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_MARK", 36), fwmark)
            for ttl in range(1, max_ttl + 1):
                sock.setsockopt(SOL_IP, socket.IP_TTL, ttl)
                _send(sock, (host, PROBE_BASE_PORT + ttl))
        except OSError as exc:
            log.debug("hop discovery to %s: %s", host, exc)
            return None
        return hop_count(_collect(sock, host, timeout, max_ttl), host)


def _collect(sock: socket.socket, host: str, timeout: float, max_ttl: int) -> list[tuple[int, IcmpError]]:
    """The ICMP answers to the probes just sent, until the host answers, the routers fall quiet,
    or ``timeout`` seconds."""
    answers: list[tuple[int, IcmpError]] = []
    poller = select.poll()
    poller.register(sock, select.POLLERR | select.POLLIN)
    sent = time.monotonic()
    deadline = sent + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not poller.poll(left * 1000):
            break
        got = _drain(sock, host, max_ttl)
        if got:
            answers += got
            # A silent host (an input firewall) answers never: stop once the routers have been
            # quiet for twice as long as the slowest of them took (a farther one missed only
            # lowers H, which is safe), not at the timeout: the openers wait for this.
            quiet = max(QUIET_MIN, 2 * (time.monotonic() - sent))
            deadline = min(sent + timeout, time.monotonic() + quiet)
        if any(err.type == ICMP_DEST_UNREACH and err.offender == host for _t, err in answers):
            break           # the host itself answered: nothing farther to learn
    return answers


def _send(sock: socket.socket, dest: tuple[str, int]) -> None:
    """One probe. With IP_RECVERR an earlier probe's ICMP error is also reported (once) by the next
    send, which then sends nothing: send again."""
    try:
        sock.sendto(b"ravenvpn hop probe", dest)
    except OSError as exc:
        if exc.errno not in _REPORTED:
            raise
        sock.sendto(b"ravenvpn hop probe", dest)


def _drain(sock: socket.socket, host: str, max_ttl: int) -> list[tuple[int, IcmpError]]:
    got = []
    for _ in range(4 * max_ttl):
        try:
            _data, ancdata, _flags, addr = sock.recvmsg(64, socket.CMSG_SPACE(512), socket.MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        err = parse_error(ancdata)
        if err is None or not isinstance(addr, tuple) or addr[0] != host:
            continue
        ttl = addr[1] - PROBE_BASE_PORT        # the probe's destination port tells its TTL
        if 1 <= ttl <= max_ttl:
            got.append((ttl, err))
    for _ in range(4 * max_ttl):     # an answer on a probe port itself (something listens there)
        try:
            sock.recv(64)
        except OSError:
            break
    return got


class HopFinder:
    """Hop counts by address, each discovered once in a worker thread. Thread-safe.

    :meth:`request` starts a discovery (unless one runs or a count is known); :meth:`finished`
    returns the counts found since the last call. A discovery that found nothing (None) is
    forgotten, so the next request tries again. ``discover`` is the probe (the test seam)."""

    def __init__(self, discover: Callable[[str], int | None] = discover_hops) -> None:
        self._discover = discover
        self._lock = threading.Lock()
        self._known: dict[str, int] = {}
        self._running: set[str] = set()
        self._done: list[tuple[str, int | None]] = []
        self._told: set[str] = set()       # addresses whose failed discovery was logged

    def request(self, host: str) -> None:
        """Discover ``host``'s hop count in a worker thread unless it is known or being found."""
        with self._lock:
            if host in self._running:
                return
            if host in self._known:
                self._done.append((host, self._known[host]))
                return
            self._running.add(host)
        threading.Thread(target=self._work, args=(host,), name=f"hops-{host}", daemon=True).start()

    def _work(self, host: str) -> None:
        try:
            hops = self._discover(host)
        except Exception:          # a probe must never take the direct paths down
            log.exception("hop discovery to %s failed", host)
            hops = None
        with self._lock:
            self._running.discard(host)
            if hops is not None:
                self._known[host] = hops
            self._done.append((host, hops))
            first = host not in self._told
            self._told.add(host)
        if hops is not None:
            ttls = opener_ttls(hops)
            log.info("%s is %d hops away: NAT openers with TTL %s", host, hops,
                     f"{ttls[0]}..{ttls[-1]}" if ttls else "unlimited (no router between the NATs)")
        elif first:
            log.info("%s: no ICMP answer to hop probes: NAT openers unlimited", host)

    def finished(self) -> list[tuple[str, int | None]]:
        """``(address, hop count or None)`` of the discoveries (and requests for known counts)
        completed since the last call."""
        with self._lock:
            done, self._done = self._done, []
        return done
