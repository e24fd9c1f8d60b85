"""`ravenvpn up`, `down` and `status`: the Raven layer's command line, a thin shell over the library.

`up` is an :class:`~ravenvpn.raven.node.agent.Agent` plus what only a command line does: logging to
stderr and signals (SIGTERM/SIGINT stop it, SIGHUP reloads the cluster file).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

from ...device.uapi_server import socket_path
from ...errors import RavenError
from ..liveness.wire import LIVENESS_PORT
from .agent import Agent
from .down import down
from .pidfile import running_pid
from .records import DEFAULT_STATE_DIR, status_path
from .statusfile import LivePeer, NodeStatus

def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``up``, ``down`` and ``status`` to the ``ravenvpn`` command line's subparsers."""
    up_cmd = sub.add_parser("up", help="run this node's Raven agent (dataplane + routes) until stopped",
                            description="Plan this node from the cluster YAML and keep it converged.")
    up_cmd.add_argument("--cluster", required=True, metavar="FILE", help="YAML of Gateway and Node objects ('-': stdin)")
    up_cmd.add_argument("--node", required=True, metavar="NAME", help="this node's name in the cluster")
    up_cmd.add_argument("--private-key", metavar="FILE", help="base64 WireGuard private key (mode 0600)")
    up_cmd.add_argument("--interface", default="raven0", help="tunnel interface name (default raven0)")
    up_cmd.add_argument("--port", type=int, default=4500, help="UDP listen port (default 4500)")
    up_cmd.add_argument("--mtu", type=int, default=None, help="tunnel MTU (default: underlay MTU - 80)")
    up_cmd.add_argument("--liveness-port", type=int, default=LIVENESS_PORT,
                        help=f"UDP port of the failover liveness protocol on the private network "
                             f"(default {LIVENESS_PORT}; the same on every node)")
    up_cmd.add_argument("--no-failover", action="store_true",
                        help="no automatic failover: only the cluster file moves the gateway")
    up_cmd.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=argparse.SUPPRESS)
    up_cmd.set_defaults(func=cmd_up)

    down_cmd = sub.add_parser("down", help="stop `up` and remove everything it installed")
    down_cmd.add_argument("--interface", default="raven0")
    down_cmd.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=argparse.SUPPRESS)
    down_cmd.set_defaults(func=cmd_down)

    status_cmd = sub.add_parser("status", help="role, gateway, peers and routes of this node")
    status_cmd.add_argument("--interface", default="raven0")
    status_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    status_cmd.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=argparse.SUPPRESS)
    status_cmd.set_defaults(func=cmd_status)


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
    if not 1 <= args.liveness_port <= 65535 or args.liveness_port == args.port:
        raise RavenError(f"--liveness-port {args.liveness_port}: must be 1..65535 and not --port")
    from ...device.tun import check_ifname
    try:
        check_ifname(args.interface)    # before it names the pid and state files
    except ValueError as exc:
        raise RavenError(f"--interface: {exc}") from None
    agent = Agent(args.cluster, args.node, private_key_path=args.private_key, interface=args.interface,
                  port=args.port, mtu=args.mtu, state_dir=args.state_dir, failover=not args.no_failover,
                  liveness_port=args.liveness_port)
    with _signals_to(agent):
        return agent.run()


def cmd_down(args: argparse.Namespace) -> int:
    """``ravenvpn down``: see :func:`~ravenvpn.raven.node.down.down`."""
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


def _live_peers(interface: str) -> dict[str, LivePeer]:
    """Live peer state by base64 public key; empty when the interface's UAPI socket does not answer."""
    try:
        live = uapi_get(interface)
    except OSError:
        return {}
    out: dict[str, LivePeer] = {}
    for hex_key, info in live.items():
        sec = int(info.get("last_handshake_time_sec", 0))
        out[base64.b64encode(bytes.fromhex(hex_key)).decode()] = LivePeer(
            info.get("endpoint"), sec or None, int(info.get("rx_bytes", 0)), int(info.get("tx_bytes", 0)))
    return out


def cmd_status(args: argparse.Namespace) -> int:
    """``ravenvpn status [--json]``: the status file of the running agent, with the live peer state
    of an active gateway's interface (handshakes, bytes) from its UAPI socket.

    Raises:
        RavenError: no agent runs for the interface, or its status file is malformed.
    """
    path = status_path(args.state_dir, args.interface)
    if running_pid(args.state_dir, args.interface) is None or not path.exists():
        raise RavenError(f"ravenvpn up is not running for {args.interface}")
    try:
        status = NodeStatus.read(path)
    except FileNotFoundError:
        raise RavenError(f"ravenvpn up is not running for {args.interface}") from None
    if status.role == "active-gateway":
        status = status.with_live_peers(_live_peers(args.interface))
    if args.json:
        print(status.to_json())
        return 0
    print(f"node {status.node}: {status.role} of gateway {status.gateway or '-'}"
          f"{' (relay)' if status.relay else ''}")
    if status.role == "active-gateway" or status.peers:   # peers on a standby: a hot standby (failover)
        print(f"interface {status.interface}: port {status.listen_port}, mtu {status.mtu}")
    for peer in status.peers:
        live = peer.live
        ago = f"{int(time.time() - live.latest_handshake)} s ago" if live and live.latest_handshake else "never"
        print(f"  peer {peer.gateway} ({peer.node}{', standby' if peer.standby else ''}) {peer.public_key}")
        print(f"    endpoint {(live and live.endpoint) or peer.endpoint or '(waits for the peer)'}, "
              f"latest handshake {ago}, rx {live.rx_bytes if live else 0} B, tx {live.tx_bytes if live else 0} B")
        print(f"    allowed ips {', '.join(peer.allowed_ips)}")
    print(f"  routes ({len(status.routes)}):")
    for route in status.routes:
        target = f"dev {route.dev}" if route.dev else f"via {route.via}"
        print(f"    {route.dst} {target} table {route.table}")
    for warning in status.warnings:
        print(f"  warning: {warning}")
    return 0
