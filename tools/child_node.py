"""A node owned by another process, for the tests of stale cleanup (``tests/netns/test_netns_infra.py``).

:func:`tools.node.cleanup_stale` must remove the nodes of a *dead* owner and keep those of a live one, so
the tests need a node whose owner is a separate process::

    python3 -m tools.child_node crash PREFIX   # prints "NAME NETNS_INODE MOUNT_INODE", then SIGKILLs itself
    python3 -m tools.child_node live PREFIX    # prints "NAME", keeps the node until stdin closes

``crash`` leaves a process running in the node (as a daemon would), so the test can check that cleanup
kills it; the SIGKILL gives ``Node.close`` and the atexit hook no chance to run, like a run killed hard.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tools.node import Node

#: The directory holding the ``tools`` package: the child's working directory, so ``-m tools...`` imports.
REPO_ROOT = Path(__file__).resolve().parents[1]


def spawn(mode: str, prefix: str, **popen_kw: Any) -> subprocess.Popen[Any]:
    """Start ``python3 -m tools.child_node MODE PREFIX`` on this interpreter; kw go to subprocess.Popen."""
    return subprocess.Popen([sys.executable, "-m", "tools.child_node", mode, prefix], cwd=REPO_ROOT, **popen_kw)


def crash(prefix: str) -> None:
    """Create a node with a process in it, print its name and namespace inodes, die by SIGKILL."""
    node = Node("crash", prefix=prefix)
    node.run("sh", "-c", "setsid sleep 600 >/dev/null 2>&1 < /dev/null &")
    print(node.name, node.netns_inode, node.mount_inode, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def live(prefix: str) -> None:
    """Create a node, print its name, keep it until stdin reaches EOF, then close it."""
    with Node("live", prefix=prefix) as node:
        print(node.name, flush=True)
        sys.stdin.read()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m tools.child_node", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("crash", "live"))
    parser.add_argument("prefix", help="namespace name prefix (cleanup_stale only touches names with it)")
    args = parser.parse_args(argv)
    {"crash": crash, "live": live}[args.mode](args.prefix)


if __name__ == "__main__":
    main()
