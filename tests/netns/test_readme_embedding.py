"""README's "Embedding" snippets run as written, in namespaces, so they cannot rot.

The placeholders a reader fills in (the key file, the peer's key and address, the cluster objects) are
the only substitutions; the code between them is README's own text.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.links import veth
from tools.process import wait_for
from tools.traffic import ping
from tools.wg import WgPeer, genkey, pubkey, start_wg, wg_dump

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"


def readme_snippets() -> list[str]:
    """The ```python blocks of README's Embedding section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Embedding", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_both_snippets() -> None:
    device, agent = readme_snippets()
    assert "ravenvpn.Device(" in device and "configure()" in device
    assert "ravenvpn.Agent(" in agent and "set_cluster" in agent
    for code in (device, agent):      # the front door only: no submodule of ravenvpn
        assert not re.search(r"(from|import) ravenvpn\.", code)


def test_device_snippet_talks_to_wireguard_go(node_factory) -> None:
    code = readme_snippets()[0]
    a, b = node_factory("emba"), node_factory("embb")
    link = veth(a, b, "198.18.7.1/24", "198.18.7.2/24")
    key_a, key_b = genkey(), genkey()
    peer_b = start_wg(b, ["wireguard-go"], "wg0", key_b, 51820, ["10.9.0.2/24"],
                      [WgPeer(pubkey(key_a), ["10.9.0.1/32"], f"{link.ip_a}:51820")])
    key_file = a.tmpdir / "wg0.key"
    key_file.write_text(key_a + "\n")
    key_file.chmod(0o600)
    code = code.replace("PEER_PUBLIC_KEY", pubkey(key_b)).replace("192.0.2.2", link.ip_b)
    script = a.tmpdir / "snippet.py"
    script.write_text(code)
    proc = a.popen(sys.executable, str(script), cwd=str(a.tmpdir), stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: a.has_link("wg0") and a.exists("/var/run/wireguard/wg0.sock"), timeout=15,
                 message="the snippet's wg0")
        a.add_addr("wg0", "10.9.0.1/24")
        a.link_up("wg0")
        res = ping(a, "10.9.0.2", count=3, wait=2, deadline=15)
        assert res.ok, f"{res}\n{peer_b.log_text()}"
        dump = wg_dump(a, "wg0")          # `wg` drives the embedded device through its UAPI socket
        assert dump.listen_port == 51820 and dump.peers[pubkey(key_b)].latest_handshake > 0
        a.run("ip", "link", "del", "wg0")  # device.wait() returns, device.close() cleans up
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        assert not a.exists("/var/run/wireguard/wg0.sock")
    finally:
        if proc.poll() is None:
            a.stop_process(proc)


def test_agent_snippet_brings_a_gateway_up_and_down(node_factory) -> None:
    code = readme_snippets()[1]
    node = node_factory("embg")
    other = node_factory("embo")
    veth(node, other, "192.168.1.11/24", "192.168.1.99/24")      # hz-1's InternalIP
    key = node.tmpdir / "hz-1.key"
    shutil.copy(ROOT / "examples" / "keys" / "hz-1.key", key)
    key.chmod(0o600)
    objects = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    new_objects = yaml.safe_load_all(EXAMPLE.read_text())
    # The change the snippet applies: hz-1 goes NotReady, so it stops being hangzhou's gateway.
    changed = [d for d in new_objects if d]
    for d in changed:
        if d["kind"] == "Node" and d["metadata"]["name"] == "hz-1":
            for cond in d["status"]["conditions"]:
                if cond["type"] == "Ready":
                    cond["status"] = "False"
    prelude = (f"import json\nobjects = json.loads({json.dumps(objects)!r})\n"
               f"new_objects = json.loads({json.dumps(changed)!r})\n")
    # Between the snippet's lines, the test looks at the node: after start (raven0 is up) and after
    # set_cluster (raven0 is gone). The snippet's own lines are unchanged.
    code = code.replace('"/etc/ravenvpn/hz-1.key"', repr(str(key)))
    code = code.replace("thread.start()\n", "thread.start()\nimport os, time\n"
                        "while not os.path.exists('/sys/class/net/raven0'): time.sleep(0.05)\n"
                        "print('gateway up', flush=True)\n", 1)
    code = code.replace("agent.stop()", "while os.path.exists('/sys/class/net/raven0'): time.sleep(0.05)\n"
                        "print('gateway moved', flush=True)\nagent.stop()", 1)
    script = node.tmpdir / "agent_snippet.py"
    script.write_text(prelude + code + "print('stopped', flush=True)\n")
    res = node.run(sys.executable, str(script), timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.split() == ["gateway", "up", "gateway", "moved", "stopped"], res
    assert not node.has_link("raven0")
    rules = node.run("ip", "rule").stdout
    assert "9028" not in rules and "9027" not in rules, rules     # stop() removed what it installed
