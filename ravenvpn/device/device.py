"""`Device`: one running WireGuard interface, embeddable in any Python process.

A Device owns a TUN device, the UDP sockets, the sans-I/O `Tunnel` (protocol core), the
packet pump that moves batches between them, and optionally the UAPI socket that `wg`
talks to. It does no argv or environment parsing, never forks, never installs signal
handlers and never configures logging: that is the `ravenvpn-wg` command's job
(daemon.py). Typical use::

    device = Device("wg0", uapi=False)
    device.start()                      # opens everything, pumps in a thread it owns
    with device.configure() as tunnel:  # the one configuration entry point
        tunnel.private_key = key
        peer = tunnel.add_peer(peer_public_key)
        peer.endpoint = ("192.0.2.2", 4500)
        tunnel.add_allowed_ip(peer, ipaddress.ip_network("10.9.0.2/32"))
    ...
    device.close()

Thread-safety: the Tunnel is not thread-safe. Every access to it goes through
`configure()` (or holds `device.lock`), which the pump also takes, once per wake-up.
`start`, `stop`, `close`, `configure`, `refusals`, `set_listen_port` and `set_fwmark` may be called
from any thread; `stop` also from a signal handler.
"""
from __future__ import annotations

import errno
import logging
import threading
from contextlib import contextmanager
from typing import Iterator

from ..errors import StartupError
from ..protocol.clock import Clock
from ..protocol.counters import Counter
from ..protocol.tunnel import Tunnel
from .netlink import LinkMonitor
from .pump import Pump
from .refusals import RefusalReporter
from .tun import DEFAULT_MTU, TunDevice
from .uapi import Uapi
from .uapi_server import UapiServer, check_not_in_use, socket_path
from .udp import UdpTransport

__all__ = ["Device"]

log = logging.getLogger("ravenvpn")

#: Seconds `close()` waits for the pump thread it started to finish its current wake-up.
JOIN_TIMEOUT = 5.0


