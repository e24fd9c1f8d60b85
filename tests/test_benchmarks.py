"""The benchmark harness (benchmarks/run.py) works end to end: it runs, writes complete JSON, prints the table.

No performance assertion anywhere: the numbers depend on the machine. Only that every figure is present,
measured (non-null) for the raw veth, wireguard-go and ravenvpn, and that the harness cleans up after itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.figures import FIGURES, applies
from benchmarks.report import format_table, write_chart
from tools import netns

ROOT = Path(__file__).resolve().parents[1]


def _rvb_names() -> set[str]:
    return {entry.split()[1] for entry in netns.leftovers(prefix="rvb")}


@pytest.mark.netns
@pytest.mark.timeout(240)
def test_quick_run_produces_complete_results(netns_env: None, tmp_path: Path) -> None:
    before = _rvb_names()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--only", "veth,wireguard-go,ravenvpn",
         "--out", str(tmp_path), "--no-chart"],
        cwd=ROOT, capture_output=True, text=True, timeout=220,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    files = list(tmp_path.glob("*/results.json"))
    assert len(files) == 1, proc.stdout
    results = json.loads(files[0].read_text())
    assert set(results["setups"]) == {"veth", "wireguard-go", "ravenvpn"}
    for name, setup in results["setups"].items():
        assert set(setup["figures"]) == {f.key for f in FIGURES}, name
        for fig in FIGURES:
            entry = setup["figures"][fig.key]
            # every figure is accounted for: a value, an explicit n/a, or the reason it failed
            assert entry["value"] is not None or entry["na"] or entry["error"], (name, fig.key, entry)
    for name in ("veth", "wireguard-go", "ravenvpn"):
        setup = results["setups"][name]
        assert setup["status"] == "ok", (name, setup["reason"])
        for fig in FIGURES:
            entry = setup["figures"][fig.key]
            if applies(fig, name):
                assert entry["value"] is not None, (name, fig.key, entry)
            else:
                assert entry["na"], (name, fig.key, entry)
    # the table was printed, with every figure's row and the ratio columns
    out = proc.stdout
    assert "figure" in out and "ravenvpn/wg-go" in out and "ravenvpn/veth" in out
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


def test_table_shows_failed_setup_and_keeps_the_others() -> None:
    table = format_table(_fake_results())
    assert "failed: daemon did not start" in table
    assert "1.00" in table  # wireguard-go's values are still there


def test_chart_is_written(tmp_path: Path) -> None:
    # matplotlib is a test dependency (setup.cfg [test]): the chart path must work in CI too
    assert write_chart(_fake_results(), tmp_path / "chart.png") is None
    assert (tmp_path / "chart.png").stat().st_size > 0
