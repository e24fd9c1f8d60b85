"""`ravenvpn status` and `down` tell the truth about what runs and what was left (issue 13: M8, L8). No root:
records are written by hand, as a crashed `up` leaves them; nothing here reaches the kernel."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ravenvpn.raven.node.down import down
from ravenvpn.raven.node.records import DeviceRecord, device_path, pid_path, state_path, status_path

from tests.unit.test_cli import ravenvpn  # noqa: F401  (the fixture)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def crashed_up_records(state: Path) -> int:
    """What `kill -9` of an active gateway's `up` leaves: pid, state, device and status files."""
    state.mkdir(mode=0o700)
    pid = dead_pid()
    pid_path(state, "raven0").write_text(f"{pid} 12345\n")
    state_path(state, "raven0").write_text(json.dumps({
        "routes": [["10.250.2.0/24", 7, None, 9028, 1420, None], ["10.99.0.2/32", 7, None, 9028, 1420, None]],
        "rules": [[4, 100, 254, 17, 4500], [4, 101, 9028, None, None]],
        "sysctls": {"net.ipv4.ip_forward": "0"}, "sysctls_set": {"net.ipv4.ip_forward": "1"}, "netns": 1}))
    DeviceRecord("raven0", 7, "tun", (("IFLA_TUN_TYPE", 1),), 1, pid).write(device_path(state, "raven0"))
    status_path(state, "raven0").write_text("{}")
    return pid


def test_status_after_a_crash_says_what_is_left_and_that_down_cleans_it(ravenvpn, tmp_path: Path) -> None:
    state = tmp_path / "state"
    pid = crashed_up_records(state)
    res = ravenvpn("status", "--state-dir", str(state))
    assert res.returncode == 1 and res.stdout == "" and res.stderr.count("\n") == 1, res.stderr
    line = res.stderr
    assert line.startswith(f"ravenvpn: ravenvpn up is not running for raven0, but a ravenvpn up (pid {pid}) "
                           # The recorded routes, rules and TUN are not in this kernel (they went
                           # with the process): only what is still there is named.
                           "that stopped without cleaning up left 1 sysctls and its records "), line
    assert f"run 'ravenvpn down --state-dir {state}' to clean up" in line


def test_status_with_nothing_running_and_nothing_left(ravenvpn, tmp_path: Path) -> None:
    res = ravenvpn("status", "--state-dir", str(tmp_path), "--interface", "raven1")
    assert (res.returncode, res.stderr) == (1, "ravenvpn: ravenvpn up is not running for raven1\n")


def test_down_with_no_records_changes_nothing_and_says_so(tmp_path: Path) -> None:
    """The library call `ravenvpn down` makes (the command itself needs root: tests/netns)."""
    (tmp_path / "state").mkdir()
    for _ in range(2):      # idempotent
        assert down("raven0", tmp_path / "state") == \
            f"nothing to stop for raven0: ravenvpn up is not running and left no records in {tmp_path / 'state'}"
    assert down("raven0", tmp_path / "no-such-dir").startswith("nothing to stop for raven0")
