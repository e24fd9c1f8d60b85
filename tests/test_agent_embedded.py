"""A node run by a program that embeds the Agent (not `ravenvpn up`): `ravenvpn status` and `down` work on it.

In a namespace, against the real kernel: the embedding program is a plain Python script whose command line
does not say "ravenvpn", and it installs no signal handler (so `down`'s SIGTERM kills it without cleanup).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

from tools.netns import Node, veth, wait_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"

EMBEDDER = textwrap.dedent("""\
    import sys
    from ravenvpn.raven.node.agent import Agent
    # cloud-2 is a member of gw-cloud: routes to the other domains via cloud-1 (172.16.0.11), no tunnel.
    Agent(sys.argv[1], "cloud-2", state_dir=sys.argv[2]).run()
""")


def test_status_and_down_on_a_node_run_by_an_embedding_program(node_factory: Callable[..., Node]) -> None:
    node, lan = node_factory("emb"), node_factory("emblan")
    veth(node, lan, "172.16.0.12/24", "172.16.0.11/24", name_a="eth0", name_b="eth0")
    state = node.tmpdir / "state"
    script = node.tmpdir / "embedder.py"
    script.write_text(EMBEDDER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(node.tmpdir / "embedder.log", "w") as log:
        proc = node.popen(sys.executable, str(script), str(EXAMPLE), str(state), env=env, stdout=log,
                          stderr=subprocess.STDOUT)

    def ready() -> bool:
        assert proc.poll() is None, (node.tmpdir / "embedder.log").read_text()
        return (state / "raven0.status.json").exists()

    wait_for(ready, timeout=20, message="the embedded agent to write its status")
    # (nsenter has exec'd python by now) the pid file, not the command line, identifies the agent
    assert b"ravenvpn" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(str(ROOT).encode(), b"")
    assert "10.244.2.0/24 via 172.16.0.11" in node.run("ip", "route", "show", "table", "9027").stdout

    cli = [sys.executable, "-m", "ravenvpn.cli"]
    res = node.run(*cli, "status", "--json", "--state-dir", str(state), env=env, check=False)
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    assert (status["node"], status["role"], status["pid"]) == ("cloud-2", "member", proc.pid)

    res = node.run(*cli, "down", "--state-dir", str(state), env=env, check=False)
    assert res.returncode == 0, res.stderr
    assert "left its routes" in res.stdout, res.stdout
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is not None, "down did not stop the embedding program"
    assert node.run("ip", "route", "show", "table", "9027").stdout == ""
    assert "9027" not in node.run("ip", "rule").stdout
    assert list(state.iterdir()) == []


def test_a_pid_file_names_its_process_whatever_its_command_line(tmp_path: Path) -> None:
    """Unit level: the start time in the pid file, not "ravenvpn" in /proc/PID/cmdline, identifies it."""
    code = ("import sys, time; from ravenvpn.raven.node import pidfile; pidfile.claim(sys.argv[1], 'raven0'); "
            "print('ok', flush=True); time.sleep(60)")
    script = tmp_path / "embedder.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "state")], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ok\n"
        from ravenvpn.raven.node.pidfile import running_pid
        from ravenvpn.raven.node.records import pid_path
        assert running_pid(tmp_path / "state", "raven0") == proc.pid
        # the same pid with another start time is a reused pid: not our agent
        pid, start = pid_path(tmp_path / "state", "raven0").read_text().split()
        pid_path(tmp_path / "state", "raven0").write_text(f"{pid} {int(start) + 1}\n")
        assert running_pid(tmp_path / "state", "raven0") is None
    finally:
        proc.kill()
        proc.wait()

