"""Emulated hosts for real-network tests: network + mount namespaces, their lock and stale cleanup.

Why this exists
---------------
ravenvpn is a userspace WireGuard implementation, so the only convincing tests are end-to-end ones: real
kernels, real TUN devices, real UDP between hosts, interoperating with the reference userspace daemon
(``wireguard-go``).  We emulate "hosts" with Linux network namespaces joined by veth pairs.  Nothing here
ever sends a packet outside namespaces this module created, and nothing touches the host's interfaces,
routes, firewall or sysctls.

Every :class:`Node` is a network namespace *plus* a private mount namespace in which ``/run/wireguard``
(``/var/run/wireguard``) is a private tmpfs and ``/sys`` is a fresh sysfs.  Userspace WireGuard daemons put
their UAPI socket at ``/var/run/wireguard/IFNAME.sock``; without the private tmpfs two daemons called
``raven0`` in two namespaces would fight over the same socket path on the host.  The fresh sysfs makes
``/sys/class/net`` show the namespace's own links (as ``ip netns exec`` does), which ``wg-quick`` and
friends rely on.

Commands run in a node through ``nsenter --mount=FILE --net=/run/netns/NAME``; so each command sees the
node's network and mounts, while the test process itself never changes namespace.

Everything created is tracked and torn down by :meth:`Node.close` (processes in the namespaces are
SIGTERMed then SIGKILLed, mounts unmounted, namespace deleted).  If a run is killed hard, the next run's
:func:`cleanup_stale` removes the leftovers: each node records its owner's pid, so leftovers of a *dead*
owner are removed while namespaces of a concurrently running test session are left alone.

The rest of the infrastructure builds on nodes: :mod:`tools.links` (veth pairs), :mod:`tools.traffic`
(ping, iperf3, tcpdump), :mod:`tools.wg` (keys, ``wg``, WireGuard daemons), :mod:`tools.process`
(commands, processes of a namespace).

Typical use::

    from tools.links import veth
    from tools.node import Node
    from tools.traffic import ping

    with Node("a") as a, Node("b") as b:
        link = veth(a, b, "198.18.0.1/24", "198.18.0.2/24")
        print(ping(a, link.ip_b, count=3))
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Iterator, Sequence

from tools.process import (CommandError, kill_pids, ns_inode, pids_in_namespaces, proc_start_time, process_alive,
                           run_host)

__all__ = [
    "DEFAULT_PREFIX",
    "RUN_DIR",
    "NETNS_DIR",
    "WG_RUN_DIR",
    "Node",
    "cleanup_stale",
    "leftovers",
    "require_root",
]

#: Namespace names of this module start with this prefix; cleanup only ever touches names with it.
DEFAULT_PREFIX = "rvt"
#: Private (non-propagating) bind-mounted directory holding the persistent mount-namespace files.
RUN_DIR = Path("/run/ravenvpn-test")
#: Where ``ip netns`` keeps its namespace files.
NETNS_DIR = Path("/run/netns")
#: Directory of the UAPI sockets (``/var/run`` is ``/run`` on Debian).
WG_RUN_DIR = Path("/run/wireguard")
#: Serialises node creation against cleanup across concurrent test sessions.
LOCK_FILE = Path("/run/lock/ravenvpn-test.lock")
#: Marker: this module created the host's (empty) ``/run/wireguard`` mount point, so it may remove it.
_CREATED_WG_DIR_MARKER = RUN_DIR / ".created-run-wireguard"


def require_root() -> None:
    """Fail loudly (never skip) when the environment cannot run the real-network tests.

    The suite is meant for root on Linux with netns and /dev/net/tun (CI is root); skipping silently would
    hide that nothing was tested.
    """
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root (euid != 0)")
    if not Path("/dev/net/tun").exists():
        problems.append("/dev/net/tun missing")
    for tool in ("ip", "nsenter", "unshare", "mount", "umount", "findmnt", "wg"):
        if shutil.which(tool) is None:
            problems.append(f"{tool!r} not on PATH")
    if problems:
        raise RuntimeError(
            "ravenvpn network tests need root, network namespaces, /dev/net/tun, iproute2, util-linux and "
            "wireguard-tools: " + "; ".join(problems)
        )


def _is_mountpoint(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == target:
                return True
    return False


@contextlib.contextmanager
def _global_lock(exclusive: bool) -> Iterator[None]:
    """Shared lock while creating nodes, exclusive while cleaning up, so cleanup never races a creation."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _ensure_run_dir() -> None:
    """Make RUN_DIR a private bind mount (idempotent).

    Persisting a mount namespace by bind-mounting /proc/PID/ns/mnt onto a file is refused by the kernel
    under a *shared* mount (it could create propagation loops), and systemd hosts mount / shared. A
    private bind mount of our own directory sidesteps that without changing anything else on the host.
    """
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if not _is_mountpoint(RUN_DIR):
        run_host(["mount", "--bind", str(RUN_DIR), str(RUN_DIR)])
    run_host(["mount", "--make-private", str(RUN_DIR)])
    if not WG_RUN_DIR.exists():
        # The tmpfs needs a mount point; it is on the host file system, so note that we made it.
        WG_RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        _CREATED_WG_DIR_MARKER.touch()


