"""`ravenvpn up/down/status` as an operator meets them, in a namespace (issue 13: H1, H3, H4, M1, M8, L6, L8).

The node runs `ravenvpn up` as cloud-1, the active gateway of gw-cloud in the example cluster (its demo key),
with a veth as underlay; a state directory of its own. The commands run exactly as a user types them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.links import veth
from tools.node import Node
from tools.process import wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"
CLI = [sys.executable, "-m", "ravenvpn.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@dataclass
class Host:
    node: Node
    state: Path
    key: Path
    public: Path        # a directory every user may enter

    def ravenvpn(self, *args: str, timeout: float = 30, prefix: tuple[str, ...] = (),
                 state: bool = True) -> subprocess.CompletedProcess[str]:
        extra = ("--state-dir", str(self.state)) if state and args and args[0] in ("up", "down", "status") else ()
        return self.node.run(*prefix, *CLI, *args, *extra, env=ENV, check=False, timeout=timeout)

    def up(self, *args: str, log_name: str = "up.log") -> tuple[subprocess.Popen[str], Path]:
        log = self.node.tmpdir / log_name
        with open(log, "w") as out:
            proc = self.node.popen(*CLI, "up", "--cluster", str(EXAMPLE), "--node", "cloud-1", "--private-key",
                                   str(self.key), "--state-dir", str(self.state), *args, env=ENV, stdout=out,
                                   stderr=subprocess.STDOUT)
        return proc, log

    def wait_up(self, proc: subprocess.Popen[str], log: Path, interface: str = "raven0") -> None:
        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:        # this process's status (a crashed one may have left its own)
                return json.loads((self.state / f"{interface}.status.json").read_text())["pid"] == proc.pid
            except (OSError, ValueError, KeyError):
                return False
        wait_for(ready, timeout=30, message="ravenvpn up to write its status")

    def ip(self, *args: str) -> str:
        return self.node.run("ip", *args).stdout


@pytest.fixture
def host() -> Iterator[Host]:
    with Node("ops") as node, Node("opslan") as lan:
        veth(node, lan, "172.16.0.11/24", "172.16.0.12/24", name_a="eth0", name_b="eth0")
        key = node.tmpdir / "cloud-1.key"
        shutil.copy(ROOT / "examples" / "keys" / "cloud-1.key", key)
        key.chmod(0o600)
        public = Path(tempfile.mkdtemp(prefix="rvt-ops-public-"))
        public.chmod(0o755)
        try:
            yield Host(node, node.tmpdir / "state", key, public)
        finally:
            shutil.rmtree(public, ignore_errors=True)


def one_line(res: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    return res.stderr.rstrip("\n")


# --- H1 / M8 / L8 ---------------------------------------------------------------------------------

def test_down_with_no_records_leaves_another_programs_raven0_alone(host: Host) -> None:
    host.node.run("wireguard-go", "raven0")          # the user's own WireGuard device, named raven0
    wait_for(lambda: host.node.has_link("raven0"), timeout=10, message="wireguard-go's raven0")
    for _ in range(2):                                # idempotent, like systemctl stop
        res = host.ravenvpn("down")
        assert res.returncode == 0 and res.stderr == "", res.stderr
        assert res.stdout == (f"nothing to stop for raven0: ravenvpn up is not running and left no records "
                              f"in {host.state}\n")
        assert host.node.has_link("raven0"), "ravenvpn down deleted a device it never created"
    assert "raven0" in host.node.run("wg", "show", "interfaces").stdout


def test_after_a_crash_status_says_what_is_left_and_down_removes_only_that(host: Host) -> None:
    proc, log = host.up()
    host.wait_up(proc, log)
    host.node.stop_process(proc, signal.SIGKILL)       # a crash: no cleanup
    wait_for(lambda: not host.node.has_link("raven0"), timeout=10, message="the TUN to go with its process")
    assert "lookup 9028" in host.ip("rule")
    # L8: status names what is left and the command that cleans it
    res = host.ravenvpn("status")
    line = one_line(res)
    assert res.returncode == 1 and line.startswith("ravenvpn: ravenvpn up is not running for raven0, but a "
                                                   f"ravenvpn up (pid {proc.pid}) that stopped without cleaning "
                                                   "up left "), line
    # The TUN went with its process: not named as left (only the rules are still there).
    assert "rules" in line and "interface raven0" not in line and \
        f"run 'ravenvpn down --state-dir {host.state}' to clean up" in line
    # Meanwhile the user started their own raven0: down undoes the records but leaves that device alone.
    host.node.run("wireguard-go", "raven0")
    wait_for(lambda: host.node.has_link("raven0"), timeout=10, message="wireguard-go's raven0")
    res = host.ravenvpn("down")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"cleaned up after ravenvpn up (pid {proc.pid}) on raven0, which stopped "
                                 "without cleaning up: "), res.stdout
    assert "left raven0 (ifindex" in res.stdout and "alone: it is not the device ravenvpn up created" in res.stdout
    assert host.node.has_link("raven0") and "lookup 9028" not in host.ip("rule")
    assert list(host.state.iterdir()) == []
    assert host.ravenvpn("down").stdout.startswith("nothing to stop for raven0")


def test_down_stops_a_running_up_and_its_device_goes(host: Host) -> None:
    proc, log = host.up()
    host.wait_up(proc, log)
    record = json.loads((host.state / "raven0.device.json").read_text())
    assert record["ifname"] == "raven0" and record["kind"] == "tun" and record["ifindex"] > 0
    res = host.ravenvpn("down")
    assert res.returncode == 0 and res.stdout == f"stopped ravenvpn up (pid {proc.pid})\n", res.stdout + res.stderr
    assert not host.node.has_link("raven0") and "lookup 9028" not in host.ip("rule")
    assert list(host.state.iterdir()) == []


# --- H3 / M8: no root -----------------------------------------------------------------------------

UNPRIVILEGED = [       # (arguments, exit status, start of the one line on stderr)
    (["up", "--cluster", str(EXAMPLE), "--node", "cloud-1"], 1, "ravenvpn: need root (or CAP_NET_ADMIN): "),
    (["down"], 1, "ravenvpn: need root (or CAP_NET_ADMIN): "),
    (["status"], 1, "ravenvpn: ravenvpn up is not running for raven0"),
    (["genkey"], 0, ""),
    (["genpsk"], 0, ""),
    (["pubkey"], 1, "ravenvpn: invalid private key on stdin"),
    (["--help"], 0, ""),
    (["--version"], 0, ""),
    (["up", "--help"], 0, ""),
    ([], 0, ""),
]


def test_every_subcommand_unprivileged_is_one_line_never_a_traceback(host: Host) -> None:
    """As nobody (setpriv drops every capability): with the default state directory, one nobody may
    write (still no CAP_NET_ADMIN) and root's 0700 one."""
    dirs: dict[str, list[str]] = {"default": []}
    for name, owner in (("nobodys", 65534), ("roots", 0)):
        sdir = host.public / name
        sdir.mkdir(mode=0o700)
        os.chown(sdir, owner, owner)
        dirs[name] = ["--state-dir", str(sdir)]
    for args, rc, start in UNPRIVILEGED:
        for name, extra in dirs.items():
            if not args or args[0] not in ("up", "down", "status") or "--help" in args:
                if name != "default":
                    continue
                extra = []
            expected = "ravenvpn: need root: cannot read the state directory" \
                if name == "roots" and args[0] == "status" else start
            res = host.ravenvpn(*args, *extra, prefix=tuple(NOBODY), state=False)
            where = f"{args} with {name} state dir: {res.stderr}"
            assert "Traceback" not in res.stderr and "Error:" not in res.stderr, where
            assert res.returncode == rc, where
            if rc:
                assert one_line(res).startswith(expected), where
    assert not host.node.has_link("raven0")
    assert sorted(p.name for p in host.public.rglob("*")) == ["nobodys", "roots"]     # nothing written


