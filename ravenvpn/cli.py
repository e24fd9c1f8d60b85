"""`ravenvpn` command line: key tools now; `up`, `down`, `status` are added by their owners.

Every failure is one line `ravenvpn: <reason>` on stderr (exit 1), never a traceback.
"""
from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import Callable, NoReturn

from .errors import RavenError
from .protocol import keys

PROG = "ravenvpn"


class CliError(RavenError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line too."""

    def error(self, message: str) -> NoReturn:
        print(f"{PROG}: {message} (see '{PROG} --help')", file=sys.stderr)
        raise SystemExit(1)


def _warn_if_world_readable() -> None:
    """Like `wg genkey`: a private key redirected into a file others can read deserves a warning."""
    try:
        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (OSError, ValueError):
        return
    if stat.S_ISREG(mode) and mode & stat.S_IRWXO:
        print("Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.",
              file=sys.stderr)


def cmd_genkey(_args: argparse.Namespace) -> int:
    _warn_if_world_readable()
    print(keys.b64encode(keys.generate_private()))
    return 0


def cmd_genpsk(_args: argparse.Namespace) -> int:
    _warn_if_world_readable()
    print(keys.b64encode(keys.generate_psk()))
    return 0


def cmd_pubkey(_args: argparse.Namespace) -> int:
    text = sys.stdin.read(4096)
    try:
        private = keys.b64decode(text)
    except ValueError as exc:
        raise CliError(f"invalid private key on stdin: {exc}") from None
    print(keys.b64encode(keys.public_from_private(private)))
    return 0


def _add_key_commands(sub: argparse._SubParsersAction) -> None:
    for name, func, text in (
        ("genkey", cmd_genkey, "print a new base64 private key"),
        ("pubkey", cmd_pubkey, "read a base64 private key on stdin, print its public key"),
        ("genpsk", cmd_genpsk, "print a new base64 preshared key"),
    ):
        sub.add_parser(name, help=text, description=text).set_defaults(func=func)


# Each entry adds one group of subcommands; `up`, `down` and `status` plug in here.
COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [_add_key_commands]


def _add_raven_commands(sub: argparse._SubParsersAction) -> None:
    from .raven.node.commands import add_commands  # `up`, `down`, `status`
    add_commands(sub)


COMMAND_GROUPS.append(_add_raven_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="ravenvpn: userspace WireGuard-compatible VPN")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.error("a command is required")
    try:
        return args.func(args)
    except RavenError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
