"""F14b in namespaces: an edge gateway under NAT without publicIP gets no endpoint until it calls in.

The field case's cluster (tests/data/field_cases/F14b_edge_nat_no_public_ip.yaml, with fresh keys) is
built by tools/lab.py: cloud-1 on the "internet" at 203.0.113.10, edge-a1 at 192.168.1.11 behind its own
NAT router. cloud-1's default route leads to the internet, so a packet it addressed to edge-a1's private
IP would leave through its uplink: the capture there must stay empty (issue 14, kind 7), `wg show` must
print ``(none)`` as the peer's endpoint, and once edge-a1 is up it calls in through its NAT and the
tunnel carries pings both ways.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tools import netns
from tools.lab import INTERFACE, Lab
from tools.netns import wait_for

pytestmark = pytest.mark.netns

CASE = Path(__file__).resolve().parent / "data" / "field_cases" / "F14b_edge_nat_no_public_ip.yaml"
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
    with netns.capture(cloud, "eth1", f"udp and dst host {EDGE_PRIVATE_IP}") as to_private:
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
