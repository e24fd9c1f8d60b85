"""The Agent's orchestration with fake drivers: order of driver calls, failures, threads, records.

No root and no kernel: the drivers are fakes that record their calls (the real ones keep their namespace
tests in test_raven_applier.py and test_raven_lab.py). What is real: the cluster loading, the planner,
the pid and status files under a temporary state directory, and the threads.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from ravenvpn.errors import ApplyError, ClusterError, RavenError
from ravenvpn.protocol import keys
from ravenvpn.raven.node.agent import Agent
from ravenvpn.raven.node.drivers import RouteDriver, VpnDriver
from ravenvpn.raven.node.pidfile import running_pid
from ravenvpn.raven.node.records import pid_path, state_path, status_path
from ravenvpn.raven.node.statusfile import NodeStatus
from ravenvpn.raven.plan.nodeplan import NodePlan, Role

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"
KEYS = ROOT / "examples" / "keys"


@dataclass
class FakeReport:
    changed: bool = False

    def summary(self) -> str:
        return "changed" if self.changed else "unchanged"


class FakeDriver:
    """Records every call as (name, verb, role) in a log shared by both drivers."""

    def __init__(self, name: str, calls: list[tuple[str, str, str | None]], mtu: int = 1500) -> None:
        self.name = name
        self.calls = calls
        self._mtu = mtu
        self.fail_apply: Exception | None = None
        self.stopped: str | None = None
        self.installed: NodePlan | None = None
        self.inside = 0          # concurrent entries: the agent must serialise its driver calls
        self.max_inside = 0

    def _enter(self, verb: str, role: str | None) -> None:
        self.inside += 1
        self.max_inside = max(self.max_inside, self.inside)
        self.calls.append((self.name, verb, role))
        time.sleep(0.001)        # widen any race window
        self.inside -= 1

    def init(self) -> None:
        self._enter("init", None)

    def mtu(self, endpoints: Any = ()) -> int:
        self.mtu_endpoints = list(endpoints)
        return self._mtu

    def apply(self, plan: NodePlan) -> FakeReport:
        self._enter("apply", plan.role.value)
        if self.fail_apply is not None:
            raise self.fail_apply
        changed = plan != self.installed
        self.installed = plan
        return FakeReport(changed)

    def cleanup(self) -> FakeReport:
        self._enter("cleanup", None)
        changed, self.installed = self.installed is not None, None
        return FakeReport(changed)


def example_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]


def set_ready(docs: list[dict[str, Any]], node: str, ready: bool) -> list[dict[str, Any]]:
    docs = copy.deepcopy(docs)
    for d in docs:
        if d["kind"] == "Node" and d["metadata"]["name"] == node:
            for c in d["status"]["conditions"]:
                if c["type"] == "Ready":
                    c["status"] = "True" if ready else "False"
    return docs


def private_key(node: str) -> bytes | None:
    path = KEYS / f"{node}.key"
    return keys.b64decode(path.read_text()) if path.exists() else None


@pytest.fixture
def calls() -> list[tuple[str, str, str | None]]:
    return []


@pytest.fixture
def drivers(calls: list) -> tuple[FakeDriver, FakeDriver]:
    return FakeDriver("vpn", calls, mtu=1420), FakeDriver("routes", calls, mtu=1500)


def make_agent(tmp_path: Path, drivers: tuple[FakeDriver, FakeDriver], node: str = "hz-1",
               cluster: Any = None, **kw: Any) -> Agent:
    vpn, routes = drivers
    return Agent(example_docs() if cluster is None else cluster, node, private_key=private_key(node),
                 state_dir=tmp_path / "state", vpn=vpn, routes=routes, poll_interval=0.05, **kw)


@pytest.fixture
def running(tmp_path: Path, drivers: tuple[FakeDriver, FakeDriver]) -> Iterator[tuple[Agent, threading.Thread]]:
    """An agent for hz-1 whose run() runs in a thread (not the main one)."""
    agent = make_agent(tmp_path, drivers)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", agent.run()), daemon=True)
    thread.start()
    wait_until(lambda: agent.running)
    thread.result = result  # type: ignore[attr-defined]
    yield agent, thread
    agent.stop()
    thread.join(10)
    assert not thread.is_alive()


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_the_fakes_satisfy_the_driver_protocols(drivers: tuple[FakeDriver, FakeDriver]) -> None:
    from ravenvpn.raven.node.applier import Applier
    from ravenvpn.raven.node.wireguard import WireGuardDriver
    assert isinstance(drivers[0], VpnDriver) and isinstance(drivers[1], RouteDriver)
    assert isinstance(WireGuardDriver("raven0"), VpnDriver)
    assert isinstance(Applier("raven0", "/nonexistent"), RouteDriver)


# --- one reconcile ------------------------------------------------------------------------------

def test_active_gateway_brings_the_interface_up_before_its_routes(tmp_path: Path, drivers, calls) -> None:
    agent = make_agent(tmp_path, drivers)
    report = agent.reconcile()
    assert report.plan.role is Role.ACTIVE_GATEWAY and report.changed
    assert calls == [("vpn", "init", None), ("routes", "init", None),
                     ("vpn", "apply", "active-gateway"), ("routes", "apply", "active-gateway")]
    agent.close()
    # on the way out the routes go before the interface they point at
    assert calls[-2:] == [("routes", "cleanup", None), ("vpn", "cleanup", None)]


def test_member_routes_go_in_before_the_vpn_driver_is_told(tmp_path: Path, drivers, calls) -> None:
    agent = make_agent(tmp_path, drivers, node="cloud-2")
    assert agent.reconcile().plan.role is Role.MEMBER
    assert calls[2:] == [("routes", "apply", "member"), ("vpn", "apply", "member")]
    agent.close()


def test_losing_the_gateway_role_moves_routes_before_the_interface_goes(tmp_path: Path, drivers, calls) -> None:
    agent = make_agent(tmp_path, drivers)
    agent.reconcile()
    agent.set_cluster(set_ready(example_docs(), "hz-1", False))   # hz-2 takes over: hz-1 is a standby
    del calls[:]
    assert agent.reconcile().plan.role is Role.STANDBY
    assert calls == [("routes", "apply", "standby"), ("vpn", "apply", "standby")]
    agent.close()


def test_mtu_is_the_vpn_drivers_toward_the_planned_endpoints_unless_configured(tmp_path: Path, drivers) -> None:
    """Issue 14 kind 4: the tunnel MTU is derived from the paths toward the peers' endpoints (the
    VPN driver's call), not from the route driver's view of the host."""
    vpn, routes = drivers
    plan = make_agent(tmp_path, drivers).compute_plan()
    assert plan.mtu == 1420
    assert vpn.mtu_endpoints == [p.endpoint for p in plan.peers if p.endpoint is not None] != []
    routes._mtu = 1300              # another link of the host: not the tunnel's
    assert make_agent(tmp_path, drivers).compute_plan().mtu == 1420
    vpn._mtu = 1380
    assert make_agent(tmp_path, drivers).compute_plan().mtu == 1380
    assert make_agent(tmp_path, drivers, mtu=1400).compute_plan().mtu == 1400


def test_route_failure_on_a_new_gateway_removes_the_new_interface(tmp_path: Path, drivers, calls) -> None:
    vpn, routes = drivers
    agent = make_agent(tmp_path, drivers)
    routes.fail_apply = ApplyError("applying the plan for hz-1 failed: boom")
    with pytest.raises(ApplyError, match="boom"):
        agent.reconcile()
    assert calls[-2:] == [("routes", "apply", "active-gateway"), ("vpn", "cleanup", None)]
    assert vpn.installed is None and agent.plan is None
    assert not status_path(tmp_path / "state", "raven0").exists()
    agent.close()


def test_route_failure_on_a_running_gateway_keeps_its_interface(tmp_path: Path, drivers, calls) -> None:
    vpn, routes = drivers
    agent = make_agent(tmp_path, drivers)
    first = agent.reconcile().plan
    routes.fail_apply = ApplyError("refused")
    agent.reload()
    with pytest.raises(ApplyError):
        agent.reconcile()
    assert ("vpn", "cleanup", None) not in calls and vpn.installed is not None
    assert agent.plan == first
    agent.close()


def test_bad_input_changes_nothing(tmp_path: Path, drivers, calls) -> None:
    agent = make_agent(tmp_path, drivers, cluster=[{"kind": "Gateway", "apiVersion": "raven.openyurt.io/v9"}])
    with pytest.raises(ClusterError, match="unsupported 'raven.openyurt.io/v9'"):
        agent.reconcile()
    assert [c for c in calls if c[1] == "apply"] == []
    agent.close()


def test_cluster_as_a_kind_list_dict_as_json_loads_gives_it(tmp_path: Path, drivers) -> None:
    as_list = json.loads(json.dumps({"apiVersion": "v1", "kind": "List", "items": example_docs()}))
    agent = make_agent(tmp_path, drivers, cluster=as_list)
    as_list["items"].clear()                       # the agent copied the objects
    assert agent.reconcile().plan.role is Role.ACTIVE_GATEWAY
    agent.close()


def test_a_cluster_that_is_no_objects_is_refused(tmp_path: Path, drivers) -> None:
    with pytest.raises(ClusterError, match="expected a file path or dicts, got int"):
        make_agent(tmp_path, drivers, cluster=42)


def test_reconciles_from_many_threads_are_serialised(tmp_path: Path, drivers) -> None:
    agent = make_agent(tmp_path, drivers)
    threads = [threading.Thread(target=agent.reconcile) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert drivers[0].max_inside == 1 and drivers[1].max_inside == 1
    assert sum(1 for c in drivers[0].calls if c[1] == "apply") == 16
    agent.close()


# --- records ------------------------------------------------------------------------------------

def test_records_while_running_and_none_after(tmp_path: Path, drivers) -> None:
    state = tmp_path / "state"
    agent = make_agent(tmp_path, drivers)
    agent.reconcile()
    status = NodeStatus.read(status_path(state, "raven0"))
    assert (status.node, status.role, status.gateway, status.pid) == ("hz-1", "active-gateway", "gw-hangzhou",
                                                                     os.getpid())
    assert [p.gateway for p in status.peers] == ["gw-cloud"]
    assert pid_path(state, "raven0").read_text().split()[0] == str(os.getpid())
    agent.close()
    assert list(state.iterdir()) == []
    with pytest.raises(RavenError, match="has stopped"):
        agent.reconcile()


def test_a_second_agent_for_the_same_interface_is_refused(tmp_path: Path, calls) -> None:
    first = make_agent(tmp_path, (FakeDriver("vpn", calls), FakeDriver("routes", calls)))
    first.reconcile()
    second = make_agent(tmp_path, (FakeDriver("vpn2", calls), FakeDriver("routes2", calls)))
    with pytest.raises(RavenError, match="already running for raven0"):
        second.reconcile()
    assert ("routes2", "apply", "active-gateway") not in calls
    assert second.close() is None                   # it removes nothing of the first one's
    assert pid_path(tmp_path / "state", "raven0").exists()
    first.close()


def test_ravenvpn_status_reads_a_node_run_by_an_embedded_agent(running, tmp_path: Path) -> None:
    state = tmp_path / "state"
    # a separate process, as an operator would run it
    res = subprocess.run([sys.executable, "-m", "ravenvpn.cli", "status", "--json", "--state-dir", str(state),
                          "--interface", "tstnone0"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 1 and "not running for tstnone0" in res.stderr
    agent, _ = running
    # `ravenvpn status` of the same process would ignore its own pid; ask as another process does.
    out = subprocess.run([sys.executable, "-c", "import sys; from ravenvpn.raven.node.pidfile import running_pid; "
                          "print(running_pid(sys.argv[1], 'raven0'))", str(state)],
                         capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == str(os.getpid())
    assert NodeStatus.read(status_path(state, "raven0")).role == "active-gateway"


# --- the loop -----------------------------------------------------------------------------------

def test_run_in_a_thread_installs_no_signal_handler_and_no_log_handler(tmp_path: Path, drivers) -> None:
    before_signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    before_root = (list(logging.getLogger().handlers), logging.getLogger().level)
    agent = make_agent(tmp_path, drivers)
    rc: list[int] = []
    thread = threading.Thread(target=lambda: rc.append(agent.run()))
    thread.start()
    wait_until(lambda: agent.running)
    assert {s: signal.getsignal(s) for s in before_signals} == before_signals
    assert (list(logging.getLogger().handlers), logging.getLogger().level) == before_root
    agent.stop("test over")
    thread.join(10)
    assert rc == [0] and list((tmp_path / "state").iterdir()) == []
    assert drivers[0].calls[-2:] == [("routes", "cleanup", None), ("vpn", "cleanup", None)]


def test_set_cluster_fails_the_gateway_over(running, drivers) -> None:
    agent, _ = running
    vpn, routes = drivers
    assert vpn.installed is not None and vpn.installed.role is Role.ACTIVE_GATEWAY
    agent.set_cluster(set_ready(example_docs(), "hz-1", False))
    wait_until(lambda: agent.plan is not None and agent.plan.role is Role.STANDBY)
    assert routes.installed is not None and routes.installed.role is Role.STANDBY


def test_a_bad_new_cluster_keeps_the_last_good_plan(running, drivers, caplog: pytest.LogCaptureFixture) -> None:
    agent, _ = running
    good = agent.plan
    applies = len([c for c in drivers[0].calls if c[1] == "apply"])
    with caplog.at_level(logging.ERROR, logger="ravenvpn.agent"):
        agent.set_cluster([{"kind": "Node", "apiVersion": "v2"}])
        wait_until(lambda: "keeping the previous configuration" in caplog.text)
    assert agent.running and agent.plan == good
    assert len([c for c in drivers[0].calls if c[1] == "apply"]) == applies


def test_reload_reconciles_an_unchanged_cluster(running, drivers) -> None:
    agent, _ = running
    applies = lambda: len([c for c in drivers[1].calls if c == ("routes", "apply", "active-gateway")])  # noqa: E731
    before = applies()
    agent.reload()
    wait_until(lambda: applies() == before + 1)


def test_an_edited_cluster_file_is_followed(tmp_path: Path, drivers) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(example_docs()))
    agent = make_agent(tmp_path, drivers, cluster=str(path))
    thread = threading.Thread(target=agent.run)
    thread.start()
    try:
        wait_until(lambda: agent.running)
        assert agent.plan is not None and agent.plan.role is Role.ACTIVE_GATEWAY
        path.write_text(yaml.safe_dump_all(set_ready(example_docs(), "hz-1", False)) + "\n# edited\n")
        wait_until(lambda: agent.plan is not None and agent.plan.role is Role.STANDBY)
    finally:
        agent.stop()
        thread.join(10)


def test_the_interface_stopping_on_its_own_ends_run_with_1(running, drivers) -> None:
    agent, thread = running
    drivers[0].stopped = "interface raven0 was deleted"
    thread.join(10)
    assert thread.result == {"rc": 1}  # type: ignore[attr-defined]


def test_stop_before_run_tears_down_after_the_first_reconcile(tmp_path: Path, drivers, calls) -> None:
    agent = make_agent(tmp_path, drivers)
    agent.stop()
    assert agent.run() == 0
    assert [c[1] for c in calls] == ["init", "init", "apply", "apply", "cleanup", "cleanup"]
    with pytest.raises(RavenError, match="already run"):
        agent.run()


def test_a_failing_first_reconcile_leaves_nothing(tmp_path: Path, drivers, calls) -> None:
    drivers[1].fail_apply = ApplyError("refused")
    agent = make_agent(tmp_path, drivers)
    with pytest.raises(ApplyError):
        agent.run()
    assert drivers[0].installed is None and list((tmp_path / "state").iterdir()) == []
    assert running_pid(tmp_path / "state", "raven0") is None


def test_init_failure_changes_nothing(tmp_path: Path, drivers, calls) -> None:
    def refuse() -> None:
        raise RavenError("RAVENVPN_BUSY_POLL_US must be 0..1000000 microseconds, not 'soon'")
    drivers[0].init = refuse  # type: ignore[method-assign]
    agent = make_agent(tmp_path, drivers)
    with pytest.raises(RavenError, match="BUSY_POLL"):
        agent.run()
    assert calls == [] and not (tmp_path / "state").exists()
    assert not state_path(tmp_path / "state", "raven0").exists()
