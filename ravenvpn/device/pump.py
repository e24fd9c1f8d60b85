"""The data-path event loop: TUN <-> core <-> UDP, plus link events and timers.

One epoll over the TUN fd, the UDP sockets, the netlink socket and a wake-up
eventfd. Each wake-up drains up to `budget` packets per ready fd, hands them to
the core as one list and writes the results out. The core is not thread-safe:
every call into it (here and from the UAPI thread) holds `lock`; the pump takes
it once per wake-up, not per packet.

Busy polling (`busy_poll` seconds, off by default): after traffic, keep polling
without sleeping for that long. A CPU that slept runs slowly for a while (on this
kind of VM, code right after a 10 ms sleep runs 3-6 times slower), and a ping
through the tunnel wakes each daemon twice; polling keeps the CPU awake, and the
path warmer (warmer.py) keeps the packet path in cache, at the price of a busy
core while traffic flows.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from typing import TYPE_CHECKING, Callable

from . import warmer as warmer_module
from .netlink import LinkMonitor
from .tun import TunDevice
from .udp import UdpTransport

if TYPE_CHECKING:
    from ..protocol.tunnel import Output, Tunnel

__all__ = ["Pump", "DEFAULT_BUDGET", "TICK_INTERVAL", "HOUSEKEEPING_INTERVAL"]

log = logging.getLogger("ravenvpn.pump")

#: Packets read per ready fd per wake-up.
DEFAULT_BUDGET = 128
#: Seconds between timer ticks (`Tunnel.tick`).
TICK_INTERVAL = 0.1
#: Seconds between `housekeeping` calls.
HOUSEKEEPING_INTERVAL = 1.0


class Pump:
    """The event loop of one Device: TUN <-> Tunnel <-> UDP, link events, timer ticks.

    Args:
        tunnel: the protocol core; every call into it holds `lock`.
        tun, udp, monitor: the I/O objects (monitor optional: link events unseen without it).
        lock: the device lock, shared with the configuration paths.
        budget: packets read per ready fd per wake-up.
        busy_poll: seconds to keep polling after traffic instead of sleeping (0 = off).
        clock: monotonic seconds, the `now` handed to the tunnel (time.monotonic; a test seam).

    `run()` blocks in its thread; `wake()` and `stop()` are safe from any thread and from signal
    handlers; `close()` only once `run()` has returned.
    """

    def __init__(self, tunnel: Tunnel, tun: TunDevice, udp: UdpTransport, monitor: LinkMonitor | None,
                 lock: threading.Lock | threading.RLock, budget: int = DEFAULT_BUDGET,
                 busy_poll: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.tunnel = tunnel
        self.tun = tun
        self.udp = udp
        self.monitor = monitor
        self.lock = lock
        self.budget = budget
        self.busy_poll = busy_poll
        self.clock = clock
        self.housekeeping: list[Callable[[], None]] = []    # run about once a second, outside the lock
        self.stop_reason: str | None = None
        self.core_errors = 0
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._warmer: warmer_module.PathWarmer | None = None
        self._warming = busy_poll > 0
        self._tick_now = False

    # -- called from other threads or signal handlers --

    def wake(self, tick: bool = True) -> None:
        """Make the loop run now (and tick the timers, e.g. to send a new keepalive)."""
        self._tick_now = tick or self._tick_now
        fd = self._wake_fd
        if fd >= 0:
            try:
                os.eventfd_write(fd, 1)
            except OSError:
                pass

    def stop(self, reason: str) -> None:
        """Make `run()` return `reason` after its current wake-up (the first reason given wins)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.wake(tick=False)

    # -- the loop --

    def run(self) -> str:
        """Pump until stop() or the TUN device disappears; returns why it stopped."""
        monotonic = self.clock
        ep = select.epoll()
        tun_fd, wake_fd = self.tun.fileno(), self._wake_fd
        mon_fd = self.monitor.fileno() if self.monitor else -1
        ep.register(tun_fd, select.EPOLLIN)
        ep.register(wake_fd, select.EPOLLIN)
        if self.monitor:
            ep.register(mon_fd, select.EPOLLIN)
        udp_by_fd: dict[int, object] = {}
        generation = None
        next_tick = 0.0
        next_housekeeping = monotonic() + HOUSEKEEPING_INTERVAL
        busy_until = warm_at = 0.0
        if self._warming:
            self._warm(monotonic())    # its first run does a handshake (ms): before any traffic
        try:
            while self.stop_reason is None:
                if busy_until:
                    events = ep.poll(0)
                    now = monotonic()
                    if not events:
                        if now >= busy_until:
                            busy_until = 0.0            # quiet for long enough: sleep in epoll again
                        elif now < next_tick:
                            os.sched_yield()            # polling: whatever else is runnable here goes first
                            if now >= warm_at:
                                warm_at = now + warmer_module.INTERVAL
                                self._warm(now)
                            continue
                else:
                    events = ep.poll(max(0.0, next_tick - monotonic()))
                    now = monotonic()
                if events and self.busy_poll:
                    busy_until = now + self.busy_poll
                with self.lock:
                    if generation != self.udp.generation:
                        generation = self.udp.generation
                        udp_by_fd = self._reregister(ep, udp_by_fd)
                    for fd, _mask in events:
                        if fd == tun_fd:
                            self._from_tun(now)
                        elif fd in udp_by_fd:
                            self._from_udp(udp_by_fd[fd], now)
                        elif fd == wake_fd:
                            self._drain_wake()
                        elif fd == mon_fd:
                            self._link_events()
                    if now >= next_tick or self._tick_now:
                        self._tick_now = False
                        self._core("tick", now)
                        next_tick = now + TICK_INTERVAL
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_INTERVAL
                    for job in self.housekeeping:
                        try:
                            job()
                        except Exception:
                            log.exception("housekeeping job %r failed", job)
        finally:
            ep.close()
        return self.stop_reason or "stopped"

    def _warm(self, now: float) -> None:
        """Keep the packet path in cache while polling finds nothing (see warmer.py)."""
        if not self._warming:
            return
        try:
            if self._warmer is None:
                self._warmer = warmer_module.PathWarmer()
            self._warmer.run(now)
        except Exception:
            # Only an optimisation: never let it disturb the real traffic.
            self._warming = False
            log.exception("path warmer failed; busy polling goes on without it")

    def close(self) -> None:
        """Release the wake-up fd; call last, once no other thread can call wake()."""
        fd, self._wake_fd = self._wake_fd, -1
        if fd >= 0:
            os.close(fd)

    def _reregister(self, ep: select.epoll, old: dict[int, object]) -> dict[int, object]:
        for fd in old:
            ep.unregister(fd)
        for sock in self.udp.take_retired():
            sock.close()
        new = {sock.fileno(): sock for sock in self.udp.sockets}
        for fd in new:
            ep.register(fd, select.EPOLLIN)
        return new

    def _tun_gone(self, exc: OSError) -> None:
        if exc.errno == errno.EBADFD:       # what a read/write gets once the link was deleted
            self.stop(f"interface {self.tun.name} was deleted")
        else:
            self.stop(f"TUN device {self.tun.name} failed: {exc.strerror or exc}")

    def _from_tun(self, now: float) -> None:
        try:
            packets = self.tun.read_batch(self.budget)
        except OSError as exc:
            self._tun_gone(exc)
            return
        if packets:
            self._core("send_packets", packets, now)

    def _from_udp(self, sock, now: float) -> None:
        datagrams = self.udp.recv_batch(sock, self.budget)
        if datagrams:
            self._core("receive_datagrams", datagrams, now)

    def _core(self, method: str, *args: object) -> None:
        try:
            out: Output = getattr(self.tunnel, method)(*args)
        except Exception:
            # A core bug on one batch must not end the tunnel; count and log it.
            self.core_errors += 1
            log.exception("core %s failed", method)
            return
        try:
            if out.tun:
                try:
                    self.tun.write_batch(out.tun)
                except OSError as exc:
                    self._tun_gone(exc)
            if out.bursts:
                self.udp.send_bursts(out.bursts)
            if out.network:
                self.udp.send_batch(out.network)
        except Exception:
            # Same for the output side (e.g. coalescing a packet it did not expect): drop the batch.
            self.core_errors += 1
            log.exception("writing the output of core %s failed", method)

    def _drain_wake(self) -> None:
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass

    def _link_events(self) -> None:
        assert self.monitor is not None
        for event in self.monitor.read_events():
            if event.deleted:
                self.stop(f"interface {self.tun.name} was deleted")
                return
            if event.mtu is not None and event.mtu != self.tunnel.mtu:
                log.info("MTU of %s is now %d", self.tun.name, event.mtu)
                self.tunnel.mtu = event.mtu
