"""`ravenvpn status` says why a peer's handshakes are refused (issue 12, restarts).

hz-1 runs `ravenvpn up` (the active gateway of gw-hangzhou in the example cluster, its demo key) with one
veth as its underlay; the remote gateway cloud-1 is a ravenvpn-wg daemon with cloud-1's key at
198.51.100.1, the publicIP the cluster gives it. cloud-1 is restarted with its clock an hour behind
(the test-only ``--test-clock wall-offset=-3600``; the host clock is untouched): hz-1 refuses its
initiations (whitepaper §5.1), and `ravenvpn status` on hz-1 says why and what to do. The remedy for
`ravenvpn up`: remove the peer with `wg set`, then SIGHUP (the agent adds it again, with its planned
endpoint).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tools.links import veth
from tools.node import Node
from tools.process import wait_for
from tools.tunnel import IMPLS
from tools.wg import WgPeer, parse_wg_dump, start_wg

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"
CLI = [sys.executable, "-m", "ravenvpn.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLOUD_PUB = "VDFoF6evCs8SPwn0pq9DTfn2TICPz5y7THcA9VkQgwk="     # cloud-1's publicKey in the example
HZ1_PUB = "D+xuENS9VdZB30+0w/jKwavBmjJW9CHzswiFhit5Yn8="
CLOUD_IP, HZ_IP = "198.51.100.1", "192.168.1.11"


def test_status_says_why_a_restarted_peer_is_refused_and_the_remedy_works() -> None:
    with Node("rfhz") as hz, Node("rfcloud") as cloud:
        veth(hz, cloud, f"{HZ_IP}/24", f"{CLOUD_IP}/24", name_a="eth0", name_b="eth0")
        hz.add_route("198.51.100.0/24", dev="eth0")
        cloud.add_route("192.168.1.0/24", dev="eth0")
        key = hz.tmpdir / "hz-1.key"
        shutil.copy(ROOT / "examples" / "keys" / "hz-1.key", key)
        key.chmod(0o600)
        state = hz.tmpdir / "state"
        log = hz.tmpdir / "up.log"
        with open(log, "w") as out:
            up = hz.popen(*CLI, "up", "--cluster", str(EXAMPLE), "--node", "hz-1", "--private-key", str(key),
                          "--state-dir", str(state), "--no-failover", env=ENV, stdout=out, stderr=subprocess.STDOUT)

        def status(*args: str) -> str:
            res = hz.run(*CLI, "status", "--state-dir", str(state), *args, env=ENV, check=False, timeout=30)
            assert res.returncode == 0, res.stderr + log.read_text()
            return res.stdout

        def hz_handshake() -> int:
            dump = parse_wg_dump(hz.run("wg", "show", "raven0", "dump").stdout)
            return dump.peers[CLOUD_PUB].latest_handshake if CLOUD_PUB in dump.peers else 0

        def ready() -> bool:
            assert up.poll() is None, log.read_text()
            try:
                return json.loads((state / "raven0.status.json").read_text())["pid"] == up.pid
            except (OSError, ValueError, KeyError):
                return False
        wait_for(ready, timeout=30, message="ravenvpn up to write its status")

        cloud_key = (ROOT / "examples" / "keys" / "cloud-1.key").read_text().strip()
        peer = WgPeer(HZ1_PUB, ["10.244.2.0/24"], endpoint=f"{HZ_IP}:4500", persistent_keepalive=1)

        def start_cloud(extra: list[str]):
            return start_wg(cloud, IMPLS["ravenvpn"] + extra, "raven0", cloud_key, 4500, peers=[peer])
        first = start_cloud([])
        wait_for(hz_handshake, timeout=15, message="the first handshake")
        first.stop()
        stepped_back = start_cloud(["--test-clock", "wall-offset=-3600"])
        try:
            text = wait_for(lambda: "handshake initiation refused" in (s := status()) and s, timeout=20,
                            message="ravenvpn status to show the refusal\n" + log.read_text())
            assert ("handshake initiation refused" in text and "its timestamp is not newer than the last one "
                    "accepted (a replay, or the peer's clock went back after a restart)") in text, text
            assert f"remedy: wg set raven0 peer {CLOUD_PUB} remove, then kill -HUP {up.pid}" in text, text
            print(f"\n{text}")
            cloud_peer = json.loads(status("--json"))["peers"]
            assert [p["gateway"] for p in cloud_peer if "refusal_reason" in p] == ["gw-cloud"], cloud_peer
            assert stepped_back.peer_status(HZ1_PUB).latest_handshake == 0      # still refused
            # the agent's log says it too (the device's housekeeping, once a second: maybe after status)
            wait_for(lambda: "handshake initiation refused" in log.read_text(), timeout=5, message="the log line")
            # the remedy, as status prints it
            hz.run("wg", "set", "raven0", "peer", CLOUD_PUB, "remove")
            os.kill(up.pid, signal.SIGHUP)
            wait_for(lambda: stepped_back.peer_status(HZ1_PUB).latest_handshake, timeout=15,
                     message="the stepped-back cloud-1 to complete a handshake after the remedy")
            wait_for(lambda: "refused" not in status(), timeout=5, message="status to drop the refusal")
            # Removed behind the agent's back, the peer comes back with its planned endpoint, not
            # waiting for cloud-1 to call in (here nothing does: cloud-1 is stopped).
            stepped_back.stop()
            hz.run("wg", "set", "raven0", "peer", CLOUD_PUB, "remove")
            os.kill(up.pid, signal.SIGHUP)
            wait_for(lambda: f"{CLOUD_PUB}\t{CLOUD_IP}:4500" in hz.run("wg", "show", "raven0", "endpoints").stdout,
                     timeout=10, message="the re-added peer to get its planned endpoint")
        finally:
            stepped_back.stop()
            up.send_signal(signal.SIGTERM)
            up.wait(30)
        assert "Traceback" not in log.read_text()
