"""`ravenvpn-wg [-f|--foreground] [--log-file PATH] IFNAME`: a drop-in for `wireguard-go IFNAME`.

Creates the TUN device and the UAPI socket, then (unless in the foreground)
daemonises: the parent waits on a pipe until the child is ready and exits 0, or
prints one line `ravenvpn-wg: <reason>` and exits 1. The daemon runs until its
interface is deleted, its UAPI socket is removed, or it gets SIGTERM/SIGINT.

Logging follows wireguard-go: LOG_LEVEL=silent|error|info|verbose|debug; a
background daemon logs to --log-file if given, else to the inherited stderr only
if LOG_LEVEL is set (so callers capturing output are not held open), else nowhere.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading

from ..errors import RavenError, StartupError
from .tun import DEFAULT_MTU, TunDevice, check_ifname
from .udp import UdpTransport
from .netlink import LinkMonitor
from .pump import Pump
from .uapi import Uapi
from .uapi_server import UapiServer, check_not_in_use

PROG = "ravenvpn-wg"
USAGE = f"usage: {PROG} [-f|--foreground] [--log-file PATH] IFNAME"
HELP_ENVIRONMENT = """environment:
  WG_PROCESS_FOREGROUND=1     stay in the foreground (as with wireguard-go)
  LOG_LEVEL=silent|error|info|verbose|debug   how much to log (default info)
  RAVENVPN_BUSY_POLL_US=N     after traffic, poll for N microseconds instead of sleeping (0..1000000,
                              default 0): lower latency, one busy core while traffic flows"""
LOG_LEVELS = {"silent": logging.CRITICAL + 10, "error": logging.ERROR, "info": logging.INFO,
              "verbose": logging.DEBUG, "debug": logging.DEBUG}

log = logging.getLogger("ravenvpn")


class UsageError(RavenError):
    pass


def parse_args(argv: list[str]) -> tuple[str, bool, str | None]:
    """(ifname, foreground, log_file). Hand-rolled so every mistake is one line."""
    foreground, log_file, names = False, None, []
    args = iter(argv)
    for arg in args:
        if arg in ("-f", "--foreground"):
            foreground = True
        elif arg == "--log-file":
            log_file = next(args, None)
            if not log_file:
                raise UsageError("--log-file needs a path")
        elif arg.startswith("--log-file="):
            log_file = arg.split("=", 1)[1]
        elif arg in ("-h", "--help"):
            print(USAGE)
            print(HELP_ENVIRONMENT)
            raise SystemExit(0)
        elif arg in ("-v", "--version"):
            print(f"{PROG} (ravenvpn {_version()}): userspace WireGuard-compatible daemon")
            raise SystemExit(0)
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg}; {USAGE}")
        else:
            names.append(arg)
    if len(names) != 1:
        raise UsageError(USAGE)
    try:
        check_ifname(names[0])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if os.environ.get("WG_PROCESS_FOREGROUND") == "1":
        foreground = True
    return names[0], foreground, log_file


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("ravenvpn")
    except Exception:       # running from a source tree that is not installed
        return "unknown"


def log_level() -> int:
    return LOG_LEVELS.get(os.environ.get("LOG_LEVEL", "").lower(), logging.INFO)


def setup_logging(ifname: str, stream) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(f"%(levelname)s: ({ifname}) %(asctime)s %(message)s",
                                           "%Y/%m/%d %H:%M:%S"))
    root = logging.getLogger("ravenvpn")
    root.handlers[:] = [handler]
    root.setLevel(log_level())
    root.propagate = False


BUSY_POLL_MAX_US = 1_000_000


def busy_poll_from_env() -> float:
    """RAVENVPN_BUSY_POLL_US as seconds; a bad value is a usage error naming the variable."""
    text = os.environ.get("RAVENVPN_BUSY_POLL_US", "").strip()
    if not text:
        return 0.0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= BUSY_POLL_MAX_US:
        raise UsageError(f"RAVENVPN_BUSY_POLL_US must be 0..{BUSY_POLL_MAX_US} microseconds, not {text!r}")
    return value / 1e6


class Device:
    """One running interface: owns the TUN, the sockets, the core and the UAPI server.

    Implements uapi.DeviceControl. `lock` guards the core and the sockets; it is re-entrant so the
    setters can take it themselves (embedders call them bare) while the UAPI thread already holds it.
    """

    def __init__(self, ifname: str, busy_poll: float | None = None) -> None:
        """`busy_poll`: seconds to keep polling after traffic (see pump.py); None = from the
        environment (RAVENVPN_BUSY_POLL_US, microseconds), else off."""
        self.ifname = ifname
        self.busy_poll = busy_poll_from_env() if busy_poll is None else busy_poll
        self.lock = threading.RLock()
        self.closed = False
        self.tun: TunDevice | None = None
        self.udp = UdpTransport()
        self.monitor: LinkMonitor | None = None
        self.server: UapiServer | None = None
        self.pump: Pump | None = None
        self.tunnel = None          # ravenvpn.protocol.tunnel.Tunnel once open()

    # -- DeviceControl --
    @property
    def listen_port(self) -> int:
        return self.udp.port

    @property
    def fwmark(self) -> int:
        return self.udp.fwmark

    def set_listen_port(self, port: int) -> None:
        with self.lock:
            if self.closed:
                # A UAPI request racing shutdown must not reopen sockets nobody will close.
                raise OSError(errno.ENODEV, "interface is shutting down")
            self.udp.bind(port)
            self._sync_tunnel()
        if self.pump:
            self.pump.wake(tick=False)     # re-register the new sockets promptly

    def set_fwmark(self, mark: int) -> None:
        with self.lock:
            self.udp.set_fwmark(mark)
            self._sync_tunnel()

    def _sync_tunnel(self) -> None:
        """The core keeps copies of port and mark for status displays; the sockets are the truth."""
        if self.tunnel is not None:
            self.tunnel.listen_port = self.udp.port
            self.tunnel.fwmark = self.udp.fwmark

    def config_changed(self) -> None:
        if self.pump:
            self.pump.wake()

    # -- lifecycle --
    def open(self, listen_port: int | None = None, mtu: int | None = None) -> None:
        """Bring everything up; on failure close what was opened and raise StartupError.

        `listen_port`: bind exactly this UDP port (a busy one is a StartupError whose `errno` is
        EADDRINUSE); None: 4500, else an ephemeral one (wireguard-go's behaviour before `wg set`).
        `mtu`: the TUN MTU in bytes from the start (None: DEFAULT_MTU), so the first log line is true."""
        from ..protocol.tunnel import Tunnel   # imported late: `--help` must work without the core

        try:
            check_not_in_use(self.ifname)
            try:
                self.tun = TunDevice(self.ifname, DEFAULT_MTU if mtu is None else mtu)
            except OSError as exc:
                raise StartupError(f"cannot create TUN device {self.ifname}: {exc.strerror or exc}") from None
            self.tunnel = tunnel = Tunnel(mtu=self.tun.get_mtu())
            rekey = os.environ.get("RAVENVPN_TEST_REKEY_AFTER_TIME")
            if rekey:
                # Testing aid: rekey every few seconds to exercise real peers across rekeys.
                tunnel.rekey_after_time = max(float(rekey), 1.0)
                log.info("rekey after %.0f s (RAVENVPN_TEST_REKEY_AFTER_TIME)", tunnel.rekey_after_time)
            try:
                if listen_port is None:
                    self.udp.bind_default()
                else:
                    self.udp.bind(listen_port)
            except OSError as exc:
                port = "" if listen_port is None else f" on port {listen_port}"
                error = StartupError(f"cannot open UDP socket{port}: {exc.strerror or exc}")
                error.errno = exc.errno     # type: ignore[attr-defined]
                raise error from None
            self._sync_tunnel()
            try:
                self.monitor = LinkMonitor(self.tun.ifindex)
            except OSError as exc:      # the TUN fd still reports deletion; MTU changes go unseen
                log.error("cannot watch link events: %s", exc.strerror or exc)
            self.pump = Pump(tunnel, self.tun, self.udp, self.monitor, self.lock, busy_poll=self.busy_poll)
            self.server = UapiServer(self.ifname, Uapi(tunnel, self, self.lock))
            self.server.open()
            self.pump.housekeeping.append(self._check_socket)
        except BaseException:
            self.close()
            raise
        log.info("interface %s up (MTU %d), UDP port %d%s", self.ifname, tunnel.mtu, self.udp.port,
                 "" if self.udp.v6 else " (IPv4 only)")

    def _check_socket(self) -> None:
        if self.server and not self.server.still_ours():
            assert self.pump is not None
            self.pump.stop(f"UAPI socket {self.server.path} was removed")

    def run(self) -> str:
        assert self.pump is not None and self.server is not None
        self.server.start()
        return self.pump.run()

    def close(self) -> None:
        """Idempotent teardown: socket first (clients see us gone), then UDP, netlink, TUN."""
        if self.server:
            self.server.close()     # also ends open UAPI connections
            self.server = None
        with self.lock:             # no UAPI request is half-applied while the sockets go
            self.closed = True
            self.udp.close()
        if self.monitor:
            self.monitor.close()
            self.monitor = None
        if self.tun:
            self.tun.close()        # non-persistent: this removes the interface if it still exists
            self.tun = None
        if self.pump:
            self.pump.close()


def _install_signal_handlers(device: Device) -> None:
    def on_signal(signum, _frame):
        if device.pump:
            device.pump.stop(f"received {signal.Signals(signum).name}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def serve(ifname: str, ready_fd: int | None) -> int:
    """Run the device in this process; tell `ready_fd` "ok" or the error line (None: print it)."""
    device = Device(ifname)
    try:
        device.open()
        _install_signal_handlers(device)
    except Exception as exc:
        # A bug is still one line for the user; the traceback goes to the debug log only.
        error = str(exc) if isinstance(exc, StartupError) else f"internal error: {type(exc).__name__}: {exc}"
        log.debug("start-up failed", exc_info=True)
        if ready_fd is not None:
            log.error("%s", error)      # the parent prints the line; the log keeps a copy
        _report(ready_fd, error)
        return 1
    _report(ready_fd, None)
    try:
        reason = device.run()
        log.info("shutting down: %s", reason)
    finally:
        device.close()
    return 0


def _report(ready_fd: int | None, error: str | None) -> None:
    if ready_fd is None:
        if error is not None:
            print(f"{PROG}: {error}", file=sys.stderr)
        return
    try:
        os.write(ready_fd, b"ok" if error is None else error.encode(errors="replace"))
    finally:
        os.close(ready_fd)


def _redirect_std_streams(log_fd: int | None) -> None:
    """Detach the daemon from the caller's terminal/pipes so `$(ravenvpn-wg IF)` returns."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if log_fd is not None:
        os.dup2(log_fd, 2)
        os.close(log_fd)
    elif not os.environ.get("LOG_LEVEL"):
        os.dup2(devnull, 2)
    os.close(devnull)


def open_log_file(path: str) -> int:
    """Opened before forking, so a bad path is a one-line error from the parent."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot open log file {path}: {exc.strerror or exc}") from None


def daemonise(ifname: str, log_fd: int | None) -> int:
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:                                  # parent: wait for the child's verdict
        os.close(w)
        if log_fd is not None:
            os.close(log_fd)
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
        os.close(r)
        verdict = b"".join(chunks).decode(errors="replace")
        if verdict == "ok":
            return 0
        os.waitpid(pid, 0)
        print(f"{PROG}: {verdict or 'daemon exited during start-up'}", file=sys.stderr)
        return 1
    # child
    os.close(r)
    code = 1
    try:
        os.setsid()
        _redirect_std_streams(log_fd)
        setup_logging(ifname, sys.stderr)
        code = serve(ifname, w)
    except BaseException:
        log.exception("daemon failed")
    finally:
        logging.shutdown()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    try:
        ifname, foreground, log_file = parse_args(sys.argv[1:] if argv is None else argv)
        busy_poll_from_env()    # a bad value is reported here, not in the log of a daemon that never starts
        if os.geteuid() != 0 and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            raise UsageError("need root (or CAP_NET_ADMIN) to create a TUN device")
        log_fd = open_log_file(log_file) if log_file else None
        if foreground:
            setup_logging(ifname, os.fdopen(log_fd, "a", buffering=1) if log_fd is not None else sys.stderr)
            return serve(ifname, None)
        return daemonise(ifname, log_fd)
    except RavenError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{PROG}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
