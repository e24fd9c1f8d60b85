"""Real-network test infrastructure: network namespaces, veths, WireGuard daemons, ping, iperf3, tcpdump.

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

Typical use::

    with Node("a") as a, Node("b") as b:
        link = veth(a, b, "198.18.0.1/24", "198.18.0.2/24")
        print(ping(a, link.ip_b, count=3))
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import fcntl
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import sys
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence, TypeVar

__all__ = [
    "DEFAULT_PREFIX",
    "RUN_DIR",
    "CommandError",
    "Node",
    "Veth",
    "veth",
    "cleanup_stale",
    "leftovers",
    "require_root",
    "wait_for",
    "PingResult",
    "ping",
    "iperf3",
    "IperfError",
    "Capture",
    "capture",
    "genkey",
    "pubkey",
    "genpsk",
    "keypair",
    "WgPeer",
    "WgPeerStatus",
    "WgDump",
    "WgInterface",
    "start_wg",
    "wg_dump",
    "format_endpoint",
    "process_alive",
    "process_cmdline",
    "pids_in_namespaces",
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

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------------------------------


class CommandError(subprocess.CalledProcessError):
    """A command in a node failed; unlike CalledProcessError, str() shows stdout and stderr (debugging!)."""

    def __str__(self) -> str:
        cmd = self.cmd if isinstance(self.cmd, str) else " ".join(map(str, self.cmd))
        out = (self.stdout or "").strip() if isinstance(self.stdout, str) else self.stdout
        err = (self.stderr or "").strip() if isinstance(self.stderr, str) else self.stderr
        return f"command {cmd!r} exited {self.returncode}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"


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


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    Real networks settle asynchronously (links come up, daemons create sockets, handshakes complete), so
    tests wait for conditions instead of sleeping fixed amounts. Raises TimeoutError naming ``message``.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # predicate may race with the thing it observes
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {message}{extra}")
        time.sleep(interval)


def _run_host(cmd: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a setup command in the test's own namespaces (only ever used on our own netns/mount files)."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, list(cmd), proc.stdout, proc.stderr)
    return proc


def _proc_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of ``pid``; with the pid it identifies a process despite pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _ns_inode(path: str | os.PathLike[str]) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_namespaces(net_ino: int | None, mnt_ino: int | None) -> list[int]:
    """Pids of processes living in the given network or mount namespace (identified by nsfs inode)."""
    me = os.getpid()
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        for kind, ino in (("net", net_ino), ("mnt", mnt_ino)):
            if ino is not None and _ns_inode(f"/proc/{pid}/ns/{kind}") == ino:
                found.append(pid)
                break
    return found


def _kill_pids(pids: Sequence[int], term_timeout: float = 3.0) -> None:
    """SIGTERM, wait, then SIGKILL: daemons get a chance to clean up (e.g. remove their UAPI socket)."""
    alive = list(pids)
    for sig, grace in ((signal.SIGTERM, term_timeout), (signal.SIGKILL, 3.0)):
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if process_alive(p)]
            if alive:
                time.sleep(0.02)
        if not alive:
            return


def process_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (a zombie no longer holds any namespace)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


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
        _run_host(["mount", "--bind", str(RUN_DIR), str(RUN_DIR)])
    _run_host(["mount", "--make-private", str(RUN_DIR)])
    if not WG_RUN_DIR.exists():
        # The tmpfs needs a mount point; it is on the host file system, so note that we made it.
        WG_RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        _CREATED_WG_DIR_MARKER.touch()


def _owner_record() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "start": _proc_start_time(pid), "created": time.time()}


def _owner_alive(name: str) -> bool:
    try:
        rec = json.loads((RUN_DIR / f"{name}.owner").read_text())
    except (OSError, ValueError):
        return False
    pid = int(rec.get("pid", 0))
    return pid > 0 and process_alive(pid) and _proc_start_time(pid) == rec.get("start")


def _destroy(name: str) -> None:
    """Tear down everything belonging to node ``name``: processes, mount namespace, netns, temp files."""
    netns_file = NETNS_DIR / name
    mnt_file = RUN_DIR / f"{name}.mnt"
    net_ino = _ns_inode(netns_file) if netns_file.exists() else None
    mnt_ino = _ns_inode(mnt_file) if mnt_file.exists() else None
    # nsfs inodes only: a plain file left behind by a crash has an ext4/tmpfs inode that means nothing
    if net_ino is not None and not _is_mountpoint(netns_file):
        net_ino = None
    if mnt_ino is not None and not _is_mountpoint(mnt_file):
        mnt_ino = None
    if net_ino is not None or mnt_ino is not None:
        _kill_pids(pids_in_namespaces(net_ino, mnt_ino))
    if mnt_file.exists():
        if _is_mountpoint(mnt_file):
            _run_host(["umount", "-l", str(mnt_file)], check=False)
        with contextlib.suppress(FileNotFoundError):
            mnt_file.unlink()
    if netns_file.exists() or _is_mountpoint(netns_file):
        _run_host(["ip", "netns", "delete", name], check=False)
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
                    if _run_host(["umount", str(RUN_DIR)], check=False).returncode != 0:
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


# --------------------------------------------------------------------------------------------------
# Node
# --------------------------------------------------------------------------------------------------

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
            _run_host(["ip", "netns", "add", self.name])
            self.netns_inode = _ns_inode(self.netns_path)
            self.mount_path.touch()
            _run_host(
                [
                    "nsenter", f"--net={self.netns_path}", "--",
                    "unshare", f"--mount={self.mount_path}", "--propagation", "private",
                    "sh", "-c", _SETUP_SCRIPT,
                ]
            )  # fmt: skip
            self.mount_inode = _ns_inode(self.mount_path)
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


# --------------------------------------------------------------------------------------------------
# veth
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Veth:
    """A veth pair between two nodes; ``ip_*`` are addresses without prefix length, ready to use."""

    a: Node
    b: Node
    name_a: str
    name_b: str
    cidr_a: str
    cidr_b: str
    cidr6_a: str | None = None
    cidr6_b: str | None = None

    @property
    def ip_a(self) -> str:
        return str(ipaddress.ip_interface(self.cidr_a).ip)

    @property
    def ip_b(self) -> str:
        return str(ipaddress.ip_interface(self.cidr_b).ip)

    @property
    def ip6_a(self) -> str | None:
        return str(ipaddress.ip_interface(self.cidr6_a).ip) if self.cidr6_a else None

    @property
    def ip6_b(self) -> str | None:
        return str(ipaddress.ip_interface(self.cidr6_b).ip) if self.cidr6_b else None


def veth(
    a: Node,
    b: Node,
    addr_a: str,
    addr_b: str,
    name_a: str | None = None,
    name_b: str | None = None,
    addr6_a: str | None = None,
    addr6_b: str | None = None,
    mtu: int | None = None,
) -> Veth:
    """Join two nodes with a veth pair, address both ends (CIDR strings) and bring them up.

    The pair is created directly inside ``a`` with its peer placed in ``b`` (``ip -n A link add ...
    netns B``), so no interface ever exists in the host namespace. Default names are ``to-<label>``.
    Either IPv4 address may be an IPv6 CIDR too; ``addr6_*`` add a second (IPv6) address.
    """
    name_a = name_a or f"to-{b.label}"[:15]
    name_b = name_b or f"to-{a.label}"[:15]
    if len(name_a) > 15 or len(name_b) > 15:
        raise ValueError("interface names are limited to 15 characters")
    _run_host(["ip", "-n", a.name, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", b.name])
    ends = ((a, name_a, (addr_a, addr6_a)), (b, name_b, (addr_b, addr6_b)))
    # Up first, addresses after: an IPv6 address added while the link is down is not answered for in
    # neighbour discovery until the kernel has processed the link-up, costing the first ping ~1 s.
    for node, name, _ in ends:
        node.link_up(name, mtu)
    for node, name, addrs in ends:
        for cidr in addrs:
            if cidr:
                node.add_addr(name, cidr)
    return Veth(a, b, name_a, name_b, addr_a, addr_b, addr6_a, addr6_b)


# --------------------------------------------------------------------------------------------------
# ping
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PingResult:
    """Parsed iputils ``ping`` output. RTTs in milliseconds; ``rtts[i]`` belongs to ``seqs[i]``."""

    dest: str
    transmitted: int
    received: int
    loss_pct: float
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None
    rtts: list[float]
    seqs: list[int]
    output: str

    @property
    def ok(self) -> bool:
        """At least one reply came back."""
        return self.received > 0

    def __str__(self) -> str:
        rtt = f"rtt min/avg/max {self.rtt_min}/{self.rtt_avg}/{self.rtt_max} ms" if self.received else "no replies"
        return f"ping {self.dest}: {self.received}/{self.transmitted} received, {self.loss_pct:g}% loss, {rtt}"


_PING_REPLY = re.compile(r"icmp_seq=(\d+) .*?time=([\d.]+) ms")
_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")
_PING_LOSS = re.compile(r"([\d.]+)% packet loss")
_PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def ping(
    node: Node,
    addr: str,
    count: int = 3,
    interval: float = 0.2,
    wait: float = 2.0,
    deadline: float | None = None,
    size: int | None = None,
    pattern: str | None = None,
    source: str | None = None,
) -> PingResult:
    """Ping ``addr`` from ``node`` (IPv4 or IPv6) and parse the result; never raises on packet loss.

    ``wait`` is the per-reply timeout (``-W``); ``deadline`` (``-w``) instead keeps pinging until
    ``count`` replies or the deadline. ``pattern`` (hex, ``-p``) fills the payload, which lets capture
    tests look for plaintext leaks. Raises CommandError only when ping itself fails (exit 2: bad address...).
    """
    args = ["ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", f"{wait:g}"]
    if deadline is not None:
        args += ["-w", f"{deadline:g}"]
    if size is not None:
        args += ["-s", str(size)]
    if pattern is not None:
        args += ["-p", pattern]
    if source is not None:
        args += ["-I", source]
    args.append(addr)
    budget = (deadline if deadline is not None else count * interval + wait) + 10
    proc = node.run(*args, check=False, timeout=budget)
    out = proc.stdout
    summary = _PING_SUMMARY.search(out)
    if proc.returncode not in (0, 1) or summary is None:
        raise CommandError(proc.returncode, args, proc.stdout, proc.stderr)
    seqs, rtts = [], []
    for m in _PING_REPLY.finditer(out):
        seqs.append(int(m.group(1)))
        rtts.append(float(m.group(2)))
    loss = _PING_LOSS.search(out)
    rtt = _PING_RTT.search(out)
    return PingResult(
        dest=addr,
        transmitted=int(summary.group(1)),
        received=int(summary.group(2)),
        loss_pct=float(loss.group(1)) if loss else 100.0,
        rtt_min=float(rtt.group(1)) if rtt else None,
        rtt_avg=float(rtt.group(2)) if rtt else None,
        rtt_max=float(rtt.group(3)) if rtt else None,
        rtts=rtts,
        seqs=seqs,
        output=out,
    )


# --------------------------------------------------------------------------------------------------
# iperf3
# --------------------------------------------------------------------------------------------------


class IperfError(RuntimeError):
    """iperf3 failed (the JSON ``error`` field or stderr is in the message)."""


def _port_listening(node: Node, port: int) -> bool:
    out = node.run("ss", "-Hltn", f"sport = :{port}", check=False).stdout
    return bool(out.strip())


def iperf3(
    client: Node,
    server: Node,
    server_addr: str,
    seconds: float = 3,
    reverse: bool = False,
    udp: bool = False,
    parallel: int = 1,
    bitrate: str | None = None,
    length: int | None = None,
    port: int | None = None,
    omit: int = 0,
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Measure throughput from ``client`` to ``server`` (``reverse``: server sends) and return numbers.

    Starts a one-off server (``-s -1``) on a random port in ``server``, waits until it listens, runs the
    client with ``-J`` and returns a summary dict: ``bits_per_second`` (at the receiver), ``sent_bytes``,
    ``received_bytes``, ``sent_bps``, ``retransmits`` (TCP), ``lost_percent``/``jitter_ms`` (UDP),
    ``seconds``, plus ``raw`` (the full JSON). These are measurements to print, not to assert on.
    """
    port = port or random.randint(20000, 45000)
    for _ in range(20):
        if not _port_listening(server, port):
            break
        port = random.randint(20000, 45000)
    srv = server.popen("iperf3", "-s", "-1", "-p", str(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(
            lambda: srv.poll() is not None or _port_listening(server, port),
            timeout=10,
            message=f"iperf3 server on port {port} in {server}",
        )
        if srv.poll() is not None:
            raise IperfError(f"iperf3 server exited early: {srv.stderr.read() if srv.stderr else ''}")
        args = ["iperf3", "-c", server_addr, "-p", str(port), "-t", f"{seconds:g}", "-J"]
        if reverse:
            args.append("-R")
        if udp:
            args += ["-u", "-b", bitrate or "100M"]
        elif bitrate:
            args += ["-b", bitrate]
        if parallel > 1:
            args += ["-P", str(parallel)]
        if length:
            args += ["-l", str(length)]
        if omit:
            args += ["-O", str(omit)]
        args += list(extra_args)
        proc = client.run(*args, check=False, timeout=seconds + omit + 30)
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            raise IperfError(f"iperf3 client printed no JSON (exit {proc.returncode}): {proc.stderr.strip()}")
        if proc.returncode != 0 or "error" in data:
            raise IperfError(f"iperf3 client failed: {data.get('error', proc.stderr.strip())}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.wait(5)
    finally:
        server.stop_process(srv)
    end = data.get("end", {})
    res: dict[str, Any] = {"raw": data, "udp": udp, "reverse": reverse, "port": port}
    if udp:
        s = end.get("sum") or end.get("sum_received") or {}
        sent = end.get("sum_sent", s)
        rcv = end.get("sum_received", s)
        res.update(
            bits_per_second=float(rcv.get("bits_per_second", s.get("bits_per_second", 0.0))),
            sent_bps=float(sent.get("bits_per_second", 0.0)),
            sent_bytes=int(sent.get("bytes", 0)),
            received_bytes=int(rcv.get("bytes", 0)),
            lost_percent=float(s.get("lost_percent", 0.0)),
            jitter_ms=float(s.get("jitter_ms", 0.0)),
            seconds=float(s.get("seconds", seconds)),
            retransmits=None,
        )
    else:
        sent, rcv = end.get("sum_sent", {}), end.get("sum_received", {})
        res.update(
            bits_per_second=float(rcv.get("bits_per_second", 0.0)),
            sent_bps=float(sent.get("bits_per_second", 0.0)),
            sent_bytes=int(sent.get("bytes", 0)),
            received_bytes=int(rcv.get("bytes", 0)),
            retransmits=sent.get("retransmits"),
            lost_percent=None,
            jitter_ms=None,
            seconds=float(rcv.get("seconds", seconds)),
        )
    return res


# --------------------------------------------------------------------------------------------------
# packet capture
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Capture:
    """A finished (or running) tcpdump capture; read it after the ``with`` block ends."""

    node: Node
    iface: str
    path: Path
    stderr: list[str] = dataclasses.field(default_factory=list)

    def raw_bytes(self) -> bytes:
        """The pcap file's bytes: the simplest way to assert something (plaintext) is *not* in it."""
        return self.path.read_bytes()

    def packets(self) -> Any:
        """The packets as a scapy PacketList (scapy is imported lazily; it is slow to import)."""
        from scapy.all import rdpcap

        return rdpcap(str(self.path))

    def summary(self) -> str:
        return "".join(self.stderr)


@contextlib.contextmanager
def capture(
    node: Node,
    iface: str,
    bpf_filter: str = "",
    path: str | os.PathLike[str] | None = None,
    settle: float = 0.3,
    snaplen: int = 0,
) -> Iterator[Capture]:
    """Run ``tcpdump -w`` on ``iface`` inside ``node`` for the duration of the ``with`` block.

    Returns only once tcpdump reports it is listening (so no early packet is missed); on exit waits
    ``settle`` seconds for in-flight packets, stops tcpdump with SIGINT (which flushes the file) and reaps
    it. ``-Z root`` keeps tcpdump from dropping privileges and failing to write the file.
    """
    out = Path(path) if path is not None else node.tmpdir / f"cap-{iface}-{secrets.token_hex(3)}.pcap"
    args = ["tcpdump", "-i", iface, "-w", str(out), "-U", "--immediate-mode", "-n", "-Z", "root"]
    if snaplen:
        args += ["-s", str(snaplen)]
    if bpf_filter:
        args.append(bpf_filter)
    proc = node.popen(*args, stderr=subprocess.PIPE)
    cap = Capture(node, iface, out)
    listening = threading.Event()

    def reader(stream: IO[str]) -> None:
        for line in stream:
            cap.stderr.append(line)
            if "listening on" in line:
                listening.set()
        listening.set()

    assert proc.stderr is not None
    t = threading.Thread(target=reader, args=(proc.stderr,), daemon=True)
    t.start()
    try:
        if not listening.wait(10) or proc.poll() is not None:
            raise RuntimeError(f"tcpdump did not start on {iface} in {node}: {cap.summary()}")
        yield cap
        time.sleep(settle)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                node.stop_process(proc, signal.SIGKILL)
        t.join(2)
        node.stop_process(proc)


# --------------------------------------------------------------------------------------------------
# WireGuard
# --------------------------------------------------------------------------------------------------


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
    """Query the daemon through ``wg show IFNAME dump`` (so through its UAPI socket) and parse it."""
    out = node.run("wg", "show", ifname, "dump", timeout=10).stdout
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"empty `wg show {ifname} dump` output")
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
            _kill_pids([p for p in self.daemon_pids if process_alive(p)])
            node.run("rm", "-f", self.socket_path, check=False)
            return False


def process_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


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
    """
    if len(ifname) > 15:
        raise ValueError("interface names are limited to 15 characters")
    log_path = node.tmpdir / f"{ifname}-{secrets.token_hex(2)}.log"
    iface = WgInterface(node, impl_cmd, ifname, private_key, listen_port, address_cidrs, log_path)
    before = set(node.pids())
    with open(log_path, "w") as log:
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
            raise RuntimeError(f"bringing up {ifname} with {impl_cmd} failed: {exc}\n--- daemon log ---\n{log}") from exc
        raise
    return iface
