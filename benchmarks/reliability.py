"""Reliability and security scenarios of ravenvpn-wg, with figures: ``python3 -m benchmarks.reliability``.

    python3 -m benchmarks.reliability [--quick] [--only NAME,...] [--out DIR]     every scenario, one table
    python3 -m benchmarks.reliability fuzz --seconds N                           property-based fuzzing only
    python3 -m benchmarks.reliability soak --minutes M                           the soak only (default 10)

Scenarios (each also runs, shortened, as a CI test in tests/test_reliability_*.py, which asserts survival,
integrity and recovery; the figures come from here):

  fuzz        hypothesis fuzzing of the receive path, the UAPI parser and the cluster loader (benchmarks/fuzz.py)
  live-fuzz   random and mutated datagrams at a running ravenvpn-wg's UDP port while its tunnel carries ping
              and TCP: no crash, no traceback in the log, the tunnel keeps working, RSS bounded
  flood       >= 5,000 initiations/s with valid mac1 from many source addresses (tools/flood.py) at a device
              carrying iperf3 TCP: cookie replies, the TCP throughput kept against the same flood at a closed
              port, and a new peer's handshake (cookie round trip) time
  impair      a 5 MB file over TCP through the tunnel across tools/impair.py (loss, reordering, duplication,
              jitter) plus iptables `statistic` loss: sha256 intact, replay window accounting exact
  restart     SIGKILL one side mid-stream, restart it from its config (wg setconf): time until traffic flows
  soak        traffic plus UAPI config churn every second, handshakes, roaming: RSS and fds over time
  secrets     key material in debug logs, inner plaintext in an underlay capture, leftovers after scenarios

The table (scenario, load held, faults injected, inputs tried, result) is printed and written as JSON to
``results/reliability-<time>.json`` (results/ is not tracked).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from . import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "results"


# ---------------------------------------------------------------------------------------------
# scenario: fuzz
# ---------------------------------------------------------------------------------------------


def scenario_fuzz(seconds: float = 120.0) -> dict[str, Any]:
    import logging

    from . import fuzz

    logging.disable(logging.CRITICAL)  # the UAPI logs every rejected request: millions of lines
    try:
        results = fuzz.run_for(seconds)
    finally:
        logging.disable(logging.NOTSET)
    failures = [r for r in results if r["failure"]]
    return {
        "scenario": "fuzz (hypothesis)",
        "load": "in-process",
        "faults": "mutated captured messages, UAPI lines/streams, cluster objects",
        "inputs": sum(r["inputs"] for r in results),
        "ok": not failures,
        "result": ("0 failures; " if not failures else f"{len(failures)} failing: ")
        + ", ".join(f"{r['target']} {r['inputs']}" for r in results),
        "details": results,
    }


# ---------------------------------------------------------------------------------------------
# running and reporting
# ---------------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "fuzz": lambda quick: scenario_fuzz(30 if quick else 300),
}


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = [("scenario", "scenario"), ("load held", "load"), ("faults injected", "faults"),
            ("inputs tried", "inputs"), ("result", "result")]
    cells = [[str(r.get(key, "")) for _, key in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, (h, _) in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line([h for h, _ in cols]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells]
    return "\n".join(out)


def write_json(rows: list[dict[str, Any]], out_dir: Path, profile: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"reliability-{stamp}.json"
    path.write_text(json.dumps({"profile": profile, "time": stamp, "python": sys.version, "rows": rows},
                               indent=2, default=str))
    return path


def run(names: list[str], quick: bool, out_dir: Path, runners: dict[str, Callable[[], dict[str, Any]]] | None = None
        ) -> int:
    rows: list[dict[str, Any]] = []
    for name in names:
        print(f"== {name}", flush=True)
        start = time.monotonic()
        try:
            row = runners[name]() if runners else SCENARIOS[name](quick)
        except Exception as exc:  # noqa: BLE001 - one failed scenario still leaves a table
            traceback.print_exc()
            row = {"scenario": name, "ok": False, "result": f"ERROR {type(exc).__name__}: {exc}".splitlines()[0]}
        row["seconds"] = round(time.monotonic() - start, 1)
        rows.append(row)
        print(f"   {row.get('result')}", flush=True)
    print()
    print(format_table(rows))
    path = write_json(rows, out_dir, "quick" if quick else "full")
    print(f"\nJSON: {path}")
    return 0 if all(r.get("ok") for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.reliability", description=__doc__.split("\n")[0])
    p.add_argument("command", nargs="?", choices=["all", "fuzz", "soak"], default="all")
    p.add_argument("--seconds", type=float, default=300.0, help="fuzz: how long in all (default 300)")
    p.add_argument("--minutes", type=float, default=10.0, help="soak: how long (default 10)")
    p.add_argument("--quick", action="store_true", help="a shortened profile of every scenario")
    p.add_argument("--only", default="", help="comma-separated scenario names (with 'all')")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    if args.command == "fuzz":
        return run(["fuzz"], False, args.out, {"fuzz": lambda: scenario_fuzz(args.seconds)})
    if args.command == "soak":
        return run(["soak"], False, args.out, {"soak": lambda: SCENARIOS["soak"](False) if args.minutes == 10
                                                 else scenario_soak(minutes=args.minutes)})  # type: ignore[name-defined]
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return run(names, args.quick, args.out)


if __name__ == "__main__":
    sys.exit(main())
