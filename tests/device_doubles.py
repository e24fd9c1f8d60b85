"""In-memory TUN and UDP doubles for the pump (as wireguard-go's tun/tuntest and conn/bindtest).

Each double hands the pump one end of a local SOCK_DGRAM socketpair, so the pump's epoll loop
runs unchanged, without root, namespaces or real interfaces; the test holds the other end.
Only for unit tests of the orchestration (the pump, what a Device wires together): the real
TunDevice and UdpTransport keep their tests in namespaces.
"""
from __future__ import annotations

import socket

Endpoint = tuple[str, int]


class MemoryTun:
    """A TUN device double: the pump reads what the test `inject`s and writes what the test `read`s."""

    def __init__(self, name: str = "mem0", mtu: int = 1420) -> None:
        self.name = name
        self.mtu = mtu
        self._pump_end, self._kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._pump_end.setblocking(False)

    # -- the TunDevice interface the pump and Device use --
    def get_mtu(self) -> int:
        return self.mtu

    def fileno(self) -> int:
        return self._pump_end.fileno()

    def read_batch(self, budget: int) -> list[bytes]:
        packets: list[bytes] = []
        while len(packets) < budget:
            try:
                packets.append(self._pump_end.recv(65536))
            except BlockingIOError:
                break
        return packets

    def write_batch(self, packets: list[bytes]) -> None:
        for packet in packets:
            self._pump_end.send(packet)

    def close(self) -> None:
        """Close the pump's end (the Device does this); the test's end stays readable until `dispose`."""
        self._pump_end.close()

    def dispose(self) -> None:
        self._pump_end.close()
        self._kernel_end.close()

    # -- the test's side: the kernel --
    def inject(self, packet: bytes) -> None:
        """A packet the kernel routed into the TUN (the pump will encrypt it)."""
        self._kernel_end.send(packet)

    def read(self, timeout: float = 5.0) -> bytes:
        """The next packet the pump wrote to the TUN. Raises TimeoutError if none comes in time."""
        self._kernel_end.settimeout(timeout)
        try:
            return self._kernel_end.recv(65536)
        except socket.timeout:
            raise TimeoutError(f"nothing written to {self.name} within {timeout} s") from None


class MemoryBind:
    """A UdpTransport double wired to one other MemoryBind: what one sends, the other receives,
    from the sender's `endpoint`, whatever endpoint it was addressed to (`sent` records those)."""

    def __init__(self, sock: socket.socket, endpoint: Endpoint) -> None:
        sock.setblocking(False)
        self._sock = sock
        self.endpoint = endpoint
        self.peer_endpoint: Endpoint = ("0.0.0.0", 0)
        self.port, self.fwmark, self.generation = endpoint[1], 0, 1
        self.sent: list[Endpoint] = []

    @property
    def sockets(self) -> list[socket.socket]:
        return [] if self._sock.fileno() < 0 else [self._sock]

    @property
    def v6(self) -> None:
        return None

    def bind_default(self) -> None:
        """Already "bound" at `endpoint`."""

    def bind(self, port: int) -> None:
        self.port = port

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark

    def take_retired(self) -> list[socket.socket]:
        return []

    def recv_batch(self, sock: socket.socket, budget: int) -> list[tuple[bytes, Endpoint]]:
        datagrams: list[tuple[bytes, Endpoint]] = []
        while len(datagrams) < budget:
            try:
                datagrams.append((sock.recv(65536), self.peer_endpoint))
            except BlockingIOError:
                break
        return datagrams

    def send_batch(self, datagrams: list[tuple[bytes, Endpoint]]) -> None:
        for data, endpoint in datagrams:
            self.sent.append(endpoint)
            self._sock.send(data)

    def send_bursts(self, bursts: list) -> None:
        for buffer, size, endpoint in bursts:
            self.send_batch([(bytes(buffer[off:off + size]), endpoint) for off in range(0, len(buffer), size)])

    def close(self) -> None:
        self._sock.close()


def bind_pair(a: Endpoint, b: Endpoint) -> tuple[MemoryBind, MemoryBind]:
    """Two connected binds, at endpoints `a` and `b` (what each side's datagrams come from)."""
    sa, sb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (sa, sb):  # room for a burst of full-size datagrams
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    bind_a, bind_b = MemoryBind(sa, a), MemoryBind(sb, b)
    bind_a.peer_endpoint, bind_b.peer_endpoint = b, a
    return bind_a, bind_b
