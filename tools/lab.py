"""The OpenYurt Raven three-domain demo cluster, built in network namespaces.

Why this exists
---------------
The Raven user guide (shared/seeds) shows the scenario users want to reproduce: three network domains
(cloud, hangzhou, qingdao), the two edge domains behind NAT, and a ping from a *non-gateway* node in
Hangzhou to a *non-gateway* node in Qingdao that crosses both gateways and the cloud relay, watched with
``tcpdump -i raven0`` on the gateways.  :class:`Lab` builds that cluster from the cluster YAML
(``examples/cluster-three-domains.yaml``) with one namespace per host, so the README demo
(``python3 -m tools.demo``) and the end-to-end tests (``tests/netns/test_raven_lab.py``) share one topology::

                         "internet" 198.51.100.0/24 (bridge br0 in its own namespace, .254)
         +---------------------------+------------------------------+
     eth1 198.51.100.1           wan0 198.51.100.2               wan0 198.51.100.3
     cloud-1 ----+               hz-nat (MASQUERADE)            qd-nat (MASQUERADE)
     eth0 .11    |               br0 192.168.1.1                br0 192.168.2.1
  cloud LAN 172.16.0.0/24        /          \\                   /          \\
     (bridge in "cloud-sw")  hz-1 .11     hz-2 .12          qd-1 .11     qd-2 .12
     cloud-2 .12
  every node N: pod0 10.244.N.1/24 -- pod namespace eth0 10.244.N.10 (default via .1)

With ``Lab(isp_hop=True)`` each NAT router's wan0 goes to an ISP router (namespace ``<domain>-isp``,
``up0`` on br0 at .253, .252, ...; proxy ARP) instead of the bridge: the NAT routers keep their
addresses, and NAT -> NAT crosses two forwarding hops, as on the internet (TTL-limited NAT openers,
ravenvpn/raven/node/punch.py, need a router between the NATs).

Addressing, membership and which domain is under NAT all come from the YAML: Nodes give the InternalIP
(LAN address), pod CIDR and gateway label; Gateways give underNAT and the exposed publicIP.  Like a CNI,
the lab routes pod CIDRs *inside* a domain (``10.244.M.0/24 via <node M>`` on the others) and enables
``ip_forward`` on all nodes; everything across domains is left to ``ravenvpn up``.

Nothing is sent outside namespaces the lab creates; :meth:`Lab.close` stops every ``ravenvpn up`` and
deletes every namespace, also after a failure (the lab is a context manager).

State directory: ``ravenvpn up/down/status`` keep their pid/state/status files in ``/run/ravenvpn``,
which would be shared by all namespaces.  Each cluster node therefore gets a private tmpfs there (in its
private mount namespace), so the commands run exactly as a user types them.  The (empty) mount point
is created on the host if missing and removed again when no lab uses it any more.

Typical use::

    with Lab() as lab:
        lab.up_all()
        print(lab.ping("hz-2", lab.ip("qd-2")))
        print(lab.ravenvpn("cloud-1", "status").stdout)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from ravenvpn.errors import RavenError
from ravenvpn.raven.cluster import load_cluster
from ravenvpn.raven.node.records import DEFAULT_STATE_DIR, status_path
from ravenvpn.raven.node.statusfile import NodeStatus
from tools import traffic, wg
from tools.links import veth
from tools.node import DEFAULT_PREFIX, Node, leftovers, require_root
from tools.process import CommandError, wait_for
from tools.traffic import PingResult

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLUSTER = ROOT / "examples" / "cluster-three-domains.yaml"
DEFAULT_KEYS = ROOT / "examples" / "keys"
STATE_DIR = Path(DEFAULT_STATE_DIR)  # ravenvpn's default; a private tmpfs in every lab node
_STATE_DIR_MARKER = ".created-by-ravenvpn-lab"
INTERFACE = "raven0"
TUNNEL_PORT = 4500
LAB_PREFIX = DEFAULT_PREFIX
#: What a NAT router of the lab does (``Lab(nat=...)``, one mode or one per gateway):
#: ``masquerade`` port-preserving MASQUERADE, the router accepts unsolicited UDP to itself (the
#: default, as before); ``cpe`` the same plus a home router's input firewall (unsolicited UDP to the
#: router is dropped); ``random-fully`` MASQUERADE --random-fully (a new random port per destination:
#: symmetric); ``forward`` like ``cpe`` plus a port forward of UDP 4500 to the gateway, published
#: in the cluster file as the tunnel endpoints' publicIP/publicPort (Raven's fields).
NAT_MODES = ("masquerade", "cpe", "random-fully", "forward")
#: Two NAT'd domains (the first two: hangzhou and qingdao) behind ONE public address
#: (``Lab(shared_nat=...)``): ``site`` one site NAT router (its ``nat`` mode: that of the first
#: domain) whose LAN routers (``<domain>-lan``, no NAT of their own) route the two LANs to each other
#: on a site segment 10.255.0.0/24; ``cgnat`` carrier-grade NAT: each domain keeps its home NAT router,
#: whose WAN is on a carrier network 100.64.0.0/24 behind one carrier NAT router (port-preserving
#: MASQUERADE, drops unsolicited UDP to itself, so no hairpin); the LANs do not reach each other.
#: The shared router is ``infra("shared-nat")``; both gateways' ``public_ip`` is its address.
SHARED_NAT_MODES = {"site": "10.255.0.0/24", "cgnat": "100.64.0.0/24"}
_STATE_DIR_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------------
# what the lab needs from the cluster YAML
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class HostSpec:
    """One cluster node as the lab builds it."""

    name: str
    gateway: str | None
    internal_ip: str
    pod_cidr: str | None
    public_ip: str | None = None  # set for exposed (not NAT'd) gateway endpoints: an interface on the internet

    @property
    def pod_ip(self) -> str | None:
        if self.pod_cidr is None:
            return None
        return str(ipaddress.ip_network(self.pod_cidr)[10])

    @property
    def pod_gateway(self) -> str | None:
        if self.pod_cidr is None:
            return None
        return str(ipaddress.ip_network(self.pod_cidr)[1])


@dataclasses.dataclass
class DomainSpec:
    """One Raven network domain (a Gateway): its LAN and whether it sits behind a NAT router."""

    gateway: str
    under_nat: bool
    lan: ipaddress.IPv4Network
    hosts: list[HostSpec]
    router_ip: str | None = None  # NAT router's LAN address (default route of the hosts)
    uplink_ip: str | None = None  # NAT router's address on the internet


def parse_topology(text: str) -> tuple[list[DomainSpec], ipaddress.IPv4Network]:
    """Domains (with their hosts) and the internet prefix, from the cluster YAML text.

    The cluster is read by ravenvpn's own loader, so the lab places exactly the nodes and members the
    agents will see (``kind: List`` flattening, InternalIP, podCIDRs, derived membership).
    ClusterError for a cluster the agents would refuse too; ValueError for one the lab cannot build."""
    cluster = load_cluster(text)
    hosts: list[HostSpec] = []
    for node in cluster.nodes:
        if node.internal_ip is None:
            raise ValueError(f"Node {node.name}: no InternalIP, the lab cannot place it")
        gw = cluster.gateway_of(node.name)
        pod = next((str(c) for c in node.pod_cidrs if c.version == 4), None)
        hosts.append(HostSpec(node.name, gw.name if gw else None, str(node.internal_ip), pod))
    public: list[str] = []
    domains: list[DomainSpec] = []
    for gw in cluster.gateways:
        gw_name, under_nat = gw.name, gw.under_nat
        members = sorted((h for h in hosts if h.gateway == gw_name), key=lambda h: h.name)
        if not members:
            continue
        if not under_nat:
            for ep in gw.endpoints:
                host = next((h for h in members if h.name == ep.node_name), None)
                if host is not None and ep.public_ip is not None:
                    host.public_ip = str(ep.public_ip)
                    public.append(host.public_ip)
        lan = ipaddress.ip_network(f"{members[0].internal_ip}/24", strict=False)
        for h in members:
            if ipaddress.ip_address(h.internal_ip) not in lan:
                raise ValueError(f"Node {h.name}: {h.internal_ip} is not in {gw_name}'s LAN {lan}")
        domains.append(DomainSpec(gw_name, under_nat, lan, members))
    strays = [h.name for h in hosts if not any(h in d.hosts for d in domains)]
    if strays:
        raise ValueError(f"nodes in no gateway are not supported by the lab: {', '.join(strays)}")
    internet = ipaddress.ip_network(f"{public[0] if public else '198.51.100.1'}/24", strict=False)
    used = {ipaddress.ip_address(p) for p in public} | {internet[254]}
    free = (a for a in internet.hosts() if a not in used)
    for d in domains:
        if d.under_nat:
            taken = {ipaddress.ip_address(h.internal_ip) for h in d.hosts}
            d.router_ip = str(next(a for a in d.lan.hosts() if a not in taken))
            d.uplink_ip = str(next(free))
    return domains, internet


# --------------------------------------------------------------------------------------------------
# the lab
# --------------------------------------------------------------------------------------------------


class UpError(RuntimeError):
    """`ravenvpn up` exited instead of coming up; the message holds its log."""


@dataclasses.dataclass
class UpProcess:
    """A running ``ravenvpn up`` in a node."""

    name: str
    proc: subprocess.Popen[Any]
    log_path: Path
    argv: list[str]

    @property
    def pid(self) -> int:
        return self.proc.pid  # nsenter execs the command: this is ravenvpn's own pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def state_file(self, name: str) -> Path:
        """A file of its /run/ravenvpn as the process sees it (through /proc/PID/root)."""
        return Path(f"/proc/{self.pid}/root") / str(STATE_DIR).lstrip("/") / name


class Lab:
    """The cluster of ``cluster_yaml`` in namespaces. ``with Lab() as lab: ...``; see the module doc."""

    def __init__(
        self,
        cluster_yaml: str | os.PathLike[str] = DEFAULT_CLUSTER,
        keys_dir: str | os.PathLike[str] = DEFAULT_KEYS,
        python: str = sys.executable,
        verbose: bool = False,
        nat: str | dict[str, str] = "masquerade",
        direct: bool = False,
        wan_delay: float | dict[str, float] = 0.0,
        shared_nat: str | None = None,
        isp_hop: bool = False,
    ) -> None:
        self.source_yaml = Path(cluster_yaml)
        self.keys_dir = Path(keys_dir)
        self.python = python
        self.verbose = verbose
        text = self.source_yaml.read_text()
        self.domains, self.internet_net = parse_topology(text)
        self.hosts: dict[str, HostSpec] = {h.name: h for d in self.domains for h in d.hosts}
        self.nat_modes: dict[str, str] = {
            d.gateway: (nat if isinstance(nat, str) else nat.get(d.gateway, "masquerade"))
            for d in self.domains if d.under_nat}
        # one-way delay (ms) added to each internet uplink of a domain, by gateway (tools/wandelay.py)
        self.wan_delay: dict[str, float] = {
            d.gateway: float(wan_delay if not isinstance(wan_delay, dict) else wan_delay.get(d.gateway, 0.0))
            for d in self.domains}
        self.delay_procs: list[subprocess.Popen[Any]] = []
        # An ISP router between each NAT router and the internet bridge (see _isp_router): the path
        # NAT -> NAT then crosses forwarding hops, as on the internet. Addresses from the top of the
        # internet prefix (.253, .252, ...), clear of the public and NAT addresses taken from below.
        self.isp_hop = isp_hop
        taken = {self.internet_net[254], *(ipaddress.ip_address(h.public_ip) for h in self.hosts.values()
                                            if h.public_ip),
                 *(ipaddress.ip_address(d.uplink_ip) for d in self.domains if d.uplink_ip)}
        spare = (a for a in reversed(list(self.internet_net.hosts())) if a not in taken)
        self.isp_ips: dict[str, str] = {d.gateway: str(next(spare)) for d in self.domains
                                        if d.under_nat and isp_hop}
        for gw, mode in self.nat_modes.items():
            if mode not in NAT_MODES:
                raise ValueError(f"{gw}: unknown NAT mode {mode!r}; one of {', '.join(NAT_MODES)}")
        self.shared_nat = shared_nat
        self.shared_gateways: list[str] = self._shared_nat_members() if shared_nat else []
        self.dir = Path("/nonexistent")
        self.cluster_path = Path("/nonexistent")
        self._nodes: dict[str, Node] = {}  # cluster nodes by name
        self._pods: dict[str, Node] = {}  # pod namespaces by node name
        self._infra: dict[str, Node] = {}  # internet, NAT routers, switches
        self._ups: dict[str, UpProcess] = {}
        self._up_seq = itertools.count(1)
        self._closed = False
        self._built = False
        self._env = dict(os.environ)
        self._env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self._env.pop("PYTHONSTARTUP", None)
        if not direct:
            # Direct edge<->edge paths (hole punching) only when a test asks for them: the lab's default
            # NAT routers accept unsolicited UDP (see NAT_MODES), and the relay tests want the relay.
            self._env.setdefault("RAVENVPN_FORCE_RELAY", "all")

    # -- context manager -------------------------------------------------------------------------

    def __enter__(self) -> "Lab":
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _say(self, msg: str) -> None:
        if self.verbose:
            print(f"[lab] {msg}", flush=True)

    # -- building --------------------------------------------------------------------------------

    def build(self) -> None:
        """Create every namespace, link, address, route, NAT rule of the topology."""
        if self._built:
            return
        require_root()
        self._built = True
        self.dir = Path(tempfile.mkdtemp(prefix="ravenlab-"))
        os.chmod(self.dir, 0o755)
        self.cluster_path = self.dir / "cluster.yaml"
        shutil.copyfile(self.source_yaml, self.cluster_path)
        if any(m == "forward" for m in self.nat_modes.values()):
            self.update_yaml(self._publish_forwards)
        (self.dir / "keys").mkdir(mode=0o700)
        for h in self.hosts.values():
            src = self.keys_dir / f"{h.name}.key"
            if src.exists():
                dst = self.dir / "keys" / f"{h.name}.key"
                fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(src.read_text())
        _ensure_state_mountpoint()

        t0 = time.monotonic()
        # namespaces, created in parallel (each costs a few process spawns)
        wanted: list[tuple[str, str, str]] = [("infra", "internet", "internet")]
        if self.shared_nat:
            wanted.append(("infra", "shared-nat", "site-nat" if self.shared_nat == "site" else "cgnat"))
        for d in self.domains:
            short = _short(d.gateway)
            wanted.append(("infra", f"{short}-lan", (f"{short}-nat" if d.under_nat else f"{short}-sw")))
            if d.gateway in self.isp_ips:
                wanted.append(("infra", f"{short}-isp", f"{short}-isp"))
            for h in d.hosts:
                wanted.append(("node", h.name, h.name))
                if h.pod_cidr:
                    wanted.append(("pod", h.name, f"pod-{h.name}"))
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [(w, pool.submit(self._make_node, w[2])) for w in wanted]
        errors = []
        for (kind, key, _label), fut in futures:
            try:  # register every node that was made, so close() removes them even if another failed
                {"infra": self._infra, "node": self._nodes, "pod": self._pods}[kind][key] = fut.result()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        self._say(f"{len(futures)} namespaces in {time.monotonic() - t0:.1f}s")

        inet = self._infra["internet"]
        inet_gw = str(self.internet_net[254])
        inet.run("ip", "link", "add", "br0", "type", "bridge")
        inet.link_up("br0")
        inet.add_addr("br0", f"{inet_gw}/{self.internet_net.prefixlen}")
        plen = self.internet_net.prefixlen
        if self.shared_nat:
            self._build_shared_nat(inet, inet_gw, plen)

        for d in self.domains:
            short = _short(d.gateway)
            lan_ns = self._infra[f"{short}-lan"]
            lan_ns.run("ip", "link", "add", "br0", "type", "bridge")
            lan_ns.link_up("br0")
            if d.gateway in self.shared_gateways:
                self._join_shared_nat(d, lan_ns)
            elif d.under_nat:
                assert d.router_ip and d.uplink_ip
                lan_ns.add_addr("br0", f"{d.router_ip}/{d.lan.prefixlen}")
                if d.gateway in self.isp_ips:
                    self._isp_router(d, lan_ns, inet)
                else:
                    self._attach(inet, lan_ns, f"{d.uplink_ip}/{plen}", port=f"p-{short}", name="wan0")
                self._delay_port(inet, f"p-{short}", self.wan_delay[d.gateway])
                lan_ns.run("ip", "route", "add", "default", "via", inet_gw)
                lan_ns.sysctl("net.ipv4.ip_forward", 1)
                self._setup_nat(d, lan_ns)
            for h in d.hosts:
                node = self._nodes[h.name]
                self._attach(lan_ns, node, f"{h.internal_ip}/{d.lan.prefixlen}", port=f"p-{h.name}", name="eth0")
                if h.public_ip:
                    self._attach(inet, node, f"{h.public_ip}/{plen}", port=f"p-{h.name}", name="eth1")
                    self._delay_port(inet, f"p-{h.name}", self.wan_delay[d.gateway])
                    node.run("ip", "route", "add", "default", "via", inet_gw)
                elif d.under_nat:
                    node.run("ip", "route", "add", "default", "via", str(d.router_ip))
                node.sysctl("net.ipv4.ip_forward", 1)  # as kube-proxy/the CNI do on every node
                if h.pod_cidr:
                    pod = self._pods[h.name]
                    net = ipaddress.ip_network(h.pod_cidr)
                    veth(node, pod, f"{h.pod_gateway}/{net.prefixlen}", f"{h.pod_ip}/{net.prefixlen}",
                         name_a="pod0", name_b="eth0")
                    pod.run("ip", "route", "add", "default", "via", str(h.pod_gateway))
                # the CNI's job inside a domain: pod CIDRs of the other nodes via their node IP
                for other in d.hosts:
                    if other is not h and other.pod_cidr:
                        node.run("ip", "route", "add", other.pod_cidr, "via", other.internal_ip)
                self._mount_state_dir(h.name)
        wait_for(self._settled, timeout=10, interval=0.1, message="IPv6 addresses of the nodes to leave DAD")
        self._say(f"topology ready in {time.monotonic() - t0:.1f}s (files in {self.dir})")

    def _isp_router(self, d: DomainSpec, nat: Node, inet: Node) -> None:
        """An ISP router (namespace ``<domain>-isp``) between NAT router ``nat`` and the internet
        bridge: the NAT's wan0 (its public address, /24 as before) is a veth to the ISP's ``cpe0``,
        the ISP's ``up0`` (its own address, from the top of the prefix) is bridge port ``p-<domain>``.
        The NAT keeps its public address: the ISP routes it (/32 via cpe0) and answers ARP for it on
        the bridge, and for the rest of the prefix toward the NAT (proxy ARP both ways, no proxy
        delay), so neither the NAT nor anyone on the bridge changes its configuration. Every packet
        between the NAT and the internet is forwarded once more (TTL - 1), and the ISP router answers
        TTL-expired packets (ICMP time exceeded), like any router on the way (punch.py uses both)."""
        assert d.uplink_ip
        short = _short(d.gateway)
        isp = self._infra[f"{short}-isp"]
        plen = self.internet_net.prefixlen
        veth(nat, isp, f"{d.uplink_ip}/{plen}", "", name_a="wan0", name_b="cpe0")
        self._attach(inet, isp, f"{self.isp_ips[d.gateway]}/{plen}", port=f"p-{short}", name="up0")
        isp.run("ip", "route", "add", f"{d.uplink_ip}/32", "dev", "cpe0")
        isp.run("ip", "route", "add", "default", "via", str(self.internet_net[254]))
        isp.sysctl("net.ipv4.ip_forward", 1)
        for dev in ("cpe0", "up0"):
            isp.sysctl(f"net.ipv4.conf.{dev}.proxy_arp", 1)
            isp.sysctl(f"net.ipv4.neigh.{dev}.proxy_delay", 0)   # answer at once, not after <= 0.8 s

    def _delay_port(self, inet: Node, port: str, delay_ms: float) -> None:
        """Splice a userspace delay (tools/wandelay.py) between bridge port ``port`` and the bridge:
        the port leaves br0, a new veth pair joins it, and the delay forwards between the two."""
        if delay_ms <= 0:
            return
        port = port[:15]
        near, far = f"dl{port[1:]}"[:15], f"db{port[1:]}"[:15]
        inet.run("ip", "link", "set", "dev", port, "nomaster")
        inet.run("ip", "link", "add", near, "type", "veth", "peer", "name", far)
        inet.run("ip", "link", "set", "dev", far, "master", "br0")
        for dev in (port, near, far):
            inet.run("ip", "link", "set", "dev", dev, "promisc", "on", "up")
        proc = inet.popen(self.python, "-m", "tools.wandelay", port, near, f"{delay_ms:g}",
                          stdout=subprocess.PIPE, env=self._env, cwd=str(ROOT))
        self.delay_procs.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the WAN delay on {port} did not start (exit {proc.poll()})")

    def _setup_nat(self, d: DomainSpec, router: Node) -> None:
        """The NAT router's rules for its mode (see :data:`NAT_MODES`)."""
        mode = self.nat_modes[d.gateway]
        masq = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"]
        router.run(*masq, *(["--random-fully"] if mode == "random-fully" else []))
        if mode in ("cpe", "forward"):
            # A home router's input firewall: unsolicited UDP to the router itself is dropped before
            # conntrack confirms it, so it leaves no entry (see ravenvpn/raven/node/punch.py).
            router.run("iptables", "-A", "INPUT", "-i", "wan0", "-p", "udp", "-m", "conntrack",
                       "--ctstate", "NEW", "-j", "DROP")
        if mode == "forward":
            target = self._forward_target(d)
            router.run("iptables", "-t", "nat", "-A", "PREROUTING", "-i", "wan0", "-p", "udp", "--dport",
                       str(TUNNEL_PORT), "-j", "DNAT", "--to-destination", f"{target}:{TUNNEL_PORT}")

    def _shared_nat_members(self) -> list[str]:
        """The gateways behind the shared NAT (see :data:`SHARED_NAT_MODES`); their second's public
        address becomes the first's.

        Raises:
            ValueError: an unknown mode, fewer than two NAT'd domains, or a ``forward`` NAT among them.
        """
        if self.shared_nat not in SHARED_NAT_MODES:
            raise ValueError(f"unknown shared NAT {self.shared_nat!r}; one of {', '.join(SHARED_NAT_MODES)}")
        members = [d for d in self.domains if d.under_nat][:2]
        if len(members) < 2:
            raise ValueError("a shared NAT needs two NAT'd domains")
        if any(self.nat_modes[d.gateway] == "forward" for d in members):
            raise ValueError("a shared NAT with a port forward is not supported by the lab")
        members[1].uplink_ip = members[0].uplink_ip
        return [d.gateway for d in members]

    def _build_shared_nat(self, inet: Node, inet_gw: str, plen: int) -> None:
        """The shared NAT router: ``wan0`` on the internet (the one public address), ``br0`` the site
        segment or carrier network (.1), MASQUERADE out of ``wan0``."""
        assert self.shared_nat is not None
        seg = ipaddress.ip_network(SHARED_NAT_MODES[self.shared_nat])
        first = self.domain(self.shared_gateways[0])
        router = self._infra["shared-nat"]
        router.run("ip", "link", "add", "br0", "type", "bridge")
        router.link_up("br0")
        router.add_addr("br0", f"{seg[1]}/{seg.prefixlen}")
        self._attach(inet, router, f"{first.uplink_ip}/{plen}", port="p-shared-nat", name="wan0")
        self._delay_port(inet, "p-shared-nat", self.wan_delay[first.gateway])
        router.run("ip", "route", "add", "default", "via", inet_gw)
        router.sysctl("net.ipv4.ip_forward", 1)
        for scope in ("all", "br0"):   # the member routers reach each other on the segment directly
            router.sysctl(f"net.ipv4.conf.{scope}.send_redirects", 0)
        if self.shared_nat == "site":
            self._setup_nat(first, router)        # the site's NAT, in the first domain's mode
            for i, gw in enumerate(self.shared_gateways):
                router.run("ip", "route", "add", str(self.domain(gw).lan), "via", str(seg[2 + i]))
        else:
            # the carrier: port-preserving, and unsolicited UDP to its own address is dropped, so a
            # packet from one customer to the shared address (hairpin) goes nowhere
            router.run("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")
            router.run("iptables", "-A", "INPUT", "-i", "wan0", "-p", "udp", "-m", "conntrack",
                       "--ctstate", "NEW", "-j", "DROP")
            router.run("iptables", "-A", "INPUT", "-i", "br0", "-p", "udp", "-d", str(first.uplink_ip),
                       "-j", "DROP")

    def _join_shared_nat(self, d: DomainSpec, lan_ns: Node) -> None:
        """A domain behind the shared NAT: its LAN router's ``wan0`` on the segment; with ``site`` it
        routes (no NAT) and reaches the other LAN directly, with ``cgnat`` it is a home NAT router."""
        assert self.shared_nat is not None and d.router_ip
        seg = ipaddress.ip_network(SHARED_NAT_MODES[self.shared_nat])
        i = self.shared_gateways.index(d.gateway)
        lan_ns.add_addr("br0", f"{d.router_ip}/{d.lan.prefixlen}")
        self._attach(self._infra["shared-nat"], lan_ns, f"{seg[2 + i]}/{seg.prefixlen}",
                     port=f"p-{_short(d.gateway)}", name="wan0")
        lan_ns.run("ip", "route", "add", "default", "via", str(seg[1]))
        lan_ns.sysctl("net.ipv4.ip_forward", 1)
        if self.shared_nat == "cgnat":
            self._setup_nat(d, lan_ns)
            return
        for j, gw in enumerate(self.shared_gateways):
            if gw != d.gateway:
                lan_ns.run("ip", "route", "add", str(self.domain(gw).lan), "via", str(seg[2 + j]))

    def _forward_target(self, d: DomainSpec) -> str:
        """The LAN address a ``forward`` NAT sends the tunnel port to: the gateway's first tunnel
        endpoint node (a port forward names one host; failover would need the forward changed)."""
        cluster = load_cluster(self.cluster_path.read_text() if self.cluster_path.exists()
                               else self.source_yaml.read_text())
        gw = cluster.gateway(d.gateway)
        assert gw is not None and gw.tunnel_endpoints
        return self.hosts[gw.tunnel_endpoints[0].node_name].internal_ip

    def _publish_forwards(self, docs: list[dict[str, Any]]) -> None:
        """Raven's fields for a port forward: publicIP (the NAT's address) and publicPort on the
        tunnel endpoints of gateways whose NAT mode is ``forward``."""
        for doc in docs:
            if doc.get("kind") != "Gateway" or self.nat_modes.get(doc["metadata"]["name"]) != "forward":
                continue
            d = self.domain(doc["metadata"]["name"])
            for ep in doc["spec"].get("endpoints", []):
                if ep.get("type") == "tunnel":
                    ep["publicIP"], ep["publicPort"] = d.uplink_ip, TUNNEL_PORT

    def isp(self, gateway: str) -> Node:
        """The ISP router namespace in front of a NAT'd gateway's router (``Lab(isp_hop=True)``)."""
        if gateway not in self.isp_ips:
            raise KeyError(f"{gateway} has no ISP router (Lab(isp_hop=True), NAT'd domains)")
        return self._infra[f"{_short(gateway)}-isp"]

    def public_ip(self, gateway: str) -> str:
        """The internet address of a NAT'd gateway's router (its edges' public address)."""
        d = self.domain(gateway)
        if d.uplink_ip is None:
            raise KeyError(f"{gateway} is not under NAT")
        return d.uplink_ip

    def _make_node(self, label: str) -> Node:
        node = Node(label, prefix=LAB_PREFIX)
        # No IPv6 DAD on the links to come: their link-local addresses (and the kernel's local routes for
        # them) are final at once, so a snapshot taken right after the build equals one taken later.
        for scope in ("all", "default"):
            node.sysctl(f"net.ipv6.conf.{scope}.accept_dad", 0)
        return node

    def _settled(self) -> bool:
        return all(not n.run("ip", "-6", "addr", "show", "tentative").stdout.strip() for n in self._nodes.values())

    @staticmethod
    def _attach(switch: Node, node: Node, cidr: str, port: str, name: str) -> None:
        """A veth from ``node`` (``name``, addressed ``cidr``) into bridge br0 of ``switch`` (port ``port``)."""
        veth(node, switch, cidr, "", name_a=name, name_b=port[:15])
        switch.run("ip", "link", "set", "dev", port[:15], "master", "br0")

    def _mount_state_dir(self, name: str) -> None:
        node = self._nodes[name]
        node.run("mount", "-t", "tmpfs", "-o", "mode=0700,size=4m", "ravenvpn-run", str(STATE_DIR))

    # -- accessors -------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Cluster node names, sorted."""
        return sorted(self.hosts)

    def node(self, name: str) -> Node:
        return self._nodes[name]

    def pod(self, name: str) -> Node:
        """The pod namespace of cluster node ``name``."""
        return self._pods[name]

    def infra(self, name: str) -> Node:
        """``internet``, ``<domain>-lan`` (``hangzhou-lan`` is hz's NAT router, ``cloud-lan`` a switch)."""
        return self._infra[name]

    def nat(self, gateway: str) -> Node:
        """The NAT router namespace of a NAT'd gateway (``gw-hangzhou``); behind a ``site`` shared NAT
        its LAN's plain router (the NAT is ``infra("shared-nat")``)."""
        d = self.domain(gateway)
        if not d.under_nat:
            raise KeyError(f"{gateway} is not under NAT")
        return self._infra[f"{_short(gateway)}-lan"]

    def domain(self, gateway: str) -> DomainSpec:
        return next(d for d in self.domains if d.gateway == gateway)

    def domain_of(self, name: str) -> DomainSpec:
        return next(d for d in self.domains if any(h.name == name for h in d.hosts))

    def ip(self, name: str) -> str:
        """InternalIP of a cluster node."""
        return self.hosts[name].internal_ip

    def pod_ip(self, name: str) -> str:
        ip = self.hosts[name].pod_ip
        if ip is None:
            raise KeyError(f"{name} has no pod CIDR")
        return ip

    def key_file(self, name: str) -> Path | None:
        p = self.dir / "keys" / f"{name}.key"
        return p if p.exists() else None

    def _any(self, who: str | Node) -> Node:
        if isinstance(who, Node):
            return who
        if who in self._nodes:
            return self._nodes[who]
        if who.startswith("pod:"):
            return self._pods[who[4:]]
        return self._infra[who]

    # -- running ravenvpn ------------------------------------------------------------------------

    def ravenvpn_argv(self, *args: str) -> list[str]:
        return [self.python, "-m", "ravenvpn.cli", *args]

    def ravenvpn(
        self, name: str, *args: str, check: bool = False, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ravenvpn ARGS`` in cluster node ``name`` (``down``, ``status --json``, ``up`` with bad input...)."""
        return self._nodes[name].run(*self.ravenvpn_argv(*args), check=check, timeout=timeout, env=self._env)

    def up_args(self, name: str, cluster: str | os.PathLike[str] | None = None) -> list[str]:
        args = ["up", "--cluster", str(cluster or self.cluster_path), "--node", name]
        key = self.key_file(name)
        if key is not None:
            args += ["--private-key", str(key)]
        return args

    def up(self, name: str, wait: bool = True, timeout: float = 20.0, extra: Sequence[str] = (),
           command: Sequence[str] | None = None) -> UpProcess:
        """Start ``ravenvpn up`` in node ``name`` (its demo key, the lab's cluster file); wait until it has
        written its status (so routes, rules and — on an active gateway — raven0 exist).

        ``command`` runs another program that takes ``up``'s options instead of ``ravenvpn up`` (an agent
        that embeds ravenvpn, such as ``examples/embedded_agent.py``): ``[*command, --cluster ..., *extra]``."""
        if name in self._ups and self._ups[name].proc.poll() is None:
            raise RuntimeError(f"ravenvpn up already runs in {name}")
        node = self._nodes[name]
        # in the node's tmpdir: the test suite's failure hook attaches every *.log found there
        log_path = node.tmpdir / f"ravenvpn-up-{next(self._up_seq)}.log"
        if command is None:
            argv = self.ravenvpn_argv(*self.up_args(name), *extra)
        else:
            argv = [*command, *self.up_args(name)[1:], *extra]
        with open(log_path, "w") as log:
            proc = node.popen(*argv, stdout=log, stderr=subprocess.STDOUT, env=self._env)
        up = UpProcess(name, proc, log_path, argv)
        # Reap it the moment it exits, as a shell or an init system would: `ravenvpn down` waits for the
        # pid to disappear, and a zombie child of ours would look alive to it.
        threading.Thread(target=_reap, args=(proc,), name=f"reap-up-{name}", daemon=True).start()
        self._ups[name] = up
        if wait:
            self.wait_up(name, timeout)
        return up

    def wait_up(self, name: str, timeout: float = 20.0) -> None:
        up = self._ups[name]

        def ready() -> bool:
            if up.proc.poll() is not None:
                raise UpError(f"ravenvpn up in {name} exited {up.proc.returncode}:\n{up.log()}")
            return up.state_file(status_path(STATE_DIR, INTERFACE).name).exists()

        try:
            wait_for(ready, timeout=timeout, interval=0.05, message=f"ravenvpn up in {name} to write its status")
        except TimeoutError as exc:
            raise UpError(f"{exc}\n--- log ---\n{up.log()}") from None
        except UpError:
            raise

    def up_all(self, timeout: float = 30.0, exposed_first: bool = True) -> None:
        """Start ``ravenvpn up`` on every cluster node and wait for all of them.

        With ``exposed_first`` the nodes with a public address (the cloud gateway) start first: NAT'd
        gateways call them, and a first handshake initiation that finds no listener is only retried
        after WireGuard's 5 s REKEY_TIMEOUT. Otherwise all start at once (any order must work)."""
        stages = [self.names]
        if exposed_first:
            exposed = [n for n in self.names if self.hosts[n].public_ip]
            stages = [exposed, [n for n in self.names if n not in exposed]]
        for stage in stages:
            for name in stage:
                self.up(name, wait=False)
            for name in stage:
                self.wait_up(name, timeout)

    def up_process(self, name: str) -> UpProcess:
        return self._ups[name]

    def is_up(self, name: str) -> bool:
        """Whether the lab's ``ravenvpn up`` in ``name`` is running."""
        up = self._ups.get(name)
        return up is not None and up.proc.poll() is None

    def signal_up(self, name: str, sig: int) -> None:
        os.kill(self._ups[name].pid, sig)

    def kill_up(self, name: str) -> None:
        """SIGKILL ``ravenvpn up`` in ``name`` (a crash: nothing is cleaned up) and wait until it is gone."""
        up = self._ups[name]
        os.kill(up.pid, signal.SIGKILL)
        wait_for(lambda: up.proc.poll() is not None, timeout=10, interval=0.01, message=f"{name}'s up to die")

    def cable(self, name: str, connected: bool) -> float:
        """Pull (or plug back) every network cable of cluster node ``name``: the switch-side ends of its
        LAN and internet links go down (up), so the node's links lose carrier as with a dead NIC or
        switch port; its addresses and routes stay. Returns ``time.monotonic()`` right after."""
        d = self.domain_of(name)
        switches = [self._infra[f"{_short(d.gateway)}-lan"]]
        if self.hosts[name].public_ip:
            switches.append(self._infra["internet"])
        for sw in switches:
            sw.run("ip", "link", "set", "dev", f"p-{name}"[:15], "up" if connected else "down")
        return time.monotonic()

    def add_lan_host(self, gateway: str, ip: str, label: str = "intruder") -> Node:
        """Another host on ``gateway``'s LAN (no cluster node: e.g. an attacker), addressed ``ip``; removed
        with the lab."""
        d = self.domain(gateway)
        node = self._make_node(label)
        self._infra[label] = node
        self._attach(self._infra[f"{_short(gateway)}-lan"], node, f"{ip}/{d.lan.prefixlen}", port=f"p-{label}",
                     name="eth0")
        return node

    def down(self, name: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        """``ravenvpn down`` in node ``name``, then reap our ``up`` process (which ``down`` stopped)."""
        res = self.ravenvpn(name, "down", timeout=timeout)
        up = self._ups.pop(name, None)
        if up is not None:
            try:
                up.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._nodes[name].stop_process(up.proc)
                raise RuntimeError(f"ravenvpn up in {name} still runs after `ravenvpn down`:\n{up.log()}")
        if res.returncode != 0:
            raise CommandError(res.returncode, ["ravenvpn", "down"], res.stdout, res.stderr)
        return res

    def status(self, name: str) -> NodeStatus:
        """``ravenvpn status --json`` of node ``name`` (with the peers' live state on an active gateway)."""
        res = self.ravenvpn(name, "status", "--json")
        if res.returncode != 0:
            raise CommandError(res.returncode, ["ravenvpn", "status", "--json"], res.stdout, res.stderr)
        return NodeStatus.from_json(res.stdout)

    def role(self, name: str) -> str | None:
        """The role ``up`` in ``name`` last wrote to its status file (no process spawn), None if none."""
        up = self._ups.get(name)
        if up is None:
            return None
        try:
            return NodeStatus.read(up.state_file(status_path(STATE_DIR, INTERFACE).name)).role
        except (OSError, RavenError):
            return None

    def active_of(self, gateway: str) -> list[str]:
        """The nodes of Gateway ``gateway`` whose running ``up`` reports itself its active gateway."""
        return [h.name for h in self.domain(gateway).hosts if self.is_up(h.name)
                and self.role(h.name) == "active-gateway"]

    def wait_role(self, name: str, role: str, timeout: float = 20.0) -> None:
        """Wait until the current ``up`` of ``name`` (not a killed predecessor) reports ``role``.

        Raises:
            TimeoutError: it did not within ``timeout`` seconds.
        """
        up = self._ups[name]

        def ready() -> bool:
            try:
                st = NodeStatus.read(up.state_file(status_path(STATE_DIR, INTERFACE).name))
            except (OSError, RavenError):
                return False
            return st.pid == up.pid and st.role == role

        wait_for(ready, timeout=timeout, interval=0.05, message=f"{name} to be {role}")

    def carrier(self, name: str) -> str:
        """The node whose raven0 carries ``name``'s own traffic: ``name`` itself when it is a tunnel
        candidate (the active gateway, or a hot standby with failover), else its domain's active gateway."""
        if self.role(name) in ("active-gateway", "standby"):
            return name
        return next(h.name for h in self.domain_of(name).hosts if self.role(h.name) == "active-gateway")

    def active_gateways(self) -> list[str]:
        return [n for n in self.names if self.role(n) == "active-gateway"]

    def wg_dump(self, name: str) -> wg.WgDump:
        """``wg show raven0 dump`` in node ``name`` (so through ravenvpn's UAPI socket)."""
        return wg.wg_dump(self._nodes[name], INTERFACE)

    def tunnels_up(self) -> bool:
        """Every domain whose nodes run ``up`` has one active gateway, and each active gateway has completed
        a handshake with each of its peers (standby peers — other candidates of a remote gateway — only
        when their node runs ``up``: a hot standby calls in by itself)."""
        actives = self.active_gateways()
        if not actives:
            return False
        for d in self.domains:
            running = [h.name for h in d.hosts if self.is_up(h.name)]
            if running and sum(self.role(n) == "active-gateway" for n in running) != 1:
                return False
        for name in actives:
            dump = self.wg_dump(name)
            try:
                planned = {p.public_key: p for p in self.status(name).peers}
            except (CommandError, RavenError):
                return False
            needed = [p for k, p in dump.peers.items()
                      if not (k in planned and planned[k].standby and not self.is_up(planned[k].node))]
            if not dump.peers or any(p.latest_handshake == 0 for p in needed):
                return False
        return True

    def wait_tunnels(self, timeout: float = 30.0) -> float:
        """Wait until :meth:`tunnels_up`; returns the seconds it took."""
        t0 = time.monotonic()
        try:
            wait_for(self.tunnels_up, timeout=timeout, interval=0.2, message="all gateway handshakes")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.debug_dump()}") from None
        return time.monotonic() - t0

    # -- traffic ---------------------------------------------------------------------------------

    def ping(self, src: str | Node, dst: str, **kw: Any) -> PingResult:
        """``ping`` from a cluster node name, ``pod:NAME``, an infra name or a Node; kw as tools.traffic.ping."""
        return traffic.ping(self._any(src), dst, **kw)

    def ping_many(self, pairs: Iterable[tuple[str | Node, str]], workers: int = 6, **kw: Any) -> list[PingResult]:
        """Several pings in parallel (results in the order of ``pairs``)."""
        pairs = list(pairs)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda p: self.ping(p[0], p[1], **kw), pairs))

    # -- cluster file ----------------------------------------------------------------------------

    def read_docs(self) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.cluster_path.read_text()) if d is not None]

    def update_yaml(self, transform: Callable[[list[dict[str, Any]]], list[dict[str, Any]] | None]) -> float:
        """Rewrite the cluster file every ``up`` follows: ``transform(docs)`` edits the parsed documents in
        place (or returns new ones). Atomic (rename), so no ``up`` reads half a file. Returns the
        ``time.monotonic()`` right after the new file is in place (to time a failover from)."""
        docs = self.read_docs()
        new = transform(docs)
        if new is not None:
            docs = new
        text = yaml.safe_dump_all(docs, sort_keys=False)
        return self.write_cluster_text(text)

    def write_cluster_text(self, text: str) -> float:
        tmp = self.cluster_path.with_name(f".{self.cluster_path.name}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.cluster_path)
        return time.monotonic()

    def set_ready(self, name: str, ready: bool) -> float:
        """Set Node ``name``'s Ready condition (what the node controller does) in the cluster file."""

        def edit(docs: list[dict[str, Any]]) -> None:
            for d in docs:
                if d.get("kind") == "Node" and d["metadata"]["name"] == name:
                    conds = d.setdefault("status", {}).setdefault("conditions", [])
                    cond = next((c for c in conds if c.get("type") == "Ready"), None)
                    if cond is None:
                        cond = {"type": "Ready"}
                        conds.append(cond)
                    cond["status"] = "True" if ready else "False"
                    return
            raise KeyError(f"no Node {name} in the cluster file")

        return self.update_yaml(edit)

    # -- inspection ------------------------------------------------------------------------------

    def snapshot(self, name: str) -> dict[str, Any]:
        """Routes (all tables, v4+v6), rules, links, addresses and routing sysctls of a cluster node.

        For "``down`` leaves the node exactly as before ``up``": compare two snapshots with ``==``
        (and :func:`snapshot_diff` for a readable difference)."""
        node = self._nodes[name]

        def j(*args: str) -> Any:
            return json.loads(node.run("ip", "-j", *args).stdout or "[]")

        def canon(items: list[dict[str, Any]], drop: Iterable[str] = ()) -> list[str]:
            return sorted(json.dumps({k: v for k, v in it.items() if k not in drop}, sort_keys=True) for it in items)

        link_keys = ("ifindex", "ifname", "flags", "mtu", "operstate", "link_type", "address", "master")
        links = [{k: link.get(k) for k in link_keys} for link in j("link", "show")]
        addrs = [
            {"ifname": a.get("ifname"),
             "addr": sorted(f"{i['local']}/{i['prefixlen']}" for i in a.get("addr_info", []))}
            for a in j("addr", "show")
        ]
        sysctl_out = node.run(
            "sh", "-c",
            "cd /proc/sys/net && grep -H . ipv4/ip_forward ipv4/conf/*/rp_filter ipv4/conf/*/send_redirects "
            "ipv4/conf/*/forwarding ipv6/conf/all/forwarding 2>/dev/null; true",
        ).stdout  # fmt: skip
        return {
            "routes4": canon(j("-4", "route", "show", "table", "all"), drop=("expires",)),
            "routes6": canon(j("-6", "route", "show", "table", "all"), drop=("expires",)),
            "rules4": canon(j("-4", "rule", "show")),
            "rules6": canon(j("-6", "rule", "show")),
            "links": canon(links),
            "addresses": canon(addrs),
            "sysctls": sorted(sysctl_out.split()),
        }

    def debug_dump(self) -> str:
        """Logs of every ``up`` and the kernel/WireGuard state of the nodes: for failure messages."""
        parts: list[str] = []
        for name, up in sorted(self._ups.items()):
            rc = up.proc.poll()
            parts.append(f"=== ravenvpn up in {name} ({'running' if rc is None else f'exited {rc}'}) ===")
            parts.append("\n".join(up.log().splitlines()[-40:]))
        for name in self.names:
            node = self._nodes.get(name)
            if node is None or node._closed:
                continue
            out = node.run(
                "sh", "-c",
                "ip rule; ip route show table all | grep -v -e '^local' -e '^broadcast' -e '^multicast' "
                "-e 'table local'; wg show raven0 2>/dev/null; true",
                check=False,
            ).stdout  # fmt: skip
            parts.append(f"=== {name} ===\n{out.strip()}")
        return "\n".join(parts)

    # -- teardown --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every ``ravenvpn up`` (SIGTERM: they clean up), delete every namespace and temp file.
        Idempotent; safe after a partial build."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for name, up in list(self._ups.items()):
            node = self._nodes.get(name)
            if node is not None and not node._closed:
                with contextlib.suppress(Exception):
                    node.stop_process(up.proc, signal.SIGTERM, timeout=10)
        self._ups.clear()
        everything = [*self._pods.values(), *self._nodes.values(), *self._infra.values()]
        with ThreadPoolExecutor(max_workers=4) as pool:
            for res in pool.map(_close_node, everything):
                if res:
                    errors.append(res)
        self._pods.clear()
        self._nodes.clear()
        self._infra.clear()
        if self.dir != Path("/nonexistent"):
            shutil.rmtree(self.dir, ignore_errors=True)
        _release_state_mountpoint()
        if errors:
            raise RuntimeError("lab teardown: " + "; ".join(errors))


def _reap(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(Exception):
        proc.wait()


def _close_node(node: Node) -> str | None:
    try:
        node.close()
        return None
    except Exception as exc:  # keep closing the others
        return f"{node}: {exc!r}"


def _short(gateway: str) -> str:
    """``gw-hangzhou`` -> ``hangzhou``: used in namespace/port names."""
    return gateway[3:] if gateway.startswith("gw-") else gateway


def _ensure_state_mountpoint() -> None:
    """ravenvpn's state dir must exist as a mount point for the per-node tmpfs; create it if missing
    (noting that we did, inside it, so the last lab to finish can remove it again)."""
    with _STATE_DIR_LOCK:
        if not STATE_DIR.exists():
            STATE_DIR.mkdir(mode=0o700, parents=True)
            (STATE_DIR / _STATE_DIR_MARKER).touch()


def _release_state_mountpoint() -> None:
    """Remove /run/ravenvpn if a lab created it, it holds only our marker and no lab node is left
    (rmdir would detach the tmpfs of other labs' nodes from their mount namespaces)."""
    with _STATE_DIR_LOCK:
        marker = STATE_DIR / _STATE_DIR_MARKER
        if not marker.exists():
            return
        with contextlib.suppress(OSError):
            if leftovers(LAB_PREFIX):
                return
            if [p.name for p in STATE_DIR.iterdir()] != [_STATE_DIR_MARKER]:
                return
            marker.unlink()
            STATE_DIR.rmdir()


def snapshot_diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Human-readable difference of two :meth:`Lab.snapshot` results ('' when equal)."""
    lines: list[str] = []
    for key in sorted(set(before) | set(after)):
        b, a = set(before.get(key, [])), set(after.get(key, []))
        for item in sorted(b - a):
            lines.append(f"{key}: missing after: {item}")
        for item in sorted(a - b):
            lines.append(f"{key}: new after: {item}")
    return "\n".join(lines)


def without_field(docs: list[dict[str, Any]], kind: str, name: str, path: Sequence[str | int]) -> list[dict[str, Any]]:
    """A deep copy of ``docs`` with the field at ``path`` of object ``kind/name`` deleted (bad-input tests)."""
    docs = copy.deepcopy(docs)
    obj = next(d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name)
    parent: Any = obj
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return docs
