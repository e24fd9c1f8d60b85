"""`ravenvpn up`: one node's Raven agent, embedding the dataplane as a library.

Loop: read the cluster file → plan for this node → bring the dataplane (TUN device,
WireGuard peers) and the kernel (routes, rules, sysctls) to the plan. On a change
of the file (or SIGHUP) the same steps run again and only differences are applied:
peers that stay keep their sessions. SIGTERM/SIGINT remove everything installed.
"""
from __future__ import annotations

import json
import logging
import os
import select
import signal
import stat
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...errors import RavenError
from ...protocol import keys
from .applier import DEFAULT_STATE_DIR, Applier, ApplyReport
from ..cluster.errors import ClusterError
from ..cluster.loader import load_cluster, load_cluster_file
from ..cluster.model import Cluster
from ..plan.nodeplan import NodePlan, Role
from ..plan.planner import plan as make_plan

log = logging.getLogger("ravenvpn.agent")
POLL_INTERVAL = 0.5  # seconds between checks of the cluster file


def read_private_key(path: str) -> bytes:
    """A base64 private key from a file that only its owner may read (like wg's warning, but strict)."""
    try:
        st = os.stat(path)
        text = Path(path).read_text()
    except OSError as exc:
        raise RavenError(f"private key file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RavenError(f"private key file {path}: has group or other permissions (mode "
                         f"{stat.S_IMODE(st.st_mode):04o}); run 'chmod 600 {path}'")
    try:
        return keys.b64decode(text)
    except ValueError as exc:
        raise RavenError(f"private key file {path}: {exc}") from None


def _underlay_mtu(interface: str) -> int:
    """The smallest MTU among up, non-loopback links: the tunnel must fit in any of them.

    Our own tunnel interface is not underlay: counting it would shrink the MTU by the
    WireGuard overhead on every reconcile (whatever --interface names it).
    """
    try:
        with IPRoute() as ipr:
            mtus = [link.get("mtu") for link in ipr.get_links()
                    if link.get("ifname") not in ("lo", interface) and link["flags"] & 1
                    and not link.get("ifname", "").startswith("raven")]
    except NetlinkError as exc:
        raise RavenError(f"cannot list the network links: {exc}") from None
    return min((m for m in mtus if m), default=1500)


class Dataplane:
    """The embedded WireGuard interface (device layer + protocol core) for an active gateway."""

    def __init__(self, interface: str) -> None:
        from ...device.daemon import Device  # the device layer, embedded as a library
        self.interface = interface
        self.device = Device(interface)
        self._thread: threading.Thread | None = None
        self._endpoints: dict[bytes, tuple[str, int] | None] = {}
        self.stopped_reason: str | None = None

    def open(self, plan: NodePlan, private_key: bytes) -> None:
        self.device.open()
        self._thread = threading.Thread(target=self._run, name="pump", daemon=True)
        self._thread.start()
        self.configure(plan, private_key)

    def _run(self) -> None:
        self.stopped_reason = self.device.run()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def configure(self, plan: NodePlan, private_key: bytes) -> None:
        """Converge peers to the plan; unchanged peers keep their sessions."""
        dev = self.device
        assert dev.pump is not None
        if dev.listen_port != plan.listen_port:
            try:
                dev.set_listen_port(plan.listen_port)
            except OSError as exc:
                raise RavenError(f"UDP port {plan.listen_port}: {exc.strerror}") from None
        try:
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=self.interface)
                if not found:
                    raise RavenError(f"interface {self.interface} disappeared")
                ipr.link("set", index=found[0], mtu=plan.mtu, state="up")
        except NetlinkError as exc:
            raise RavenError(f"cannot set MTU {plan.mtu} on {self.interface}: {exc}") from None
        with dev.lock:
            tunnel = dev.pump.tunnel
            tunnel.mtu = plan.mtu
            tunnel.private_key = private_key
            tunnel.relay = plan.relay
            desired = {p.public_key: p for p in plan.peers}
            for key in [k for k in tunnel.peers if k not in desired]:
                tunnel.remove_peer(key)
                self._endpoints.pop(key, None)
            for want in plan.peers:
                peer = tunnel.add_peer(want.public_key)
                # Only a changed planned endpoint overrides one learnt by roaming.
                if want.public_key not in self._endpoints or self._endpoints[want.public_key] != want.endpoint:
                    if want.endpoint is not None:
                        peer.endpoint = want.endpoint
                    self._endpoints[want.public_key] = want.endpoint
                if set(tunnel.allowed_ips(peer)) != set(want.allowed_ips):
                    tunnel.clear_allowed_ips(peer)
                    for net in want.allowed_ips:
                        tunnel.add_allowed_ip(peer, net)
                peer.persistent_keepalive_interval = want.persistent_keepalive
        dev.config_changed()

    def close(self) -> None:
        if self.device.pump is not None:
            self.device.pump.stop("ravenvpn up is stopping")
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.device.close()


