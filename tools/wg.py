"""WireGuard in nodes: keys (``wg genkey``...), ``wg show dump`` parsing, and userspace daemons
(``wireguard-go``, ``ravenvpn-wg``) started and stopped the way ``wg-quick`` does (:func:`start_wg`,
:class:`WgInterface`). Keys reach ``wg set`` through 0600 files, never argv."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from tools.node import WG_RUN_DIR, Node
from tools.process import CommandError, kill_pids, process_alive, process_cmdline, wait_for

__all__ = [
    "genkey",
    "pubkey",
    "genpsk",
    "keypair",
    "format_endpoint",
    "WgPeer",
    "WgPeerStatus",
    "WgDump",
    "wg_dump",
    "parse_wg_dump",
    "WgInterface",
    "start_wg",
    "own_script",
]


def _wg_tool(*args: str, input: str | None = None) -> str:
    proc = subprocess.run(["wg", *args], capture_output=True, text=True, input=input, timeout=10)
    if proc.returncode != 0:
        raise CommandError(proc.returncode, ["wg", *args], proc.stdout, proc.stderr)
    return proc.stdout.strip()


def genkey() -> str:
    """A new base64 Curve25519 private key (``wg genkey``; pure computation, no network)."""
    return _wg_tool("genkey")


def pubkey(private_key: str) -> str:
    """The base64 public key of ``private_key`` (``wg pubkey``)."""
    return _wg_tool("pubkey", input=private_key + "\n")


def genpsk() -> str:
    """A new base64 preshared key (``wg genpsk``)."""
    return _wg_tool("genpsk")


def keypair() -> tuple[str, str]:
    """(private, public) base64 keys."""
    priv = genkey()
    return priv, pubkey(priv)


def format_endpoint(addr: str, port: int) -> str:
    """``1.2.3.4:51820`` or ``[fd00::1]:51820`` (the form ``wg`` takes and prints)."""
    return f"[{addr}]:{port}" if ipaddress.ip_address(addr).version == 6 else f"{addr}:{port}"


@dataclasses.dataclass
class WgPeer:
    """Configuration of one peer for :func:`start_wg` / :meth:`WgInterface.set_peer`."""

    public_key: str
    allowed_ips: Sequence[str] = ()
    endpoint: str | None = None
    preshared_key: str | None = None
    persistent_keepalive: int | None = None


@dataclasses.dataclass
class WgPeerStatus:
    """One peer line of ``wg show IF dump``. ``latest_handshake`` is unix seconds, 0 = never."""

    public_key: str
    preshared_key: str | None
    endpoint: str | None
    allowed_ips: list[str]
    latest_handshake: int
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None


@dataclasses.dataclass
class WgDump:
    """Parsed ``wg show IF dump``: the interface line plus peers keyed by public key."""

    private_key: str
    public_key: str
    listen_port: int
    fwmark: int | None
    peers: dict[str, WgPeerStatus]


def _none_or(value: str) -> str | None:
    return None if value in ("(none)", "off", "") else value


def wg_dump(node: Node, ifname: str) -> WgDump:
    """Query the daemon through ``wg show IFNAME dump`` (so through its UAPI socket) and parse it.

    Raises:
        CommandError: ``wg`` failed (no such interface, no daemon behind the socket).
        ValueError: the output is empty or malformed.
    """
    out = node.run("wg", "show", ifname, "dump", timeout=10).stdout
    if not out.strip():
        raise ValueError(f"empty `wg show {ifname} dump` output")
    return parse_wg_dump(out)


def parse_wg_dump(output: str) -> WgDump:
    """Parse ``wg show IFNAME dump``: a tab-separated interface line (private key, public key, listen port,
    fwmark), then one line per peer (public key, preshared key, endpoint, allowed IPs, latest handshake in
    unix seconds, rx bytes, tx bytes, persistent keepalive). ``(none)``/``off`` become None.

    Raises:
        ValueError: the output is empty or a line has too few fields or a non-numeric number.
    """
    lines = [ln for ln in output.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("empty `wg show dump` output")
    try:
        f = lines[0].split("\t")
        fw = _none_or(f[3])
        dump = WgDump(f[0], f[1], int(f[2]), int(fw, 0) if fw else None, {})
        for line in lines[1:]:
            p = line.split("\t")
            allowed = _none_or(p[3])
            ka = _none_or(p[7])
            dump.peers[p[0]] = WgPeerStatus(
                public_key=p[0],
                preshared_key=_none_or(p[1]),
                endpoint=_none_or(p[2]),
                allowed_ips=allowed.split(",") if allowed else [],
                latest_handshake=int(p[4]),
                rx_bytes=int(p[5]),
                tx_bytes=int(p[6]),
                persistent_keepalive=int(ka) if ka else None,
            )
    except IndexError:
        raise ValueError(f"malformed `wg show dump` output: {output!r}") from None
    return dump


class WgInterface:
    """A running userspace WireGuard interface in a node (made by :func:`start_wg`).

    :meth:`stop` removes it the way ``wg-quick down`` does: delete the link and expect the daemon to exit.
    """

    def __init__(
        self,
        node: Node,
        impl_cmd: Sequence[str],
        ifname: str,
        private_key: str,
        listen_port: int,
        addresses: Sequence[str],
        log_path: Path,
    ) -> None:
        self.node = node
        self.impl_cmd = list(impl_cmd)
        self.ifname = ifname
        self.private_key = private_key
        self.public_key = pubkey(private_key)
        self.listen_port = listen_port
        self.addresses = list(addresses)
        self.log_path = log_path
        self.daemon_pids: list[int] = []
        self.stopped = False

    def __repr__(self) -> str:
        return f"WgInterface({self.impl_cmd[0]} {self.ifname} in {self.node.name})"

    def __enter__(self) -> "WgInterface":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def socket_path(self) -> str:
        return f"{WG_RUN_DIR}/{self.ifname}.sock"

    def address(self, version: int = 4) -> str:
        """First tunnel address of the given IP version (without prefix length)."""
        for cidr in self.addresses:
            iface = ipaddress.ip_interface(cidr)
            if iface.version == version:
                return str(iface.ip)
        raise LookupError(f"{self} has no IPv{version} address")

    def dump(self) -> WgDump:
        return wg_dump(self.node, self.ifname)

    def peer_status(self, public_key: str) -> WgPeerStatus:
        return self.dump().peers[public_key]

    def set_peer(self, peer: WgPeer) -> None:
        """Add or update a peer with ``wg set`` (so through the daemon's UAPI)."""
        args = ["wg", "set", self.ifname] + _peer_args(peer, self.node)
        try:
            self.node.run(*args)
        finally:
            _remove_keyfiles(self.node)

    def daemon_executables(self) -> list[str]:
        """Resolved executables of the daemon processes (e.g. to prove which implementation is running)."""
        exes = []
        for pid in self.daemon_pids:
            with contextlib.suppress(OSError):
                exes.append(os.readlink(f"/proc/{pid}/exe"))
        return exes

    def daemon_alive(self) -> bool:
        return any(process_alive(p) for p in self.daemon_pids)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> bool:
        """Delete the link; wait for the daemon to exit and its UAPI socket to disappear.

        Returns True when the daemon went away by itself (the behaviour ``wg-quick down`` relies on);
        otherwise kills it, removes the stale socket and returns False. Idempotent.
        """
        if self.stopped:
            return True
        self.stopped = True
        node = self.node
        if node._closed:
            return True
        node.run("ip", "link", "del", "dev", self.ifname, check=False)
        try:
            wait_for(
                lambda: not self.daemon_alive() and not node.exists(self.socket_path),
                timeout=timeout,
                message=f"{self.impl_cmd[0]} to exit after deleting {self.ifname}",
            )
            return True
        except TimeoutError:
            kill_pids([p for p in self.daemon_pids if process_alive(p)])
            node.run("rm", "-f", self.socket_path, check=False)
            return False


def _daemon_pids(new_pids: set[int], ifname: str) -> list[int]:
    """The daemon is the new process in the node whose argv names the interface (else: all new ones)."""
    named = [p for p in new_pids if ifname in process_cmdline(p)]
    return sorted(named or new_pids)


_KEYFILE_DIR = "wgkeys"


def _keyfile(node: Node, key: str) -> str:
    """Write a key to a 0600 file in a 0700 dir: ``wg set`` reads keys from files, never argv."""
    d = node.tmpdir / _KEYFILE_DIR
    d.mkdir(mode=0o700, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=d, prefix="k")
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return path


def _remove_keyfiles(node: Node) -> None:
    shutil.rmtree(node.tmpdir / _KEYFILE_DIR, ignore_errors=True)


def _peer_args(peer: WgPeer, node: Node) -> list[str]:
    args = ["peer", peer.public_key]
    if peer.allowed_ips:
        args += ["allowed-ips", ",".join(peer.allowed_ips)]
    if peer.endpoint:
        args += ["endpoint", peer.endpoint]
    if peer.preshared_key:
        args += ["preshared-key", _keyfile(node, peer.preshared_key)]
    if peer.persistent_keepalive is not None:
        args += ["persistent-keepalive", str(peer.persistent_keepalive)]
    return args


def _daemon_env(env: dict[str, str] | None) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("WG_PROCESS_FOREGROUND", None)  # set, wireguard-go would stay in the foreground
    e.setdefault("LOG_LEVEL", "verbose")  # wireguard-go's knob; log goes to a file we show on failure
    if env:
        e.update(env)
    return e


def own_script(name: str) -> str:
    """The console script `name` of the environment this interpreter belongs to (a venv's bin/) when it
    is there, else `name` as found on PATH: daemons started by the tests and benchmarks then run on the
    interpreter those run on, activated or not."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else name


def _launch(node: Node, iface: WgInterface, env: dict[str, str] | None, timeout: float) -> None:
    """Run ``impl_cmd IFNAME`` in ``node`` and expect it to daemonise; its output goes to the log file.

    Raises:
        RuntimeError: it exited non-zero or did not return within ``timeout`` seconds (the log is in the
            message).
    """
    impl_cmd, ifname = iface.impl_cmd, iface.ifname
    with open(iface.log_path, "w") as log:
        try:
            proc = subprocess.run(
                node.wrap(*impl_cmd, ifname),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_daemon_env(env),
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            node.run("ip", "link", "del", "dev", ifname, check=False)
            raise RuntimeError(
                f"{' '.join(impl_cmd)} {ifname} did not return within {timeout}s: it must daemonise like "
                f"wireguard-go does when WG_PROCESS_FOREGROUND is unset; log:\n{iface.log_text()}"
            ) from None
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(impl_cmd)} {ifname} exited {proc.returncode}; log:\n{iface.log_text()}")


def start_wg(
    node: Node,
    impl_cmd: Sequence[str],
    ifname: str,
    private_key: str,
    listen_port: int,
    address_cidrs: Sequence[str] = (),
    peers: Sequence[WgPeer] = (),
    mtu: int = 1420,
    env: dict[str, str] | None = None,
    ipv6_link_local: bool = False,
    timeout: float = 15.0,
) -> WgInterface:
    """Bring up a userspace WireGuard interface in ``node`` with implementation ``impl_cmd``.

    Runs ``impl_cmd + [ifname]`` (``["wireguard-go"]``, ``["ravenvpn-wg"]``): like ``wg-quick`` it
    expects the command to daemonise and return once the TUN link and the UAPI socket exist (we still
    wait for both, in case it returns a little early). Then configures it through UAPI with ``wg set``
    (keys via 0600 temp files), adds addresses, sets the MTU and brings the link up.

    Unless ``ipv6_link_local``, the link gets ``addrgenmode none``: no automatic fe80:: address, so the
    kernel sends no router solicitations/MLD through the tunnel and captures contain only our traffic.
    The daemon's stdout/stderr go to ``iface.log_path`` (a pipe would keep ``run`` waiting for the daemon).

    Raises:
        ValueError: ``ifname`` is longer than 15 characters.
        RuntimeError: the daemon did not start, or configuring it failed (its log is in the message; the
            half-made interface is removed).
    """
    if len(ifname) > 15:
        raise ValueError("interface names are limited to 15 characters")
    log_path = node.tmpdir / f"{ifname}-{secrets.token_hex(2)}.log"
    iface = WgInterface(node, impl_cmd, ifname, private_key, listen_port, address_cidrs, log_path)
    before = set(node.pids())
    _launch(node, iface, env, timeout)
    try:
        wait_for(
            lambda: node.has_link(ifname) and node.exists(iface.socket_path),
            timeout=timeout,
            message=f"{impl_cmd[0]} to create link {ifname} and {iface.socket_path}",
        )
        iface.daemon_pids = _daemon_pids(set(node.pids()) - before, ifname)
        args = ["wg", "set", ifname, "private-key", _keyfile(node, private_key), "listen-port", str(listen_port)]
        for peer in peers:
            args += _peer_args(peer, node)
        try:
            node.run(*args)
        finally:
            _remove_keyfiles(node)
        if not ipv6_link_local:
            node.run("ip", "link", "set", "dev", ifname, "addrgenmode", "none")
        node.link_up(ifname, mtu)  # then addresses, for the same reason as in veth()
        for cidr in address_cidrs:
            node.add_addr(ifname, cidr)
    except BaseException as exc:
        log = iface.log_text()
        iface.stop(timeout=3)
        if isinstance(exc, Exception):
            raise RuntimeError(
                f"bringing up {ifname} with {impl_cmd} failed: {exc}\n--- daemon log ---\n{log}"
            ) from exc
        raise
    return iface
