"""`ravenvpn up`, `down` and `status`: the Raven layer's command line."""
from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ...errors import RavenError
from .applier import DEFAULT_STATE_DIR
from ..cluster.errors import ClusterError

UAPI_DIR = "/var/run/wireguard"


def add_commands(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="run this node's Raven agent (dataplane + routes) until stopped",
                        description="Plan this node from the cluster YAML and keep it converged.")
    up.add_argument("--cluster", required=True, metavar="FILE", help="YAML of Gateway and Node objects ('-': stdin)")
    up.add_argument("--node", required=True, metavar="NAME", help="this node's name in the cluster")
    up.add_argument("--private-key", metavar="FILE", help="base64 WireGuard private key (mode 0600)")
    up.add_argument("--interface", default="raven0", help="tunnel interface name (default raven0)")
    up.add_argument("--port", type=int, default=4500, help="UDP listen port (default 4500)")
    up.add_argument("--mtu", type=int, default=None, help="tunnel MTU (default: underlay MTU - 80)")
    up.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop `up` and remove everything it installed")
    down.add_argument("--interface", default="raven0")
    down.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=argparse.SUPPRESS)
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="role, gateway, peers and routes of this node")
    status.add_argument("--interface", default="raven0")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=argparse.SUPPRESS)
    status.set_defaults(func=cmd_status)


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ravenvpn: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def cmd_up(args: argparse.Namespace) -> int:
    from .agent import Agent
    _setup_logging()
    if not 1 <= args.port <= 65535:
        raise RavenError(f"--port {args.port}: must be 1..65535")
    from ...device.daemon import busy_poll_from_env
    from ...device.tun import check_ifname
    try:
        check_ifname(args.interface)    # before it names the pid and state files
    except ValueError as exc:
        raise RavenError(f"--interface: {exc}") from None
    busy_poll_from_env()    # a bad RAVENVPN_BUSY_POLL_US is reported now, not when this node becomes the gateway
    try:
        agent = Agent(args.cluster, args.node, private_key_path=args.private_key, interface=args.interface,
                      port=args.port, mtu=args.mtu, state_dir=args.state_dir)
        return agent.run()
    except ClusterError as exc:
        raise RavenError(str(exc)) from None


def cmd_down(args: argparse.Namespace) -> int:
    from .agent import down
    print(down(args.interface, args.state_dir))
    return 0


def uapi_get(interface: str) -> dict[str, dict[str, Any]]:
    """Live peer state from the interface's UAPI socket, keyed by hex public key."""
    peers: dict[str, dict[str, Any]] = {}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(f"{UAPI_DIR}/{interface}.sock")
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


def _live_peers(interface: str, status: dict[str, Any]) -> None:
    try:
        live = uapi_get(interface)
    except OSError:
        return
    import base64
    for peer in status["peers"]:
        info = live.get(base64.b64decode(peer["public_key"]).hex())
        if not info:
            continue
        sec = int(info.get("last_handshake_time_sec", 0))
        peer["live_endpoint"] = info.get("endpoint")
        peer["latest_handshake"] = sec or None
        peer["rx_bytes"] = int(info.get("rx_bytes", 0))
        peer["tx_bytes"] = int(info.get("tx_bytes", 0))


def cmd_status(args: argparse.Namespace) -> int:
    from .agent import running_pid, status_path
    path = status_path(Path(args.state_dir), args.interface)
    if running_pid(Path(args.state_dir), args.interface) is None or not path.exists():
        raise RavenError(f"ravenvpn up is not running for {args.interface}")
    status = json.loads(path.read_text())
    if status["role"] == "active-gateway":
        _live_peers(args.interface, status)
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    print(f"node {status['node']}: {status['role']} of gateway {status['gateway'] or '-'}"
          f"{' (relay)' if status['relay'] else ''}")
    if status["role"] == "active-gateway":
        print(f"interface {status['interface']}: port {status['listen_port']}, mtu {status['mtu']}")
    for peer in status["peers"]:
        hs = peer.get("latest_handshake")
        ago = f"{int(time.time() - hs)} s ago" if hs else "never"
        print(f"  peer {peer['gateway']} ({peer['node']}) {peer['public_key']}")
        print(f"    endpoint {peer.get('live_endpoint') or peer['endpoint'] or '(waits for the peer)'}, "
              f"latest handshake {ago}, rx {peer.get('rx_bytes', 0)} B, tx {peer.get('tx_bytes', 0)} B")
        print(f"    allowed ips {', '.join(peer['allowed_ips'])}")
    print(f"  routes ({len(status['routes'])}):")
    for route in status["routes"]:
        target = f"dev {route['dev']}" if route["dev"] else f"via {route['via']}"
        print(f"    {route['dst']} {target} table {route['table']}")
    for warning in status["warnings"]:
        print(f"  warning: {warning}")
    return 0