def _owner_record() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "start": proc_start_time(pid), "created": time.time()}


def _owner_alive(name: str) -> bool:
    try:
        rec = json.loads((RUN_DIR / f"{name}.owner").read_text())
    except (OSError, ValueError):
        return False
    pid = int(rec.get("pid", 0))
    return pid > 0 and process_alive(pid) and proc_start_time(pid) == rec.get("start")


def _destroy(name: str) -> None:
    """Tear down everything belonging to node ``name``: processes, mount namespace, netns, temp files."""
    netns_file = NETNS_DIR / name
    mnt_file = RUN_DIR / f"{name}.mnt"
    net_ino = ns_inode(netns_file) if netns_file.exists() else None
    mnt_ino = ns_inode(mnt_file) if mnt_file.exists() else None
    # nsfs inodes only: a plain file left behind by a crash has an ext4/tmpfs inode that means nothing
    if net_ino is not None and not _is_mountpoint(netns_file):
        net_ino = None
    if mnt_ino is not None and not _is_mountpoint(mnt_file):
        mnt_ino = None
    if net_ino is not None or mnt_ino is not None:
        kill_pids(pids_in_namespaces(net_ino, mnt_ino))
    if mnt_file.exists():
        if _is_mountpoint(mnt_file):
            run_host(["umount", "-l", str(mnt_file)], check=False)
        with contextlib.suppress(FileNotFoundError):
            mnt_file.unlink()
    if netns_file.exists() or _is_mountpoint(netns_file):
        run_host(["ip", "netns", "delete", name], check=False)
    with contextlib.suppress(FileNotFoundError):
        (RUN_DIR / f"{name}.owner").unlink()
    tmp = RUN_DIR / f"{name}.tmp"
    marker = tmp / ".tmpdir"
    if marker.exists():
        with contextlib.suppress(OSError):
            recorded = Path(marker.read_text().strip())
            # paranoia before rmtree: only ever a temp dir named after this node
            if recorded.parent == Path(tempfile.gettempdir()) and recorded.name.startswith(name + "-"):
                shutil.rmtree(recorded, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def _node_names(prefix: str) -> set[str]:
    names: set[str] = set()
    if NETNS_DIR.is_dir():
        names |= {p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix + "-")}
    if RUN_DIR.is_dir():
        for p in RUN_DIR.iterdir():
            stem = p.name.split(".")[0]
            if stem.startswith(prefix + "-"):
                names.add(stem)
    return names


def cleanup_stale(prefix: str = DEFAULT_PREFIX, include_live: bool = False) -> list[str]:
    """Remove leftovers of crashed/killed runs: namespaces, mounts, processes and files named ``prefix-*``.

    Nodes whose owning process is still alive (another test session running concurrently) are kept unless
    ``include_live``; nodes owned by *this* process are considered leaked and removed. When no node is left
    at all, the private RUN_DIR bind mount and a /run/wireguard directory we created are removed too, so a
    finished run leaves the host as it found it. Returns the names removed.
    """
    removed: list[str] = []
    with _global_lock(exclusive=True):
        for name in sorted(_node_names(prefix)):
            if not include_live and _owner_alive(name) and _owner_pid(name) != os.getpid():
                continue
            _destroy(name)
            removed.append(name)
        remaining = [p for p in RUN_DIR.glob("*.owner")] if RUN_DIR.is_dir() else []
        if RUN_DIR.is_dir() and not remaining:
            if _CREATED_WG_DIR_MARKER.exists():
                with contextlib.suppress(OSError):
                    if not _is_mountpoint(WG_RUN_DIR):
                        WG_RUN_DIR.rmdir()  # only succeeds if empty
                with contextlib.suppress(FileNotFoundError):
                    _CREATED_WG_DIR_MARKER.unlink()
            if not any(RUN_DIR.iterdir()):
                while _is_mountpoint(RUN_DIR):
                    if run_host(["umount", str(RUN_DIR)], check=False).returncode != 0:
                        break
                with contextlib.suppress(OSError):
                    RUN_DIR.rmdir()
    return removed


