"""Where a running node keeps its records: one home for the state directory's file names.

A node run by ``ravenvpn up`` or by an embedding :class:`~ravenvpn.raven.node.agent.Agent` keeps, per
tunnel interface, three files under its state directory (``/run/ravenvpn`` by default, mode 0700):

- ``<interface>.state.json``: what the route driver installed (:mod:`.applier`), so ``ravenvpn down``
  in another process can undo it;
- ``<interface>.pid``: which process runs the agent (:mod:`.pidfile`);
- ``<interface>.status.json``: the node's role, peers and routes (:mod:`.statusfile`), read by
  ``ravenvpn status``.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_STATE_DIR", "state_path", "pid_path", "status_path"]

DEFAULT_STATE_DIR = "/run/ravenvpn"


def state_path(state_dir: str | Path, interface: str) -> Path:
    """The route driver's record of what it installed: ``<state_dir>/<interface>.state.json``."""
    return Path(state_dir) / f"{interface}.state.json"


def pid_path(state_dir: str | Path, interface: str) -> Path:
    """The running agent's pid file: ``<state_dir>/<interface>.pid``."""
    return Path(state_dir) / f"{interface}.pid"


def status_path(state_dir: str | Path, interface: str) -> Path:
    """The node's status file: ``<state_dir>/<interface>.status.json``."""
    return Path(state_dir) / f"{interface}.status.json"
