"""`ravenvpn` command line: key tools (genkey, pubkey, genpsk) and the Raven agent (up, down, status).

Every failure is one line `ravenvpn: <reason>` on stderr (exit 1), never a traceback: a usage mistake
points at the help of the subcommand it was made in, and an OSError that escapes a command (a
permission, a missing file) is one line too.
"""
from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
from typing import Callable, NoReturn

from .errors import RavenError
from .protocol import keys

PROG = "ravenvpn"


class CliError(RavenError):
    """A bad argument of a ``ravenvpn`` key command, as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line too, pointing at this (sub)command's help."""

    def error(self, message: str) -> NoReturn:
        command = self.prog[len(PROG):].strip()
        where = f"{command}: " if command else ""
        print(f"{PROG}: {where}{message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(1)


def version() -> str:
    """The installed ravenvpn's version, ``unknown`` when run from a source tree that is not installed."""
    try:
        from importlib.metadata import PackageNotFoundError, version as dist_version
        return dist_version("ravenvpn")
    except PackageNotFoundError:
        return "unknown"


def _warn_if_readable_by_others() -> None:
    """Like `wg genkey`, and more: a private key saved where others can read it deserves a warning.

    Two ways it happens: stdout is a regular file others can read (`> key` under umask 022), or
    stdout goes elsewhere (a pipe into `tee key`) while the umask lets the file be created readable.
    `ravenvpn up` refuses such a key file later; this says so while the fix is easy.
    """
    try:
        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (OSError, ValueError):
        return
    if stat.S_ISREG(mode):
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            print("Warning: writing to a file others can read (ravenvpn up refuses such a key file).\n"
                  "Consider setting the umask to 077 and trying again.", file=sys.stderr)
        return
    umask = os.umask(0o077)
    os.umask(umask)
    if sys.stdout.isatty() or umask & 0o044 == 0o044:
        return
    print(f"Warning: umask {umask:04o} lets others read a key file saved from this output (ravenvpn up "
          "refuses such a file).\nConsider 'umask 077' first, e.g. (umask 077; ravenvpn genkey > key).",
          file=sys.stderr)


def cmd_genkey(_args: argparse.Namespace) -> int:
    """``ravenvpn genkey``: print a new base64 private key (clamped, as ``wg genkey``)."""
    _warn_if_readable_by_others()
    print(keys.b64encode(keys.generate_private()))
    return 0


def cmd_genpsk(_args: argparse.Namespace) -> int:
    """``ravenvpn genpsk``: print a new base64 preshared key."""
    _warn_if_readable_by_others()
    print(keys.b64encode(keys.generate_psk()))
    return 0


def cmd_pubkey(_args: argparse.Namespace) -> int:
    """``ravenvpn pubkey``: read a base64 private key on stdin, print its public key.

    Raises:
        CliError: stdin does not hold a base64 32-byte key.
    """
    text = sys.stdin.read(4096)
    try:
        private = keys.b64decode(text)
    except ValueError as exc:
        raise CliError(f"invalid private key on stdin: {exc}") from None
    print(keys.b64encode(keys.public_from_private(private)))
    return 0


KEY_EPILOG = "needs no root. Same base64 forms as wg(8): keys from either work with the other."


def _add_key_commands(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    for name, func, text, epilog in (
        ("genkey", cmd_genkey, "print a new base64 private key",
         "Save it where only you can read it: (umask 077; ravenvpn genkey > key).\nWarns when the output "
         "goes to a file others can read, or the umask would create one.\n" + KEY_EPILOG),
        ("pubkey", cmd_pubkey, "read a base64 private key on stdin, print its public key",
         "example: ravenvpn pubkey < key > key.pub\n" + KEY_EPILOG),
        ("genpsk", cmd_genpsk, "print a new base64 preshared key", KEY_EPILOG),
    ):
        sub.add_parser(name, help=text, description=text, epilog=epilog,
                       formatter_class=fmt).set_defaults(func=func)


# Each entry adds one group of subcommands; `up`, `down` and `status` plug in here.
COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [_add_key_commands]


def _add_raven_commands(sub: argparse._SubParsersAction) -> None:
    from .raven.node.commands import add_commands  # `up`, `down`, `status`
    add_commands(sub)


COMMAND_GROUPS.append(_add_raven_commands)

EPILOG = """\
Run 'ravenvpn COMMAND --help' for a command's options, files, signals and environment.
up and down need root (or CAP_NET_ADMIN); the key commands do not; status reads /run/ravenvpn.
The userspace WireGuard daemon (a wireguard-go drop-in for wg and wg-quick) is 'ravenvpn-wg'."""


def build_parser() -> argparse.ArgumentParser:
    """The ``ravenvpn`` argument parser with every subcommand."""
    parser = _Parser(prog=PROG, description="ravenvpn: userspace WireGuard-compatible VPN for Raven "
                     "(OpenYurt) edge gateways", epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


def _os_error_line(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    name = f"{exc.filename}: " if exc.filename else ""
    if exc.errno in (errno.EPERM, errno.EACCES):
        return f"need root (or CAP_NET_ADMIN): {name}{what}"
    return f"{name}{what}"


def main(argv: list[str] | None = None) -> int:
    """Run one ``ravenvpn`` command line; the exit status (0 success, 1 any failure)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    command = getattr(args, "command", None)
    if extra:
        # An unknown argument after a subcommand is that subcommand's mistake: point at its help.
        sub = parser if command is None else _Parser(prog=f"{PROG} {command}")
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()         # bare `ravenvpn`, as kubectl and git do
        return 0
    try:
        return args.func(args)
    except RavenError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    except BrokenPipeError:
        return 1
    except OSError as exc:
        print(f"{PROG}: {_os_error_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