def _owner_pid(name: str) -> int | None:
    try:
        return int(json.loads((RUN_DIR / f"{name}.owner").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def leftovers(prefix: str = DEFAULT_PREFIX, names: Sequence[str] | None = None) -> list[str]:
    """Describe anything still present for node names with ``prefix`` (or exactly ``names``): netns
    files, mounts and RUN_DIR entries. Empty list = clean. Used by tests to assert teardown is complete."""
    wanted = (lambda n: n in names) if names is not None else (lambda n: n.startswith(prefix + "-"))
    found: list[str] = []
    if NETNS_DIR.is_dir():
        found += [f"netns {p.name}" for p in NETNS_DIR.iterdir() if wanted(p.name)]
    if RUN_DIR.is_dir():
        found += [f"file {p}" for p in RUN_DIR.iterdir() if wanted(p.name.split(".")[0])]
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            base = os.path.basename(mp).split(".")[0]
            if (mp.startswith(str(NETNS_DIR) + "/") or mp.startswith(str(RUN_DIR) + "/")) and wanted(base):
                found.append(f"mount {mp}")
    return found


_LIVE_NODES: "weakref.WeakSet[Node]" = weakref.WeakSet()


@atexit.register
def _close_live_nodes() -> None:
    """Benchmarks and demos interrupted with Ctrl-C still clean up (pytest fixtures do it themselves)."""
    for node in list(_LIVE_NODES):
        with contextlib.suppress(Exception):
            node.close()


_SETUP_SCRIPT = r"""
set -e
# private tmpfs for UAPI sockets: daemons with the same IFNAME in different nodes must not collide
mount -t tmpfs -o mode=0755,size=16m ravenvpn-wg /run/wireguard
# sysfs must be mounted from inside the netns to show the netns' links (what `ip netns exec` does)
umount -l /sys 2>/dev/null || true
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
# drop our copies of other namespaces' nsfs mounts: they would keep those namespaces (and their veths)
# alive after their owner deleted them
findmnt -rn -t nsfs -o TARGET | sort -r | while read -r t; do umount -l "$t" 2>/dev/null || true; done
"""


class Node:
    """A network namespace plus a private mount namespace: one emulated host.

    Use as a context manager (or call :meth:`close`); everything it created is removed on close, even
    after a failure. ``label`` is a short human tag (``"a"``, ``"gw1"``); the namespace name is
    ``{prefix}-{label}-{random}`` so parallel tests and runs never collide.
    """

    def __init__(self, label: str = "n", prefix: str = DEFAULT_PREFIX) -> None:
        require_root()
        clean = re.sub(r"[^a-z0-9]", "", label.lower())[:8] or "n"
        self.label: str = clean
        self.prefix: str = prefix
        self.name: str = f"{prefix}-{clean}-{secrets.token_hex(3)}"
        self.netns_path: Path = NETNS_DIR / self.name
        self.mount_path: Path = RUN_DIR / f"{self.name}.mnt"
        self.netns_inode: int | None = None
        self.mount_inode: int | None = None
        self.tmpdir: Path = Path("/nonexistent")
        self._procs: list[subprocess.Popen[Any]] = []
        self._closed = False
        self._lock = threading.Lock()
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        _LIVE_NODES.add(self)

    def _create(self) -> None:
        with _global_lock(exclusive=False):
            _ensure_run_dir()
            (RUN_DIR / f"{self.name}.owner").write_text(json.dumps(_owner_record()))
            # temp files (keys, logs, captures) live on the shared root fs, visible in the node too
            self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
            tmp_rec = RUN_DIR / f"{self.name}.tmp"
            tmp_rec.mkdir(exist_ok=True)
            (tmp_rec / ".tmpdir").write_text(str(self.tmpdir))
            run_host(["ip", "netns", "add", self.name])
            self.netns_inode = ns_inode(self.netns_path)
            self.mount_path.touch()
            run_host(
                [
                    "nsenter", f"--net={self.netns_path}", "--",
                    "unshare", f"--mount={self.mount_path}", "--propagation", "private",
                    "sh", "-c", _SETUP_SCRIPT,
                ]
            )  # fmt: skip
            self.mount_inode = ns_inode(self.mount_path)
        self.run("ip", "link", "set", "lo", "up")

    # -- context manager -------------------------------------------------------------------------

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Node({self.name!r})"

    # -- running commands ------------------------------------------------------------------------

    def wrap(self, *cmd: str, cwd: str | os.PathLike[str] | None = None) -> list[str]:
        """The argv that runs ``cmd`` inside this node (for callers that need their own subprocess call)."""
        if self._closed:
            raise RuntimeError(f"{self} is closed")
        argv = ["nsenter", f"--mount={self.mount_path}", f"--net={self.netns_path}"]
        if cwd is not None:
            argv.append(f"--wd={cwd}")
        return argv + ["--", *map(str, cmd)]

    def run(
        self,
        *cmd: str,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the node and capture its text output.

        Do not use for commands that leave a background child holding stdout/stderr open (daemons): the
        call would wait for that child. :func:`start_wg` redirects daemon output to a log file instead.
        """
        argv = self.wrap(*cmd, cwd=cwd)
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=env,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise CommandError(proc.returncode, list(cmd), proc.stdout, proc.stderr)
        return proc

    def popen(self, *cmd: str, cwd: str | os.PathLike[str] | None = None, **kw: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` in the node in the background; it is killed (and reaped) on :meth:`close`.

        Runs in its own session so the whole process group can be signalled; kw go to subprocess.Popen
        (defaults: stdin from /dev/null, stdout/stderr discarded, text mode).
        """
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        kw.setdefault("text", True)
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.wrap(*cmd, cwd=cwd), **kw)
        with self._lock:
            self._procs.append(proc)
        return proc

    def stop_process(self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Signal a process started with :meth:`popen` (its group), escalate to SIGKILL, reap it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        return proc.returncode

    # -- helpers ---------------------------------------------------------------------------------

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a (namespaced) sysctl inside the node, e.g. ``net.ipv4.ip_forward``. Never the host's."""
        path = "/proc/sys/" + key.replace(".", "/")
        self.run("sh", "-c", 'printf "%s\\n" "$1" > "$2"', "sh", str(value), path)

    def add_addr(self, ifname: str, cidr: str) -> None:
        """Add an address; IPv6 ones with ``nodad`` so they are usable at once (no 1-2 s DAD wait)."""
        args = ["ip", "addr", "add", cidr, "dev", ifname]
        if ipaddress.ip_interface(cidr).version == 6:
            args.append("nodad")
        self.run(*args)

    def del_addr(self, ifname: str, cidr: str) -> None:
        self.run("ip", "addr", "del", cidr, "dev", ifname)

    def link_up(self, ifname: str, mtu: int | None = None) -> None:
        args = ["ip", "link", "set", "dev", ifname]
        if mtu is not None:
            args += ["mtu", str(mtu)]
        self.run(*args, "up")

    def add_route(self, prefix: str, via: str | None = None, dev: str | None = None) -> None:
        args = ["ip", "route", "add", prefix]
        if via:
            args += ["via", via]
        if dev:
            args += ["dev", dev]
        self.run(*args)

    def links(self) -> list[dict[str, Any]]:
        """``ip -j link`` inside the node."""
        return json.loads(self.run("ip", "-j", "link", "show").stdout or "[]")

    def has_link(self, ifname: str) -> bool:
        return self.run("ip", "link", "show", "dev", ifname, check=False).returncode == 0

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists *as seen from the node* (e.g. its private /run/wireguard)."""
        return self.run("test", "-e", path, check=False).returncode == 0

    def pids(self) -> list[int]:
        """Processes currently in this node's network or mount namespace."""
        return pids_in_namespaces(self.netns_inode, self.mount_inode)

    def ipr(self) -> Any:
        """A pyroute2 handle operating inside this node's netns (caller closes it, or ``with``).

        ``flags=0`` so pyroute2 never silently creates a fresh namespace if the node is gone.
        """
        from pyroute2 import NetNS

        return NetNS(self.name, flags=0)

    # -- teardown --------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill our processes and everything else in the namespaces, unmount, delete netns and temp files.

        Idempotent and safe after partial creation.
        """
        if self._closed:
            return
        self._closed = True
        _LIVE_NODES.discard(self)
        with self._lock:
            procs, self._procs = self._procs, []
        for proc in procs:
            with contextlib.suppress(Exception):
                self.stop_process(proc, timeout=3.0)
        with _global_lock(exclusive=False):
            _destroy(self.name)
        if self.tmpdir != Path("/nonexistent"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