class Agent:
    def __init__(self, cluster_path: str, node: str, *, private_key_path: str | None = None,
                 interface: str = "raven0", port: int = 4500, mtu: int | None = None,
                 state_dir: str = DEFAULT_STATE_DIR) -> None:
        self.cluster_path = cluster_path
        self.node = node
        self.interface = interface
        self.port = port
        self.mtu = mtu
        self.state_dir = Path(state_dir)
        self.private_key = read_private_key(private_key_path) if private_key_path else None
        self.applier = Applier(interface, state_dir)
        self.dataplane: Dataplane | None = None
        self.plan: NodePlan | None = None
        self._stdin_text = sys.stdin.read() if cluster_path == "-" else None
        self._file_sig: tuple[float, int] | None = None
        self._wake: _WakePipe | None = None     # exists while run() runs
        self._saved_handlers: dict[int, Any] = {}
        self._reload = False
        self._stop: str | None = None

    # -------------------------------------------------------------- planning
    def _load(self) -> Cluster:
        if self._stdin_text is not None:
            return load_cluster(self._stdin_text)
        return load_cluster_file(self.cluster_path)

    def _file_signature(self) -> tuple[float, int] | None:
        if self._stdin_text is not None:
            return None
        try:
            st = os.stat(self.cluster_path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def compute_plan(self) -> NodePlan:
        cluster = self._load()
        public = keys.public_from_private(self.private_key) if self.private_key else None
        try:
            plan = make_plan(cluster, self.node, local_public_key=public, mtu=self.mtu,
                             underlay_mtu=_underlay_mtu(self.interface), listen_port=self.port,
                             interface=self.interface)
        except ClusterError:
            raise
        except ValueError as exc:   # a bad --mtu / --interface: still one line, not a traceback
            raise RavenError(str(exc)) from None
        if plan.role is Role.ACTIVE_GATEWAY and self.private_key is None:
            raise RavenError(f"node {self.node} is the active tunnel endpoint of {plan.gateway}: "
                             "--private-key is required")
        return plan

    # ------------------------------------------------------------- applying
    def reconcile(self) -> ApplyReport:
        """Plan and converge; raises RavenError/ClusterError with nothing changed by a bad input."""
        self._file_sig = self._file_signature()
        plan = self.compute_plan()
        for warning in plan.warnings:
            log.warning("%s", warning)
        opened_here = False
        if plan.role is Role.ACTIVE_GATEWAY:
            assert self.private_key is not None
            if self.dataplane is None:
                self.dataplane = Dataplane(self.interface)
                opened_here = True
                try:
                    self.dataplane.open(plan, self.private_key)
                except BaseException:
                    self.dataplane.close()
                    self.dataplane = None
                    raise
                log.info("%s is the active gateway of %s: interface %s up", self.node, plan.gateway, self.interface)
            else:
                self.dataplane.configure(plan, self.private_key)
        try:
            # Routes through the device must go before the device does; the applier adds new
            # routes before removing old ones, so there is no window without a route either way.
            report = self.applier.apply(plan)
        except BaseException:
            if opened_here and self.dataplane is not None:
                # A device that no route uses would be half of a role change: undo it.
                self.dataplane.close()
                self.dataplane = None
            raise
        if plan.role is not Role.ACTIVE_GATEWAY and self.dataplane is not None:
            self.dataplane.close()
            self.dataplane = None
            log.info("%s is no longer the active gateway: interface %s removed", self.node, self.interface)
        if self.plan is None or plan != self.plan or report.changed:
            log.info("role %s, gateway %s, %d peers, %d routes: %s", plan.role.value, plan.gateway or "-",
                     len(plan.peers), len(plan.routes), report.summary())
        self.plan = plan
        self._write_status()
        return report

    def _write_status(self) -> None:
        assert self.plan is not None
        plan = self.plan
        status = {
            "node": plan.node_name, "role": plan.role.value, "gateway": plan.gateway,
            "interface": plan.interface, "listen_port": plan.listen_port, "mtu": plan.mtu,
            "relay": plan.relay, "relay_gateway": plan.relay_gateway, "pid": os.getpid(),
            "peers": [{"public_key": p.public_key_b64, "gateway": p.gateway, "node": p.node_name,
                       "endpoint": f"{p.endpoint[0]}:{p.endpoint[1]}" if p.endpoint else None,
                       "allowed_ips": [str(n) for n in p.allowed_ips],
                       "persistent_keepalive": p.persistent_keepalive} for p in plan.peers],
            "routes": [{"dst": str(r.dst), "dev": r.dev, "via": str(r.gateway) if r.gateway else None,
                        "table": r.table} for r in plan.routes],
            "rules": [asdict(r) for r in plan.rules],
            "warnings": list(plan.warnings),
        }
        status_path(self.state_dir, self.interface).write_text(json.dumps(status, indent=1))

    def teardown(self) -> ApplyReport:
        report = self.applier.teardown()
        if self.dataplane is not None:
            self.dataplane.close()
            self.dataplane = None
        for path in (status_path(self.state_dir, self.interface), pid_path(self.state_dir, self.interface)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        return report

    # ------------------------------------------------------------------ loop
    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop = signal.Signals(signum).name
        if self._wake is not None:
            self._wake.set()

    def run(self) -> int:
        """Bring the node up, then follow the cluster file until told to stop."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pidfile = pid_path(self.state_dir, self.interface)
        other = running_pid(self.state_dir, self.interface)
        if other is not None:
            raise RavenError(f"ravenvpn up is already running for {self.interface} (pid {other})")
        wake = self._wake = _WakePipe()
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self._saved_handlers[sig] = signal.signal(sig, self._on_signal)   # main thread only
        except BaseException:
            self._close_wake()
            raise
        try:
            pidfile.write_text(str(os.getpid()))
            self.reconcile()
        except BaseException:
            try:
                self.teardown()
            finally:
                self._close_wake()
            raise
        exit_code = 0
        try:
            while self._stop is None:
                wake.wait(POLL_INTERVAL)
                if self._stop is not None:
                    break
                if self.dataplane is not None and not self.dataplane.alive:
                    log.error("dataplane stopped: %s", self.dataplane.stopped_reason)
                    exit_code = 1
                    break
                if self._reload or self._file_signature() != self._file_sig:
                    self._reload = False
                    try:
                        self.reconcile()
                    except (RavenError, ClusterError) as exc:
                        # Keep running on the last good plan; a bad edit must not take the node down.
                        log.error("%s (keeping the previous configuration)", exc)
        finally:
            try:
                report = self.teardown()
            finally:
                self._close_wake()
            log.info("stopped (%s): %s", self._stop or "dataplane gone", report.summary())
        return exit_code

    def _close_wake(self) -> None:
        # The caller's handlers come back before the pipe goes: no handler of ours can run after.
        for sig, handler in self._saved_handlers.items():
            # None: a handler installed outside Python, which cannot be put back; the default is the closest.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._saved_handlers = {}
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.close()


class _WakePipe:
    """Wakes the agent's loop from a signal handler.

    Not a threading.Event: its set() takes a lock that the main thread may hold at that moment
    (inside Event.wait or clear, where the handler can run), and the handler would then wait for
    itself forever; `ravenvpn down` saw such an `up` ignore SIGTERM. A pipe write takes no lock.
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        try:
            os.write(self._w, b"\0")
        except (BlockingIOError, OSError):
            pass    # full (already woken) or closed

    def wait(self, timeout: float) -> None:
        """Until set() or `timeout` seconds; a set() before the call counts (the byte waits)."""
        select.select([self._r], [], [], timeout)
        try:
            while os.read(self._r, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


def status_path(state_dir: Path, interface: str) -> Path:
    return state_dir / f"{interface}.status.json"


def pid_path(state_dir: Path, interface: str) -> Path:
    return state_dir / f"{interface}.pid"


def _alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def _is_ravenvpn(pid: int) -> bool:
    """A pid file left by a killed `up` may name a pid since reused by an unrelated process."""
    try:
        return b"ravenvpn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def running_pid(state_dir: Path, interface: str) -> int | None:
    try:
        pid = int(pid_path(state_dir, interface).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid != os.getpid() and _alive(pid) and _is_ravenvpn(pid) else None


def down(interface: str, state_dir: str = DEFAULT_STATE_DIR, timeout: float = 10.0) -> str:
    """Stop a running `up` (it cleans up itself), or clean up what a crashed one left."""
    sdir = Path(state_dir)
    pid = running_pid(sdir, interface)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return f"stopped ravenvpn up (pid {pid})"
            time.sleep(0.05)
        raise RavenError(f"ravenvpn up (pid {pid}) did not stop within {timeout:.0f} s")
    report = Applier(interface, state_dir).teardown()
    with IPRoute() as ipr:
        for link in ipr.get_links():
            # Only a TUN device of that name can be ours; anything else is left alone.
            info = link.get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info else None
            if link.get("ifname") == interface and kind == "tun":
                ipr.link("del", index=link["index"])
    for path in (status_path(sdir, interface), pid_path(sdir, interface)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    return f"cleaned up after a stopped ravenvpn up: {report.summary()}"
