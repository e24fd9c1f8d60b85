"""`ravenvpn-wg [-f|--foreground] [--log-file PATH] IFNAME`: a drop-in for `wireguard-go IFNAME`.

The command around a `Device` (device.py): argv, environment, logging, signals and fork.
Creates the TUN device and the UAPI socket, then (unless in the foreground)
daemonises: the parent waits on a pipe until the child is ready and exits 0, or
prints one line `ravenvpn-wg: <reason>` and exits 1. The daemon runs until its
interface is deleted, its UAPI socket is removed, or it gets SIGTERM/SIGINT.

Logging follows wireguard-go: LOG_LEVEL=silent|error|info|verbose|debug; a
background daemon logs to --log-file if given, else to the inherited stderr only
if LOG_LEVEL is set (so callers capturing output are not held open), else nowhere.

`--test-clock scale=S,wall-offset=SECONDS` is for tests only (never in production): it
multiplies every protocol timer by S (0.05: rekey every 6 s) and shifts the wall clock of
handshake timestamps by SECONDS (negative: a restarted daemon "back in time"); see
protocol/clock.py.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from ..errors import RavenError, StartupError
from ..protocol.clock import parse_test_clock
from .tun import check_ifname

if TYPE_CHECKING:
    from .device import Device

PROG = "ravenvpn-wg"
USAGE = f"usage: {PROG} [-f|--foreground] [--log-file PATH] IFNAME"
HELP_TEST_ONLY = """test-only (never in production):
  --test-clock scale=S,wall-offset=SECONDS   multiply every protocol timer by S (0 < S <= 10) and shift
                              the wall clock of handshake timestamps by SECONDS"""
HELP_ENVIRONMENT = """environment:
  WG_PROCESS_FOREGROUND=1     stay in the foreground (as with wireguard-go)
  LOG_LEVEL=silent|error|info|verbose|debug   how much to log (default info)
  RAVENVPN_BUSY_POLL_US=N     after traffic, poll for N microseconds instead of sleeping (0..1000000,
                              default 0): lower latency, one busy core while traffic flows"""
LOG_LEVELS = {"silent": logging.CRITICAL + 10, "error": logging.ERROR, "info": logging.INFO,
              "verbose": logging.DEBUG, "debug": logging.DEBUG}

log = logging.getLogger("ravenvpn")


class UsageError(RavenError):
    """A bad command line or environment value; str() is the one line to print."""


@dataclass(frozen=True)
class Options:
    """The parsed command line of `ravenvpn-wg`."""

    ifname: str
    foreground: bool = False
    log_file: str | None = None
    #: Test-only (`--test-clock`): protocol timer scale and wall-clock offset in ns.
    timer_scale: float = 1.0
    wall_offset_ns: int = 0


def parse_args(argv: list[str]) -> Options:
    """Parse argv (without the program name). Hand-rolled so every mistake is one line.

    Raises:
        UsageError: unknown option, missing value, bad interface name.
        SystemExit: after printing --help or --version (code 0).
    """
    foreground, log_file, names, clock_spec = False, None, [], ""
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
        elif arg == "--test-clock":
            clock_spec = next(args, None) or ""
            if not clock_spec:
                raise UsageError("--test-clock needs scale=S,wall-offset=SECONDS")
        elif arg.startswith("--test-clock="):
            clock_spec = arg.split("=", 1)[1]
        elif arg in ("-h", "--help"):
            print(USAGE)
            print(HELP_ENVIRONMENT)
            print(HELP_TEST_ONLY)
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
    try:
        scale, offset_ns = parse_test_clock(clock_spec)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return Options(names[0], foreground, log_file, scale, offset_ns)


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("ravenvpn")
    except Exception:       # running from a source tree that is not installed
        return "unknown"


def log_level() -> int:
    """The logging level LOG_LEVEL asks for (wireguard-go's names; default info)."""
    return LOG_LEVELS.get(os.environ.get("LOG_LEVEL", "").lower(), logging.INFO)


def setup_logging(ifname: str, stream: TextIO) -> None:
    """Send the "ravenvpn" loggers to `stream` in wireguard-go's format (the CLI's job, not the library's)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(f"%(levelname)s: ({ifname}) %(asctime)s %(message)s",
                                           "%Y/%m/%d %H:%M:%S"))
    root = logging.getLogger("ravenvpn")
    root.handlers[:] = [handler]
    root.setLevel(log_level())
    root.propagate = False


BUSY_POLL_MAX_US = 1_000_000


def busy_poll_from_env() -> float:
    """RAVENVPN_BUSY_POLL_US (microseconds) as seconds; unset or empty = 0.

    Raises:
        UsageError: not an integer in 0..BUSY_POLL_MAX_US (the line names the variable).
    """
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


def make_device(ifname: str, busy_poll: float | None = None, timer_scale: float = 1.0,
                wall_offset_ns: int = 0) -> Device:
    """A `Device` as the commands run it: busy polling from RAVENVPN_BUSY_POLL_US unless given.

    Raises:
        UsageError: RAVENVPN_BUSY_POLL_US is not a number of microseconds in range.
    """
    from ..protocol.clock import Clock
    from .device import Device      # imported late: `--help` must work without the core

    return Device(ifname, busy_poll=busy_poll_from_env() if busy_poll is None else busy_poll,
                  clock=Clock(wall_offset_ns=wall_offset_ns), timer_scale=timer_scale)


_compat_device: type | None = None


def __getattr__(name: str) -> object:
    # Transition only: ravenvpn/raven/agent.py still does `from ..device.daemon import Device` and
    # reaches `dev.pump`; it switches to `ravenvpn.device.device.Device` and `configure()` at merge,
    # and this goes.
    global _compat_device
    if name != "Device":
        raise AttributeError(name)
    if _compat_device is None:
        from .device import Device as _Device

        class Device(_Device):
            """Device with busy polling from the environment and `pump` exposed (transition shim)."""

            def __init__(self, ifname: str, busy_poll: float | None = None) -> None:
                super().__init__(ifname, busy_poll=busy_poll_from_env() if busy_poll is None else busy_poll)

            @property
            def pump(self) -> object:
                return self._pump

        _compat_device = Device
    return _compat_device


def _install_signal_handlers(device: Device) -> None:
    def on_signal(signum: int, _frame: object) -> None:
        device.stop(f"received {signal.Signals(signum).name}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def serve(options: Options, ready_fd: int | None) -> int:
    """Run the device in this process; tell `ready_fd` "ok" or the error line (None: print it)."""
    ifname = options.ifname
    try:
        device = make_device(ifname, timer_scale=options.timer_scale, wall_offset_ns=options.wall_offset_ns)
    except UsageError as exc:
        _report(ready_fd, str(exc))
        return 1
    if options.timer_scale != 1.0 or options.wall_offset_ns:
        log.warning("test clock: protocol timers x%g, wall clock %+.3f s (--test-clock, for tests only)",
                    options.timer_scale, options.wall_offset_ns / 1e9)
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
    """Open the --log-file for appending (0600), before forking, so a bad path is a one-line error
    from the parent; returns the fd.

    Raises:
        UsageError: the file cannot be opened.
    """
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot open log file {path}: {exc.strerror or exc}") from None


def daemonise(options: Options, log_fd: int | None) -> int:
    """Fork; the parent waits for the child's "ok" or error line and returns 0 or 1."""
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
        setup_logging(options.ifname, sys.stderr)
        code = serve(options, w)
    except BaseException:
        log.exception("daemon failed")
    finally:
        logging.shutdown()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """The `ravenvpn-wg` command; returns the exit code (0 ok, 1 with one line on stderr).

    Raises:
        SystemExit: 0 after --help or --version.
    """
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
        ifname, foreground, log_file = options.ifname, options.foreground, options.log_file
        busy_poll_from_env()    # a bad value is reported here, not in the log of a daemon that never starts
        if os.geteuid() != 0 and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            raise UsageError("need root (or CAP_NET_ADMIN) to create a TUN device")
        log_fd = open_log_file(log_file) if log_file else None
        if foreground:
            setup_logging(ifname, os.fdopen(log_fd, "a", buffering=1) if log_fd is not None else sys.stderr)
            return serve(options, None)
        return daemonise(options, log_fd)
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