# --- H4 -------------------------------------------------------------------------------------------

def test_a_second_instance_is_refused_naming_the_first_and_the_first_keeps_its_routes(host: Host) -> None:
    proc, log = host.up()
    host.wait_up(proc, log)
    table, rules = host.ip("route", "show", "table", "9028"), host.ip("rule")
    assert "dev raven0" in table and "lookup 9028" in rules
    second, second_log = host.up("--interface", "raven1", "--port", "4502", log_name="up2.log")
    try:
        assert second.wait(30) == 1, second_log.read_text()
    finally:
        host.node.stop_process(second)
    text = second_log.read_text()
    assert text.count("\n") == 1 and text.startswith(f"ravenvpn: ravenvpn up is already running on raven0 "
                                                     f"(pid {proc.pid})"), text
    assert not host.node.has_link("raven1")
    assert host.ip("route", "show", "table", "9028") == table and host.ip("rule") == rules
    res = host.ravenvpn("down", "--interface", "raven1")
    assert res.returncode == 0 and res.stdout.startswith("nothing to stop for raven1")
    assert host.ip("route", "show", "table", "9028") == table and host.ip("rule") == rules
    assert host.ravenvpn("down").returncode == 0
    assert "lookup 9028" not in host.ip("rule")


# --- M1 / L6 --------------------------------------------------------------------------------------

