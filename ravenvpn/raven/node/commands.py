"""`ravenvpn up`, `down` and `status`: the Raven layer's command line, a thin shell over the library.

`up` is an :class:`~ravenvpn.raven.node.agent.Agent` plus what only a command line does: logging to
stderr and signals (SIGTERM/SIGINT stop it, SIGHUP reloads the cluster file).
"""
from __future__ import annotations

import argparse
import json
import base64
import contextlib
import logging
import os
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...device.uapi_server import socket_path
from ...errors import RavenError
from ..liveness.wire import LIVENESS_PORT
from .agent import Agent
from .applier import Applier
from .down import down, recorded_device_present
from .pidfile import running_pid
from .records import DEFAULT_STATE_DIR, DeviceRecord, device_path, pid_path, record_paths, status_path
from .holepunch import describe_direct, read_direct_status
from .statusfile import LivePeer, NodeStatus

MTU_MIN, MTU_MAX = 576, 65535    # the planner's range: IPv4's minimum datagram, the largest IP packet


ENVIRONMENT = """\
environment:
  RAVENVPN_BUSY_POLL_US=N    after traffic, poll for N microseconds instead of sleeping (0..1000000,
                             default 0): lower latency, one busy core while traffic flows
  RAVENVPN_UDP_GSO=0         no UDP segmentation offload (for A/B measurements)
  RAVENVPN_TUN_OFFLOAD=0|rx|full   TUN offloads (default rx; for A/B measurements)
  RAVENVPN_FORCE_RELAY=all|GW,...  no direct edge-to-edge paths (hole punching) for all or these
                             gateways: their traffic stays on the relay"""

UP_DESCRIPTION = """\
Run this node's Raven agent in the foreground: plan the node from the cluster YAML (its role: active
gateway, standby, member or none), bring up the tunnel interface with one WireGuard peer per remote
gateway when it is the active gateway, install routes (tables 9028/9027) and rules, and keep them
converged while the cluster file changes."""

