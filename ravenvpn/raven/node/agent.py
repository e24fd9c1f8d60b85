"""The Agent: one node's Raven agent, a reconcile loop over two drivers. Usable as a library.

Loop: read the cluster → plan for this node → bring the VPN driver (tunnel interface, WireGuard peers)
and the route driver (routes, rules, sysctls) to the plan. On a change of the cluster (an edited file,
:meth:`Agent.set_cluster`, :meth:`Agent.reload`) the same steps run again and only differences are
applied: peers that stay keep their sessions. When the agent stops it removes everything installed.

The agent is what makes a node a Raven node (role from the election, relaying between NAT'd
gateways, failover when the cluster changes), so ``ravenvpn up`` and an embedding program get the
same node. It never installs signal handlers, configures logging (it logs to ``ravenvpn.agent``),
forks or needs the main thread: that belongs to its caller (``ravenvpn up`` maps SIGTERM/SIGINT to
:meth:`Agent.stop` and SIGHUP to :meth:`Agent.reload`).
"""
from __future__ import annotations

import copy
import difflib
import logging
import os
import select
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from ...errors import ClusterError, RavenError
from ...protocol import keys
from ..cluster.hostnames import resolve_hostnames
from ..cluster.loader import load_cluster, load_cluster_file, load_cluster_objects
from ..cluster.model import Cluster
from ..liveness.service import LivenessService
from ..liveness.machine import LivenessView
from ..liveness.wire import LIVENESS_PORT
from ..plan.failover import apply_liveness, liveness_config
from ..plan.nodeplan import NodePlan, Role
from ..plan.planner import WIREGUARD_OVERHEAD
from ..plan.planner import plan as make_plan
from . import pidfile
from .applier import Applier
from .drivers import DriverReport, RouteDriver, VpnDriver
from .keyfile import read_private_key
from .records import DEFAULT_STATE_DIR, status_path
from .statusfile import NodeStatus
from .wireguard import WireGuardDriver

__all__ = ["Agent", "ReconcileReport", "ClusterSource", "POLL_INTERVAL"]

log = logging.getLogger("ravenvpn.agent")
POLL_INTERVAL = 0.5  # seconds between checks of the cluster file
#: Seconds between checks that the derived tunnel MTU still matches the underlay (its link's MTU or
#: the routes toward the peers changed: `ip link set eth0 mtu 1400`); a netlink dump, so not each poll.
MTU_CHECK_INTERVAL = 5.0
HANDOVER_TIMEOUT = 2.0  # seconds a stopping active gateway waits for a standby to take over
HANDOVER_DRAIN = 1.0    # seconds it keeps forwarding after the successor claimed the role

#: Where an agent reads the cluster: a YAML file path (``"-"``: standard input, read once), one dict
#: (a ``kind: List``) or an iterable of dicts as ``json.loads``/``yaml.safe_load_all`` give them.
ClusterSource = Union[str, "os.PathLike[str]", Mapping[str, Any], Iterable[Mapping[str, Any]]]


@dataclass(frozen=True)
class ReconcileReport:
    """What one :meth:`Agent.reconcile` changed: the two drivers' reports."""

    plan: NodePlan
    vpn: DriverReport
    routes: DriverReport

    @property
    def changed(self) -> bool:
        """True when either driver changed the host."""
        return self.vpn.changed or self.routes.changed

    def summary(self) -> str:
        """One line for the log: the route driver's summary, then the VPN driver's."""
        return f"{self.routes.summary()}; {self.vpn.summary()}"


