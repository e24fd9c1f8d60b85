"""Gateway endpoints in namespaces (issue 14): kind 7 (F14b) and the cluster part of kind 8.

F14b: an edge gateway under NAT without publicIP gets no endpoint until it calls in. The field case's cluster (tests/data/field_cases/F14b_edge_nat_no_public_ip.yaml, with fresh keys) is
built by tools/lab.py: cloud-1 on the "internet" at 203.0.113.10, edge-a1 at 192.168.1.11 behind its own
NAT router. cloud-1's default route leads to the internet, so a packet it addressed to edge-a1's private
IP would leave through its uplink: the capture there must stay empty (issue 14, kind 7), `wg show` must
print ``(none)`` as the peer's endpoint, and once edge-a1 is up it calls in through its NAT and the
tunnel carries pings both ways.

Kind 8: gw-cloud's publicIP is a hostname, resolved by `ravenvpn up` from /etc/hosts. Each lab node has a
private mount namespace, so the test bind-mounts its own hosts file over /etc/hosts in edge-a1 only (the
host's file is never touched). The name is missing at first (a warning in `ravenvpn status`, no endpoint,
the agent keeps running), then added: a SIGHUP re-resolves it and the tunnel comes up.
"""

from __future__ import annotations

import base64
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tools.traffic import capture
from tools.lab import INTERFACE, Lab
from tools.process import wait_for

pytestmark = pytest.mark.netns

CASE = Path(__file__).resolve().parents[1] / "data" / "field_cases" / "F14b_edge_nat_no_public_ip.yaml"
EDGE_PRIVATE_IP = "192.168.1.11"


def _key_pair() -> tuple[str, str]:
    private = X25519PrivateKey.generate()
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode(), base64.b64encode(public).decode()


@pytest.fixture
def lab_and_keys(netns_env: None, tmp_path: Path) -> Iterator[tuple[Lab, dict[str, str]]]:
    docs = [d for d in yaml.safe_load_all(CASE.read_text()) if d]
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    publics = {}
    for doc in docs:
        for ep in doc.get("spec", {}).get("endpoints", []) if doc["kind"] == "Gateway" else []:
            private, public = _key_pair()
            (keys_dir / f"{ep['nodeName']}.key").write_text(private + "\n")
            (keys_dir / f"{ep['nodeName']}.key").chmod(0o600)
            ep["config"]["publicKey"] = publics[ep["nodeName"]] = public
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    with Lab(cluster, keys_dir) as lab:
        yield lab, publics


def test_cloud_sends_nothing_to_the_private_ip_of_a_nated_edge_and_learns_it_when_it_calls_in(
        lab_and_keys: tuple[Lab, dict[str, str]]) -> None:
    lab, publics = lab_and_keys
    cloud = lab.node("cloud-1")
    edge_key = publics["edge-a1"]
    with capture(cloud, "eth1", f"udp and dst host {EDGE_PRIVATE_IP}") as to_private:
        lab.up("cloud-1")
        # With its private IP as endpoint, the cloud's first initiation left at once (keepalive 5 s on).
        wait_for(lambda: edge_key in lab.wg_dump("cloud-1").peers, timeout=10, message="the edge peer")
        endpoints = cloud.run("wg", "show", INTERFACE, "endpoints").stdout
        assert f"{edge_key}\t(none)" in endpoints, endpoints
        time.sleep(2.5)   # absence is what is checked: give an initiation (or its retry) time to leave
    sent = [p.summary() for p in to_private.packets()]
    assert not sent, f"cloud-1 sent to the edge's private address: {sent}"

    lab.up("edge-a1")
    nat_uplink = lab.domain("gw-edge-a").uplink_ip
    wait_for(lambda: lab.wg_dump("cloud-1").peers[edge_key].latest_handshake != 0, timeout=30,
             message="the edge's handshake with the cloud")
    learnt = lab.wg_dump("cloud-1").peers[edge_key].endpoint
    assert learnt is not None and learnt.startswith(f"{nat_uplink}:"), learnt   # the NAT's address
    for src, dst in (("cloud-1", EDGE_PRIVATE_IP), ("edge-a1", lab.ip("cloud-1"))):
        res = lab.ping(src, dst, count=3, interval=0.2)
        assert res.ok, f"{src} -> {dst}: {res}"


CLOUD_NAME = "cloud.raven.test"   # .test: reserved (RFC 2606), never a real DNS name


def test_public_ip_hostname_is_resolved_from_etc_hosts_and_re_resolved_on_reload(
        lab_and_keys: tuple[Lab, dict[str, str]], tmp_path: Path) -> None:
    lab, publics = lab_and_keys
    cloud_key = publics["cloud-1"]
    cloud_public = lab.hosts["cloud-1"].public_ip
    docs = [d for d in yaml.safe_load_all(lab.cluster_path.read_text()) if d]
    for doc in docs:
        for ep in doc["spec"]["endpoints"] if doc["kind"] == "Gateway" and doc["metadata"]["name"] == "gw-cloud" else []:
            ep["publicIP"] = CLOUD_NAME
    lab.cluster_path.write_text(yaml.safe_dump_all(docs, sort_keys=False))   # the lab was built from the IPs

    hosts = tmp_path / "edge-a1.hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    edge = lab.node("edge-a1")
    edge.run("mount", "--bind", str(hosts), "/etc/hosts")       # edge-a1's mount namespace only
    assert CLOUD_NAME not in edge.run("cat", "/etc/hosts").stdout
    assert CLOUD_NAME not in Path("/etc/hosts").read_text()

    lab.up("cloud-1")
    lab.up("edge-a1")
    warning = f"cannot resolve '{CLOUD_NAME}'"
    assert any(warning in w for w in lab.status("edge-a1").warnings), lab.status("edge-a1").warnings
    assert lab.wg_dump("edge-a1").peers[cloud_key].endpoint is None
    assert lab.is_up("edge-a1")

    hosts.write_text(f"127.0.0.1 localhost\n{cloud_public} {CLOUD_NAME}\n")   # same inode: the mount shows it
    lab.signal_up("edge-a1", signal.SIGHUP)
    wait_for(lambda: lab.wg_dump("edge-a1").peers[cloud_key].endpoint == f"{cloud_public}:4500", timeout=15,
             message="edge-a1 to re-resolve the cloud's name on SIGHUP")
    wait_for(lambda: lab.wg_dump("edge-a1").peers[cloud_key].latest_handshake != 0, timeout=30,
             message="the edge's handshake with the cloud")
    assert not any(warning in w for w in lab.status("edge-a1").warnings)
    res = lab.ping("edge-a1", lab.ip("cloud-1"), count=3, interval=0.2)
    assert res.ok, res