UP_EPILOG = f"""\
needs root (or CAP_NET_ADMIN): it creates the tunnel interface and changes routes, rules and sysctls.
--private-key is required on every node listed as a tunnel (or proxy) endpoint of a Gateway: a
standby without its key could not take over when the active gateway fails.
One ravenvpn up per network namespace: Raven's tables 9027/9028 and rule priorities are shared.
Ports: UDP --port (4500) for the tunnel on the underlay; UDP --liveness-port (4501) on the private
network for automatic failover (unless --no-failover): the same on every node of the cluster.

signals:
  SIGTERM, SIGINT   remove everything it installed and exit ('ravenvpn down' sends SIGTERM); an
                    active gateway first hands over to a live standby (failover)
  SIGHUP            re-read the cluster file now (edits are also picked up within 0.5 s);
                    '--cluster -' (standard input) is read once: SIGHUP re-applies the same text

files (STATE_DIR, default {DEFAULT_STATE_DIR}):
  IFACE.pid           the running agent
  IFACE.state.json    the routes, rules and sysctls it installed or changed (what 'ravenvpn down' undoes)
  IFACE.device.json   the identity of the tunnel device it created
  IFACE.status.json   role, peers and routes (what 'ravenvpn status' shows)
  IFACE.direct.json   direct edge-to-edge paths: each pair's state (relayed, punching, direct...)

{ENVIRONMENT}"""


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``up``, ``down`` and ``status`` to the ``ravenvpn`` command line's subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    up_cmd = sub.add_parser("up", help="run this node's Raven agent (dataplane + routes) until stopped (root)",
                            description=UP_DESCRIPTION, epilog=UP_EPILOG, formatter_class=fmt)
    up_cmd.add_argument("--cluster", required=True, metavar="FILE",
                        help="YAML of Gateway and Node objects, as 'kubectl get gateways,nodes -o yaml' prints "
                             "('-': standard input); followed while it runs")
    up_cmd.add_argument("--node", required=True, metavar="NAME", help="this node's name (metadata.name) in the cluster")
    up_cmd.add_argument("--private-key", metavar="FILE",
                        help="base64 WireGuard private key ('ravenvpn genkey'; mode 0600); required on tunnel "
                             "and proxy endpoint nodes, not on members")
    up_cmd.add_argument("--interface", default="raven0", metavar="NAME",
                        help="tunnel interface name (default raven0)")
    up_cmd.add_argument("--port", type=int, default=4500, help="UDP listen port of the tunnel (default 4500)")
    up_cmd.add_argument("--mtu", type=int, default=None,
                        help="tunnel MTU in bytes, 576..65535 (default: the MTU of the path toward the peers - 80)")
    up_cmd.add_argument("--liveness-port", type=int, default=LIVENESS_PORT,
                        help=f"UDP port of the failover liveness protocol on the private network "
                             f"(default {LIVENESS_PORT}; the same on every node)")
    up_cmd.add_argument("--no-failover", action="store_true",
                        help="no automatic failover: only the cluster file moves the gateway")
    _add_state_dir(up_cmd)
    up_cmd.set_defaults(func=cmd_up)

    down_cmd = sub.add_parser(
        "down", help="stop 'ravenvpn up' and remove what it installed (root)", formatter_class=fmt,
        description=_wrap("Stop the 'ravenvpn up' of an interface (SIGTERM; it removes everything it installed), "
                    "or, if it died without cleaning up, remove what its records name: routes, rules, "
                    "sysctls and the tunnel device it created (only if it is still that device). "
                    "Without records it changes nothing and says so (exit 0)."),
        epilog="needs root (or CAP_NET_ADMIN).\nexit status: 0 when stopped, cleaned up or nothing to stop; "
               "1 on an error.")
    down_cmd.add_argument("--interface", default="raven0", metavar="NAME",
                          help="the interface 'ravenvpn up' runs (default raven0)")
    _add_state_dir(down_cmd)
    down_cmd.set_defaults(func=cmd_down)

    status_cmd = sub.add_parser(
        "status", help="role, gateway, peers and routes of this node", formatter_class=fmt,
        description=_wrap("Show the running 'ravenvpn up' of an interface: the node's role and gateway, its "
                    "WireGuard peers (with the live endpoint, latest handshake and bytes on an active "
                    "gateway, and why the last handshake initiation of a peer was refused) and its routes. If no 'ravenvpn up' runs, says so (exit 1), and what a "
                    "crashed one left behind."),
        epilog="reads the state directory: needs root with the default one.")
    status_cmd.add_argument("--interface", default="raven0", metavar="NAME",
                            help="the interface 'ravenvpn up' runs (default raven0)")
    status_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    _add_state_dir(status_cmd)
    status_cmd.set_defaults(func=cmd_status)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100)


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                        help=f"where the pid, state and status files live (default {DEFAULT_STATE_DIR})")


CAP_NET_ADMIN = 12      # linux/capability.h


def has_net_admin() -> bool:
    """True when this process may change network interfaces, routes and rules (root or CAP_NET_ADMIN)."""
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def require_net_admin(what: str) -> None:
    """Refuse early, in one line, when this process lacks root or CAP_NET_ADMIN.

    Raises:
        RavenError: ``need root (or CAP_NET_ADMIN): <what>``.
    """
    if not has_net_admin():
        raise RavenError(f"need root (or CAP_NET_ADMIN): {what}")


def _check_state_dir_writable(state_dir: str) -> None:
    """The state directory (or the nearest existing parent, where it will be made) must be writable."""
    path = Path(state_dir)
    while not path.exists() and path.parent != path:
        path = path.parent
    if not os.access(path, os.W_OK | os.X_OK):
        raise RavenError(f"need root (or CAP_NET_ADMIN): cannot write {state_dir} (or pick another with --state-dir)")


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ravenvpn: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