class Agent:
    """One node's Raven agent: plans from the cluster and keeps the node converged.

    Args:
        cluster: a path (``str`` or ``os.PathLike``; ``"-"`` is standard input, read once), one
            Kubernetes object as a dict (a ``kind: List`` too), or an iterable of such dicts. A path
            is re-read when its modification time or size changes (polled every ``poll_interval``
            seconds) or on :meth:`reload`; dicts are copied when given, so the caller may change its
            own afterwards.
        node: this node's name (``metadata.name`` of its Node object).
        private_key / private_key_path: the node's 32-byte WireGuard key, or a base64 key file of
            mode 0600 (at most one). Needed when the node is a tunnel (or proxy) endpoint of any
            Gateway: a standby without its key could not take over (:meth:`compute_plan` refuses).
        interface: the tunnel interface (also names the records under ``state_dir``).
        port: the UDP listen port of the tunnel. mtu: the tunnel MTU in bytes; None: the VPN
            driver's :meth:`~ravenvpn.raven.node.drivers.VpnDriver.mtu` toward the planned peers'
            endpoints, derived again on every plan.
        state_dir: where the records live (``<interface>.state.json``, ``.pid``, ``.status.json``);
            ``ravenvpn status``/``down`` look there.
        vpn / routes: the drivers; default :class:`~ravenvpn.raven.node.wireguard.WireGuardDriver`
            and :class:`~ravenvpn.raven.node.applier.Applier`.
        failover: run the liveness protocol (:mod:`ravenvpn.raven.liveness`) on UDP
            ``liveness_port`` of the node's private network: a dead active gateway is replaced by a
            standby candidate within about a second, with no edit of the cluster; standby candidates
            run their tunnel interface hot. False (the library's default: it opens a UDP port on the
            private network, and every node of the cluster must run it): the file alone decides, as
            in Raven. ``ravenvpn up`` turns it on unless ``--no-failover``.
        liveness_port: that UDP port (:data:`~ravenvpn.raven.liveness.wire.LIVENESS_PORT`).

    Raises:
        RavenError: a bad interface name, an unreadable or exposed key file, both key arguments.
        ClusterError: ``cluster`` is neither a path nor dicts.

    Thread-safety: :meth:`reconcile`, :meth:`stop`, :meth:`reload`, :meth:`set_cluster` and
    :meth:`close` may be called from any thread while :meth:`run` runs in another (or in none);
    driver calls are serialised. :meth:`stop` and :meth:`reload` take no lock, so a signal handler
    may call them. An Agent runs once: after it stopped, make a new one.
    """

    def __init__(self, cluster: ClusterSource, node: str, *, private_key: bytes | None = None,
                 private_key_path: str | os.PathLike[str] | None = None, interface: str = "raven0",
                 port: int = 4500, mtu: int | None = None, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
                 vpn: VpnDriver | None = None, routes: RouteDriver | None = None,
                 poll_interval: float = POLL_INTERVAL, failover: bool = False,
                 liveness_port: int = LIVENESS_PORT) -> None:
        _check_interface(interface)
        if private_key is not None and private_key_path is not None:
            raise RavenError("give the private key or its file, not both")
        if private_key is not None and len(private_key) != 32:
            raise RavenError(f"private key must be 32 bytes, got {len(private_key)}")
        self.node = node
        self.interface = interface
        self.port = port
        self.mtu = mtu
        self.state_dir = Path(state_dir)
        self.poll_interval = poll_interval
        self.private_key_path = os.fspath(private_key_path) if private_key_path else None
        self.failover = failover
        self.liveness_port = liveness_port
        self.liveness: LivenessService | None = None
        self._liveness_changed = False
        self.private_key = read_private_key(private_key_path) if private_key_path else private_key
        self.vpn: VpnDriver = vpn if vpn is not None else WireGuardDriver(interface, self.private_key,
                                                                           state_dir=self.state_dir)
        self.routes: RouteDriver = routes if routes is not None else Applier(interface, str(self.state_dir))
        self.plan: NodePlan | None = None      # the last plan applied in full
        self._source_lock = threading.Lock()
        self._path: str | None = None
        self._text: str | None = None          # standard input, read once
        self._objects: list[Mapping[str, Any]] | None = None
        self._set_source(cluster)
        self._source_sig: tuple[float, int] | None = None
        self._lock = threading.RLock()         # serialises driver calls
        self._wake = _WakePipe()
        weakref.finalize(self, self._wake.close)
        self._reload = False
        self._stop_reason: str | None = None
        self._started = False      # drivers initialised and pid file claimed: there is something to undo
        self._ran = False          # run() was called
        self._looping = False
        self._closed = False
        self._mtu_warned = False
        self._next_mtu_check = 0.0     # monotonic seconds: see _underlay_mtu_changed
        self._refusals: dict[str, tuple[str, float]] = {}   # as in the status file last written

    # ----------------------------------------------------------------- cluster
    def _set_source(self, cluster: ClusterSource) -> None:
        path = text = objects = None
        if isinstance(cluster, (str, os.PathLike)):
            path = os.fspath(cluster)
            if path == "-":
                text, path = sys.stdin.read(), None
        elif isinstance(cluster, Mapping):
            objects = [copy.deepcopy(cluster)]
        elif isinstance(cluster, Iterable) and not isinstance(cluster, bytes):
            objects = [copy.deepcopy(obj) for obj in cluster]
        else:
            raise ClusterError(f"cluster: expected a file path or dicts, got {type(cluster).__name__}")
        with self._source_lock:
            self._path, self._text, self._objects = path, text, objects

    def set_cluster(self, cluster: ClusterSource) -> None:
        """Follow ``cluster`` from now on and reconcile soon (in :meth:`run`'s thread), as on an edit.

        Thread-safe. The dicts are copied now. Call :meth:`reconcile` instead to apply at once and
        see the errors.

        Raises:
            ClusterError: ``cluster`` is neither a path nor dicts (nothing changes).
        """
        self._set_source(cluster)
        self.reload()

    @property
    def source_name(self) -> str:
        """How messages name the cluster source: its path, ``standard input`` or ``the cluster objects``."""
        with self._source_lock:
            path, text = self._path, self._text
        return path if path is not None else "standard input" if text is not None else "the cluster objects"

    def load(self) -> Cluster:
        """The cluster as the source holds it now.

        Raises:
            ClusterError: the cluster is unreadable or inconsistent; read from a file or standard input,
                the message starts with the file's name (``cluster.yaml: YAML syntax error at line 2...``).
        """
        with self._source_lock:
            path, text, objects = self._path, self._text, self._objects
        if objects is not None:
            return load_cluster_objects(objects)
        name = path if path is not None else "standard input"
        try:
            if text is not None:
                return load_cluster(text)
            assert path is not None
            return load_cluster_file(path)
        except ClusterError as exc:
            # In a long-running log (and with several files at hand) the file name matters.
            if str(exc).startswith(f"{name}:"):
                raise
            raise ClusterError(f"{name}: {exc}") from None

    def _source_signature(self) -> tuple[float, int] | None:
        with self._source_lock:
            path = self._path
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def compute_plan(self) -> NodePlan:
        """This node's plan for the cluster as it is now. Pure but for reading the source, resolving
        ``publicIP`` hostnames and the VPN driver's MTU toward the planned peers' endpoints (unless the
        MTU is configured).

        Raises:
            ClusterError: the cluster is unreadable or inconsistent, has no Gateway objects, does not
                name this node (the message lists the nodes it has and a close match), or names
                another public key for this node than the private key's (a private key that *is* a
                public key of the cluster is named as such).
            RavenError: bad agent parameters (MTU, port, interface), no private key although the
                node is a tunnel or proxy endpoint of a Gateway, or the MTU cannot be determined.
        """
        cluster = self.load()
        self._check_cluster(cluster)
        # publicIP hostnames: resolved here, on every (re)plan, so the planner stays free of I/O.
        resolved = resolve_hostnames(cluster.hostnames)
        public = keys.public_from_private(self.private_key) if self.private_key else None
        if self.failover:
            cluster = apply_liveness(cluster, self.node, self._follow_liveness(cluster))
        try:
            plan = make_plan(cluster, self.node, local_public_key=public, mtu=self.mtu, listen_port=self.port,
                             interface=self.interface, resolved=resolved, failover=self.failover)
            if self.mtu is None:
                # The tunnel MTU follows the paths toward the planned peers' endpoints (the VPN
                # driver's call): plan once to know them, then again with the MTU they give.
                mtu = self.vpn.mtu([p.endpoint for p in plan.peers if p.endpoint is not None])
                plan = make_plan(cluster, self.node, local_public_key=public, mtu=mtu, listen_port=self.port,
                                 interface=self.interface, resolved=resolved, failover=self.failover)
        except ClusterError:
            raise
        except ValueError as exc:   # a bad --mtu / --interface: still one line, not a traceback
            raise RavenError(str(exc)) from None
        if plan.role is Role.ACTIVE_GATEWAY and self.private_key is None:
            raise RavenError(f"node {self.node} is the active tunnel endpoint of {plan.gateway}: "
                             "--private-key is required")
        return plan

    def _check_cluster(self, cluster: Cluster) -> None:
        """What the planner cannot say as well: an empty source, an unknown node (with the names it
        has), a public key given as the private key, an endpoint without a key."""
        src = self.source_name
        if not cluster.gateways:
            skipped = [w for w in cluster.warnings if w.startswith("Gateway ")]
            if skipped:       # there were Gateways, each one broken: say why, not "no Gateways"
                raise ClusterError(f"{src}: no usable Gateway object: " + "; ".join(skipped[:3]))
            if not cluster.nodes and cluster.warnings:   # nothing usable, for the reasons warned
                raise ClusterError(f"{src}: " + "; ".join(cluster.warnings[:3]))
            if not cluster.nodes:
                raise ClusterError(f"{src}: no objects of the kinds ravenvpn reads (raven.openyurt.io "
                                   "Gateways, v1 Nodes); expected what 'kubectl get gateways,nodes -o yaml' prints")
            raise ClusterError(f"{src}: no raven.openyurt.io Gateway objects, only Nodes "
                               "(did you run 'kubectl get gateways,nodes -o yaml'?)")
        if cluster.node(self.node) is None:
            names = [n.name for n in cluster.nodes]
            shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            close = difflib.get_close_matches(self.node, names, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            own = [w for w in cluster.warnings if w.startswith(f"Node {self.node}:")]
            if own:           # it was there, but broken: that is the news
                hint += "; skipped: " + "; ".join(own)
            raise ClusterError(f"Node {self.node}: not found in {src} (its Nodes: {shown or 'none'}){hint}")
        if self.private_key is not None:
            for gw in cluster.gateways:
                for ep in gw.endpoints:
                    if ep.public_key is not None and ep.public_key == self.private_key:
                        key = self.private_key_path or "the private key"
                        raise ClusterError(
                            f"{key} holds the public key of Gateway {gw.name}'s endpoint {ep.node_name} "
                            f"(spec.endpoints[{ep.index}].config.publicKey), not a private key: "
                            "--private-key needs the node's private key (ravenvpn genkey)")
        else:
            for gw in cluster.gateways:
                for ep in gw.endpoints:
                    if ep.node_name == self.node:
                        raise RavenError(
                            f"Gateway {gw.name}: node {self.node} is a {ep.type} endpoint "
                            f"(spec.endpoints[{ep.index}]): --private-key is required, or automatic "
                            "failover to it cannot work")

    def _follow_liveness(self, cluster: Cluster) -> LivenessView:
        """Start the liveness service on first use, give it the file's view, return what it knows.

        Raises:
            RavenError: the liveness port cannot be bound.
        """
        config = liveness_config(cluster, self.node, self.liveness_port)
        if config is None:
            if self.liveness is not None:
                self.liveness.close()
                self.liveness = None
            return LivenessView()
        if self.liveness is None:
            self.liveness = LivenessService(config, self.private_key, self.interface, self._on_liveness)
        else:
            self.liveness.configure(config)
        return self.liveness.view()

    def _on_liveness(self, view: LivenessView) -> None:
        """The liveness thread saw a change of who is active: reconcile in run()'s thread, now."""
        log.info("liveness: %s (term %d)", ", ".join(f"{gw} active {node or '-'}" for gw, node in view.active)
                 or "no gateway known", view.term)
        self._liveness_changed = True
        self._wake.set()

    # -------------------------------------------------------------- applying
    def reconcile(self) -> ReconcileReport:
        """Plan and converge now, in the calling thread; returns what changed.

        The VPN driver goes first when the node is (or becomes) the active gateway, so routes never
        point at a missing interface; otherwise the route driver goes first, so the interface goes
        after the routes through it (no window where remote prefixes fall to the main table). On
        success the status file is rewritten.

        Thread-safe (serialised with the agent's own reconciles).

        Raises:
            ClusterError, RavenError: bad input (nothing changed) or a driver failure (see
                :mod:`~ravenvpn.raven.node.drivers`; a new interface no route uses is removed again).
                The node keeps its last good plan.
            RavenError: the agent has stopped.
        """
        with self._lock:
            self._start()
            self._source_sig = self._source_signature()
            plan = self.compute_plan()
            for warning in plan.warnings:
                log.warning("%s", warning)
            if plan.role is Role.NONE and (self.plan is None or self.plan.role is not Role.NONE):
                log.warning("node %s belongs to no Gateway (no raven.openyurt.io/gateway label, in no "
                            "Gateway's status.nodes): nothing to do", self.node)
            self._warn_mtu(plan)
            if plan.role is Role.ACTIVE_GATEWAY or plan.peers:   # plan.peers: also a hot standby's interface
                vpn_report = self.vpn.apply(plan)
                try:
                    route_report = self.routes.apply(plan)
                except BaseException:
                    if self.plan is None or not (self.plan.role is Role.ACTIVE_GATEWAY or self.plan.peers):
                        # An interface that no route uses would be half of a role change: undo it.
                        self.vpn.cleanup()
                    raise
            else:
                route_report = self.routes.apply(plan)
                vpn_report = self.vpn.apply(plan)
                if getattr(vpn_report, "removed", False):
                    log.info("%s is no longer the active gateway: interface %s removed", self.node, self.interface)
            if plan.role is Role.ACTIVE_GATEWAY and self.liveness is not None:
                self.liveness.announce()    # routes through the tunnel are in place: CLAIM now
            report = ReconcileReport(plan, vpn_report, route_report)
            if self.plan is None or plan != self.plan or report.changed:
                log.info("role %s, gateway %s, %d peers, %d routes: %s", plan.role.value, plan.gateway or "-",
                         len(plan.peers), len(plan.routes), route_report.summary())
            self.plan = plan
            self._write_status(plan)
            return report

    def _underlay_mtu_changed(self) -> bool:
        """Whether the MTU derived for the running interface moved since the last plan (checked every
        MTU_CHECK_INTERVAL seconds): the underlay link's MTU or the routes toward the peers changed
        under a running tunnel, which a re-plan follows as a file edit would. False with a configured
        ``--mtu``, without an interface, or when the links cannot be read."""
        plan, now = self.plan, time.monotonic()
        if (self.mtu is not None or plan is None or not (plan.role is Role.ACTIVE_GATEWAY or plan.peers)
                or now < self._next_mtu_check):
            return False
        self._next_mtu_check = now + MTU_CHECK_INTERVAL
        try:
            return self.vpn.mtu([p.endpoint for p in plan.peers if p.endpoint is not None]) != plan.mtu
        except RavenError:
            return False

    def _warn_mtu(self, plan: NodePlan) -> None:
        """Once: a configured MTU above what the path toward the peers carries fragments or loses
        large packets (the limit is the VPN driver's derived MTU for the plan's endpoints)."""
        if self.mtu is None or self._mtu_warned:
            return
        self._mtu_warned = True
        limit = self.vpn.mtu([p.endpoint for p in plan.peers if p.endpoint is not None])
        underlay = limit + WIREGUARD_OVERHEAD
        if self.mtu > limit:
            log.warning("--mtu %d exceeds the underlay MTU %d - %d (WireGuard's overhead) = %d: large packets "
                        "will be fragmented or dropped", self.mtu, underlay, underlay - limit, limit)

    def _start(self) -> None:
        """Before the first change to the host: check the drivers, then claim the pid file."""
        if self._closed:
            raise RavenError(f"the agent for {self.interface} has stopped")
        if not self._started:
            self.vpn.init()
            self.routes.init()
            pidfile.claim(self.state_dir, self.interface)
            self._started = True

    def _vpn_refusals(self) -> dict[str, tuple[str, float]]:
        """The VPN driver's refused peers (``WireGuardDriver.refusals``); {} for a driver without them."""
        refusals = getattr(self.vpn, "refusals", None)
        return refusals() if callable(refusals) else {}

    def _write_status(self, plan: NodePlan) -> None:
        path = status_path(self.state_dir, self.interface)
        refusals = self._vpn_refusals()
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            NodeStatus.from_plan(plan).with_refusals(refusals).write(path)
        except OSError as exc:
            raise RavenError(f"cannot write the status file {path}: {exc.strerror or exc}") from None
        self._refusals = refusals

    def _refresh_status(self) -> None:
        """Rewrite the status file when the interface refused a peer's handshake since it was written
        (``ravenvpn status`` says why); between reconciles nothing else in it changes."""
        with self._lock:
            if self.plan is None or self._vpn_refusals() == self._refusals:
                return
            try:
                self._write_status(self.plan)
            except RavenError as exc:
                log.error("%s", exc)

    def close(self) -> DriverReport | None:
        """Stop :meth:`run` if it runs; remove everything the drivers installed and the records.

        Idempotent; :meth:`run` calls it on its way out. Call it yourself after using
        :meth:`reconcile` without :meth:`run`. An agent that never changed the host (it never
        reconciled, or another agent held the interface) removes nothing. Thread-safe.

        Returns the route driver's report, None when there was nothing to remove.

        Raises:
            RavenError: the route driver cannot reach the kernel (the VPN driver is cleaned up anyway).
        """
        self.stop("closed")
        with self._lock:
            was_started, self._started = self._started, False
            self._closed = True
            if self.liveness is not None:
                self.liveness.close()
                self.liveness = None
            if not was_started:
                return None
            try:
                return self.routes.cleanup()
            finally:
                self.vpn.cleanup()
                try:
                    status_path(self.state_dir, self.interface).unlink()
                except OSError:
                    pass
                pidfile.release(self.state_dir, self.interface)

    # ------------------------------------------------------------------ loop
    def stop(self, reason: str = "stop() called") -> None:
        """Make :meth:`run` tear down and return (``reason`` goes to the log). Any thread; no lock,
        so safe in a signal handler. Before :meth:`run`, it makes run return at once after its first
        reconcile."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake.set()

    def reload(self) -> None:
        """Make :meth:`run` re-read the cluster and reconcile soon, changed or not (like SIGHUP).
        Any thread; no lock, so safe in a signal handler."""
        self._reload = True
        self._wake.set()

    @property
    def running(self) -> bool:
        """True while :meth:`run` follows the cluster (after its first reconcile, before teardown)."""
        return self._looping

    def run(self) -> int:
        """Bring the node up, then follow the cluster until :meth:`stop`; tear everything down.

        Blocks; any thread. Writes the pid file first and removes all records on the way out, so
        ``ravenvpn status`` and ``ravenvpn down`` see this node while it runs (``down`` sends the
        process SIGTERM: install a handler that calls :meth:`stop`, as ``ravenvpn up`` does).
        A failed later reconcile is logged and the node keeps its last good plan.

        Returns 0 after :meth:`stop`, 1 when the VPN driver's interface stopped on its own.

        Raises:
            RavenError, ClusterError: a driver cannot work here, another agent runs this interface,
                the agent ran before, or the first reconcile failed; nothing is left installed.
        """
        with self._lock:
            if self._ran or self._closed:
                raise RavenError(f"the agent for {self.interface} has already run; make a new Agent")
            self._ran = True
        try:
            self.reconcile()
        except BaseException:
            self.close()
            raise
        exit_code = 0
        self._looping = True
        try:
            while self._stop_reason is None:
                self._wake.wait(self.poll_interval)
                if self._stop_reason is not None:
                    break
                stopped = self.vpn.stopped
                if stopped is not None:
                    log.error("dataplane stopped: %s", stopped)
                    exit_code = 1
                    break
                if (self._reload or self._liveness_changed or self._source_signature() != self._source_sig
                        or self._underlay_mtu_changed()):
                    self._reload = self._liveness_changed = False
                    try:
                        self.reconcile()
                    except RavenError as exc:
                        # Keep running on the last good plan; a bad edit must not take the node down.
                        log.error("%s (keeping the previous configuration)", exc)
                else:
                    self._refresh_status()
        finally:
            self._looping = False
            self._hand_over()
            reason = self._stop_reason or "dataplane gone"
            report = self.close()
            log.info("stopped (%s): %s", reason, report.summary() if report else "nothing to remove")
        return exit_code


    def _hand_over(self) -> None:
        """Planned handover: an active gateway that stops resigns and keeps forwarding until a
        standby says it has taken over (at most :data:`HANDOVER_TIMEOUT` seconds), so no packet is lost."""
        service = self.liveness
        if service is None or self.plan is None or self.plan.role is not Role.ACTIVE_GATEWAY:
            return
        gateway = self.plan.gateway
        if not service.live_candidates():
            return          # nobody to hand over to: tear down at once
        service.resign()
        deadline = time.monotonic() + HANDOVER_TIMEOUT
        while time.monotonic() < deadline:
            successor = service.view().active_of(gateway) if gateway else None
            if successor is not None and successor != self.node:
                log.info("handed over to %s", successor)
                # Members and remote gateways heard it too, but need a reconcile to move their routes
                # (a few tens of ms, more on a busy host): keep forwarding for them meanwhile.
                time.sleep(HANDOVER_DRAIN)
                return
            time.sleep(0.02)
        log.info("no standby took over within %.0f s", HANDOVER_TIMEOUT)


def _check_interface(interface: str) -> None:
    from ...device.tun import check_ifname   # the kernel's rules for names (IFNAMSIZ, no '/')
    try:
        check_ifname(interface)   # before it names the pid and state files
    except ValueError as exc:
        raise RavenError(f"interface {interface!r}: {exc}") from None


class _WakePipe:
    """Wakes the agent's loop from another thread or a signal handler.

    Not a threading.Event: its set() takes a lock that the interrupted thread may hold at that moment
    (inside Event.wait or clear, where a handler can run), and the handler would then wait for itself
    forever; `ravenvpn down` saw such an `up` ignore SIGTERM. A pipe write takes no lock. The pipe
    lives as long as the agent, so a late stop() never writes into a reused descriptor.
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False

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
        if not self._closed:
            self._closed = True
            os.close(self._r)
            os.close(self._w)