class Device:
    """One running interface: TUN + UDP + Tunnel + pump (+ UAPI socket). Implements uapi.DeviceControl.

    Args:
        ifname: the TUN interface to create (at most 15 characters, `check_ifname`).
        busy_poll: seconds to keep polling after traffic instead of sleeping (see pump.py); 0 = off.
        uapi: serve the UAPI socket, so that `wg show/set IFNAME` work.
        uapi_path: where that socket goes; default /var/run/wireguard/IFNAME.sock, where `wg` looks.
            Another path lets several devices in one mount namespace (or a test) keep apart.
        clock: the time source (monotonic seconds for the timers, wall-clock ns for handshake
            timestamps); the test seam of protocol/clock.py. Default: the real clocks.
        timer_scale: multiplies every protocol timer (REKEY_AFTER_TIME, ...); 1.0 in production,
            test-only otherwise (see `Tunnel`).
        tun, udp: I/O objects to use instead of creating the TUN device `ifname` and the UDP
            sockets, as wireguard-go's NewDevice(tun, bind): in-memory doubles in unit tests
            (tests/device_doubles.py). They must offer what the pump uses of TunDevice and
            UdpTransport; the Device closes them. No link monitor runs for a given `tun`.

    Attributes:
        tunnel: the protocol core. Only touch it inside `configure()` (or holding `lock`).
        lock: re-entrant lock guarding the tunnel and the sockets.
        ifname: the interface name.

    Nothing is opened by the constructor; `open()` (or `start()`) does the I/O.
    """

    def __init__(self, ifname: str, *, busy_poll: float = 0.0, uapi: bool = True,
                 uapi_path: str | None = None, clock: Clock | None = None, timer_scale: float = 1.0,
                 tun: TunDevice | None = None, udp: UdpTransport | None = None) -> None:
        self.ifname = ifname
        self.busy_poll = busy_poll
        self.uapi = uapi
        self.uapi_path = uapi_path or socket_path(ifname)
        self.clock = clock or Clock()
        # Re-entrant: the setters take it themselves while a UAPI request already holds it.
        self.lock = threading.RLock()
        self.tunnel = Tunnel(clock=self.clock, timer_scale=timer_scale)
        self.closed = False
        self._tun: TunDevice | None = tun
        self._tun_given = tun is not None
        self._udp = udp if udp is not None else UdpTransport()
        self._monitor: LinkMonitor | None = None
        self._server: UapiServer | None = None
        self._pump: Pump | None = None
        self._thread: threading.Thread | None = None
        self._stop_reason: str | None = None

    # ------------------------------------------------------------------ configuration
    @contextmanager
    def configure(self) -> Iterator[Tunnel]:
        """The configuration entry point: ``with device.configure() as tunnel: ...``.

        Holds the device lock for the block (the pump waits, so the block should be short) and
        yields the `Tunnel` to change (keys, peers, allowed IPs, endpoints, relay, mtu). On leaving
        the block, also when it raised, the pump is woken to act on the change at once (a new
        peer's keepalive, staged packets). Changes made before an exception stay applied.
        Works before `open()` too. Thread-safe; re-entrant in the same thread.
        """
        try:
            with self.lock:
                yield self.tunnel
        finally:
            self.config_changed()

    @property
    def listen_port(self) -> int:
        """The UDP port listened on (both families); 0 before `open()`."""
        return self._udp.port

    @property
    def fwmark(self) -> int:
        """The SO_MARK set on the UDP sockets (0 = none)."""
        return self._udp.fwmark

    def set_listen_port(self, port: int) -> None:
        """Listen on UDP `port` (0 = an ephemeral one). Thread-safe.

        Raises:
            OSError: the port cannot be bound (EADDRINUSE, ...), or the device is closed (ENODEV);
                the old sockets stay in place.
        """
        with self.lock:
            if self.closed:
                # A UAPI request racing shutdown must not reopen sockets nobody will close.
                raise OSError(errno.ENODEV, "interface is shutting down")
            self._udp.bind(port)
        if self._pump:
            self._pump.wake(tick=False)     # re-register the new sockets promptly

    def set_fwmark(self, mark: int) -> None:
        """Set SO_MARK `mark` (0..2**32-1, 0 = none) on the UDP sockets. Thread-safe.

        Raises:
            OSError: the kernel refused (EPERM without CAP_NET_ADMIN).
        """
        with self.lock:
            self._udp.set_fwmark(mark)

    def send_underlay(self, datagrams: list[tuple[bytes, tuple[str, int]]], ttl: int | None = None) -> None:
        """Send UDP datagrams ``(payload, (host, port))`` from the tunnel's own socket, outside the
        protocol (a control plane's NAT openers: they must leave from the tunnel's port), with IP
        TTL (IPv6 hop limit) ``ttl`` when given (openers that must die on the way), else the
        system's default. Send errors are counted as the tunnel's own (UdpTransport). Thread-safe.

        Raises:
            ValueError: ``ttl`` is outside 1..255.
        """
        with self.lock:
            if ttl is None:
                self._udp.send_batch(datagrams)
            else:
                self._udp.send_with_ttl(datagrams, ttl)

    def refusals(self) -> dict[bytes, tuple[str, float]]:
        """The peers whose last handshake initiation was refused (`Peer.last_refusal`), as public key
        (32 bytes) -> (reason, wall-clock Unix seconds of the refusal). Empty when none was.
        Thread-safe. Cheap: one counter read while nothing was ever refused, else one pass over the
        peers under the lock.
        """
        if not self.tunnel.stats.get(Counter.RX_HANDSHAKE_REPLAY):   # .get: never inserts
            return {}
        with self.lock:
            refused = {key: peer.last_refusal for key, peer in self.tunnel.peers.items()
                       if peer.last_refusal is not None}
            if not refused:
                return {}
            mono_now = self.clock.monotonic()
        wall_now = self.clock.wall() / 1e9      # the host's clock, without the test-only offset
        return {key: (reason, wall_now - (mono_now - at)) for key, (reason, at) in refused.items()}

    def config_changed(self) -> None:
        """Wake the pump so it acts on a configuration change now. Thread-safe; no-op before start."""
        if self._pump:
            self._pump.wake()

    # ------------------------------------------------------------------ lifecycle
    def open(self, listen_port: int | None = None, mtu: int | None = None) -> None:
        """Create the TUN device, bind UDP and the UAPI socket.

        `listen_port`: bind exactly this UDP port; None: 4500, else an ephemeral one (wireguard-go's
        behaviour before `wg set`). `mtu`: the TUN's MTU in bytes from the start (None: 1420), so the
        first log line is true. The pump does not run yet: call `start()` (a thread of its own) or
        `run()` (this thread).

        Raises:
            StartupError: one line naming what failed (interface name in use by another daemon,
                no permission for /dev/net/tun, busy socket path, a busy `listen_port` — then its
                `errno` is EADDRINUSE, ...). Everything opened so far is closed again, so nothing is
                left half-configured; the Device is then closed.
            RuntimeError: already open, or closed.
        """
        if self.closed:
            raise RuntimeError("device is closed")
        if self._pump is not None:
            raise RuntimeError("device already open")
        try:
            if self.uapi:
                self._check_socket_free()
            if self._tun is None:
                try:
                    self._tun = TunDevice(self.ifname, DEFAULT_MTU if mtu is None else mtu)
                except OSError as exc:
                    raise StartupError(f"cannot create TUN device {self.ifname}: {exc.strerror or exc}") from None
            with self.lock:
                self.tunnel.mtu = self._tun.get_mtu()
            try:
                if listen_port is None:
                    self._udp.bind_default()
                else:
                    self._udp.bind(listen_port)
            except OSError as exc:
                port = "" if listen_port is None else f" on port {listen_port}"
                raise StartupError(f"cannot open UDP socket{port}: {exc.strerror or exc}", exc.errno) from None
            try:
                if not self._tun_given:
                    self._monitor = LinkMonitor(self._tun.ifindex, self._tun.fileno())
            except OSError as exc:      # the TUN fd still reports deletion; MTU changes go unseen
                log.error("cannot watch link events: %s", exc.strerror or exc)
            self._pump = Pump(self.tunnel, self._tun, self._udp, self._monitor, self.lock,
                              busy_poll=self.busy_poll, clock=self.clock.monotonic)
            # Why a peer's handshakes are refused, in the log (handshake path only; see refusals.py).
            self._pump.housekeeping.append(RefusalReporter(self.tunnel, self.lock, self.ifname,
                                                           self.clock.monotonic))
            if self.uapi:
                server = UapiServer(self.ifname, Uapi(self.tunnel, self, self.lock))
                server.path = self.uapi_path
                self._server = server
                server.open()
                self._pump.housekeeping.append(self._check_socket)
        except BaseException:
            self.close()
            raise
        log.info("interface %s up (MTU %d), UDP port %d%s", self.ifname, self.tunnel.mtu, self._udp.port,
                 "" if self._udp.v6 else " (IPv4 only)")

    def _check_socket_free(self) -> None:
        if self.uapi_path == socket_path(self.ifname):
            check_not_in_use(self.ifname)   # also removes a stale socket a dead daemon left

    def start(self) -> None:
        """Open (unless already open) and run the pump in a daemon thread this Device owns.

        Returns once the interface is up. Thread-safe.

        Raises:
            StartupError: as `open()`.
            RuntimeError: already started, or closed.
        """
        if self.closed:
            raise RuntimeError("device is closed")
        if self._thread is not None:
            raise RuntimeError("device already started")
        if self._pump is None:
            self.open()
        self._thread = threading.Thread(target=self._run_in_thread, name=f"pump-{self.ifname}", daemon=True)
        self._thread.start()

    def _run_in_thread(self) -> None:
        try:
            self.run()
        except Exception:
            log.exception("pump of %s failed", self.ifname)
            self._stop_reason = self._stop_reason or "pump failed"

    def run(self) -> str:
        """Pump packets in the calling thread until `stop()`, the interface's deletion, or the
        removal of its UAPI socket; returns why it stopped (one line). Needs `open()` first.

        Raises:
            RuntimeError: not opened, or closed.
        """
        if self.closed:
            raise RuntimeError("device is closed")
        if self._pump is None:
            raise RuntimeError("device is not open")
        if self._server:
            self._server.start()
        reason = self._pump.run()
        self._stop_reason = reason
        return reason

    @property
    def running(self) -> bool:
        """True while the pump thread started by `start()` runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stop_reason(self) -> str | None:
        """Why the pump stopped (one line), None while it runs or before it ran."""
        return self._stop_reason

    def stop(self, reason: str = "stopped") -> None:
        """Ask the pump to stop after its current wake-up; returns at once. Safe from any thread
        and from a signal handler. The interface stays up until `close()`."""
        if self._pump:
            self._pump.stop(reason)

    def wait(self, timeout: float | None = None) -> str | None:
        """Wait up to `timeout` seconds (None: forever) for the pump thread of `start()` to end;
        returns `stop_reason` (None if it still runs)."""
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return None if self.running else self._stop_reason

    def close(self) -> None:
        """Stop the pump and remove everything: UAPI socket first (clients see us gone, open UAPI
        connections end), then UDP, netlink, and the TUN device (which deletes the interface).

        Idempotent and safe from any thread; afterwards set_listen_port raises ENODEV.
        """
        self.stop("closed")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT)
        if self._server:
            self._server.close()
            self._server = None
        with self.lock:             # no UAPI request is half-applied while the sockets go
            self.closed = True
            self._udp.close()
        if self._monitor:
            self._monitor.close()
            self._monitor = None
        if self._tun:
            self._tun.close()       # non-persistent: this removes the interface if it still exists
            self._tun = None
        if self._pump and not self.running:
            self._pump.close()

    def _check_socket(self) -> None:
        if self._server and not self._server.still_ours():
            assert self._pump is not None
            self._pump.stop(f"UAPI socket {self._server.path} was removed")

    def __enter__(self) -> "Device":
        """``with Device(...) as device:`` starts it (`start()`) and closes it on exit."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Device({self.ifname!r}, port={self._udp.port}, running={self.running})"