@contextlib.contextmanager
def _signals_to(agent: Agent) -> Iterator[None]:
    """SIGTERM/SIGINT stop the agent, SIGHUP reloads; the caller's handlers come back afterwards."""
    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            agent.reload()
        else:
            agent.stop(signal.Signals(signum).name)

    saved: dict[int, Any] = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            saved[sig] = signal.signal(sig, on_signal)
        yield
    finally:
        for sig, handler in saved.items():
            # None: a handler installed outside Python, which cannot be put back; the default is the closest.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def cmd_up(args: argparse.Namespace) -> int:
    """``ravenvpn up``: log to stderr, map signals to the agent, run it until stopped.

    Raises:
        RavenError: a bad option, or whatever :meth:`Agent.run` raises (one line for the user).
    """
    _setup_logging()
    if not 1 <= args.port <= 65535:
        raise RavenError(f"--port {args.port}: must be 1..65535")
    if args.mtu is not None and not MTU_MIN <= args.mtu <= MTU_MAX:
        raise RavenError(f"--mtu {args.mtu}: must be {MTU_MIN}..{MTU_MAX}")
    if not 1 <= args.liveness_port <= 65535:
        raise RavenError(f"--liveness-port {args.liveness_port}: must be 1..65535")
    if args.liveness_port == args.port and not args.no_failover:
        raise RavenError(f"--port {args.port} is also the failover liveness port (--liveness-port, default "
                         f"{LIVENESS_PORT}): pick another --port, or another --liveness-port on every node")
    from ...device.tun import check_ifname
    try:
        check_ifname(args.interface)    # before it names the pid and state files
    except ValueError as exc:
        raise RavenError(f"--interface: {exc}") from None
    from ...device.daemon import busy_poll_from_env
    busy_poll_from_env()                # a usage error is reported before the missing privileges
    require_net_admin("ravenvpn up creates the tunnel interface and changes routes, rules and sysctls")
    _check_state_dir_writable(args.state_dir)
    agent = Agent(args.cluster, args.node, private_key_path=args.private_key, interface=args.interface,
                  port=args.port, mtu=args.mtu, state_dir=args.state_dir, failover=not args.no_failover,
                  liveness_port=args.liveness_port)
    with _signals_to(agent):
        return agent.run()


def cmd_down(args: argparse.Namespace) -> int:
    """``ravenvpn down``: see :func:`~ravenvpn.raven.node.down.down`. Exit 0 also when there was
    nothing to stop (idempotent, like ``systemctl stop``).

    Raises:
        RavenError: no root (or CAP_NET_ADMIN), or what :func:`~ravenvpn.raven.node.down.down` raises.
    """
    require_net_admin("ravenvpn down removes the interface, routes, rules and sysctls ravenvpn up installed")
    print(down(args.interface, args.state_dir))
    return 0


