"""The benchmark harness (benchmarks/run.py) works end to end: it runs, writes complete JSON, prints the table.

No performance assertion anywhere: the numbers depend on the machine. Only that every figure is present,
measured (non-null) for the raw veth, wireguard-go, ravenvpn and ravenvpn-busypoll, and that the harness
cleans up after itself.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run as bench_run
from benchmarks.figures import FIGURES, applies
from benchmarks.report import COLORS, SETUP_ORDER, format_table, write_chart
from tools.node import leftovers

ROOT = Path(__file__).resolve().parents[2]


def _rvb_names() -> set[str]:
    return {entry.split()[1] for entry in leftovers(prefix="rvb")}


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_quick_run_produces_complete_results(netns_env: None, tmp_path: Path) -> None:
    before = _rvb_names()
    measured = ("veth", "wireguard-go", "ravenvpn", "ravenvpn-busypoll")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--only", ",".join(measured),
         "--out", str(tmp_path), "--no-chart"],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    files = list(tmp_path.glob("*/results.json"))
    assert len(files) == 1, proc.stdout
    results = json.loads(files[0].read_text())
    assert set(results["setups"]) == set(measured)
    for name, setup in results["setups"].items():
        assert set(setup["figures"]) == {f.key for f in FIGURES}, name
        for fig in FIGURES:
            entry = setup["figures"][fig.key]
            # every figure is accounted for: a value, an explicit n/a, or the reason it failed
            assert entry["value"] is not None or entry["na"] or entry["error"], (name, fig.key, entry)
    for name in measured:
        setup = results["setups"][name]
        assert setup["status"] == "ok", (name, setup["reason"])
        for fig in FIGURES:
            entry = setup["figures"][fig.key]
            if applies(fig, name):
                assert entry["value"] is not None, (name, fig.key, entry)
            else:
                assert entry["na"], (name, fig.key, entry)
    # the busy-poll setup's daemons were started with busy polling on, the plain ravenvpn ones with it off
    assert results["setups"]["ravenvpn-busypoll"]["daemon_env"]["RAVENVPN_BUSY_POLL_US"] == "50000"
    assert results["setups"]["ravenvpn"]["daemon_env"]["RAVENVPN_BUSY_POLL_US"] == "0"
    # the daemon is the one installed with the harness's own interpreter, and the results say which Python ran it
    assert results["environment"]["ravenvpn-wg"] == os.path.join(os.path.dirname(sys.executable), "ravenvpn-wg")
    assert f"Python {platform.python_version()}" in results["environment"]["ravenvpn-python"]
    # the table was printed, with every figure's row and the ratio columns
    out = proc.stdout
    assert "figure" in out and "ravenvpn/wg-go" in out and "busypoll/wg-go" in out and "ravenvpn/veth" in out
    assert "polling for 50 ms after traffic" in out
    assert "ravenvpn-wg runs on " in out
    for fig in FIGURES:
        assert fig.label.split(" N peers")[0] in out, fig.label
    assert (files[0].parent / "table.txt").exists()
    # no namespace of the run is left behind
    assert _rvb_names() <= before


def _fake_results() -> dict:
    figs_ok = {f.key: {"unit": f.unit, "value": 1.0, "samples": [1.0], "na": None, "error": None} for f in FIGURES}
    figs_failed = {f.key: {"unit": f.unit, "value": None, "samples": [], "na": None,
                           "error": "failed: daemon did not start"} for f in FIGURES}
    return {
        "timestamp": "t",
        "seconds": 1,
        "environment": {"params": {"repeat": 1, "seconds": 1}},
        "setups": {
            "wireguard-go": {"status": "ok", "reason": None, "figures": figs_ok, "info": {}},
            "ravenvpn": {"status": "failed", "reason": "daemon did not start", "figures": figs_failed, "info": {}},
        },
    }


def test_setups_are_consistent() -> None:
    """Every setup the harness runs has a table column (in the same order), a chart colour, and the
    busy-poll setup is the ravenvpn setup plus RAVENVPN_BUSY_POLL_US=50000, with the same figures."""
    assert bench_run.SETUPS == SETUP_ORDER
    assert set(COLORS) == set(SETUP_ORDER)
    assert bench_run.parse_args([]).setups == list(bench_run.SETUPS)
    assert bench_run.parse_args(["--only", "ravenvpn-busypoll"]).setups == ["ravenvpn-busypoll"]
    plain, busy = bench_run.SetupRun.for_setup("ravenvpn"), bench_run.SetupRun.for_setup("ravenvpn-busypoll")
    assert (busy.impl_a, busy.impl_b) == (plain.impl_a, plain.impl_b) == ("ravenvpn", "ravenvpn")
    assert busy.daemon_env == {**plain.daemon_env, "RAVENVPN_BUSY_POLL_US": "50000"}
    assert busy.daemon_env["LOG_LEVEL"] == "error" and plain.daemon_env["RAVENVPN_BUSY_POLL_US"] == "0"
    for fig in FIGURES:
        assert applies(fig, "ravenvpn-busypoll") == applies(fig, "ravenvpn"), fig.key


def test_table_has_busypoll_ratio_column() -> None:
    results = _fake_results()
    results["setups"]["ravenvpn-busypoll"] = {
        "status": "ok", "reason": None, "info": {},
        "daemon_env": bench_run.SetupRun.for_setup("ravenvpn-busypoll").daemon_env,
        "figures": {f.key: {"unit": f.unit, "value": 2.0, "samples": [2.0], "na": None, "error": None}
                    for f in FIGURES},
    }
    table = format_table(results)
    header = table.splitlines()[0]
    assert "ravenvpn-busypoll" in header and "busypoll/wg-go" in header
    assert "2.00x" in table  # ravenvpn-busypoll 2.0 / wireguard-go 1.0
    assert "ravenvpn-busypoll = ravenvpn with RAVENVPN_BUSY_POLL_US=50000" in table
    assert "polling for 50 ms after traffic" in table


def test_table_shows_failed_setup_and_keeps_the_others() -> None:
    table = format_table(_fake_results())
    assert "failed: daemon did not start" in table
    assert "1.00" in table  # wireguard-go's values are still there


def test_chart_is_written(tmp_path: Path) -> None:
    # matplotlib is a test dependency (setup.cfg [test]): the chart path must work in CI too
    assert write_chart(_fake_results(), tmp_path / "chart.png") is None
    assert (tmp_path / "chart.png").stat().st_size > 0
