"""What `ravenvpn up` says about its input before it changes anything (issue 13: H2, M7, L2, L3, L4, L6).

No root: the agent runs with drivers that record calls (the real ones keep their namespace tests); the
cluster loading, the planner and the messages are real.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ravenvpn.errors import RavenError
from ravenvpn.protocol import keys
from ravenvpn.raven.node.agent import Agent
from ravenvpn.raven.plan.nodeplan import NodePlan, Role

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"
KEYS = ROOT / "examples" / "keys"


@dataclass
class _Report:
    changed: bool = False

    def summary(self) -> str:
        return "changed" if self.changed else "unchanged"


class Recorder:
    """A driver that changes nothing and records that it was asked to."""

    def __init__(self, mtu: int) -> None:
        self._mtu = mtu
        self.applied: list[NodePlan] = []
        self.stopped: str | None = None

    def init(self) -> None:
        pass

    def mtu(self, endpoints: object = ()) -> int:
        return self._mtu

    def apply(self, plan: NodePlan) -> _Report:
        self.applied.append(plan)
        return _Report(True)

    def cleanup(self) -> _Report:
        return _Report()


def docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]


def key_file(tmp_path: Path, node: str) -> Path:
    dst = tmp_path / f"{node}.key"
    shutil.copy(KEYS / f"{node}.key", dst)
    dst.chmod(0o600)
    return dst


def agent_for(tmp_path: Path, cluster: Any, node: str, **kw: Any) -> tuple[Agent, Recorder, Recorder]:
    vpn, routes = Recorder(1420), Recorder(1500)
    agent = Agent(cluster, node, state_dir=tmp_path / "state", vpn=vpn, routes=routes, **kw)
    return agent, vpn, routes


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refused(agent: Agent, vpn: Recorder, routes: Recorder) -> str:
    """The one-line refusal of the first reconcile; nothing was applied."""
    with pytest.raises(RavenError) as info:
        agent.reconcile()
    agent.close()
    assert vpn.applied == [] and routes.applied == []
    message = str(info.value)
    assert "\n" not in message
    return message


# --- H2: every endpoint candidate needs its key -------------------------------------------------

@pytest.mark.parametrize("node, gateway, index, kind", [
    ("hz-2", "gw-hangzhou", 2, "tunnel"),       # a standby: it must be able to take over
    ("hz-1", "gw-hangzhou", 0, "proxy"),        # the active one (its proxy endpoint comes first)
])
def test_an_endpoint_without_its_key_is_refused_at_start(tmp_path: Path, node: str, gateway: str, index: int,
                                                         kind: str) -> None:
    message = refused(*agent_for(tmp_path, str(EXAMPLE), node))
    assert message == (f"Gateway {gateway}: node {node} is a {kind} endpoint (spec.endpoints[{index}]): "
                       "--private-key is required, or automatic failover to it cannot work")


def test_a_member_needs_no_key(tmp_path: Path) -> None:
    agent, vpn, routes = agent_for(tmp_path, str(EXAMPLE), "cloud-2")
    assert agent.reconcile().plan.role is Role.MEMBER
    agent.close()


def test_a_standby_with_its_key_starts(tmp_path: Path) -> None:
    agent, _, _ = agent_for(tmp_path, str(EXAMPLE), "hz-2", private_key_path=key_file(tmp_path, "hz-2"))
    assert agent.reconcile().plan.role is Role.STANDBY
    agent.close()


# --- M7: empty input, no Gateways, a node in no Gateway -------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("", "no objects of the kinds ravenvpn reads"),
    ("# nothing here\n---\n", "no objects of the kinds ravenvpn reads"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "no objects of the kinds ravenvpn reads"),
])
def test_an_empty_file_says_so(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "empty.yaml", text)
    message = refused(*agent_for(tmp_path, path, "a-1"))
    assert message.startswith(f"{path}: {expected}") and "kubectl get gateways,nodes -o yaml" in message
    assert "not found" not in message


def test_nodes_without_gateways_say_so(tmp_path: Path) -> None:
    nodes = [d for d in docs() if d["kind"] == "Node"]
    for d in nodes:
        d["metadata"]["labels"].pop("raven.openyurt.io/gateway", None)    # a cluster without Raven
    path = write(tmp_path, "nodesonly.yaml", yaml.safe_dump_all(nodes))
    message = refused(*agent_for(tmp_path, path, "cloud-2"))
    assert message == (f"{path}: no raven.openyurt.io Gateway objects, only Nodes "
                       "(did you run 'kubectl get gateways,nodes -o yaml'?)")


def test_a_node_in_no_gateway_is_warned_about_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cluster = docs()
    for d in cluster:
        if d["kind"] == "Node" and d["metadata"]["name"] == "cloud-2":
            d["metadata"]["labels"].pop("raven.openyurt.io/gateway")
    agent, _, _ = agent_for(tmp_path, cluster, "cloud-2")
    with caplog.at_level(logging.WARNING, logger="ravenvpn.agent"):
        assert agent.reconcile().plan.role is Role.NONE
        agent.reconcile()
    agent.close()
    lines = [r.getMessage() for r in caplog.records if "belongs to no Gateway" in r.getMessage()]
    assert lines == ["node cloud-2 belongs to no Gateway (no raven.openyurt.io/gateway label, in no Gateway's "
                     "status.nodes): nothing to do"]


# --- L2: errors name the file ---------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("a: 1\n\tb: 2\n", "YAML syntax error at line 2, column 1"),
    ("just some text\n", "document 1: expected a Kubernetes object (a mapping), got str"),
])
def test_yaml_errors_name_the_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    message = refused(*agent_for(tmp_path, path, "a-1"))
    assert message.startswith(f"{path}: {expected}"), message


def test_a_file_error_that_names_the_file_already_is_not_prefixed_twice(tmp_path: Path) -> None:
    message = refused(*agent_for(tmp_path, str(tmp_path / "missing.yaml"), "a-1"))
    assert message == f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"


# --- L3: an unknown --node ------------------------------------------------------------------------

def test_an_unknown_node_lists_the_nodes_and_a_close_match(tmp_path: Path) -> None:
    message = refused(*agent_for(tmp_path, str(EXAMPLE), "hz1"))
    assert message == (f"Node hz1: not found in {EXAMPLE} (its Nodes: cloud-1, cloud-2, hz-1, hz-2, qd-1, qd-2); "
                       "did you mean hz-1?")


def test_an_unknown_node_without_a_close_match(tmp_path: Path) -> None:
    message = refused(*agent_for(tmp_path, str(EXAMPLE), "zzzzzz"))
    assert "(its Nodes: cloud-1," in message and "did you mean" not in message


# --- L4: a public key given as the private key ----------------------------------------------------

def test_a_public_key_as_private_key_is_named(tmp_path: Path) -> None:
    private = keys.b64decode((KEYS / "hz-1.key").read_text())
    pub = tmp_path / "hz-1.pub"
    pub.write_text(keys.b64encode(keys.public_from_private(private)) + "\n")
    pub.chmod(0o600)
    message = refused(*agent_for(tmp_path, str(EXAMPLE), "hz-1", private_key_path=pub))
    assert message == (f"{pub} holds the public key of Gateway gw-hangzhou's endpoint hz-1 "
                       "(spec.endpoints[1].config.publicKey), not a private key: --private-key needs the "
                       "node's private key (ravenvpn genkey)")


# --- L6: an MTU above what the underlay carries ---------------------------------------------------

def test_mtu_above_the_underlay_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agent, _, _ = agent_for(tmp_path, str(EXAMPLE), "cloud-2", mtu=9000)
    with caplog.at_level(logging.WARNING, logger="ravenvpn.agent"):
        assert agent.reconcile().plan.mtu == 9000
        agent.reconcile()
    agent.close()
    lines = [r.getMessage() for r in caplog.records if "--mtu" in r.getMessage()]
    assert lines == ["--mtu 9000 exceeds the underlay MTU 1500 - 80 (WireGuard's overhead) = 1420: large "
                     "packets will be fragmented or dropped"]


def test_mtu_within_the_underlay_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agent, _, _ = agent_for(tmp_path, str(EXAMPLE), "cloud-2", mtu=1420)
    with caplog.at_level(logging.WARNING, logger="ravenvpn.agent"):
        agent.reconcile()
    agent.close()
    assert "--mtu" not in caplog.text