def uapi_get(interface: str) -> dict[str, dict[str, Any]]:
    """Live peer state from the interface's UAPI socket, keyed by hex public key."""
    peers: dict[str, dict[str, Any]] = {}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(socket_path(interface))
        sock.sendall(b"get=1\n\n")
        data = b""
        while not data.endswith(b"\n\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    current: dict[str, Any] | None = None
    for line in data.decode().splitlines():
        key, _, value = line.partition("=")
        if key == "public_key":
            current = peers[value] = {"allowed_ips": []}
        elif current is not None and key == "allowed_ip":
            current["allowed_ips"].append(value)
        elif current is not None:
            current[key] = value
    return peers


def _live_peers(interface: str) -> tuple[dict[str, LivePeer], str | None]:
    """Live peer state by base64 public key, and why there is none when the UAPI socket may not be
    opened (not root): ({}, "need root ..."). ({}, None) when the socket does not answer (no
    interface)."""
    try:
        live = uapi_get(interface)
    except PermissionError:
        return {}, f"need root to read them (cannot open {socket_path(interface)})"
    except OSError:
        return {}, None
    out: dict[str, LivePeer] = {}
    for hex_key, info in live.items():
        sec = int(info.get("last_handshake_time_sec", 0))
        out[base64.b64encode(bytes.fromhex(hex_key)).decode()] = LivePeer(
            info.get("endpoint"), sec or None, int(info.get("rx_bytes", 0)), int(info.get("tx_bytes", 0)))
    return out, None


def _not_running(state_dir: str, interface: str) -> str:
    """``ravenvpn up is not running for raven0``, plus what a crashed one left behind, if anything."""
    message = f"ravenvpn up is not running for {interface}"
    left = record_paths(state_dir, interface)
    if not left:
        return message
    parts: list[str] = []
    try:
        # What is still there: routes through the tunnel vanished with it (kill -9 of up).
        counts = Applier(interface, state_dir).still_installed()
        parts += [f"{n} {what}" for n, what in zip(counts, ("routes", "rules", "sysctls")) if n]
    except RavenError:
        parts.append("an unreadable state file")
    device = DeviceRecord.read(device_path(state_dir, interface))
    if device is not None and recorded_device_present(device):     # a TUN goes with its process
        parts.append(f"interface {device.describe()}")
    pid = ""
    try:
        pid = f" (pid {int(pid_path(state_dir, interface).read_text().split()[0])})"
    except (OSError, ValueError, IndexError):
        pass
    files = ", ".join(p.name for p in left)
    down_cmd = "ravenvpn down" + ("" if interface == "raven0" else f" --interface {interface}") + \
        ("" if os.fspath(state_dir) == DEFAULT_STATE_DIR else f" --state-dir {state_dir}")
    left = f"{', '.join(parts)} and its records" if parts else "its records"
    return (f"{message}, but a ravenvpn up{pid} that stopped without cleaning up left {left} "
            f"({files} in {state_dir}): run '{down_cmd}' to clean up")


def cmd_status(args: argparse.Namespace) -> int:
    """``ravenvpn status [--json]``: the status file of the running agent, with the live peer state
    of an active gateway's interface (handshakes, bytes) from its UAPI socket.

    Raises:
        RavenError: no agent runs for the interface, or its status file is malformed.
    """
    path = status_path(args.state_dir, args.interface)
    sdir = Path(args.state_dir)
    try:
        os.listdir(sdir)
    except FileNotFoundError:
        pass            # nothing ever ran here
    except (PermissionError, NotADirectoryError) as exc:
        raise RavenError(f"need root: cannot read the state directory {sdir}: {exc.strerror}") from None
    if running_pid(args.state_dir, args.interface) is None or not path.exists():
        raise RavenError(_not_running(args.state_dir, args.interface))
    try:
        status = NodeStatus.read(path)
    except FileNotFoundError:
        raise RavenError(_not_running(args.state_dir, args.interface)) from None
    unavailable = None      # why the live counters cannot be read (not root), if so
    if status.role == "active-gateway" or status.peers:   # peers on a standby: a hot standby's interface
        live, unavailable = _live_peers(args.interface)
        status = status.with_live_peers(live)
    direct = read_direct_status(args.state_dir, args.interface)
    if args.json:
        out = status.to_dict()
        if unavailable is not None:
            out["live_unavailable"] = f"live counters: {unavailable}"
        if direct is not None:
            out["direct"] = direct
        print(json.dumps(out, indent=1))
        return 0
    print(f"node {status.node}: {status.role} of gateway {status.gateway or '-'}"
          f"{' (relay)' if status.relay else ''}")
    if status.role == "active-gateway" or status.peers:   # peers on a standby: a hot standby (failover)
        print(f"interface {status.interface}: port {status.listen_port}, mtu {status.mtu}")
    if unavailable is not None:
        print(f"  live counters (handshakes, bytes): {unavailable}")
    for peer in status.peers:
        live = peer.live
        ago = f"{int(time.time() - live.latest_handshake)} s ago" if live and live.latest_handshake else "never"
        print(f"  peer {peer.gateway} ({peer.node}{', standby' if peer.standby else ''}) {peer.public_key}")
        if live is None and unavailable is not None:
            # Not zeros: the counters are unknown here, not zero.
            print(f"    endpoint {peer.endpoint or '(waits for the peer)'} (planned)")
        else:
            print(f"    endpoint {(live and live.endpoint) or peer.endpoint or '(waits for the peer)'}, "
                  f"latest handshake {ago}, rx {live.rx_bytes if live else 0} B, "
                  f"tx {live.tx_bytes if live else 0} B")
        print(f"    allowed ips {', '.join(peer.allowed_ips)}")
        if peer.refusal is not None:
            print(f"    handshake initiation refused {max(0, int(time.time() - peer.refusal.at))} s ago: "
                  f"{peer.refusal.reason}")
            print(f"    remedy: wg set {status.interface} peer {peer.public_key} remove, then kill -HUP "
                  f"{status.pid} (ravenvpn up adds it again), or restart ravenvpn up")
    print(f"  routes ({len(status.routes)}):")
    for route in status.routes:
        target = f"dev {route.dev}" if route.dev else f"via {route.via}"
        print(f"    {route.dst} {target} table {route.table}")
    for line in describe_direct(direct):
        print(f"  {line}")
    for warning in status.warnings:
        print(f"  warning: {warning}")
    return 0
