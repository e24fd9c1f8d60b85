"""examples/embedded_agent.py, an agent that embeds ravenvpn through its top-level names, runs real nodes.

The three-domain lab with a mix: cloud-1 (the relay every NAT'd edge calls) runs the example agent fed by
Kubernetes watch streams through named pipes, hz-2 and qd-2 run the example agent following the cluster
file, and the other nodes run ``ravenvpn up``. Pings cross every domain pair; then hangzhou's gateway fails
over. The file says so for the file-following nodes; cloud-1 learns it only from a MODIFIED Node event on
its pipe (its --cluster file is just the starting list), and it must move hangzhou's peer to hz-2's key, or
no hangzhou packet gets through the relay. ``ravenvpn status`` and SIGTERM work on embedded nodes as on
``ravenvpn up``. Automatic failover is off here (``--no-failover`` everywhere): with it, hz-2's liveness
CLAIM would move cloud-1 too, and the test would no longer show that the watch event did.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tools.lab import Lab
from tools.process import wait_for

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "embedded_agent.py"
WATCHED, FILE_AGENTS = "cloud-1", ("hz-2", "qd-2")


def _docs(lab: Lab, kind: str) -> list[dict[str, Any]]:
    return [d for d in lab.read_docs() if d.get("kind") == kind]


def _write_event(fd: int, event: dict[str, Any]) -> None:
    """One event as `kubectl ... --output-watch-events -o json` prints it: pretty-printed over many lines,
    written in two pieces split inside the value (a reader of lines or of whole writes would break)."""
    text = json.dumps(event, indent=4).encode() + b"\n"
    half = len(text) // 2
    os.write(fd, text[:half])
    os.write(fd, text[half:])


@pytest.fixture(scope="module")
def lab(netns_env: None) -> Iterator[Lab]:
    with Lab() as lab:
        pipes = {kind: lab.dir / f"watch-{kind}.fifo" for kind in ("gateways", "nodes")}
        fds = {}
        for kind, path in pipes.items():
            os.mkfifo(path, 0o600)
            # O_RDWR: opening does not wait for a reader, and the agent never sees an end of stream.
            fds[kind] = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        lab.watch_fds = fds  # type: ignore[attr-defined]
        try:
            example = [sys.executable, str(EXAMPLE)]
            lab.up("cloud-1", command=example,
                   extra=["--no-failover", "--watch", str(pipes["gateways"]), "--watch", str(pipes["nodes"])])
            # A stream that starts with a list-like start, a bookmark and an expired-watch error: none of
            # them may change what the agent runs on.
            _write_event(fds["gateways"], {"type": "BOOKMARK", "object": {"kind": "Gateway",
                                                                          "metadata": {"resourceVersion": "7"}}})
            _write_event(fds["nodes"], {"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                                    "reason": "Expired", "message": "too old"}})
            for name in lab.names:
                if name == "cloud-1":
                    continue
                lab.up(name, wait=False, command=example if name in FILE_AGENTS else None, extra=["--no-failover"])
            for name in lab.names:
                lab.wait_up(name)
            lab.wait_tunnels(timeout=40)
            yield lab
        finally:
            for fd in fds.values():
                os.close(fd)



def _cross_domain_pairs(lab: Lab) -> list[tuple[str, str]]:
    return [(a, b) for a, b in itertools.permutations(lab.names, 2)
            if lab.domain_of(a).gateway != lab.domain_of(b).gateway]


def test_every_domain_pair_pings_with_embedded_agents(lab: Lab) -> None:
    log = lab.up_process(WATCHED).log()
    assert "watch ERROR 410" in log and "a fresh list is needed" in log, log
    pairs = _cross_domain_pairs(lab)
    jobs = [(a, lab.ip(b)) for a, b in pairs] + [(f"pod:{a}", lab.pod_ip(b)) for a, b in pairs]
    results = lab.ping_many(jobs, count=2, interval=0.2, wait=2, deadline=10)
    failed = [f"{src} -> {dst}" for (src, dst), res in zip(jobs, results) if not res.ok]
    assert not failed, f"no reply for: {failed}\n{lab.debug_dump()}"
    for name in (WATCHED, *FILE_AGENTS):
        st = lab.status(name)        # `ravenvpn status` reads the records the library keeps
        assert st.node == name


def test_modified_node_event_fails_hangzhou_over(lab: Lab) -> None:
    hz2_key = next(e["config"]["publicKey"] for gw in _docs(lab, "Gateway") for e in gw["spec"]["endpoints"]
                   if e["nodeName"] == "hz-2")
    assert hz2_key not in lab.wg_dump(WATCHED).peers
    lab.set_ready("hz-1", False)               # the file: what the file-following nodes see
    node = next(d for d in _docs(lab, "Node") if d["metadata"]["name"] == "hz-1")
    _write_event(lab.watch_fds["nodes"], {"type": "MODIFIED", "object": node})   # what cloud-1 sees
    wait_for(lambda: hz2_key in lab.wg_dump(WATCHED).peers, timeout=15,
             message="cloud-1 to take hz-2 as hangzhou's gateway from the watch event")
    wait_for(lambda: lab.ping("pod:hz-2", lab.pod_ip("qd-2"), count=1, wait=1).ok, timeout=30,
             message="hangzhou -> qingdao through hz-2 and the relay")
    for src, dst in (("pod:qd-1", lab.pod_ip("hz-1")), ("hz-1", lab.ip("cloud-2")), ("cloud-2", lab.ip("hz-2"))):
        res = lab.ping(src, dst, count=2, wait=2, deadline=10)
        assert res.ok, f"{src} -> {dst}: {res}\n{lab.debug_dump()}"


def test_sigterm_tears_an_embedded_node_down(lab: Lab) -> None:
    up = lab.up_process("qd-2")
    lab.signal_up("qd-2", signal.SIGTERM)
    assert up.proc.wait(20) == 0, up.log()
    res = lab.ravenvpn("qd-2", "status")
    assert res.returncode != 0 and "not running" in res.stderr, res
