"""The cross-platform userspace configuration protocol (wireguard.com/xplatform), as wireguard-go speaks it.

`Uapi.get()` serialises the device; `Uapi.set(lines)` applies a request line by line,
stopping at the first bad line (lines before it stay applied, like wireguard-go) and
raising UapiError. `Uapi.serve(conn)` runs one client connection, which may carry
many requests. Error replies are `errno=-N` (negative), which is what `wg` expects.

Nothing here logs key material: values of key-bearing lines are never echoed.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol

from ..errors import UapiError, invalid, protocol
from ..protocol import keys
from .udp import Endpoint, normalise_endpoint

if TYPE_CHECKING:
    from ..protocol.peer import Peer
    from ..protocol.tunnel import Tunnel

log = logging.getLogger("ravenvpn.uapi")

MAX_LINE = 4096                 # longest line we accept (real lines are < 100 bytes)
MAX_REQUEST_LINES = 1 << 20     # guard against a client that never sends the blank line
MAX_REQUEST_BYTES = 64 << 20    # and bound what one request may buffer (1000s of peers fit easily)
ZERO_KEY = bytes(32)

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]+")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class DeviceControl(Protocol):
    """The parts of the device that live outside the sans-I/O core."""

    @property
    def listen_port(self) -> int:
        """The UDP port listened on (0 before any bind)."""
        ...

    @property
    def fwmark(self) -> int:
        """The SO_MARK of the sockets (0 = none)."""
        ...

    def set_listen_port(self, port: int) -> None:
        """Rebind; raise OSError if the port cannot be had."""

    def set_fwmark(self, mark: int) -> None:
        """Apply SO_MARK to the sockets; raise OSError on failure."""

    def config_changed(self) -> None:
        """Called after each set request, outside the lock: lets timers run now (e.g. keepalives)."""


# ---- value parsers: strict like Go's strconv/netip, never echoing secrets -------------------

def parse_key(value: str, what: str) -> bytes:
    """A 32-byte key from 64 hex characters (`what` names the field in the error; never the value).

    Raises:
        UapiError: EINVAL, not 64 hex characters.
    """
    if not _HEX_KEY.fullmatch(value):
        raise invalid(f"invalid {what}: not 64 hex characters")
    return bytes.fromhex(value)


def parse_uint(value: str, bits: int, what: str) -> int:
    """A decimal integer below 2**bits (digits only, as Go's strconv).

    Raises:
        UapiError: EINVAL, not digits or too large.
    """
    if not _DIGITS.fullmatch(value) or int(value) >= 1 << bits:
        raise invalid(f"invalid {what}: {value!r}")
    return int(value)


def parse_true(value: str, what: str) -> None:
    """Accept exactly "true" (the only value of replace_peers, remove, ...).

    Raises:
        UapiError: EINVAL, anything else.
    """
    if value != "true":
        raise invalid(f"invalid {what} value: {value!r}")


def parse_endpoint(value: str) -> Endpoint:
    """`a.b.c.d:port`, `[v6]:port`, or `[v6%zone]:port` with the zone an interface name or index,
    the form `wg` sends for a link-local address (getnameinfo's). IP literals only, like wireguard-go.

    A link-local address keeps its zone as the scope id of the endpoint, so its packets leave on
    that link; on any other address a zone means nothing and is dropped.

    Raises:
        UapiError: (EINVAL) not one of those forms, or a zone naming no interface of this host.
    """
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep or ":" not in host:
            raise invalid(f"invalid endpoint {value!r}")
    else:
        host, sep, port = value.rpartition(":")
        if not sep or ":" in host or "%" in host:
            raise invalid(f"invalid endpoint {value!r}")
    host, percent, zone = host.partition("%")
    try:
        if percent and not zone:
            raise ValueError("an empty zone")
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise invalid(f"invalid endpoint {value!r}") from None
    scope = 0
    if zone:
        try:
            scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
        except OSError:
            raise invalid(f"invalid endpoint {value!r}: no interface {zone!r}") from None
    return normalise_endpoint(str(addr), parse_uint(port, 16, "endpoint port"), 0, scope)


def format_endpoint(endpoint: Endpoint) -> str:
    """`a.b.c.d:port`, `[v6]:port` or `[v6%ifname]:port` (the scope by interface name, as `wg`
    prints it; by index if that interface is gone)."""
    host, port = endpoint[0], endpoint[1]
    if len(endpoint) == 4 and endpoint[3]:
        try:
            zone = socket.if_indextoname(endpoint[3])
        except OSError:
            zone = str(endpoint[3])
        host = f"{host}%{zone}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_allowed_ip(value: str) -> tuple[bool, Network]:
    """Returns (remove, network); a leading '-' asks to remove that prefix.

    Raises:
        UapiError: EINVAL, not an address/prefix-length pair (or a zone given).
    """
    remove = value.startswith("-")
    text = value[1:] if remove else value
    addr, sep, bits = text.partition("/")
    if not sep or not _DIGITS.fullmatch(bits) or "%" in addr:
        raise invalid(f"invalid allowed_ip {value!r}")
    try:
        return remove, ipaddress.ip_network(f"{addr}/{int(bits)}", strict=False)
    except ValueError:
        raise invalid(f"invalid allowed_ip {value!r}") from None


def short_key(public_key: bytes) -> str:
    """How logs name a peer: an abbreviated public key (public keys are not secret)."""
    b64 = keys.b64encode(public_key)
    return f"peer({b64[:4]}…{b64[-5:-1]})"


# ---- the protocol --------------------------------------------------------------------------

@dataclass
class _PeerSection:
    """State while applying the lines after one `public_key=`."""
    peer: Peer | None = None        # None: a placeholder whose lines are parsed but not applied
    created: bool = False


class Uapi:
    """Serves the UAPI for one device: `get`, `set` and whole client connections (`serve`).

    The packet pump takes the same `lock` once per wake-up, so neither a get nor a set holds it for
    long: a get formats GET_SLICE peers per hold, a set applies lines for at most SET_SLICE seconds
    per hold, then lets the pump in (wireguard-go's data path likewise runs on during IPC). Both
    are linear in peers and allowed IPs.

    Requests are atomic toward each other, as wireguard-go's ``ipcMutex`` makes them: a get or set
    from another client waits until the set in progress is done, so ``wg show`` (or the ``wg
    showconf`` that ``wg syncconf`` diffs against) never sees half of a ``wg setconf``, and two
    sets never interleave their peers. Thread-safe.
    """

    GET_SLICE = 512         # peers formatted per hold of the lock (~3 ms)
    SET_SLICE = 0.005       # seconds of set work per hold of the lock
    YIELD = 0.0002          # seconds without the lock between slices, so the pump can take it

    def __init__(self, tunnel: Tunnel, control: DeviceControl, lock: threading.Lock | threading.RLock) -> None:
        self.tunnel = tunnel
        self.control = control
        self.lock = lock
        self._ipc = threading.Lock()    # one request at a time (the pump only needs `lock`)

    # -- get --

    def get(self) -> str:
        """The device as `get=1` answers it (without the final errno line), once no set is in
        progress."""
        with self._ipc:
            return self._get()

    def _get(self) -> str:
        with self.lock:
            out = self._device_lines()
            peers = list(self.tunnel.peers.values())
        for start in range(0, len(peers), self.GET_SLICE):
            if start:
                time.sleep(self.YIELD)
            with self.lock:
                live = self.tunnel.peers
                for peer in peers[start:start + self.GET_SLICE]:
                    if live.get(peer.public_key) is peer:      # not removed meanwhile
                        out.append(self._peer_text(peer))
        return "".join(out)

    def _device_lines(self) -> list[str]:
        out = []
        private = self.tunnel.private_key
        if private is not None and private != ZERO_KEY:
            out.append(f"private_key={private.hex()}\n")
        if self.control.listen_port:
            out.append(f"listen_port={self.control.listen_port}\n")
        if self.control.fwmark:
            out.append(f"fwmark={self.control.fwmark}\n")
        return out

    def _peer_text(self, peer: Peer) -> str:
        """One peer's lines, each ending in a newline (one string: 50,000 peers are printed)."""
        ns = peer.last_handshake_time_ns
        endpoint = f"endpoint={format_endpoint(peer.endpoint)}\n" if peer.endpoint is not None else ""
        allowed = "".join(f"allowed_ip={p}\n" for p in self.tunnel.allowed_ip_prefixes(peer))
        # wireguard-go always sends preshared_key (zeros when none)
        return (f"public_key={peer.public_key.hex()}\n"
                f"preshared_key={(peer.preshared_key or ZERO_KEY).hex()}\n"
                f"protocol_version=1\n{endpoint}"
                f"last_handshake_time_sec={ns // 1_000_000_000}\n"
                f"last_handshake_time_nsec={ns % 1_000_000_000}\n"
                f"tx_bytes={peer.tx_bytes}\nrx_bytes={peer.rx_bytes}\n"
                f"persistent_keepalive_interval={peer.persistent_keepalive_interval}\n{allowed}")

    # -- set --

    def set(self, lines: Iterable[str]) -> None:
        """Apply a request (without its `set=1` and blank lines), after any other request in
        progress. Raises UapiError."""
        try:
            with self._ipc:
                self._apply(lines)
        finally:
            self.control.config_changed()

    def _apply(self, lines: Iterable[str]) -> None:
        """Apply line by line, holding the lock for at most SET_SLICE seconds at a time."""
        section: _PeerSection | None = None     # None while still in the device part
        lock, clock, slice_ = self.lock, time.monotonic, self.SET_SLICE
        lock.acquire()
        try:
            until = clock() + slice_
            for line in lines:
                key, sep, value = line.partition("=")
                if not sep:
                    raise protocol("line without '='")
                if key == "public_key":
                    if clock() >= until:
                        # Between peers only: a peer's lines are applied in one hold.
                        lock.release()
                        time.sleep(self.YIELD)
                        lock.acquire()
                        until = clock() + slice_
                    section = self._start_peer(value)
                elif section is None:
                    self._device_line(key, value)
                else:
                    self._peer_line(section, key, value)
        finally:
            lock.release()

    def _device_line(self, key: str, value: str) -> None:
        t = self.tunnel
        if key == "private_key":
            private = ZERO_KEY if value == "" else parse_key(value, "private_key")
            if private == ZERO_KEY:
                t.private_key = None
                log.info("UAPI: private key cleared")
                return
            private = keys.clamp(private)
            t.private_key = private   # also drops a peer that has our new public key, as wireguard-go
            log.info("UAPI: private key updated")
        elif key == "listen_port":
            port = parse_uint(value, 16, "listen_port")
            try:
                self.control.set_listen_port(port)
            except OSError as exc:
                raise UapiError(errno.EADDRINUSE, f"failed to set listen_port {port}: {exc.strerror or exc}") from None
            log.info("UAPI: listening on UDP port %d", self.control.listen_port)
        elif key == "fwmark":
            mark = parse_uint(value, 32, "fwmark")
            try:
                self.control.set_fwmark(mark)
            except OSError as exc:
                raise UapiError(errno.EADDRINUSE, f"failed to set fwmark: {exc.strerror or exc}") from None
        elif key == "replace_peers":
            parse_true(value, "replace_peers")
            t.clear_peers()
            log.info("UAPI: removed all peers")
        else:
            raise invalid(f"invalid UAPI device key: {key!r}")

    def _start_peer(self, value: str) -> _PeerSection:
        public = parse_key(value, "public_key")
        t = self.tunnel
        if public == t.public_key:
            return _PeerSection()       # our own key: accepted and ignored, like wireguard-go
        peer = t.peers.get(public)
        if peer is not None:
            return _PeerSection(peer)
        try:
            peer = t.add_peer(public)
        except ValueError as exc:
            raise invalid(f"failed to create peer: {exc}") from None
        log.info("UAPI: %s created", short_key(public))
        return _PeerSection(peer, created=True)

    def _peer_line(self, s: _PeerSection, key: str, value: str) -> None:
        t, peer = self.tunnel, s.peer
        if key == "update_only":
            parse_true(value, "update_only")
            if s.created and peer is not None:
                t.remove_peer(peer.public_key)
                s.peer = None
        elif key == "remove":
            parse_true(value, "remove")
            if peer is not None:
                t.remove_peer(peer.public_key)
                log.info("UAPI: %s removed", short_key(peer.public_key))
            s.peer = None
        elif key == "preshared_key":
            psk = parse_key(value, "preshared_key")
            if peer is not None:
                peer.preshared_key = psk
        elif key == "endpoint":
            endpoint = parse_endpoint(value)
            if peer is not None:
                peer.endpoint = endpoint
        elif key == "persistent_keepalive_interval":
            interval = parse_uint(value, 16, "persistent_keepalive_interval")
            if peer is not None:
                peer.persistent_keepalive_interval = interval
        elif key == "replace_allowed_ips":
            parse_true(value, "replace_allowed_ips")
            if peer is not None:
                t.clear_allowed_ips(peer)
        elif key == "allowed_ip":
            remove, network = parse_allowed_ip(value)
            if peer is not None:
                if remove:
                    t.remove_allowed_ip(peer, network)
                else:
                    t.add_allowed_ip(peer, network)
        elif key == "protocol_version":
            if value != "1":
                raise invalid(f"invalid protocol_version: {value!r}")
        else:
            raise invalid(f"invalid UAPI peer key: {key!r}")

    # -- one client connection --

    def serve(self, conn: socket.socket) -> None:
        """Answer requests until the client closes or sends an unknown operation.

        Errors of a request are answered (errno=-N), not raised: the UapiError raised for an
        oversized request is caught here like any other.
        Raises:
            OSError: the connection failed other than by the client going away.
        """
        reader = conn.makefile("rb")
        try:
            while True:
                op = reader.readline(MAX_LINE)
                if not op:
                    return
                if op == b"get=1\n":
                    nxt = reader.read(1)
                    if not nxt:
                        return
                    if nxt != b"\n":
                        self._reply(conn, invalid("trailing character after get=1"))
                        continue
                    conn.sendall((self.get() + "errno=0\n\n").encode())
                elif op == b"set=1\n":
                    lines, ok = self._read_request(reader)
                    error = None
                    try:
                        if not ok:
                            raise protocol("request line too long or too many lines")
                        self.set(lines)
                    except UapiError as exc:
                        error = exc
                    self._reply(conn, error)
                else:
                    log.error("UAPI: invalid operation %r", op[:16].decode("ascii", "replace").strip())
                    return
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            reader.close()

    @staticmethod
    def _read_request(reader) -> tuple[list[str], bool]:
        """Lines up to the blank line (or EOF). ok=False if the request is oversized (it is drained)."""
        lines: list[str] = []
        ok = True
        continuation = False        # the previous chunk was the cut-off start of an overlong line
        size = 0
        while True:
            raw = reader.readline(MAX_LINE)
            if not raw or (raw == b"\n" and not continuation):
                return lines, ok
            continuation = not raw.endswith(b"\n")
            size += len(raw)
            if continuation or len(lines) >= MAX_REQUEST_LINES or size > MAX_REQUEST_BYTES:
                ok = False
                lines = []
            if ok:
                lines.append(raw[:-1].decode("utf-8", "replace"))

    @staticmethod
    def _reply(conn: socket.socket, error: UapiError | None) -> None:
        if error is None:
            conn.sendall(b"errno=0\n\n")
            return
        log.error("UAPI: %s", error)
        conn.sendall(f"errno={-error.errno}\n\n".encode())
