"""Cluster objects given as dicts, the key file, the status file (no root)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from ravenvpn.errors import ClusterError, RavenError
from ravenvpn.protocol import keys
from ravenvpn.raven.cluster import load_cluster, load_cluster_objects
from ravenvpn.raven.node.keyfile import read_private_key
from ravenvpn.raven.node.statusfile import LivePeer, NodeStatus
from ravenvpn.raven.plan.planner import plan

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"


def example_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]


# --- cluster objects as dicts -------------------------------------------------------------------

def test_dicts_load_as_the_yaml_does() -> None:
    expected = load_cluster(EXAMPLE.read_text())
    assert load_cluster_objects(example_docs()) == expected
    assert load_cluster_objects(yaml.safe_load_all(EXAMPLE.read_text())) == expected     # a generator, Nones
    as_json = json.loads(json.dumps({"apiVersion": "v1", "kind": "List", "items": example_docs()}))
    assert load_cluster_objects(as_json) == expected                                    # one kind: List


def test_dict_input_errors_name_the_object_by_position() -> None:
    docs = example_docs() + ["not an object"]
    with pytest.raises(ClusterError, match=rf"^object {len(docs)}: expected a Kubernetes object \(a mapping\), got str$"):
        load_cluster_objects(docs)
    with pytest.raises(ClusterError, match="expected a dict or a list of dicts, got str"):
        load_cluster_objects("kind: List")  # type: ignore[arg-type]


def test_the_loaded_cluster_shares_nothing_with_the_dicts() -> None:
    docs = example_docs()
    cluster = load_cluster_objects(docs)
    before = plan(cluster, "hz-2")
    for d in docs:
        d.clear()
    assert plan(cluster, "hz-2") == before


# --- key file -----------------------------------------------------------------------------------

def _key_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "node.key"
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


def test_key_file_reads_a_wg_key(tmp_path: Path) -> None:
    key = keys.generate_private()
    assert read_private_key(_key_file(tmp_path, keys.b64encode(key).encode() + b"\n")) == key


@pytest.mark.parametrize("content, mode, message", [
    (b"x" * 44, 0o644, "has group or other permissions (mode 0644); run 'chmod 600 "),
    (b"\xff\xfe binary", 0o600, "not a base64 key (binary data)"),
    (b"short=", 0o600, "key must be 44 base64 characters ending in '='"),
])
def test_key_file_problems_are_one_line(tmp_path: Path, content: bytes, mode: int, message: str) -> None:
    path = _key_file(tmp_path, content, mode)
    with pytest.raises(RavenError) as info:
        read_private_key(path)
    assert str(info.value).startswith(f"private key file {path}: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(RavenError, match="node.key: No such file or directory"):
        read_private_key(tmp_path / "node.key")


# --- status file --------------------------------------------------------------------------------

def test_status_file_round_trip_and_keys(tmp_path: Path) -> None:
    cluster = load_cluster(EXAMPLE.read_text())
    status = NodeStatus.from_plan(plan(cluster, "cloud-1"), pid=1234)
    path = tmp_path / "raven0.status.json"
    status.write(path)
    assert NodeStatus.read(path) == status
    d = json.loads(path.read_text())
    # the keys `ravenvpn status --json` has always printed
    assert list(d) == ["node", "role", "gateway", "interface", "listen_port", "mtu", "relay", "relay_gateway",
                       "pid", "peers", "routes", "rules", "warnings"]
    assert list(d["peers"][0]) == ["public_key", "gateway", "node", "endpoint", "allowed_ips",
                                   "persistent_keepalive"]
    assert list(d["routes"][0]) == ["dst", "dev", "via", "table"]
    assert d["relay"] is True and d["pid"] == 1234


def test_live_peer_state_is_added_where_known() -> None:
    cluster = load_cluster(EXAMPLE.read_text())
    status = NodeStatus.from_plan(plan(cluster, "cloud-1"))
    key = status.peers[0].public_key
    live = status.with_live_peers({key: LivePeer("192.0.2.1:4500", 1700000000, 10, 20)})
    first, second = live.to_dict()["peers"][:2]
    assert (first["live_endpoint"], first["latest_handshake"], first["rx_bytes"], first["tx_bytes"]) == \
        ("192.0.2.1:4500", 1700000000, 10, 20)
    assert "rx_bytes" not in second
    assert NodeStatus.from_json(live.to_json()) == live


@pytest.mark.parametrize("text, message", [
    ("{}", "status file: key 'node' missing"),
    ("[1]", "status file: malformed"),
    ("{", "status file: malformed"),
])
def test_a_malformed_status_file_is_one_line(text: str, message: str) -> None:
    with pytest.raises(RavenError, match=message):
        NodeStatus.from_json(text)