def hold_udp_port(node: Node, port: int) -> subprocess.Popen[str]:
    proc = node.popen(sys.executable, "-c", "import socket, sys, time; s = socket.socket(socket.AF_INET, "
                      f"socket.SOCK_DGRAM); s.bind(('0.0.0.0', {port})); print('ok', flush=True); time.sleep(120)",
                      stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == "ok\n"
    return proc


def test_a_busy_port_is_one_true_line_naming_port(host: Host) -> None:
    holder = hold_udp_port(host.node, 4500)
    try:
        for args in ((), ("--port", "4500")):
            proc, log = host.up(*args)
            assert proc.wait(30) == 1
            comm = Path(f"/proc/{holder.pid}/comm").read_text().strip()
            assert log.read_text() == (f"ravenvpn: --port 4500: UDP port 4500 is in use by {comm} (pid {holder.pid}); "
                                       "pick another with --port\n")
            assert not host.node.has_link("raven0") and "lookup 9028" not in host.ip("rule")
            assert list(host.state.iterdir()) == []
        # Another --port: the device never falls back to, nor talks about, an ephemeral port.
        proc, log = host.up("--port", "4502")
        host.wait_up(proc, log)
        text = log.read_text()
        assert "busy" not in text and "instead" not in text and "interface raven0 up (MTU 1420), UDP port 4502" in text
        assert host.ravenvpn("down").returncode == 0
    finally:
        host.node.stop_process(holder)


def test_mtu_log_shows_the_mtu_set_once_and_warns_above_the_underlay(host: Host) -> None:
    proc, log = host.up("--mtu", "9000")
    host.wait_up(proc, log)
    assert host.ravenvpn("down").returncode == 0
    lines = log.read_text().splitlines()
    assert [line for line in lines if "MTU" in line and "--mtu" not in line] == \
        ["ravenvpn: interface raven0 up (MTU 9000), UDP port 4500"], lines
    assert "ravenvpn: --mtu 9000 exceeds the underlay MTU 1500 - 80 (WireGuard's overhead) = 1420: large packets " \
           "will be fragmented or dropped" in lines
    res = host.ravenvpn("up", "--cluster", str(EXAMPLE), "--node", "cloud-1", "--mtu", "100")
    assert res.returncode == 1 and one_line(res) == "ravenvpn: --mtu 100: must be 576..65535"


def test_the_next_up_after_a_crash_takes_over_its_records(host: Host) -> None:
    proc, log = host.up()
    host.wait_up(proc, log)
    host.node.stop_process(proc, signal.SIGKILL)
    wait_for(lambda: not host.node.has_link("raven0"), timeout=10, message="the TUN to go with its process")
    again, log2 = host.up(log_name="up2.log")
    host.wait_up(again, log2)
    record = json.loads((host.state / "raven0.device.json").read_text())
    ifindex = json.loads(host.ip("-j", "link", "show", "raven0"))[0]["ifindex"]
    assert (record["pid"], record["ifindex"]) == (again.pid, ifindex)
    res = host.ravenvpn("down")
    assert res.stdout == f"stopped ravenvpn up (pid {again.pid})\n", res.stdout + res.stderr + log2.read_text()
    assert list(host.state.iterdir()) == [] and "lookup 9028" not in host.ip("rule")
